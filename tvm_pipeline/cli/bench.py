"""``tvm-pipeline bench ARTIFACT``: latency of the module and of ONNX Runtime, same run."""

from __future__ import annotations

import argparse

from . import common
from ..errors import UsageError


def register(sub) -> None:
    parser = sub.add_parser("bench", help="benchmark an artifact against ONNX Runtime")
    common.add_reference(parser)
    parser.add_argument("--runs", type=int, default=50, help="timed runs (default 50)")
    parser.add_argument("--warmup", type=int, default=10, help="warm-up runs (default 10)")
    parser.add_argument("--threads", type=int, default=None,
                        help="ONNX Runtime threads (default: physical cores, like TVM)")
    parser.add_argument("--no-ort", action="store_true", help="time the TVM module only")
    parser.add_argument("--isolate", action="store_true",
                        help="also time each engine alone, in a fresh process of its own (TVM, "
                             "then ONNX Runtime), and report both medians; the result is flagged "
                             "unreliable when they differ by more than 10%% for either engine")
    parser.add_argument("--ort", action="store_true",
                        help="with --rpc/--tracker: also time ONNX Runtime on this host (the ratio "
                             "then compares two machines)")
    common.add_remote(parser)
    common.add_json(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..api import bench  # pylint: disable=import-outside-toplevel
    from ..run.bench import BenchOptions  # pylint: disable=import-outside-toplevel

    if args.runs < 1 or args.warmup < 0:
        raise UsageError("--runs must be >= 1 and --warmup >= 0.")
    remote = common.remote_options(args)
    with_ort = not args.no_ort and (args.ort or not remote.enabled)
    if remote.enabled:
        common.say(f"timing on {remote.describe()} (device-side time evaluator)"
                   + ("" if with_ort else "; ONNX Runtime left out: it would run on this host, "
                      "not on the device (add --ort to time it here anyway)"))
    if args.isolate:
        common.say("timing the TVM module" + (", then ONNX Runtime, each" if with_ort else "")
                   + " alone in a fresh process, then in this process")
    result = bench(args.artifact, args.model,
                   BenchOptions(warmup=args.warmup, runs=args.runs, threads=args.threads,
                                isolate=args.isolate),
                   with_reference=with_ort, remote=remote)
    if args.json:
        if not result.reliable:
            common.say(f"UNRELIABLE: {result.reason}")
        common.emit_json(result.to_dict())
    else:
        print(result.format())
    return 0
