"""Channels padded to whole vectors: the padding stays on tensors whose every reader can take it,
stops (sliced before the epilogue) where one cannot, and the compiled model still computes what
ONNX Runtime computes."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from tvm_pipeline.api import CompileOptions, compile as compile_model, prepare
from tvm_pipeline.lowering.channels import padded
from tests.conftest import const, make_model


def test_channels_round_up_to_whole_vectors_within_a_third():
    assert padded(72, 16) == 80 and padded(1000, 16) == 1008 and padded(116, 8) == 120
    assert padded(24, 16) == 32                 # a third more: the most allowed
    assert padded(20, 16) is None               # 32 would be 60% more work
    assert padded(8, 16) is None and padded(64, 16) is None and padded(72, 1) is None


def _conv(name, x, cin, cout, rng, group=1, kernel=3):
    weight = rng.normal(0, 0.3, (cout, cin // group, kernel, kernel)).astype(np.float32)
    bias = rng.normal(0, 0.1, (cout,)).astype(np.float32)
    node = helper.make_node("Conv", [x, f"{name}.w", f"{name}.b"], [f"{name}.out"], name=name,
                            kernel_shape=[kernel, kernel], pads=[kernel // 2] * 4, group=group)
    relu = helper.make_node("Relu", [f"{name}.out"], [f"{name}.relu"], name=f"{name}.act")
    return [node, relu], [const(f"{name}.w", weight), const(f"{name}.b", bias)]


def _model(seed: int = 0) -> onnx.ModelProto:
    """a: 3 -> 36 channels, read by a depthwise convolution and by the final concat (which cannot
    read padded channels); b: 36 -> 44, then a depthwise convolution and c: 44 -> 16, which can."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    for parts in (_conv("a", "x", 3, 36, rng), _conv("dw1", "a.relu", 36, 36, rng, group=36),
                  _conv("b", "dw1.relu", 36, 44, rng, kernel=1),
                  _conv("dw2", "b.relu", 44, 44, rng, group=44),
                  _conv("c", "dw2.relu", 44, 16, rng, kernel=1)):
        nodes += parts[0]
        inits += parts[1]
    nodes.append(helper.make_node("Concat", ["a.relu", "c.relu"], ["y"], name="cat", axis=1))
    f32 = TensorProto.FLOAT
    return make_model(nodes, [helper.make_tensor_value_info("x", f32, [1, 3, 24, 24])],
                      [helper.make_tensor_value_info("y", f32, [1, 52, 24, 24])], inits)


def test_padding_follows_the_readers_and_the_model_still_agrees_with_onnx_runtime(tmp_path):
    path = tmp_path / "odd_channels.onnx"
    onnx.save(_model(), path)
    prepared = prepare(path)
    lanes = prepared.target.vector_bits // 32
    wide = padded(44, lanes)
    assert wide is not None and padded(36, lanes) is not None
    result = compile_model(prepared, tmp_path / "odd.tvm", CompileOptions(use_database=False))
    assert result.validation.passed
    assert result.build.naive_kernels == [], result.build.naive_reasons
    shapes = {name: [shape for shape, _ in args] for name, args in result.build.signatures.items()}
    # b's output, the depthwise convolution on it and its activation stay padded: one kernel
    # reads and writes the padded width, and c reads it
    assert any(args[0][-1] == wide and args[-1][-1] == wide for args in shapes.values()), shapes
    assert any(args[0][-1] == wide and args[-1][-1] == 16 for args in shapes.values()), shapes
    # a's output is also read by the concat: a is sliced inside its kernel, before its bias
    first = [name for name in shapes if "strided_slice" in name]
    assert len(first) == 1 and first[0].index("strided_slice") < first[0].index("add"), shapes
    assert shapes[first[0]][-1][-1] == 36
