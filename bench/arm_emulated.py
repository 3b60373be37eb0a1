#!/usr/bin/env python
"""Corpus models cross-compiled for ARM boards, validated on an emulated aarch64 device over TVM RPC,
with the machine code of every kernel inspected.

Starts an emulated device with scripts/arm-device (unless --rpc names a running server or a real
board). For each model (corpus names, seeded weights) and target: compile with the target's logs
(none for ARM: every kernel on its default schedule), validate on the device against ONNX Runtime
on this host (compile --rpc: the artifact is written only if it passes), time a few runs on the
device, and read the library's disassembly (``codegen.devicecheck.disasm``): NEON vector FMAs and
a thread-pool launch per kernel. Emulated timings mean nothing for speed (QEMU user mode on an
x86 host): they only show that the run happened on the device.

    .venv/bin/python bench/arm_emulated.py [--models mobilenet_v2,...] [--targets rpi4,rpi5]
                                           [--rpc HOST:PORT] [--runs 2]

Writes OUT/arm-emulated.md (summary), OUT/arm-emulated-kernels.md (every kernel) and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tvm_pipeline as tp
from tvm_pipeline.codegen.devicecheck.disasm import kernel_code
from tvm_pipeline.models import export_model
from tvm_pipeline.run.bench import BenchOptions
from tvm_pipeline.run.remote import RemoteOptions
from tvm_pipeline.run.validate import ValidateOptions

ROOT = Path(__file__).resolve().parents[1]
HEAVY = 0.01          # a kernel with at least this share of the model's arithmetic is heavy


def start_device(port: int, run_dir: Path) -> dict:
    env = {**os.environ, "TVM_PIPELINE_ARM_RUN": str(run_dir)}
    subprocess.run([str(ROOT / "scripts" / "arm-device"), "start", "--port", str(port)], env=env,
                   check=True)
    return env


def run_one(name: str, target: str, args, work: Path, remote: RemoteOptions) -> dict:
    onnx_path = work / f"{name}.onnx"
    if not onnx_path.exists():
        export_model(name, onnx_path, args.resolution)
    prepared = tp.prepare(onnx_path, target)
    start = time.perf_counter()
    compiled = tp.compile(prepared, work / f"{name}-{target}.tvm", tp.CompileOptions(
        remote=remote, validate_options=ValidateOptions(samples=args.samples)))
    compile_s = time.perf_counter() - start
    build, report = compiled.build, compiled.validation
    timing = tp.bench(compiled.artifact, options=BenchOptions(warmup=1, runs=args.runs),
                      with_reference=False, remote=remote)
    code = kernel_code(compiled.artifact.path / "model.so")
    kernels = []
    for kernel in sorted(build.work, key=lambda k: -build.work[k]):
        found = code.get(kernel)
        kernels.append({"kernel": kernel, "source": build.source_of(kernel),
                        "work_share": round(build.work_share([kernel]), 4),
                        "conv": "conv2d" in kernel,
                        "vector_fmas": found.vector_fmas if found else None,
                        "parallel": found.parallel if found else None})
    convs = [k for k in kernels if k["conv"]]
    heavy = [k for k in kernels if k["work_share"] >= HEAVY]
    return {"model": name, "target": target, "kernels": kernels,
            "sources": {s: len(n) for s, n in build.by_source().items()},
            "passed": report.passed, "samples": report.samples,
            "max_abs": report.outputs[0].max_abs, "top1_agreement": report.outputs[0].top1_agreement,
            "convs_with_vector_fma": sum(1 for k in convs if k["vector_fmas"]), "convs": len(convs),
            "heavy_parallel": sum(1 for k in heavy if k["parallel"]), "heavy": len(heavy),
            "device_median_ms": timing.tvm.median_ms, "compile_and_validate_s": round(compile_s, 1)}


def summary(rows: list[dict], kind: str) -> str:
    lines = [f"# Corpus models on {kind}, zero tuning ({time.strftime('%Y-%m-%d %H:%M')})", "",
             "| model | target | kernels tuned/borrowed/default/naive | validation on device | "
             "max abs err | convs with NEON vector FMAs | heavy kernels (>= 1% of the work) "
             "launching threads | emulated ms (not a speed claim) | compile + validate s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s = r["sources"]
        lines.append(f"| {r['model']} | {r['target']} | {s['tuned']}/{s['borrowed']}/{s['default']}/"
                     f"{s['naive']} | {'passed' if r['passed'] else 'FAILED'} ({r['samples']} "
                     f"inputs) | {r['max_abs']:.1e} | {r['convs_with_vector_fma']}/{r['convs']} | "
                     f"{r['heavy_parallel']}/{r['heavy']} | {r['device_median_ms']:.0f} | "
                     f"{r['compile_and_validate_s']} |")
    lines += ["", "Emulated timings mean nothing for speed (QEMU user mode on an x86 host); ONNX "
              "Runtime's aarch64 wheel was not run under the same emulator, so no ratio is given."]
    return "\n".join(lines) + "\n"


def kernel_table(rows: list[dict]) -> str:
    lines = ["# Every kernel's machine code (aarch64 disassembly)", ""]
    for r in rows:
        lines += [f"## {r['model']} for {r['target']}", "",
                  "| kernel | schedule | share of work | NEON vector FMAs | thread launch |",
                  "|---|---|---|---|---|"]
        lines += [f"| {k['kernel']} | {k['source']} | {100 * k['work_share']:.1f}% | "
                  f"{k['vector_fmas']} | {'yes' if k['parallel'] else 'no'} |" for k in r["kernels"]]
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="mobilenet_v2,mobilenet_v3_small,resnet18")
    parser.add_argument("--targets", default="rpi4,rpi5")
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--rpc", default=None, help="a running RPC server (default: start one)")
    parser.add_argument("--port", type=int, default=9390, help="port for the emulated device")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--samples", type=int, default=1, help="validation inputs")
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="arm-emulated-"))
    env = None
    if args.rpc is None:
        env = start_device(args.port, work / "run")
        args.rpc = f"127.0.0.1:{args.port}"
    remote = RemoteOptions(rpc=args.rpc, timeout_s=args.timeout)
    try:
        rows = [run_one(name, target, args, work, remote) for target in args.targets.split(",")
                for name in args.models.split(",")]
    finally:
        if env is not None:
            subprocess.run([str(ROOT / "scripts" / "arm-device"), "stop"], env=env, check=False)
    dest = Path(args.out)
    dest.mkdir(parents=True, exist_ok=True)
    kind = "an emulated aarch64 device (QEMU user mode)" if env is not None else f"device {args.rpc}"
    text = summary(rows, kind)
    (dest / "arm-emulated.md").write_text(text)
    (dest / "arm-emulated-kernels.md").write_text(kernel_table(rows))
    (dest / "arm-emulated.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(text)
    return 0 if all(r["passed"] for r in rows) else 7


if __name__ == "__main__":
    sys.exit(main())
