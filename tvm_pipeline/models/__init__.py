"""Model builders (ONNX graphs generated in code, seeded random weights)."""

from tvm_pipeline.models.mobilenet import (
    MAX_OPSET,
    MIN_OPSET,
    MobileNetSpec,
    build_mobilenet,
    export_mobilenet,
    make_divisible,
)

__all__ = ["MAX_OPSET", "MIN_OPSET", "MobileNetSpec", "build_mobilenet", "export_mobilenet",
           "make_divisible"]
