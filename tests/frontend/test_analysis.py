"""Tests for tvm_pipeline.frontend.analysis on small hand-made ONNX graphs with hand-computed costs."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tvm_pipeline.frontend.analysis import KINDS, analyze, format_report, model_io
from tvm_pipeline.errors import ModelError, UsageError


def _init(name: str, *shape: int) -> onnx.TensorProto:
    return numpy_helper.from_array(np.ones(shape, np.float32), name)


def _model(nodes, inputs, outputs, inits, opset: int = 13) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def _tiny_cnn(input_shape=(1, 3, 32, 32)) -> onnx.ModelProto:
    """conv 3x3 3->8 (+bias) -> BN -> Relu -> dw 3x3 s2 -> pw 1x1 8->16 -> GAP -> Gemm 16->10."""
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "c1.w", "c1.b"], ["c1"], name="stem", pads=[1, 1, 1, 1]),
        n("BatchNormalization", ["c1", "bn.s", "bn.b", "bn.m", "bn.v"], ["b1"], name="stem.bn"),
        n("Relu", ["b1"], ["r1"], name="stem.relu"),
        n("Conv", ["r1", "dw.w"], ["c2"], name="block.dw", group=8, strides=[2, 2],
          pads=[1, 1, 1, 1]),
        n("Conv", ["c2", "pw.w"], ["c3"], name="block.pw"),
        n("GlobalAveragePool", ["c3"], ["p"], name="pool"),
        n("Flatten", ["p"], ["f"], name="flatten"),
        n("Gemm", ["f", "fc.w", "fc.b"], ["y"], name="fc", transB=1),
    ]
    inits = [_init("c1.w", 8, 3, 3, 3), _init("c1.b", 8), _init("bn.s", 8), _init("bn.b", 8),
             _init("bn.m", 8), _init("bn.v", 8), _init("dw.w", 8, 1, 3, 3),
             _init("pw.w", 16, 8, 1, 1), _init("fc.w", 10, 16), _init("fc.b", 10)]
    return _model(nodes, [("x", list(input_shape))], [("y", None)], inits)


# name, kind, kernel, in, out, groups, out_hw, params, macs -- computed by hand
EXPECTED = [
    ("stem", "conv", (3, 3), 3, 8, 1, (32, 32), 3 * 3 * 3 * 8 + 8, 3 * 3 * 3 * 8 * 32 * 32),
    ("block.dw", "depthwise", (3, 3), 8, 8, 8, (16, 16), 3 * 3 * 8, 3 * 3 * 8 * 16 * 16),
    ("block.pw", "pointwise", (1, 1), 8, 16, 1, (16, 16), 8 * 16, 8 * 16 * 16 * 16),
    ("fc", "fc", None, 16, 10, 1, None, 16 * 10 + 10, 16 * 10),
]


def test_hand_made_graph_costs():
    cost = analyze(_tiny_cnn())
    got = [(lc.name, lc.kind, lc.kernel, lc.in_channels, lc.out_channels, lc.groups, lc.out_hw,
            lc.params, lc.macs) for lc in cost.layers]
    assert got == EXPECTED
    assert cost.params == 224 + 72 + 128 + 170 == 594  # BatchNormalization is not counted
    assert cost.macs == 221184 + 18432 + 32768 + 160 == 272544
    assert cost.macs_by_kind == {"conv": 221184, "depthwise": 18432, "pointwise": 32768,
                                 "fc": 160, "matmul": 0}
    assert cost.params_by_kind == {"conv": 224, "depthwise": 72, "pointwise": 128, "fc": 170,
                                   "matmul": 0}
    assert cost.pointwise_mac_share == pytest.approx(32768 / 272544)
    assert cost.op_counts == {"BatchNormalization": 1, "Conv": 3, "Flatten": 1, "Gemm": 1,
                              "GlobalAveragePool": 1, "Relu": 1}
    assert [(t.name, t.shape, t.dtype) for t in cost.inputs] == [("x", (1, 3, 32, 32), "float32")]
    assert [(t.name, t.shape) for t in cost.outputs] == [("y", (1, 10))]  # inferred


@pytest.mark.parametrize("batch", [4, "N"])
def test_macs_are_per_image(batch):
    reference = analyze(_tiny_cnn())
    cost = analyze(_tiny_cnn((batch, 3, 32, 32)))
    assert cost.layers == reference.layers
    assert cost.inputs[0].shape == (batch, 3, 32, 32)


def test_dynamic_spatial_dims_raise_model_error_with_fix():
    with pytest.raises(ModelError) as info:
        analyze(_tiny_cnn((1, 3, "H", "W")))
    message = str(info.value)
    assert "stem" in message and "--input-shape x:1,3,224,224" in message
    assert info.value.exit_code == 4


def test_grouped_depthwise_multiplier_and_transposed_conv():
    n = helper.make_node
    nodes = [n("Conv", ["x", "g.w"], ["a"], name="grouped", group=2),            # 1x1, groups 2
             n("Conv", ["a", "dm.w"], ["b"], name="dw_x2", group=8, pads=[1, 1, 1, 1]),
             n("ConvTranspose", ["b", "up.w"], ["y"], name="up", strides=[2, 2],
               kernel_shape=[2, 2])]
    inits = [_init("g.w", 8, 4, 1, 1), _init("dm.w", 16, 1, 3, 3), _init("up.w", 16, 4, 2, 2)]
    cost = analyze(_model(nodes, [("x", [1, 8, 6, 6])], [("y", None)], inits))
    grouped, dw, up = cost.layers
    assert (grouped.kind, grouped.params, grouped.macs) == ("conv", 32, 4 * 8 * 36)
    assert (dw.kind, dw.in_channels, dw.out_channels, dw.macs) == ("depthwise", 8, 16,
                                                                   9 * 16 * 36)
    assert (up.kind, up.out_channels, up.out_hw) == ("conv", 4, (12, 12))
    assert up.macs == 2 * 2 * 16 * 4 * 6 * 6 and up.params == 16 * 4 * 2 * 2


def test_matmul_fc_with_add_bias_tokens_and_activation_matmul():
    n = helper.make_node
    nodes = [n("MatMul", ["x", "w"], ["h"], name="proj"),
             n("Add", ["h", "b"], ["hb"], name="proj.bias"),
             n("Transpose", ["hb"], ["ht"], perm=[0, 2, 1]),
             n("MatMul", ["hb", "ht"], ["y"], name="scores")]
    cost = analyze(_model(nodes, [("x", ["batch", 5, 16])], [("y", None)],
                          [_init("w", 16, 4), _init("b", 4)]))
    proj, scores = cost.layers
    assert (proj.kind, proj.in_channels, proj.out_channels) == ("fc", 16, 4)
    assert proj.params == 16 * 4 + 4 and proj.macs == 5 * 16 * 4
    assert (scores.kind, scores.params, scores.macs) == ("matmul", 0, 5 * 4 * 5)


def test_gemm_weight_from_constant_node():
    weight = numpy_helper.from_array(np.ones((3, 6), np.float32), "cw")
    nodes = [helper.make_node("Constant", [], ["cw"], value=weight),
             helper.make_node("Gemm", ["x", "cw"], ["y"], name="dense")]
    cost = analyze(_model(nodes, [("x", [2, 3])], [("y", None)], []))
    assert [(lc.kind, lc.params, lc.macs) for lc in cost.layers] == [("fc", 18, 18)]


def test_model_io_skips_initializers_listed_as_inputs_and_keeps_symbols():
    model = _tiny_cnn(("N", 3, 32, 32))
    model.graph.input.append(helper.make_tensor_value_info("fc.b", TensorProto.FLOAT, [10]))
    inputs, outputs = model_io(model)
    assert [(t.name, t.shape, t.dtype) for t in inputs] == [("x", ("N", 3, 32, 32), "float32")]
    assert [t.name for t in outputs] == ["y"]


def test_to_dict_is_json_able():
    cost = analyze(_tiny_cnn())
    data = json.loads(json.dumps(cost.to_dict()))
    assert data["params"] == 594 and data["macs"] == 272544
    assert data["layers"][1]["kernel"] == [3, 3] and data["layers"][3]["out_hw"] is None
    assert data["inputs"][0]["shape"] == [1, 3, 32, 32]
    assert data["pointwise_mac_share"] == pytest.approx(cost.pointwise_mac_share)
    assert set(data["macs_by_kind"]) == set(KINDS)


def test_format_report_lists_layers_and_split():
    report = format_report(analyze(_tiny_cnn()))
    for name in ("stem", "block.dw", "block.pw", "fc", "x", "y"):
        assert name in report
    assert "3->8" in report and "16x16" in report and "272,544" in report and "594" in report
    assert "Depthwise vs pointwise MACs" in report
    assert f"{18432 / (18432 + 32768):.1%}" in report  # depthwise share of dw+pw
    assert f"Share of MACs in 1x1 convs: {32768 / 272544:.1%}" in report
    assert "Conv x3" in report


def test_bad_models_raise_pipeline_errors():
    with pytest.raises(UsageError):
        analyze(b"not a model")  # type: ignore[arg-type]
    model = _tiny_cnn()
    model.graph.initializer[0].CopyFrom(_init("c1.w", 8, 4, 3, 3))  # expects 4 input channels
    with pytest.raises(ModelError, match="3 input channels"):
        analyze(model)
