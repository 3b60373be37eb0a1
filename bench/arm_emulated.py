#!/usr/bin/env python
"""Full-size MobileNet on an emulated aarch64 device over TVM RPC: cross-compile, validate, time.

Starts an emulated device with scripts/arm-device (unless --rpc names a running server or a real
board), cross-compiles MobileNet V1 1.0-224 (seeded weights) for the target, validates it on the
device against ONNX Runtime on this host (compile --rpc: the artifact is written only if it passes),
and times a few runs on the device. Emulated timings mean nothing for speed: the point is that
the full network computes the right numbers on an aarch64 TVM runtime.

    .venv/bin/python bench/arm_emulated.py [--arch v1] [--target rpi4] [--rpc HOST:PORT] [--runs 3]

Writes OUT/arm-emulated-TARGET.md and .json.
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
from tvm_pipeline.run.remote import RemoteOptions
from tvm_pipeline.run.bench import BenchOptions
from tvm_pipeline.run.validate import ValidateOptions

ROOT = Path(__file__).resolve().parents[1]


def start_device(port: int, run_dir: Path) -> dict:
    env = {**os.environ, "TVM_PIPELINE_ARM_RUN": str(run_dir)}
    subprocess.run([str(ROOT / "scripts" / "arm-device"), "start", "--port", str(port)], env=env,
                   check=True)
    return env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="v1", choices=["v1", "v2"])
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--target", default="rpi4")
    parser.add_argument("--rpc", default=None, help="a running RPC server (default: start one)")
    parser.add_argument("--port", type=int, default=9390, help="port for the emulated device")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--samples", type=int, default=2, help="validation inputs")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="arm-emulated-"))
    env = None
    if args.rpc is None:
        env = start_device(args.port, work / "run")
        args.rpc = f"127.0.0.1:{args.port}"
    remote = RemoteOptions(rpc=args.rpc, timeout_s=args.timeout)
    try:
        spec = tp.MobileNetSpec(args.arch, args.alpha, args.resolution)
        onnx_path = work / f"{spec.name}.onnx"
        cost = tp.export_mobilenet(spec, onnx_path)
        prepared = tp.prepare(onnx_path, args.target)
        start = time.perf_counter()
        compiled = tp.compile(prepared, work / f"{spec.name}-{args.target}.tvm",
                              tp.CompileOptions(remote=remote,
                                                validate_options=ValidateOptions(samples=args.samples)))
        compile_s = time.perf_counter() - start
        report = compiled.validation
        print(report.format(), file=sys.stderr)
        result = tp.bench(compiled.artifact, options=BenchOptions(warmup=1, runs=args.runs),
                          with_reference=False, remote=remote)
        out = report.outputs[0]
        row = {"model": spec.name, "target": args.target, "device": args.rpc,
               "emulated": env is not None, "params": cost.params, "macs": cost.macs,
               "kernels_tuned": len(compiled.build.tuned_kernels),
               "kernels_total": compiled.build.kernels_total,
               "compile_and_validate_s": round(compile_s, 1), "samples": report.samples,
               "max_abs": out.max_abs, "cosine": out.cosine, "top1_agreement": out.top1_agreement,
               "passed": report.passed, "device_median_ms": result.tvm.median_ms,
               "device_runs": result.tvm.runs}
    finally:
        if env is not None:
            subprocess.run([str(ROOT / "scripts" / "arm-device"), "stop"], env=env, check=False)
    dest = Path(args.out)
    dest.mkdir(parents=True, exist_ok=True)
    kind = "emulated aarch64 (QEMU user mode)" if row["emulated"] else f"device {args.rpc}"
    md = (f"# {row['model']} on {kind}, target {args.target}\n\n"
          "| model | target | kernels tuned | validation | max abs err | cosine | top-1 | "
          "device median ms | compile + validate s |\n|---|---|---|---|---|---|---|---|---|\n"
          f"| {row['model']} | {args.target} | {row['kernels_tuned']}/{row['kernels_total']} | "
          f"{'passed' if row['passed'] else 'FAILED'} ({row['samples']} inputs) | "
          f"{row['max_abs']:.1e} | {row['cosine']:.6f} | {row['top1_agreement']:.0%} | "
          f"{row['device_median_ms']:.0f} | {row['compile_and_validate_s']} |\n\n"
          "Emulated timings mean nothing for speed; they are printed to show the run happened on the "
          "device.\n")
    stem = f"arm-{'emulated' if row['emulated'] else 'device'}-{args.target}"
    (dest / f"{stem}.md").write_text(md)
    (dest / f"{stem}.json").write_text(json.dumps(row, indent=2) + "\n")
    print(md)
    return 0 if row["passed"] else 7


if __name__ == "__main__":
    sys.exit(main())
