#!/usr/bin/env python
"""Benchmark: MobileNet V1 and V2 (1.0-224, batch 1, FP32) untuned vs tuned vs ONNX Runtime.

For each model, in one process run: export (seeded weights), compile untuned and with the tuning
database of the target (each build validated against ONNX Runtime before it is used), then time
ONNX Runtime, the untuned module and the tuned module on the same input, and write a table. The
machine's peak FP32 throughput (an SGEMM, ``peak.py``) is measured in the same run, and each row
states the tuned module's share of it (2 x multiply-adds / latency / peak).

    .venv/bin/python bench/compare_mobilenets.py [--archs v1 v2] [--runs 50] [--out bench/results]

Writes OUT/mobilenets-TARGET.md and .json. Ratios are against ONNX Runtime measured in the same run.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import tvm_pipeline as tp
from tvm_pipeline.target.spec import physical_cores

sys.path.insert(0, str(Path(__file__).parent))
from common import add_bench_args, add_output_args, bench_artifact, output_dirs, write_results  # noqa: E402  pylint: disable=wrong-import-position
from peak import peak_gflops  # noqa: E402  pylint: disable=wrong-import-position


def run_one(arch: str, target: str | None, work: Path, runs: int, logs: str | None,
            isolate: bool = False) -> dict:
    spec = tp.MobileNetSpec(arch, 1.0, 224)
    onnx_path = work / f"{spec.name}.onnx"
    cost = tp.export_mobilenet(spec, onnx_path)
    prepared = tp.prepare(onnx_path, target)
    row = {"model": spec.name, "target": prepared.target.name, "params": cost.params,
           "macs": cost.macs}
    for label, use_db in (("untuned", False), ("tuned", True)):
        start = time.perf_counter()
        compiled = tp.compile(prepared, work / f"{spec.name}-{label}.tvm",
                              tp.CompileOptions(logs=logs, use_database=use_db))
        row[f"{label}_compile_s"] = round(time.perf_counter() - start, 1)
        row[f"{label}_kernels_tuned"] = len(compiled.build.tuned_kernels)
        row[f"{label}_kernels_total"] = compiled.build.kernels_total
        row[f"{label}_max_abs_err"] = compiled.validation.outputs[0].max_abs
        result, reliability = bench_artifact(compiled.artifact, runs, isolate=isolate)
        row.update({f"{label}_{key}": value for key, value in reliability.items()})
        row[f"{label}_ms"] = result.tvm.median_ms
        row[f"{label}_ort_ms"] = result.ort.median_ms   # ORT timed in the same block as this module
        row[f"{label}_ratio"] = result.ratio
        print(f"{spec.name} {label}: {result.tvm.median_ms:.2f} ms, ORT {result.ort.median_ms:.2f} ms, "
              f"ratio {result.ratio:.2f}", file=sys.stderr, flush=True)
    return row


def table(rows: list[dict]) -> str:
    lines = ["| model | target | ORT ms | untuned ms | untuned/ORT | tuned ms | tuned/ORT | "
             "tuned GFLOP/s | share of peak | kernels tuned | max abs err (tuned) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['target']} | {r['tuned_ort_ms']:.2f} | {r['untuned_ms']:.1f} | "
                     f"{r['untuned_ratio']:.1f}x | {r['tuned_ms']:.2f} | {r['tuned_ratio']:.2f}x | "
                     f"{r['tuned_gflops']:.0f} | {100 * r['tuned_share_of_peak']:.0f}% | "
                     f"{r['tuned_kernels_tuned']}/{r['tuned_kernels_total']} | "
                     f"{r['tuned_max_abs_err']:.1e} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=["v1", "v2"], choices=["v1", "v2"])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--target", default=None)
    parser.add_argument("--logs", default=None, help="tuning-log root (default: the shipped one)")
    add_output_args(parser)
    add_bench_args(parser)
    args = parser.parse_args()
    out, work = output_dirs(args)
    peak = peak_gflops(physical_cores())
    rows = [run_one(arch, args.target, work, args.runs, args.logs, args.isolate) for arch in args.archs]
    for row in rows:
        row["peak_gflops"] = round(peak, 1)
        row["tuned_gflops"] = 2 * row["macs"] / (row["tuned_ms"] / 1e3) / 1e9
        row["tuned_share_of_peak"] = row["tuned_gflops"] / peak
    text = (f"MobileNet 1.0-224, batch 1, FP32, median of {args.runs} runs after 10 warm-up, "
            f"{platform.machine()} {platform.node()}, {time.strftime('%Y-%m-%d %H:%M')}; machine peak "
            f"FP32 {peak:.0f} GFLOP/s (SGEMM, {physical_cores()} threads, same run)\n\n"
            + table(rows) + "\n")
    target = rows[0]["target"]
    write_results(out, f"mobilenets-{target}", text, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
