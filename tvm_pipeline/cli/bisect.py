"""``tvm-pipeline bisect MODEL``: the first ONNX node whose TVM output diverges, and a reproducer."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import common
from ..errors import ValidationError


def register(sub) -> None:
    parser = sub.add_parser(
        "bisect", help="find the first ONNX node whose TVM output diverges from ONNX Runtime",
        description="Compile the model for the target with every intermediate tensor exposed, run "
                    "it and ONNX Runtime on the same input, compare tensors in graph order, and "
                    "report the first that differs beyond the tolerances: node, op, fused kernel, "
                    "numbers. Writes the node alone as a reproducer (model, inputs, replay "
                    "command). Exit 0: no divergence; 7: a divergence was found (reported).")
    common.add_model(parser)
    common.add_target(parser)
    common.add_logs(parser)
    parser.add_argument("--untuned", action="store_true", help="ignore tuning databases")
    parser.add_argument("--no-defaults", action="store_true",
                        help="no default schedules (kernels nothing tuned stay naive loops)")
    parser.add_argument("--feeds", default=None, metavar="DIR",
                        help="inputs as DIR/NAME.npy (a reproducer's folder) instead of seeded ones")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random input (default 0)")
    common.add_tolerances(parser)
    parser.add_argument("--repro", default=None, metavar="DIR",
                        help="where the reproducer goes (default: MODEL-bisect/ in the current dir)")
    parser.add_argument("--no-repro", action="store_true", help="write no reproducer")
    common.add_ndk(parser)
    common.add_remote(parser)
    common.add_json(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..api import CompileOptions, bisect  # pylint: disable=import-outside-toplevel
    from ..frontend.load import load  # pylint: disable=import-outside-toplevel
    from ..observe.bisect import BisectOptions, read_feeds  # pylint: disable=import-outside-toplevel
    from ..run.validate import Tolerances  # pylint: disable=import-outside-toplevel
    from ..target.spec import resolve_target  # pylint: disable=import-outside-toplevel

    target = resolve_target(args.target)
    loaded = load(args.model, common.input_shapes(args))
    repro = None if args.no_repro else Path(args.repro or f"{loaded.name}-bisect")
    options = BisectOptions(Tolerances(args.atol, args.rtol, args.min_cosine), seed=args.seed,
                            feeds=read_feeds(args.feeds, loaded) if args.feeds else None,
                            repro_dir=repro)
    result = bisect(loaded, target, options=options, compile_options=CompileOptions(
        logs=args.logs, use_database=not args.untuned, defaults=not args.no_defaults,
        ndk=args.ndk), remote=common.remote_options(args))
    if args.json:
        common.emit_json(result.to_dict())
    else:
        print(result.format())
    return ValidationError.exit_code if result.first else 0
