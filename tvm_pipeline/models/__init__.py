"""Model builders (ONNX graphs generated in code, seeded random weights)."""

from tvm_pipeline.models.corpus import (
    ARCHITECTURES,
    Architecture,
    CorpusSpec,
    build_model,
    build_spec,
    export_model,
    export_spec,
    get_architecture,
    list_models,
)
from tvm_pipeline.models.mobilenet import (
    MAX_OPSET,
    MIN_OPSET,
    MobileNetSpec,
    build_mobilenet,
    export_mobilenet,
    make_divisible,
)

__all__ = ["ARCHITECTURES", "Architecture", "CorpusSpec", "MAX_OPSET", "MIN_OPSET",
           "MobileNetSpec", "build_mobilenet", "build_model", "build_spec", "export_mobilenet",
           "export_model", "export_spec", "get_architecture", "list_models", "make_divisible"]
