#!/usr/bin/env python
"""Benchmark: tuning convergence. Latency of the whole model vs tuning wall time, from an empty
database, on this machine.

    .venv/bin/python bench/convergence.py [--arch v2] [--minutes 30] [--logs DIR] [--borrow]
        [--out bench/results]

1. Tune MobileNet ARCH 1.0-224 for the target for at most MINUTES, recording after every measured
   batch the wall time and how many records the database holds (``tp.tune``'s progress callback).
   ``--logs`` is the tuning-log root (default: a fresh temporary one, i.e. an empty database; a
   root whose target database has no record of this model's kernels is just as empty for it).
2. For each checkpoint (minutes), build the model from the records written by then (a prefix of the
   record file; the shipped logs are left out), validate it against ONNX Runtime, and time it
   (median of ``--runs`` after warm-up): kernels not tuned yet stay naive, so this is the tuning
   curve itself. With ``--borrow``, also build as ``compile`` does by default (kernels not tuned
   yet borrow the schedules of similar tuned ones): what a user gets at that point. Also time ONNX
   Runtime and the build from the shipped logs.
3. Write OUT/convergence-ARCH-TARGET.md (table), .json, and .png (latency vs wall time).
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
from tvm_pipeline.tuning import database as db

sys.path.insert(0, str(Path(__file__).parent))
from common import add_bench_args, add_output_args, bench_artifact, output_dirs, write_results  # noqa: E402  pylint: disable=wrong-import-position


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


def timed_build(prepared, path: Path, options: tp.CompileOptions, runs: int,
                isolate: bool = False) -> dict:
    compiled = tp.compile(prepared, path, options)
    result, reliability = bench_artifact(compiled.artifact, runs, isolate=isolate)
    return {"tvm_ms": result.tvm.median_ms, "ort_ms": result.ort.median_ms,
            "kernels_tuned": len(compiled.build.tuned_kernels),
            "kernels_total": compiled.build.kernels_total,
            "kernels_borrowed": len(compiled.build.borrowed_kernels),
            "max_abs_err": compiled.validation.outputs[0].max_abs, **reliability}


def plot(rows: list[dict], shipped_ms: float, ort_ms: float, title: str, path: Path) -> None:
    import matplotlib  # pylint: disable=import-outside-toplevel

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot([r["minutes"] for r in rows], [r["tvm_ms"] for r in rows], "o-",
            label="TVM, tuned kernels so far (others naive)")
    if any("borrow_ms" in r for r in rows):
        ax.plot([r["minutes"] for r in rows if "borrow_ms" in r],
                [r["borrow_ms"] for r in rows if "borrow_ms" in r], "s-", color="tab:purple",
                label="TVM as compile builds it (others borrow)")
    ax.axhline(shipped_ms, color="tab:green", ls="--", label=f"shipped logs ({shipped_ms:.1f} ms)")
    ax.axhline(ort_ms, color="tab:red", ls=":", label=f"ONNX Runtime ({ort_ms:.1f} ms)")
    ax.set_yscale("log")
    ax.set_xlabel("tuning wall time (minutes)")
    ax.set_ylabel("latency per image (ms, log scale)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="v2", choices=["v1", "v2"])
    parser.add_argument("--target", default=None)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--trials-per-task", type=int, default=64)
    parser.add_argument("--checkpoints", default="2,5,10,15,20,25,30",
                        help="minutes at which the model is built and timed")
    parser.add_argument("--logs", default=None, help="tuning-log root (default: a fresh empty one)")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--borrow", action="store_true",
                        help="also build each checkpoint with borrowed schedules (compile's default)")
    parser.add_argument("--resume", action="store_true",
                        help="skip tuning: build and time the checkpoints of the last run's timeline "
                             "(WORK/convergence-ARCH-TARGET-timeline.json; pass the same --logs)")
    add_output_args(parser)
    add_bench_args(parser)
    args = parser.parse_args()
    out, work = output_dirs(args)
    logs = Path(args.logs) if args.logs else Path(tempfile.mkdtemp(prefix="convergence-logs-"))

    spec = tp.MobileNetSpec(args.arch, 1.0, 224)
    onnx_path = work / f"{spec.name}.onnx"
    tp.export_mobilenet(spec, onnx_path)
    prepared = tp.prepare(onnx_path, args.target)
    folder = logs / prepared.target.name
    start_records = db.count_records(folder)
    timeline: list[tuple[float, int]] = [(0.0, start_records)]

    def report(progress) -> None:
        timeline.append((progress.elapsed_s, db.count_records(folder)))
        print(f"[{progress.elapsed_s:7.1f}s] {progress.trials} trials, estimated "
              f"{progress.estimated_ms if progress.estimated_ms is not None else float('nan'):.2f} ms",
              file=sys.stderr, flush=True)

    timeline_path = work / f"convergence-{args.arch}-{prepared.target.name}-timeline.json"
    if args.resume:
        # a run whose tuning finished but whose builds did not: reuse its timeline
        saved = json.loads(timeline_path.read_text())
        timeline, tune_summary = [tuple(p) for p in saved["timeline"]], saved["tune"]
        start_records = timeline[0][1]
    else:
        tuned = tp.tune(prepared, tp.TuneOptions(max_trials=100000,
                                                 trials_per_task=args.trials_per_task,
                                                 time_budget_s=args.minutes * 60, logs=str(logs),
                                                 search=_fast_search()),
                        report)
        tune_summary = tuned.to_dict()
        timeline_path.write_text(json.dumps({"timeline": timeline, "tune": tune_summary}) + "\n")
    seconds = tune_summary["seconds"]
    trials = tune_summary["trials"]
    rows = []
    checkpoints = sorted({float(m) for m in args.checkpoints.split(",")} | {seconds / 60})
    for minutes in checkpoints:
        if minutes * 60 > seconds + 1 and minutes != checkpoints[-1]:
            continue
        records = max(n for t, n in timeline if t <= minutes * 60 + 1e-6)
        with tempfile.TemporaryDirectory() as tmp:
            root = prefix_root(folder, records, Path(tmp))
            row = timed_build(prepared, work / f"{spec.name}-conv.tvm",
                              tp.CompileOptions(logs=str(root), shipped_logs=False,
                                                borrow=False), args.runs, args.isolate)
            if args.borrow and row["kernels_tuned"] < row["kernels_total"]:
                borrowed = timed_build(prepared, work / f"{spec.name}-conv.tvm",
                                       tp.CompileOptions(logs=str(root), shipped_logs=False),
                                       args.runs, args.isolate)
                row.update(borrow_ms=borrowed["tvm_ms"], kernels_borrowed=borrowed["kernels_borrowed"])
            elif args.borrow:
                row.update(borrow_ms=row["tvm_ms"], kernels_borrowed=0)
        row.update(minutes=round(min(minutes, seconds / 60), 2), records=records - start_records)
        rows.append(row)
        print(f"{row['minutes']:6.2f} min: {row['records']} trials, {row['tvm_ms']:.2f} ms "
              f"({row['kernels_tuned']}/{row['kernels_total']} kernels tuned)", file=sys.stderr,
              flush=True)
    shipped = timed_build(prepared, work / f"{spec.name}-shipped.tvm", tp.CompileOptions(), args.runs,
                          args.isolate)
    ort_ms = shipped["ort_ms"]
    name = f"convergence-{args.arch}-{prepared.target.name}"
    lines = [f"MobileNet {spec.name}, target {prepared.target.name}: tuning from an empty database "
             f"for up to {args.minutes:g} min ({trials} trials in {seconds:.0f} s, "
             f"{trials / seconds:.2f} trials/s, stopped by {tune_summary['stopped_by']}); "
             f"median of {args.runs} runs per build; {time.strftime('%Y-%m-%d %H:%M')}", "",
             "| wall time (min) | trials | kernels tuned | latency ms (others naive) | vs shipped logs "
             "| vs ORT |" + (" compile default: others borrow, ms | kernels borrowed | vs shipped |"
                             if args.borrow else ""),
             "|---|---|---|---|---|---|" + ("---|---|---|" if args.borrow else "")]
    for r in rows:
        line = (f"| {r['minutes']:.1f} | {r['records']} | {r['kernels_tuned']}/{r['kernels_total']} "
                f"| {r['tvm_ms']:.2f} | {r['tvm_ms'] / shipped['tvm_ms']:.2f}x | "
                f"{r['tvm_ms'] / ort_ms:.2f}x |")
        if "borrow_ms" in r:
            line += (f" {r['borrow_ms']:.2f} | {r['kernels_borrowed']} | "
                     f"{r['borrow_ms'] / shipped['tvm_ms']:.2f}x |")
        lines.append(line)
    lines += ["", f"Shipped logs: {shipped['tvm_ms']:.2f} ms ({shipped['kernels_tuned']}/"
                  f"{shipped['kernels_total']} kernels tuned); ONNX Runtime: {ort_ms:.2f} ms."]
    text = "\n".join(lines) + "\n"
    plot(rows, shipped["tvm_ms"], ort_ms, f"{spec.name} on {prepared.target.name}",
         out / f"{name}.png")
    write_results(out, name, text, {"rows": rows, "shipped": shipped, "timeline": timeline,
                                    "tune": tune_summary})
    return 0


def _fast_search():
    from tvm_pipeline.tuning.tune import SEARCH_PRESETS  # pylint: disable=import-outside-toplevel

    return SEARCH_PRESETS["fast"]


if __name__ == "__main__":
    sys.exit(main())
