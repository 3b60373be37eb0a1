"""``tvm-pipeline check MODEL --target T``: build a GPU target and run its device checks (nvcc;
clang, PoCL build and kernel-level numerics on PoCL) without linking the host library or writing an
artifact, so that targets whose host code needs an Android NDK can be verified on any machine."""

from __future__ import annotations

import argparse

from . import common


def register(sub) -> None:
    parser = sub.add_parser("check", help="compile-check and numerically verify a GPU target's kernels "
                                          "(no artifact)")
    common.add_model(parser)
    common.add_target(parser)
    common.add_logs(parser)
    parser.add_argument("--untuned", action="store_true",
                        help="ignore tuning databases (every kernel with its default schedule)")
    common.add_checks(parser)
    common.add_json(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..api import CompileOptions, check, prepare, require_device_code  # pylint: disable=import-outside-toplevel
    from ..target.spec import resolve_target  # pylint: disable=import-outside-toplevel

    spec = resolve_target(args.target)
    require_device_code(spec)
    prepared = prepare(args.model, spec, common.input_shapes(args))
    common.say(f"checking {prepared.loaded.name} for {prepared.target.name} "
               f"({len(prepared.kernels)} kernels)")
    run_ = check(prepared, CompileOptions(logs=args.logs, use_database=not args.untuned,
                                          checks=common.check_options(args)))
    if args.json:
        meta = run_.build.metadata()
        common.emit_json({"build": {**meta["database"], "kernels": meta["kernels"]}, "seconds": round(run_.seconds, 1),
                          **run_.report.to_dict()})
    else:
        print(run_.build.summary())
        print(run_.report.format())
    run_.report.raise_for_failures()
    return 0
