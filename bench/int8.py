#!/usr/bin/env python
"""Benchmark: MobileNet V1 and V2 (1.0-224, batch 1) in FP32 and INT8, TVM against ONNX Runtime.

For each model, in one process run: export (seeded weights), quantize with ``tvm-pipeline
quantize`` (ONNX Runtime's static quantizer, QDQ, per-channel s8 weights, u8 activations, seeded
calibration), compile both (FP32 with the target's shipped tuning logs, INT8 with the integer
kernels and whatever the logs hold for them; each validated before it is used), then time
TVM and ONNX Runtime on each in alternating blocks (``run.bench``): ONNX Runtime runs the QDQ model
with its integer kernels. Ratios are against ONNX Runtime measured in the same run.

    .venv/bin/python bench/int8.py [--archs v1 v2] [--runs 50] [--reduce-range] [--isolate]

Writes OUT/int8-TARGET.md, .json and .png.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import tvm_pipeline as tp
from tvm_pipeline.api import quantize
from tvm_pipeline.frontend.quantize import QuantizeOptions

sys.path.insert(0, str(Path(__file__).parent))
from common import (add_bench_args, add_output_args, bench_artifact, output_dirs,  # noqa: E402  pylint: disable=wrong-import-position
                    write_results)


def run_one(arch: str, target: str | None, work: Path, args: argparse.Namespace) -> dict:
    spec = tp.MobileNetSpec(arch, 1.0, 224)
    float_path, int8_path = work / f"{spec.name}.onnx", work / f"{spec.name}.int8.onnx"
    tp.export_mobilenet(spec, float_path)
    quantize(float_path, int8_path, QuantizeOptions(samples=16, held_back=4,
                                                    reduce_range=args.reduce_range))
    row: dict = {"model": spec.name}
    for label, path in (("fp32", float_path), ("int8", int8_path)):
        prepared = tp.prepare(path, target)
        row["target"] = prepared.target.name
        start = time.perf_counter()
        compiled = tp.compile(prepared, work / f"{spec.name}-{label}.tvm")
        row[f"{label}_compile_s"] = round(time.perf_counter() - start, 1)
        if label == "int8":
            row["integer_layers"] = len(prepared.integer.integer_layers)
            row["float_layers"] = len(prepared.integer.float_layers)
        result, reliability = bench_artifact(compiled.artifact, args.runs, isolate=args.isolate)
        row[f"{label}_tvm_ms"], row[f"{label}_ort_ms"] = result.tvm.median_ms, result.ort.median_ms
        row[f"{label}_reliable"] = result.reliable
        row.update({f"{label}_{key}": value for key, value in reliability.items()})
        print(f"{spec.name} {label}: TVM {result.tvm.median_ms:.2f} ms, ORT "
              f"{result.ort.median_ms:.2f} ms", file=sys.stderr, flush=True)
    row["int8_vs_ort"] = row["int8_tvm_ms"] / row["int8_ort_ms"]
    row["int8_vs_fp32"] = row["int8_tvm_ms"] / row["fp32_tvm_ms"]
    return row


def table(rows: list[dict]) -> str:
    lines = ["| model | target | ORT FP32 ms | TVM FP32 ms | ORT INT8 ms | TVM INT8 ms | "
             "TVM INT8 / ORT INT8 | same, each engine alone | TVM INT8 / TVM FP32 | "
             "integer layers | reliable |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        alone = r.get("int8_isolated_ratio")
        lines.append(f"| {r['model']} | {r['target']} | {r['fp32_ort_ms']:.2f} | "
                     f"{r['fp32_tvm_ms']:.2f} | {r['int8_ort_ms']:.2f} | {r['int8_tvm_ms']:.2f} | "
                     f"{r['int8_vs_ort']:.2f}x | {f'{alone:.2f}x' if alone else '-'} | "
                     f"{r['int8_vs_fp32']:.2f}x | "
                     f"{r['integer_layers']}/{r['integer_layers'] + r['float_layers']} | "
                     f"{'yes' if r['fp32_reliable'] and r['int8_reliable'] else 'NO'} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

    labels = ("fp32_ort_ms", "fp32_tvm_ms", "int8_ort_ms", "int8_tvm_ms")
    names = ("ORT FP32", "TVM FP32", "ORT INT8", "TVM INT8")
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.8 / len(labels)
    for i, (key, name) in enumerate(zip(labels, names)):
        ax.bar([j + i * width for j in range(len(rows))], [r[key] for r in rows], width,
               label=name)
    ax.set_xticks([j + 1.5 * width for j in range(len(rows))], [r["model"] for r in rows])
    ax.set_ylabel("median latency (ms)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=["v1", "v2"], choices=["v1", "v2"])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--target", default=None)
    parser.add_argument("--reduce-range", action="store_true",
                        help="quantize with 7-bit weights (ONNX Runtime's AVX2 kernels then "
                             "compute the model exactly)")
    add_bench_args(parser)
    add_output_args(parser)
    args = parser.parse_args()
    out, work = output_dirs(args)
    rows = [run_one(arch, args.target, work, args) for arch in args.archs]
    text = (f"MobileNet 1.0-224, batch 1, FP32 and INT8 (QDQ, ONNX Runtime's quantizer"
            f"{', 7-bit weights' if args.reduce_range else ''}), median of {args.runs} runs after "
            f"10 warm-up, {platform.machine()} {platform.node()}, "
            f"{time.strftime('%Y-%m-%d %H:%M')}; ONNX Runtime timed in the same run\n\n"
            + table(rows) + "\n")
    target = rows[0]["target"]
    write_results(out, f"int8-{target}", text, rows)
    plot(rows, out / f"int8-{target}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
