"""``tvm-pipeline validate ARTIFACT``: compare with ONNX Runtime; non-zero exit on disagreement."""

from __future__ import annotations

import argparse

from . import common


def register(sub) -> None:
    parser = sub.add_parser("validate", help="compare an artifact with ONNX Runtime")
    common.add_reference(parser)
    common.add_validation(parser)
    common.add_remote(parser)
    common.add_json(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..api import validate  # pylint: disable=import-outside-toplevel
    from ..run.validate import check  # pylint: disable=import-outside-toplevel

    remote = common.remote_options(args)
    if remote.enabled:
        common.say(f"running on {remote.describe()}; ONNX Runtime runs here")
    report = validate(args.artifact, args.model, common.validate_options(args), remote=remote)
    if args.json:
        common.emit_json(report.to_dict())
    else:
        print(report.format())
    check(report)
    return 0
