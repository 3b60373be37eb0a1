"""Quantized models: integer kernels (``lowering.integer``), QOperator models (``frontend.qdq``),
validation in quantization steps and layer by layer (``run.validate``, ``observe.layerwise``)."""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest
import tvm
from onnx import TensorProto, helper
from tvm import s_tir, te

from tests.conftest import const, make_model, qdq_convnet_model
from tvm_pipeline.api import CompileOptions, compile as compile_model, prepare, quantize
from tvm_pipeline.frontend.load import load_proto
from tvm_pipeline.frontend.qdq import to_qdq
from tvm_pipeline.frontend.quantize import QuantizeOptions
from tvm_pipeline.observe.layerwise import check_layers
from tvm_pipeline.run.validate import (Tolerances, ValidateOptions, compare, make_feeds,
                                       quantization_steps)
from tvm_pipeline.target.spec import list_targets, resolve_target

F32 = TensorProto.FLOAT


@pytest.fixture(scope="module")
def qdq_convnet(tmp_path_factory):
    path = tmp_path_factory.mktemp("qdq") / "convnet.qdq.onnx"
    onnx.save(qdq_convnet_model(), path)
    return path


def test_every_conv_and_dense_layer_becomes_an_integer_kernel(qdq_convnet):
    prepared = prepare(qdq_convnet)
    assert [(d.op, d.integer) for d in prepared.integer.layers] == [
        ("conv2d", True), ("conv2d", True), ("matmul", True)]
    convs = [f for gv, f in prepared.mod.functions_items() if "conv2d" in gv.name_hint]
    assert convs
    for func in convs:   # each reads 8-bit activations and weights and accumulates int32
        text = func.script()
        assert '"uint8"' in text and 'T.Cast("int32"' in text and "float32" in text


def test_integer_kernels_compute_the_quantized_model_to_the_step(qdq_convnet, tmp_path):
    """Zero points with padding, asymmetric u8 weights, depthwise and dense: the artifact matches
    ONNX Runtime's op-by-op run of the model on every element (exact integers underneath)."""
    result = compile_model(prepare(qdq_convnet), tmp_path / "q.tvm",
                           CompileOptions(validate_options=ValidateOptions(samples=4)))
    report = result.validation
    assert report.passed and report.layerwise is None and "op by op" in report.reference
    (logits,) = report.outputs
    assert logits.step == pytest.approx(0.1) and logits.max_steps <= 1.0
    assert logits.within_steps == 1.0
    assert report.integer_kernels is not None
    assert result.artifact.metadata["integer"]["integer_layers"] == 3


def test_a_wrong_integer_kernel_fails_the_layer_by_layer_check(qdq_convnet, tmp_path):
    """Fault injected through the model TVM compiles (the depthwise weights off by one step on
    one channel); the check compares against ONNX Runtime on the right model and names it."""
    model = qdq_convnet_model()
    loaded = load_proto(model, {"input": (1, 3, 32, 32)}, qdq_convnet)
    wrong = onnx.ModelProto()
    wrong.CopyFrom(model)
    weights = next(t for t in wrong.graph.initializer if t.name == "dq")
    array = onnx.numpy_helper.to_array(weights).copy()
    array[3] = np.clip(array[3].astype(np.int16) + 40, -127, 127).astype(np.int8)
    weights.CopyFrom(onnx.numpy_helper.from_array(array, "dq"))
    target = prepare(qdq_convnet).target

    def compile_wrong(prepared, out):
        wrong_loaded = load_proto(onnx.load_from_string(
            _with_outputs(wrong, prepared.loaded.model)), {"input": (1, 3, 32, 32)}, qdq_convnet)
        return compile_model(prepare(wrong_loaded, target), out, CompileOptions(validate=False))

    feeds = make_feeds(loaded.inputs, ValidateOptions(samples=2))
    report = check_layers(loaded, target, compile_wrong, feeds)
    failed = [c.tensor for c in report.layers if not c.passed]
    assert failed and failed[0] == "c2q" and report.first_divergence == "c2q"
    good = check_layers(loaded, target, lambda p, out: compile_model(
        p, out, CompileOptions(validate=False)), feeds)
    assert good.passed and len(good.layers) == 5


def _with_outputs(model: onnx.ModelProto, exposed: onnx.ModelProto) -> bytes:
    """``model`` with the outputs ``exposed`` declares (the layer check exposes every tensor)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    del copy.graph.output[:]
    copy.graph.output.extend(exposed.graph.output)
    return copy.SerializeToString()


def test_step_criterion_allows_one_step_and_names_more():
    ref = np.linspace(-1, 1, 2000, dtype=np.float32).reshape(2, 1000)
    one = ref + np.float32(0.01)
    report = compare([[one]], [[ref]], ["y"], Tolerances(), steps={"y": 0.01})
    assert report.passed and report.outputs[0].max_steps == pytest.approx(1.0, abs=1e-3)
    two = ref.copy()
    two[0, :10] += 0.02
    report = compare([[two]], [[ref]], ["y"], Tolerances(), steps={"y": 0.01})
    assert not report.passed and "quantization step" in report.outputs[0].failure
    assert report.outputs[0].failed == ("steps",)


def test_quantization_steps_come_from_the_last_dequantize(qdq_convnet):
    assert quantization_steps(onnx.load(qdq_convnet)) == {"logits": pytest.approx(0.1)}


def _float_resnetish(path) -> None:
    """conv 3x3 -> relu -> conv 1x1 -> + (residual) -> global pool -> flatten -> gemm."""
    rng = np.random.default_rng(1)
    inits = [const("w1", rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32)),
             const("b1", rng.normal(0, 0.1, 8).astype(np.float32)),
             const("w2", rng.normal(0, 0.3, (8, 8, 1, 1)).astype(np.float32)),
             const("fc", rng.normal(0, 0.3, (10, 8)).astype(np.float32)),
             const("fcb", rng.normal(0, 0.1, 10).astype(np.float32))]
    nodes = [helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"]),
             helper.make_node("Add", ["c2", "r1"], ["sum"]),
             helper.make_node("GlobalAveragePool", ["sum"], ["pool"]),
             helper.make_node("Flatten", ["pool"], ["flat"]),
             helper.make_node("Gemm", ["flat", "fc", "fcb"], ["logits"], transB=1)]
    onnx.save(make_model(nodes, [helper.make_tensor_value_info("input", F32, [1, 3, 32, 32])],
                         [helper.make_tensor_value_info("logits", F32, [1, 10])], inits,
                         opset=13), path)


def _float_se_dense(path) -> None:
    """conv 3x3 -> x * sigmoid(x) (squeeze-excite's multiply) -> concat with the conv (DenseNet)
    -> average pool 2x2 -> conv 1x1 -> global pool -> flatten -> gemm."""
    rng = np.random.default_rng(2)
    inits = [const("w1", rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32)),
             const("w2", rng.normal(0, 0.3, (8, 16, 1, 1)).astype(np.float32)),
             const("fc", rng.normal(0, 0.3, (10, 8)).astype(np.float32)),
             const("fcb", rng.normal(0, 0.1, 10).astype(np.float32))]
    nodes = [helper.make_node("Conv", ["input", "w1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Sigmoid", ["c1"], ["s1"]),
             helper.make_node("Mul", ["c1", "s1"], ["m1"]),
             helper.make_node("Concat", ["m1", "c1"], ["cat"], axis=1),
             helper.make_node("AveragePool", ["cat"], ["avg"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Conv", ["avg", "w2"], ["c2"]),
             helper.make_node("GlobalAveragePool", ["c2"], ["pool"]),
             helper.make_node("Flatten", ["pool"], ["flat"]),
             helper.make_node("Gemm", ["flat", "fc", "fcb"], ["logits"], transB=1)]
    onnx.save(make_model(nodes, [helper.make_tensor_value_info("input", F32, [1, 3, 32, 32])],
                         [helper.make_tensor_value_info("logits", F32, [1, 10])], inits,
                         opset=13), path)


@pytest.mark.parametrize("build, qoperators", [
    (_float_resnetish, {"QLinearConv", "QLinearAdd", "QLinearGlobalAveragePool", "QGemm"}),
    (_float_se_dense, {"QLinearConv", "QLinearSigmoid", "QLinearMul", "QLinearConcat",
                       "QLinearAveragePool", "QGemm"})])
def test_qoperator_models_are_rewritten_to_qdq_and_compile(tmp_path, build, qoperators):
    """ONNX Runtime's QOperator form: each of its quantized operators becomes QDQ around the
    float operator, and the model compiles, with integer convolutions and dense layers."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    build(tmp_path / "float.onnx")
    rng = np.random.default_rng(0)
    feeds = iter([{"input": rng.uniform(-1, 1, (1, 3, 32, 32)).astype(np.float32)}
                  for _ in range(4)])

    class Reader:
        def get_next(self):
            return next(feeds, None)

    path = tmp_path / "qop.onnx"
    quantize_static(str(tmp_path / "float.onnx"), str(path), Reader(),
                    quant_format=QuantFormat.QOperator, per_channel=True,
                    weight_type=QuantType.QInt8, reduce_range=True)
    ops = {n.op_type for n in onnx.load(path).graph.node}
    assert qoperators <= ops
    assert not ops & {n.op_type for n in to_qdq(onnx.load(path)).graph.node} - {
        "QuantizeLinear", "DequantizeLinear", "Flatten"}
    prepared = prepare(path)
    assert len(prepared.integer.layers) == 3 and all(d.integer for d in prepared.integer.layers)
    result = compile_model(prepared, tmp_path / "qop.tvm")
    assert result.validation.passed and result.validation.outputs[0].step is not None


def test_quantize_records_the_float_model_and_validation_reports_the_drift(small_v2, tmp_path):
    out = tmp_path / "v2.int8.onnx"
    quantize(small_v2, out, QuantizeOptions(samples=4, held_back=2))
    result = compile_model(prepare(out), tmp_path / "v2q.tvm")
    drift = result.validation.float_drift
    assert drift is not None and drift[0].name == "logits" and -1.0 <= drift[0].cosine <= 1.0
    assert result.validation.passed


def _kernels(path) -> dict[int, str]:
    """Structural hash -> name of every convolution and dense kernel of the prepared model."""
    import tvm_ffi   # pylint: disable=import-outside-toplevel

    prepared = prepare(path, "x86-avx512")
    return {tvm_ffi.structural_hash(f): gv.name_hint for gv, f in prepared.mod.functions_items()
            if "conv2d" in gv.name_hint or "matmul" in gv.name_hint}


def _scales(path) -> dict[str, float]:
    model = onnx.load(path)
    return {t.name: float(onnx.numpy_helper.to_array(t).ravel()[0]) for t in model.graph.initializer
            if t.name.endswith("_scale") and t.data_type == F32 and len(t.dims) == 0}


def test_two_calibrations_of_a_model_give_the_same_kernels(small_v2, small_v2_int8, tmp_path):
    """Scales and zero points are kernel inputs, not literals: the tuning records of a model
    apply to the same model calibrated on other inputs."""
    other = tmp_path / "v2.other.int8.onnx"
    quantize(small_v2, other, QuantizeOptions(samples=9, held_back=2))
    first, second = _scales(small_v2_int8), _scales(other)
    assert first.keys() == second.keys()
    assert sum(first[k] != second[k] for k in first) > 5        # the calibrations differ
    kernels = _kernels(small_v2_int8)
    assert len(kernels) > 5 and kernels.keys() == _kernels(other).keys()


def test_a_pad_value_quantized_by_onnx_runtime_compiles_and_validates(tmp_path):
    """ONNX Runtime's ``quantize_static`` (its defaults, as a user runs it) also quantizes a Pad's
    ``constant_value``, which TVM's importer reads as a value: it is folded to its float before
    import (``frontend.qdq.fold_static_operands``), and the artifact still agrees to the step."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["r"]),
             helper.make_node("Pad", ["r", "pads", "value"], ["p"], mode="constant"),
             helper.make_node("Conv", ["p", "w2"], ["y"])]
    inits = [const("w1", rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32)),
             const("w2", rng.normal(0, 0.3, (8, 8, 3, 3)).astype(np.float32)),
             const("pads", np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)),
             const("value", np.float32(0.5))]
    model = make_model(nodes, [helper.make_tensor_value_info("x", F32, [1, 3, 16, 16])],
                       [helper.make_tensor_value_info("y", F32, [1, 8, 16, 16])], inits, opset=13)
    onnx.save(model, tmp_path / "pad.onnx")

    class Samples(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter([{"x": rng.normal(size=(1, 3, 16, 16)).astype(np.float32)}
                               for _ in range(4)])

        def get_next(self):
            return next(self.feeds, None)

    quantize_static(str(tmp_path / "pad.onnx"), str(tmp_path / "pad.int8.onnx"), Samples(),
                    quant_format=QuantFormat.QDQ)
    quantized = onnx.load(str(tmp_path / "pad.int8.onnx"))
    producers = {o: n.op_type for n in quantized.graph.node for o in n.output}
    (pad,) = [n for n in quantized.graph.node if n.op_type == "Pad"]
    assert producers.get(pad.input[2]) == "DequantizeLinear"        # the case this is about
    result = compile_model(prepare(tmp_path / "pad.int8.onnx"), tmp_path / "pad.tvm",
                           CompileOptions(validate_options=ValidateOptions(samples=2)))
    assert result.validation.passed
    assert result.artifact.metadata["integer"]["integer_layers"] == 2


_DIVISION = re.compile(r"^\s+(v?div[ps][sd]|fdiv|vdiv\.f32)\s", re.MULTILINE)


@pytest.mark.parametrize("name", [t.name for t in list_targets() if t.tvm["kind"] == "llvm"])
def test_a_quantize_divides_once_and_multiplies_each_element(name):
    """Requantization divides by the output scale (``round(x / scale)``, as ONNX Runtime's
    QuantizeLinear computes it); a vector division per element took up to 25% of INT8 MobileNet
    V2's pointwise convolutions on VNNI (V2 1.62 -> 1.46 ms with it gone). CPU targets set LLVM's
    ``fast-math-arcp``: the scale's reciprocal is computed once and each element multiplied by it
    (one step off only where ``x / scale`` lies within an ulp of a rounding tie)."""
    x = te.placeholder((4096,), "float32", name="x")
    scale = te.placeholder((1,), "float32", name="scale")
    q = te.compute((4096,), lambda i: te.round(x[i] / scale[0]), name="q")
    sch = s_tir.Schedule(te.create_prim_func([x, scale, q]))
    sch.vectorize(sch.split(sch.get_loops(sch.get_sblock("q"))[0], [None, 16])[1])
    code = tvm.tirx.build(sch.mod, target=resolve_target(name).to_tvm()).inspect_source("asm")
    assert len(_DIVISION.findall(code)) == 1
