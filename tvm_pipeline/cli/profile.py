"""``tvm-pipeline profile ARTIFACT``: time per kernel, mapped to ONNX nodes, beside ONNX Runtime."""

from __future__ import annotations

import argparse

from . import common


def register(sub) -> None:
    parser = sub.add_parser("profile", help="time per kernel, mapped to the ONNX nodes it computes",
                            description="Time each compiled kernel (median over --runs), map it to "
                            "the ONNX nodes it computes, and show ONNX Runtime's own per-node "
                            "profile of the same model by op type. Here, kernels are timed inside "
                            "the model; on a device (--rpc/--tracker), one by one.")
    common.add_reference(parser)
    parser.add_argument("--runs", type=int, default=30, help="timed runs (default 30)")
    parser.add_argument("--warmup", type=int, default=5, help="warm-up runs (default 5)")
    parser.add_argument("--top", type=int, default=20, help="kernels listed (default 20)")
    parser.add_argument("--threads", type=int, default=None,
                        help="ONNX Runtime threads (default: physical cores, like TVM)")
    parser.add_argument("--no-ort", action="store_true", help="leave ONNX Runtime's profile out")
    common.add_remote(parser)
    common.add_json(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..api import profile  # pylint: disable=import-outside-toplevel
    from ..observe.profile import ProfileOptions  # pylint: disable=import-outside-toplevel

    remote = common.remote_options(args)
    with_ort = not args.no_ort and not remote.enabled
    result = profile(args.artifact, args.model, ProfileOptions(
        runs=args.runs, warmup=args.warmup, threads=args.threads, with_ort=with_ort),
        remote=remote)
    if args.json:
        common.emit_json(result.to_dict())
    else:
        print(result.format(top=max(args.top, 1)))
    return 0
