"""``tvm-pipeline models export``: MobileNet V1/V2 as ONNX with seeded weights."""

from __future__ import annotations

import argparse

from . import common


def register(sub) -> None:
    parser = sub.add_parser("models", help="export MobileNet V1/V2 ONNX models (seeded weights)")
    inner = parser.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    export = inner.add_parser("export", help="write a MobileNet ONNX file and report its cost",
                              description="Build MobileNet V1 or V2 as ONNX with deterministic "
                                          "seeded (untrained) weights.")
    export.add_argument("--arch", choices=["v1", "v2"], required=True)
    export.add_argument("--alpha", type=float, default=1.0,
                        help="width multiplier (papers: 1.0, 0.75, 0.5, 0.25)")
    export.add_argument("--resolution", type=int, default=224,
                        help="input size (papers: 224, 192, 160, 128; any size >= 32)")
    export.add_argument("--batch", type=int, default=1)
    export.add_argument("--opset", type=int, default=13, help="ONNX opset, 11..18 (default 13)")
    export.add_argument("--num-classes", type=int, default=1000)
    export.add_argument("--seed", type=int, default=0)
    export.add_argument("-o", "--output", default=None,
                        help="output file (default: NAME.onnx, e.g. mobilenet_v1_1.0_224.onnx)")
    common.add_json(export)
    export.set_defaults(run=run_export)


def run_export(args: argparse.Namespace) -> int:
    from ..models import MobileNetSpec, export_mobilenet  # pylint: disable=import-outside-toplevel

    spec = MobileNetSpec(arch=args.arch, alpha=args.alpha, resolution=args.resolution,
                         batch=args.batch, opset=args.opset, num_classes=args.num_classes,
                         seed=args.seed)
    spec.validate()
    path = args.output or f"{spec.name}.onnx"
    cost = export_mobilenet(spec, path)
    if args.json:
        common.emit_json({"path": path, "name": spec.name, "params": cost.params,
                          "macs": cost.macs, "macs_by_kind": cost.macs_by_kind})
    else:
        print(f"wrote {path}: {spec.name}, {cost.params / 1e6:.2f} M params, "
              f"{cost.macs / 1e6:.0f} M multiply-adds per image "
              f"({cost.pointwise_mac_share:.1%} in 1x1 convolutions)")
    return 0
