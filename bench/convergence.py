#!/usr/bin/env python
"""Benchmark: tuning convergence on a model the shipped logs do not cover. Latency of the whole
model vs tuning wall time, warm (what ``tune`` does) against cold (stock MetaSchedule's start).

    .venv/bin/python bench/convergence.py [--arch mnasnet1_0] [--minutes 10 | warm=30,cold=10]
        [--modes warm,cold]
        [--checkpoints 2,5,10] [--runs 50] [--isolate] [--resume] [--out bench/results]

``--arch`` is a corpus name (``tvm-pipeline models list``; v1/v2 for MobileNet V1/V2) at 224 px;
the default, ``mnasnet1_0``, is the corpus model kept out of the shipped logs on purpose.

For each mode, from an empty tuning-log root of its own (WORK/convergence-ARCH-MODE-logs):

* ``warm``: ``tune`` as a user runs it: every task seeded with its checked default schedule and the
  nearest shipped kernel's schedule, the cost model trained on the shipped logs' measurements;
  checkpoints are built as ``compile`` builds by default (records so far, then the shipped logs,
  borrowed schedules, default schedules);
* ``cold``: ``tune --cold`` (no seeds, untrained cost model: stock MetaSchedule's start), built from
  the records so far only (others default schedules: the shipped logs left out).

Tuning runs ``--minutes`` of wall time per mode (one number, or MODE=MINUTES pairs), start-up (import, seeding) included; after every
measured batch the wall time and the records held are noted. Each checkpoint is then built from
the records written by then (a prefix of the record file), validated against ONNX Runtime, and
timed against it in the same run. Writes OUT/convergence-ARCH-TARGET.md (table), .json and .png.
``--resume`` skips tuning and builds the checkpoints of the last run's timelines.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import tvm_pipeline as tp
from tvm_pipeline.models import export_model
from tvm_pipeline.tuning import database as db

sys.path.insert(0, str(Path(__file__).parent))
from common import add_bench_args, add_output_args, bench_artifact, output_dirs, write_results  # noqa: E402  pylint: disable=wrong-import-position

MODES = {"warm": "tune (warm start from the shipped logs)",
         "cold": "tune --cold (stock MetaSchedule start)"}
GOALS = (1.2, 1.0)      # x ONNX Runtime


def prefix_root(folder: Path, records: int, into: Path) -> Path:
    """A log root whose target database holds the first ``records`` records of ``folder``."""
    dest = into / folder.name
    dest.mkdir(parents=True)
    shutil.copy(folder / db.WORKLOAD_FILE, dest / db.WORKLOAD_FILE)
    with (folder / db.RECORD_FILE).open() as src, (dest / db.RECORD_FILE).open("w") as out:
        for i, line in enumerate(src):
            if i >= records:
                break
            out.write(line)
    return into


def compile_options(mode: str, root: Path) -> tp.CompileOptions:
    if mode == "warm":
        return tp.CompileOptions(logs=str(root))
    return tp.CompileOptions(logs=str(root), shipped_logs=False, borrow=False)


def export(arch: str, work: Path) -> Path:
    name = {"v1": "mobilenet_v1", "v2": "mobilenet_v2"}.get(arch, arch)
    path = work / f"{name}_224.onnx"
    export_model(name, path)
    return path


def tune_mode(prepared, mode: str, root: Path, minutes: float, args) -> dict:
    """Tune from an empty root for ``minutes``; the timeline of (seconds, records)."""
    shutil.rmtree(root, ignore_errors=True)
    folder = root / prepared.target.name
    timeline: list[tuple[float, int]] = [(0.0, 0)]
    start = time.perf_counter()

    def report(progress) -> None:
        timeline.append((time.perf_counter() - start, db.count_records(folder)))
        print(f"[{mode} {timeline[-1][0]:7.1f}s] {progress.trials} trials, estimated "
              f"{progress.estimated_ms if progress.estimated_ms is not None else float('nan'):.2f} ms",
              file=sys.stderr, flush=True)

    options = tp.TuneOptions(trials_per_task=args.trials_per_task,
                             time_budget_s=minutes * 60, logs=str(root),
                             warm_start=mode == "warm", seed=args.seed)
    result = tp.tune(prepared, options, report)
    wall = time.perf_counter() - start
    timeline.append((wall, db.count_records(folder)))
    return {"timeline": timeline, "tune": result.to_dict(), "wall_s": wall, "minutes": minutes,
            "started_from": result.progress.started_from}


def build_rows(prepared, mode: str, root: Path, run: dict, args, work: Path) -> list[dict]:
    folder = root / prepared.target.name
    wall = run["wall_s"]
    rows = []
    for minutes in sorted({float(m) for m in args.checkpoints.split(",")} | {wall / 60}):
        if minutes * 60 > wall + 1:
            continue
        records = max(n for t, n in run["timeline"] if t <= minutes * 60 + 1e-6)
        with tempfile.TemporaryDirectory() as tmp:
            built = tp.compile(prepared, work / f"convergence-{mode}.tvm",
                               compile_options(mode, prefix_root(folder, records, Path(tmp))))
        result, reliability = bench_artifact(built.artifact, args.runs, isolate=args.isolate)
        b = built.build
        row = {"mode": mode, "minutes": round(minutes, 2), "records": records,
               "tvm_ms": result.tvm.median_ms, "ort_ms": result.ort.median_ms,
               "ratio": result.tvm.median_ms / result.ort.median_ms,
               "kernels_total": b.kernels_total, "kernels_tuned": len(b.tuned_kernels),
               "kernels_borrowed": len(b.borrowed_kernels), "kernels_default": len(b.default_kernels),
               "max_abs_err": built.validation.outputs[0].max_abs, **reliability}
        rows.append(row)
        print(f"{mode} {row['minutes']:6.2f} min: {records} records, {row['tvm_ms']:.2f} ms, "
              f"{row['ratio']:.2f}x ORT", file=sys.stderr, flush=True)
    return rows


def plot(rows: list[dict], ort_ms: float, title: str, path: Path) -> None:
    import matplotlib  # pylint: disable=import-outside-toplevel

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for mode, style in (("warm", "o-"), ("cold", "s--")):
        mine = [r for r in rows if r["mode"] == mode]
        if mine:
            ax.plot([r["minutes"] for r in mine], [r["tvm_ms"] for r in mine], style,
                    label=f"TVM, {MODES[mode]}")
    ax.axhline(ort_ms, color="tab:red", ls=":", label=f"ONNX Runtime ({ort_ms:.2f} ms)")
    ax.axhline(GOALS[0] * ort_ms, color="tab:red", ls="--", alpha=0.4,
               label=f"{GOALS[0]:g}x ONNX Runtime")
    ax.set_yscale("log")
    ax.set_xlabel("tuning wall time, start-up included (minutes)")
    ax.set_ylabel("latency per image (ms, log scale)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def table(rows: list[dict], runs: dict, args, name: str, target: str) -> str:
    budgets = ", ".join(f"{mode} {run.get('minutes', 0):g}" for mode, run in runs.items())
    lines = [f"{name} on {target}, tuned from an empty root for up to ({budgets}) min; "
             f"median of {args.runs} runs per build, ONNX Runtime timed in the same run; "
             f"{time.strftime('%Y-%m-%d %H:%M')}", ""]
    for mode, run in runs.items():
        tuned = run["tune"]
        lines.append(f"- {mode} (`{MODES[mode]}`): {tuned['trials']} trials in {run['wall_s']:.0f} "
                     f"s wall, start-up included ({tuned['trials'] / run['wall_s']:.2f} trials/s); "
                     + run["started_from"].replace("\n", "; "))
    lines += ["", "| mode | wall time (min) | records | kernels tuned / borrowed / default | "
                  "TVM ms | ORT ms | vs ORT |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['mode']} | {r['minutes']:.1f} | {r['records']} | {r['kernels_tuned']} / "
                     f"{r['kernels_borrowed']} / {r['kernels_default']} of {r['kernels_total']} | "
                     f"{r['tvm_ms']:.2f} | {r['ort_ms']:.2f} | {r['ratio']:.2f}x |")
    lines.append("")
    for mode in runs:
        for goal in GOALS:
            hit = next((r["minutes"] for r in rows if r["mode"] == mode and r["ratio"] <= goal), None)
            lines.append(f"- {mode}: <= {goal:g}x ONNX Runtime "
                         + (f"at the {hit:.1f}-minute checkpoint" if hit is not None
                            else "not reached at any checkpoint"))
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="mnasnet1_0")
    parser.add_argument("--target", default=None)
    parser.add_argument("--modes", default="warm,cold")
    parser.add_argument("--minutes", default="10",
                        help="tuning wall time per mode: one number, or pairs as warm=30,cold=10")
    parser.add_argument("--trials-per-task", type=int, default=2000)
    parser.add_argument("--checkpoints", default="2,5,10",
                        help="minutes of wall time at which the model is built and timed")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--resume", action="store_true",
                        help="skip tuning: build the checkpoints of the last run's timelines")
    add_output_args(parser)
    add_bench_args(parser)
    args = parser.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    if not modes or any(m not in MODES for m in modes):
        parser.error(f"--modes: a comma-separated list of {', '.join(MODES)}")
    minutes = minutes_per_mode(args.minutes, modes)
    if minutes is None:
        parser.error("--minutes: a number of minutes, or MODE=MINUTES for every mode of --modes")
    out, work = output_dirs(args)
    onnx_path = export(args.arch, work)
    prepared = tp.prepare(onnx_path, args.target)
    name = f"convergence-{onnx_path.stem}-{prepared.target.name}"
    runs, rows = {}, []
    for mode in modes:
        root = work / f"{name}-{mode}-logs"
        saved = work / f"{name}-{mode}-timeline.json"
        if args.resume:
            runs[mode] = json.loads(saved.read_text())
        else:
            runs[mode] = tune_mode(prepared, mode, root, minutes[mode], args)
            saved.write_text(json.dumps(runs[mode]) + "\n")
    for mode in modes:      # builds after all tuning: no build shares the cores with a tuning run
        rows += build_rows(prepared, mode, work / f"{name}-{mode}-logs", runs[mode], args, work)
    ort_ms = sorted(r["ort_ms"] for r in rows)[len(rows) // 2]
    plot(rows, ort_ms, f"{onnx_path.stem} on {prepared.target.name}", out / f"{name}.png")
    write_results(out, name, table(rows, runs, args, onnx_path.stem, prepared.target.name),
                  {"rows": rows, "runs": runs})
    return 0


def minutes_per_mode(text: str, modes: list[str]) -> dict[str, float] | None:
    """``--minutes``: "10" for every mode, or "warm=30,cold=10"; None when it does not parse."""
    try:
        if "=" not in text:
            return dict.fromkeys(modes, float(text))
        pairs = {k.strip(): float(v) for k, v in (p.split("=") for p in text.split(","))}
    except ValueError:
        return None
    return {m: pairs[m] for m in modes} if all(m in pairs for m in modes) else None


if __name__ == "__main__":
    sys.exit(main())
