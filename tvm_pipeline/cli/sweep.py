"""``tvm-pipeline sweep --arch v1|v2``: the alpha x rho grid built, compiled, validated and timed,
reported against MobileNet's cost formulas (Markdown, JSON, PNG plots)."""

from __future__ import annotations

import argparse

from . import common


def register(sub) -> None:
    parser = sub.add_parser(
        "sweep", help="MobileNet width x resolution sweep: latency vs cost, report with plots",
        description="Build every MobileNet (alpha, resolution) variant with seeded weights, "
                    "compile it (shipped tuning logs, default schedules), validate it against ONNX "
                    "Runtime, benchmark it against ONNX Runtime in the same run, write report.md, "
                    "sweep.json and PNG plots (latency vs multiply-adds and parameters, measured "
                    "scaling vs alpha^2 rho^2, TVM/ORT per variant) into the output folder. A "
                    "variant that fails is reported with the reason and the sweep goes on; the "
                    "exit code is then 1.")
    parser.add_argument("--arch", required=True, metavar="v1|v2",
                        help="MobileNet V1 or V2")
    parser.add_argument("--alpha", default="0.25,0.5,0.75,1.0", metavar="A,B,...",
                        help="width multipliers (default 0.25,0.5,0.75,1.0)")
    parser.add_argument("--resolution", default="128,160,192,224", metavar="R,S,...",
                        help="input resolutions, each >= 32 (default 128,160,192,224)")
    common.add_target(parser)
    common.add_logs(parser)
    parser.add_argument("-o", "--output", default=None, metavar="DIR",
                        help="output folder (default sweep-ARCH-TARGET); a non-empty folder that "
                             "an earlier sweep did not write is refused. Holds the report, "
                             "models/ (ONNX) and artifacts/ (the compiled variants, kept)")
    parser.add_argument("--runs", type=int, default=50, help="timed runs per engine (default 50)")
    parser.add_argument("--warmup", type=int, default=10, help="warm-up runs (default 10)")
    parser.add_argument("--threads", type=int, default=None,
                        help="ONNX Runtime threads (default: physical cores, like TVM)")
    parser.add_argument("--weights-seed", type=int, default=0,
                        help="seed of the models' random weights (default 0)")
    parser.add_argument("--no-ort", action="store_true",
                        help="time the TVM modules only (validation still uses ONNX Runtime)")
    parser.add_argument("--ort", action="store_true",
                        help="with --rpc/--tracker: also time ONNX Runtime on this host (the ratio "
                             "then compares two machines)")
    common.add_ndk(parser)
    common.add_validation(parser)
    common.add_remote(parser)
    common.add_json(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # pylint: disable=import-outside-toplevel
    from ..api import sweep
    from ..observe.sweep import ProgressBar, SweepOptions, parse_alphas, parse_resolutions

    options = SweepOptions(
        arch=args.arch, alphas=parse_alphas(args.alpha),
        resolutions=parse_resolutions(args.resolution), target=args.target, output=args.output,
        logs=args.logs, runs=args.runs, warmup=args.warmup, threads=args.threads,
        ort=False if args.no_ort else (True if args.ort else None),
        remote=common.remote_options(args), validate_options=common.validate_options(args),
        ndk=args.ndk, seed=args.weights_seed)
    if options.remote_enabled:
        common.say(f"timing on {options.remote.describe()} (device-side time evaluator)"
                   + ("" if options.with_ort else "; ONNX Runtime left out: it would run on this "
                      "host, not on the device (add --ort to time it here anyway)"))
    progress = ProgressBar()
    try:
        result = sweep(options, progress)
    finally:
        progress.close()
    if args.json:
        common.emit_json(result.to_dict())
    else:
        print(result.format())
    if result.failed:
        common.say(f"{len(result.failed)} of {len(result.variants)} variants failed; the report "
                   "says why")
        return 1
    return 0
