"""``tvm-pipeline demo``: the README's main job, end to end on this machine.

Export MobileNet (default V2 1.0-224), compile it for this host with whatever tuning database
``tuned_logs/`` holds for the detected target, validate against ONNX Runtime (compile refuses to
write an artifact that disagrees), benchmark against ONNX Runtime, and print one table.
"""

from __future__ import annotations

import argparse

from . import common


def register(sub) -> None:
    parser = sub.add_parser("demo", help="export, compile, validate and benchmark a MobileNet here")
    parser.add_argument("--arch", choices=["v1", "v2"], default="v2")
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--workdir", default="demo-out", help="where files go (default demo-out/)")
    parser.add_argument("--runs", type=int, default=50, help="timed runs per runtime (default 50)")
    common.add_target(parser)
    common.add_logs(parser)
    common.add_json(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # pylint: disable=import-outside-toplevel
    from ..api import CompileOptions, bench, compile as compile_model, prepare
    from ..run.bench import BenchOptions
    from ..models import MobileNetSpec, export_mobilenet
    from ..paths import check_folder, writing

    work = check_folder(args.workdir, "the demo's files", "--workdir")
    with writing(work, "the demo's files", "--workdir"):
        work.mkdir(parents=True, exist_ok=True)
    spec = MobileNetSpec(arch=args.arch, alpha=args.alpha, resolution=args.resolution)
    spec.validate()
    onnx_path = work / f"{spec.name}.onnx"
    cost = export_mobilenet(spec, onnx_path)
    common.say(f"[1/4] exported {onnx_path} ({cost.params / 1e6:.2f} M params, "
               f"{cost.macs / 1e6:.0f} M MACs)")
    prepared = prepare(onnx_path, args.target)
    common.say(f"[2/4] compiling for {prepared.target.name} ({len(prepared.kernels)} kernels) "
               "and validating against ONNX Runtime")
    compiled = compile_model(prepared, work / f"{spec.name}-{prepared.target.name}.tvm",
                             CompileOptions(logs=args.logs))
    common.say(f"      {compiled.build.summary()}")
    common.say(f"[3/4] validated: {'PASS' if compiled.validation.passed else 'FAIL'}")
    common.say(f"[4/4] benchmarking ({args.runs} runs each, after warm-up)")
    result = bench(compiled.artifact, options=BenchOptions(runs=args.runs))
    out = compiled.validation.outputs[0]
    row = {"model": spec.name, "target": prepared.target.name,
           "kernels_tuned": len(compiled.build.tuned_kernels),
           "kernels_total": compiled.build.kernels_total,
           "max_abs_err": out.max_abs, "top1_agreement": out.top1_agreement,
           "compile_s": round(compiled.seconds, 1), **result.to_dict(),
           "artifact": str(compiled.artifact.path)}
    if args.json:
        common.emit_json(row)
        return 0
    print()
    print(f"{'model':<22} {'target':<11} {'tuned':>7} {'max|err|':>9} {'compile':>8} "
          f"{'TVM ms':>8} {'ORT ms':>8} {'TVM/ORT':>8}")
    print(f"{row['model']:<22} {row['target']:<11} "
          f"{row['kernels_tuned']:>3}/{row['kernels_total']:<3} {row['max_abs_err']:>9.1e} "
          f"{row['compile_s']:>7.1f}s {row['tvm_median_ms']:>8.2f} {row['ort_median_ms']:>8.2f} "
          f"{row['ratio']:>7.2f}x")
    print(f"\nartifact: {row['artifact']}  (median latency, batch 1, FP32, {result.threads} threads)")
    return 0
