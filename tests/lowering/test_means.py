"""Spatial means (squeeze-excite, global pooling) as one-row matrix products: no reduction kernel
is left that sums one channel at a time, and the model still computes what ONNX Runtime does."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from tvm_pipeline.api import CompileOptions, compile as compile_model, prepare
from tests.conftest import const, make_model


def _model(seed: int = 0) -> onnx.ModelProto:
    """conv -> squeeze-excite (ReduceMean over H, W -> 1x1 convs -> sigmoid gate) -> global
    average pool -> flatten."""
    rng = np.random.default_rng(seed)
    inits = [const("c.w", rng.normal(0, 0.4, (32, 3, 3, 3)).astype(np.float32)),
             const("r.w", rng.normal(0, 0.3, (8, 32, 1, 1)).astype(np.float32)),
             const("e.w", rng.normal(0, 0.3, (32, 8, 1, 1)).astype(np.float32))]
    node = helper.make_node
    nodes = [node("Conv", ["x", "c.w"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             node("Relu", ["c"], ["a"]),
             node("ReduceMean", ["a"], ["s"], axes=[2, 3], keepdims=1),
             node("Conv", ["s", "r.w"], ["r"], kernel_shape=[1, 1]), node("Relu", ["r"], ["r1"]),
             node("Conv", ["r1", "e.w"], ["e"], kernel_shape=[1, 1]),
             node("Sigmoid", ["e"], ["g"]), node("Mul", ["a", "g"], ["y"]),
             node("GlobalAveragePool", ["y"], ["p"]), node("Flatten", ["p"], ["out"])]
    f32 = TensorProto.FLOAT
    return make_model(nodes, [helper.make_tensor_value_info("x", f32, [1, 3, 24, 24])],
                      [helper.make_tensor_value_info("out", f32, [1, 32])], inits, opset=13)


def test_spatial_means_become_products_and_agree_with_onnx_runtime(tmp_path):
    path = tmp_path / "se.onnx"
    onnx.save(_model(), path)
    prepared = prepare(path)
    kernels = [k.name for k in prepared.kernels]
    if prepared.target.device == "cpu":
        assert not [k for k in kernels if "mean" in k], kernels
        assert any("matmul" in k for k in kernels), kernels
    result = compile_model(prepared, tmp_path / "se.tvm", CompileOptions(use_database=False))
    assert result.validation.passed
    assert result.build.naive_kernels == [], result.build.naive_reasons
