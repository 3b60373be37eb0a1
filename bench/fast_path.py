#!/usr/bin/env python
"""Benchmark: a model nobody tuned, compiled with zero tuning (borrowed schedules) vs naive vs tuned.

    .venv/bin/python bench/fast_path.py [--arch v1 --alpha 0.75 --resolution 192]
                                         [--own-minutes 10] [--out bench/results]

In one process run, for MobileNet ARCH ALPHA-RESOLUTION (default V1 0.75-192, which the shipped logs
do not cover):

1. naive: every kernel without a record stays unscheduled loops (``--no-borrow``);
2. borrowed: each kernel takes the schedule of the most similar tuned kernel in the shipped logs;
3. own-tuned (``--own-minutes`` > 0): the model tuned for that many minutes into a fresh log root,
   built from those records only (its own tuned latency);

each validated against ONNX Runtime and timed (median of ``--runs``), with ONNX Runtime timed in the
same run. Writes OUT/fast-path-MODEL-TARGET.md and .json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import tvm_pipeline as tp

sys.path.insert(0, str(Path(__file__).parent))
from common import add_bench_args, add_output_args, bench_artifact, output_dirs, write_results  # noqa: E402  pylint: disable=wrong-import-position


def measure(prepared, path: Path, options: tp.CompileOptions, runs: int,
            isolate: bool = False) -> dict:
    start = time.perf_counter()
    compiled = tp.compile(prepared, path, options)
    seconds = time.perf_counter() - start
    result, reliability = bench_artifact(compiled.artifact, runs, isolate=isolate)
    build = compiled.build
    return {"ms": result.tvm.median_ms, "ort_ms": result.ort.median_ms, "compile_s": round(seconds, 1),
            "tuned": len(build.tuned_kernels), "borrowed": len(build.borrowed_kernels),
            "naive": len(build.naive_kernels), "total": build.kernels_total,
            "max_abs_err": compiled.validation.outputs[0].max_abs, **reliability}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="v1", choices=["v1", "v2"])
    parser.add_argument("--alpha", type=float, default=0.75)
    parser.add_argument("--resolution", type=int, default=192)
    parser.add_argument("--target", default=None)
    parser.add_argument("--own-minutes", type=float, default=0.0)
    parser.add_argument("--runs", type=int, default=50)
    add_output_args(parser)
    add_bench_args(parser)
    args = parser.parse_args()
    out, work = output_dirs(args)
    spec = tp.MobileNetSpec(args.arch, args.alpha, args.resolution)
    onnx_path = work / f"{spec.name}.onnx"
    tp.export_mobilenet(spec, onnx_path)
    prepared = tp.prepare(onnx_path, args.target)
    rows = {}
    with tempfile.TemporaryDirectory() as empty:
        # the writable root is an empty folder, so only the shipped logs can lend schedules
        rows["naive"] = measure(prepared, work / f"{spec.name}-naive.tvm",
                                tp.CompileOptions(logs=empty, borrow=False, defaults=False), args.runs,
                                args.isolate)
        rows["borrowed"] = measure(prepared, work / f"{spec.name}-borrowed.tvm",
                                   tp.CompileOptions(logs=empty), args.runs, args.isolate)
    if args.own_minutes > 0:
        own = Path(tempfile.mkdtemp(prefix="fast-path-own-"))
        options = tp.TuneOptions(max_trials=100000, trials_per_task=64,
                                 time_budget_s=args.own_minutes * 60, logs=str(own))
        tuned = tp.tune(prepared, options)
        rows["own-tuned"] = measure(prepared, work / f"{spec.name}-own.tvm",
                                    tp.CompileOptions(logs=str(own), shipped_logs=False, borrow=False,
                                                      defaults=False),
                                    args.runs, args.isolate)
        rows["own-tuned"]["tune"] = {"trials": tuned.trials, "seconds": round(tuned.progress.elapsed_s)}
    ort = rows["borrowed"]["ort_ms"]
    lines = [f"MobileNet {spec.name} on {prepared.target.name}, not covered by the shipped logs; "
             f"median of {args.runs} runs; ONNX Runtime {ort:.2f} ms; {time.strftime('%Y-%m-%d %H:%M')}",
             "", "| build | tuned / borrowed / naive kernels | compile s | latency ms | vs ORT | "
             "vs own-tuned |", "|---|---|---|---|---|---|"]
    for name, r in rows.items():
        own_ms = rows.get("own-tuned", {}).get("ms")
        versus = f"{r['ms'] / own_ms:.2f}x" if own_ms else "n/a"
        lines.append(f"| {name} | {r['tuned']} / {r['borrowed']} / {r['naive']} of {r['total']} | "
                     f"{r['compile_s']} | {r['ms']:.2f} | {r['ms'] / ort:.2f}x | {versus} |")
    text = "\n".join(lines) + "\n"
    name = f"fast-path-{spec.name}-{prepared.target.name}"
    write_results(out, name, text, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
