"""``tvm-pipeline inspect MODEL``: inputs/outputs, operator counts, per-layer cost table."""

from __future__ import annotations

import argparse

from . import common


def register(sub) -> None:
    parser = sub.add_parser("inspect", help="print a model's I/O, operators and per-layer cost")
    common.add_model(parser)
    common.add_json(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..frontend.analysis import analyze, format_report, model_io  # pylint: disable=import-outside-toplevel
    from ..errors import ModelError  # pylint: disable=import-outside-toplevel
    from ..frontend.load import load  # pylint: disable=import-outside-toplevel
    from ..lowering.prepare import check_operators  # pylint: disable=import-outside-toplevel

    loaded = load(args.model, common.input_shapes(args))
    try:   # the user's graph as written (layer names, BatchNorm separate), when shapes allow
        cost = analyze(loaded.pinned)
    except ModelError:   # shapes only static once the shape subgraphs are folded
        cost = analyze(loaded.model)
    declared, _ = model_io(loaded.original)
    try:
        check_operators(loaded.model, args.model)
        support = "every operator is supported by TVM's Relax ONNX importer"
    except ModelError as err:
        support = str(err)
    if args.json:
        common.emit_json({**cost.to_dict(), "declared_inputs": [t.to_dict() for t in declared],
                          "tvm_support": support})
        return 0
    for info in declared:
        shape = ",".join(map(str, info.shape))
        print(f"declared input {info.name}: [{shape}] {info.dtype}")
    print(format_report(cost))
    print(support)
    return 0
