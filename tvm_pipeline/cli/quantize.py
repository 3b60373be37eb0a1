"""``tvm-pipeline quantize MODEL -o MODEL.int8.onnx``: INT8 (QDQ) with ONNX Runtime's quantizer,
reported against the float model."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import common


def register(sub) -> None:
    parser = sub.add_parser(
        "quantize", help="post-training INT8 quantization (QDQ) with ONNX Runtime's quantizer",
        description="Quantize a float ONNX model to INT8 (QDQ format: per-channel int8 weights, "
                    "uint8 activations) with ONNX Runtime's static quantizer, calibrated on images "
                    "(--calibration DIR, the pipeline's preprocessing) or seeded inputs "
                    "(--samples N), then compare it with the float model on held-back inputs.")
    common.add_model(parser)
    parser.add_argument("-o", "--output", default=None,
                        help="quantized model (default: MODEL.int8.onnx next to MODEL)")
    parser.add_argument("--calibration", default=None, metavar="DIR",
                        help="folder of images to calibrate on (every 5th is held back)")
    parser.add_argument("--samples", type=int, default=32,
                        help="seeded calibration inputs when no --calibration (default 32)")
    parser.add_argument("--held-back", type=int, default=16,
                        help="seeded inputs for the comparison when no --calibration (default 16)")
    parser.add_argument("--method", default="minmax", choices=("minmax", "entropy", "percentile"),
                        help="calibration method (default minmax)")
    parser.add_argument("--per-tensor", action="store_true",
                        help="one scale per weight tensor instead of per output channel")
    parser.add_argument("--reduce-range", action="store_true",
                        help="7-bit weights: ONNX Runtime's integer kernels on x86 without VNNI "
                             "then compute the model exactly (no u8 x s8 saturation)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated inputs")
    common.add_json(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..api import quantize  # pylint: disable=import-outside-toplevel
    from ..frontend.quantize import QuantizeOptions  # pylint: disable=import-outside-toplevel

    model = Path(args.model)
    output = args.output or str(model.with_name(model.stem + ".int8.onnx"))
    options = QuantizeOptions(Path(args.calibration) if args.calibration else None, args.samples,
                              args.held_back, args.method, not args.per_tensor, args.seed,
                              args.reduce_range)
    report = quantize(args.model, output, options, common.input_shapes(args))
    if args.json:
        common.emit_json(report.to_dict())
    else:
        print(report.format())
    return 0
