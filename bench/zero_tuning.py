#!/usr/bin/env python
"""Benchmark: every corpus model with zero tuning, against ONNX Runtime in the same run.

    .venv/bin/python bench/zero_tuning.py [--models a,b] [--resolution 224] [--runs 50]
                                          [--naive-runs 3] [--target T] [--out bench/results]

For each model of ``tvm-pipeline models list`` (seeded weights, built here), on this machine's
target: ONNX Runtime; TVM naive (no database, no default schedules: the unscheduled loops);
default-only (no database at all, every kernel on its default schedule); and as ``compile`` builds
it (shipped logs: tuned, then borrowed, then default). Every build is validated against ONNX
Runtime before it is timed; ratios are medians over ``--runs`` (``--naive-runs`` for the naive
build, which is slow), TVM and ONNX Runtime alternating in ABBA blocks in one process. The load
average before and after is recorded: a busy machine invalidates the run. Writes
OUT/zero-tuning-TARGET.md, .json and .png (ratios per model; geometric means).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import tvm_pipeline as tp
from tvm_pipeline.models import export_model, list_models

sys.path.insert(0, str(Path(__file__).parent))
from common import add_bench_args, add_output_args, bench_artifact, output_dirs, write_results  # noqa: E402  pylint: disable=wrong-import-position

BUILDS = ("naive", "default", "shipped")


def build_options(kind: str, empty: str) -> tp.CompileOptions:
    """The compile options of each build kind (``empty``: a tuning-log root with nothing in it)."""
    if kind == "naive":
        return tp.CompileOptions(use_database=False, defaults=False)
    if kind == "default":
        return tp.CompileOptions(use_database=False)
    return tp.CompileOptions(logs=empty)


def measure(prepared, path: Path, options: tp.CompileOptions, runs: int,
            isolate: bool = False) -> dict:
    start = time.perf_counter()
    compiled = tp.compile(prepared, path, options)
    seconds = time.perf_counter() - start
    result, reliability = bench_artifact(compiled.artifact, runs, min(10, runs), isolate)
    build = compiled.build
    return {"ms": result.tvm.median_ms, "ort_ms": result.ort.median_ms,
            "compile_s": round(seconds, 1),
            "kernels": {source: len(names) for source, names in build.by_source().items()},
            "max_abs_err": compiled.validation.outputs[0].max_abs, **reliability}


def run_model(name: str, args, work: Path, empty: str) -> dict:
    onnx_path = work / f"{name}_{args.resolution}.onnx"
    export_model(name, onnx_path, args.resolution)
    start = time.perf_counter()
    prepared = tp.prepare(onnx_path, args.target)
    prepare_s = time.perf_counter() - start
    row = {"model": name, "target": prepared.target.name, "prepare_s": round(prepare_s, 1)}
    for kind in args.builds:
        if kind == "naive" and args.naive_runs <= 0:
            continue
        runs = args.naive_runs if kind == "naive" else args.runs
        row[kind] = measure(prepared, work / f"{name}-{kind}.tvm", build_options(kind, empty), runs,
                            args.isolate)
        print(f"{name} {kind}: {row[kind]['ms']:.2f} ms, ORT {row[kind]['ort_ms']:.2f} ms, "
              f"compile {row[kind]['compile_s']} s", file=sys.stderr, flush=True)
    return row


def geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def ratio(row: dict, kind: str) -> float | None:
    r = row.get(kind)
    return r["ms"] / r["ort_ms"] if r else None


def table(rows: list[dict], load: tuple[float, float], args) -> str:
    lines = [f"Zero tuning on {rows[0]['target']}, {args.resolution}x{args.resolution}, batch 1, "
             f"FP32; {time.strftime('%Y-%m-%d %H:%M')}; median of {args.runs} runs (naive: "
             f"{args.naive_runs}), each TVM build against ONNX Runtime in the same run; load "
             f"average {load[0]:.2f} before, {load[1]:.2f} after", "",
             "| model | ORT ms | naive | default only | as compiled (shipped logs) | kernels "
             "tuned/borrowed/default/naive | compile s (prepare + build + validate) |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        cells = []
        for kind in BUILDS:
            r = row.get(kind)
            cells.append(f"{r['ms']:.2f} ms ({r['ms'] / r['ort_ms']:.2f}x)" if r else "n/a")
        last = row[args.builds[-1]]
        k = last["kernels"]
        lines.append(f"| {row['model']} | {last['ort_ms']:.2f} | {' | '.join(cells)} | "
                     f"{k.get('tuned', 0)}/{k.get('borrowed', 0)}/{k.get('default', 0)}/"
                     f"{k.get('naive', 0)} | {row['prepare_s'] + last['compile_s']:.0f} |")
    for kind in (k for k in ("default", "shipped") if k in args.builds):
        values = [ratio(r, kind) for r in rows]
        lines.append(f"\nGeometric mean, {kind}: {geomean(values):.2f}x ONNX Runtime; worst "
                     f"{max(values):.2f}x ({max(rows, key=lambda r: ratio(r, kind))['model']})")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.4
    for i, kind in enumerate(k for k in ("default", "shipped") if k in rows[0]):
        xs = [j + (i - 0.5) * width for j in range(len(rows))]
        ax.bar(xs, [ratio(r, kind) for r in rows], width, label={"default": "default schedules only",
               "shipped": "as compiled (shipped logs)"}[kind])
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(rows)), [r["model"] for r in rows], rotation=30, ha="right")
    ax.set_ylabel("TVM latency / ONNX Runtime latency")
    ax.set_title(f"Zero tuning on {rows[0]['target']} (lower is better)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=None, help="comma-separated corpus names (default: all)")
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--target", default=None)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--naive-runs", type=int, default=3, help="0: skip the naive builds")
    parser.add_argument("--builds", default=",".join(BUILDS),
                        help=f"comma-separated, in this order: {', '.join(BUILDS)} (default: all)")
    add_output_args(parser)
    add_bench_args(parser)
    args = parser.parse_args()
    args.builds = [b for b in BUILDS if b in args.builds.split(",")]
    if not args.builds:
        parser.error(f"--builds: some of {', '.join(BUILDS)}")
    out, work = output_dirs(args)
    names = args.models.split(",") if args.models else [a.name for a in list_models()]
    before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as empty:
        rows = [run_model(name, args, work, empty) for name in names]
    load = (before, os.getloadavg()[0])
    name = f"zero-tuning-{rows[0]['target']}"
    write_results(out, name, table(rows, load, args), rows)
    plot(rows, out / f"{name}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
