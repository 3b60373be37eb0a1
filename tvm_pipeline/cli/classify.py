"""``tvm-pipeline classify ARTIFACT IMAGE``: top-5 ImageNet labels with the compiled module."""

from __future__ import annotations

import argparse

from . import common


def register(sub) -> None:
    parser = sub.add_parser("classify", help="classify an image with a compiled artifact")
    parser.add_argument("artifact", help="artifact folder written by `tvm-pipeline compile`")
    parser.add_argument("image", help="image file (JPEG, PNG, ...)")
    parser.add_argument("-k", "--top", type=int, default=5, help="how many labels (default 5)")
    common.add_json(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..api import classify  # pylint: disable=import-outside-toplevel
    from ..run.classify import format_predictions  # pylint: disable=import-outside-toplevel

    preds = classify(args.artifact, args.image, args.top)
    if args.json:
        common.emit_json([{"index": p.index, "label": p.label, "probability": p.probability}
                          for p in preds])
    else:
        print(format_predictions(preds))
    return 0
