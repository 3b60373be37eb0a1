"""``tvm-pipeline models list|export``: the model corpus as ONNX with seeded weights."""

from __future__ import annotations

import argparse

from . import common

# the original spellings of ``--arch`` for MobileNet V1/V2, kept working
LEGACY_ARCHS = {"v1": "mobilenet_v1", "v2": "mobilenet_v2"}


def register(sub) -> None:
    from ..models import ARCHITECTURES  # pylint: disable=import-outside-toplevel

    parser = sub.add_parser("models", help="list and export the CNN corpus as ONNX "
                                           "(seeded weights)")
    inner = parser.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    listing = inner.add_parser("list", help="the corpus with published params and MACs",
                               description="List the corpus architectures with their published "
                                           "parameter and multiply-add counts (224x224, 1000 "
                                           "classes) and where they come from.")
    common.add_json(listing)
    listing.set_defaults(run=run_list)
    export = inner.add_parser("export", help="write a corpus model as ONNX and report its cost",
                              description="Build a corpus CNN (see `models list`) as ONNX with "
                                          "deterministic seeded (untrained) weights.")
    export.add_argument("--arch", choices=[*LEGACY_ARCHS, *ARCHITECTURES], required=True,
                        metavar="NAME", help="corpus name (see `models list`); v1/v2 mean "
                                             "mobilenet_v1/mobilenet_v2")
    export.add_argument("--alpha", type=float, default=None,
                        help="width multiplier, MobileNet V1/V2 only (papers: 1.0, 0.75, 0.5, "
                             "0.25; default 1.0)")
    export.add_argument("--resolution", type=int, default=224,
                        help="input size (default 224; any size >= 32)")
    export.add_argument("--batch", type=int, default=1)
    export.add_argument("--opset", type=int, default=13,
                        help="ONNX opset (default 13): 11..18 for MobileNet V1/V2, 13..18 for the "
                             "others (HardSwish is a single op from 14)")
    export.add_argument("--num-classes", type=int, default=1000)
    export.add_argument("--seed", type=int, default=0)
    export.add_argument("-o", "--output", default=None,
                        help="output file (default: NAME.onnx, e.g. mobilenet_v1_1.0_224.onnx, "
                             "resnet18_224.onnx)")
    common.add_json(export)
    export.set_defaults(run=run_export)


def run_list(args: argparse.Namespace) -> int:
    from ..models import list_models  # pylint: disable=import-outside-toplevel

    entries = list_models()
    if args.json:
        common.emit_json([a.to_dict() for a in entries])
        return 0
    width = max(len(a.name) for a in entries)
    print(f"{'name':<{width}}  {'params':>8}  {'MACs@224':>9}  source")
    for a in entries:
        print(f"{a.name:<{width}}  {a.params / 1e6:>6.2f} M  {a.macs / 1e6:>7.0f} M  {a.source}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from ..models import CorpusSpec, export_spec  # pylint: disable=import-outside-toplevel

    spec = CorpusSpec(LEGACY_ARCHS.get(args.arch, args.arch), resolution=args.resolution,
                      batch=args.batch, seed=args.seed, opset=args.opset,
                      num_classes=args.num_classes, alpha=args.alpha)
    spec.validate()
    path = args.output or f"{spec.label}.onnx"
    cost = export_spec(spec, path)
    if args.json:
        common.emit_json({"path": path, "name": spec.label, "params": cost.params,
                          "macs": cost.macs, "macs_by_kind": cost.macs_by_kind})
    else:
        print(f"wrote {path}: {spec.label}, {cost.params / 1e6:.2f} M params, "
              f"{cost.macs / 1e6:.0f} M multiply-adds per image "
              f"({cost.pointwise_mac_share:.1%} in 1x1 convolutions)")
    return 0
