"""Shared fixtures: small real models (MobileNet V2 0.25-96), isolated tuning logs, a CLI runner."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tvm_pipeline.cli.main import main as cli_main
from tvm_pipeline.models import MobileNetSpec, export_mobilenet


@pytest.fixture(autouse=True)
def _isolated_logs(tmp_path_factory, monkeypatch):
    """Tests never write into the repository's tuned_logs/: tuning goes to a temporary root."""
    monkeypatch.setenv("TVM_PIPELINE_LOGS", str(tmp_path_factory.getbasetemp() / "tuned_logs"))


@pytest.fixture(scope="session")
def small_v2(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "mobilenet_v2_0.25_96.onnx"
    export_mobilenet(MobileNetSpec("v2", 0.25, 96), path)
    return path


@pytest.fixture(scope="session")
def small_v2_int8(small_v2, tmp_path_factory):
    """MobileNet V2 0.25-96 quantized by ONNX Runtime's static quantizer (QDQ, per-channel)."""
    from tvm_pipeline.api import quantize
    from tvm_pipeline.frontend.quantize import QuantizeOptions

    path = tmp_path_factory.mktemp("models") / "mobilenet_v2_0.25_96.int8.onnx"
    quantize(small_v2, path, QuantizeOptions(samples=4, held_back=2))
    return path


@pytest.fixture(scope="session")
def small_v2_artifact(small_v2, tmp_path_factory):
    """MobileNet V2 0.25-96 compiled for this host (validated by compile itself)."""
    from tvm_pipeline.api import CompileOptions, compile as compile_model, prepare

    out = tmp_path_factory.mktemp("artifacts") / "v2.tvm"
    return compile_model(prepare(small_v2), out, CompileOptions(use_database=False)).artifact


class CliResult:
    def __init__(self, code: int, out: str, err: str):
        self.code, self.out, self.err = code, out, err


@pytest.fixture
def cli(capsys):
    """Run ``tvm-pipeline ARGS`` in this process; returns exit code, stdout, stderr."""

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        code = cli_main([str(a) for a in args])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def make_model(nodes, inputs, outputs, initializers=(), opset=14) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "test", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def const(name: str, array) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def exported_style_model(seed: int = 0) -> onnx.ModelProto:
    """What torch.onnx.export writes for conv -> hardswish -> pool -> flatten -> linear with
    dynamic batch and spatial axes: the flatten is a Shape -> Gather -> Unsqueeze -> Concat ->
    Reshape subgraph, which TVM's Relax importer rejects unless it is folded."""
    rng = np.random.default_rng(seed)
    f32 = TensorProto.FLOAT
    inits = [
        const("conv.weight", rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32)),
        const("conv.bias", rng.normal(0, 0.1, (8,)).astype(np.float32)),
        const("dw.weight", rng.normal(0, 0.3, (8, 1, 3, 3)).astype(np.float32)),
        const("fc.weight", rng.normal(0, 0.3, (10, 8)).astype(np.float32)),
        const("fc.bias", rng.normal(0, 0.1, (10,)).astype(np.float32)),
        const("zero", np.array([0], dtype=np.int64)),
        const("minus_one", np.array([-1], dtype=np.int64)),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "conv.weight", "conv.bias"], ["c1"], name="/conv/Conv",
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("HardSwish", ["c1"], ["a1"], name="/act/HardSwish"),
        helper.make_node("Conv", ["a1", "dw.weight"], ["c2"], name="/dw/Conv", kernel_shape=[3, 3],
                         pads=[1, 1, 1, 1], group=8),
        helper.make_node("HardSigmoid", ["c2"], ["g"], name="/gate/HardSigmoid"),
        helper.make_node("Mul", ["c2", "g"], ["a2"], name="/gate/Mul"),
        helper.make_node("GlobalAveragePool", ["a2"], ["pool"], name="/pool/GlobalAveragePool"),
        helper.make_node("Shape", ["pool"], ["shape"], name="/Shape"),
        helper.make_node("Gather", ["shape", "zero"], ["batch"], name="/Gather", axis=0),
        helper.make_node("Concat", ["batch", "minus_one"], ["newshape"], name="/Concat", axis=0),
        helper.make_node("Reshape", ["pool", "newshape"], ["flat"], name="/Reshape"),
        helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"], name="/fc/Gemm",
                         transB=1),
    ]
    return make_model(nodes, [helper.make_tensor_value_info("x", f32, ["batch", 3, "h", "w"])],
                      [helper.make_tensor_value_info("logits", f32, ["batch", 10])], inits)


def matmul_relu_kernel(m: int = 32, k: int = 64, n: int = 48):
    """A tiny TIR workload (MxK @ KxN, then ReLU) with a correct and a wrong schedule of it:
    ``(workload IRModule, correct Schedule, wrong Schedule)``. The wrong one stores the matmul's
    accumulator as int32 (``unsafe_set_dtype``): it builds, runs, and computes garbage, the way a
    bad rewrite or codegen bug would."""
    import tvm  # pylint: disable=import-outside-toplevel
    from tvm import s_tir, te  # pylint: disable=import-outside-toplevel

    a = te.placeholder((m, k), name="A")
    b = te.placeholder((k, n), name="B")
    r = te.reduce_axis((0, k), name="k")
    c = te.compute((m, n), lambda i, j: te.sum(a[i, r] * b[r, j], axis=r), name="C")
    d = te.compute((m, n), lambda i, j: te.max(c[i, j], tvm.tirx.const(0.0, "float32")), name="D")
    mod = tvm.IRModule({"main": te.create_prim_func([a, b, d])})
    good = s_tir.Schedule(mod)
    good.split(good.get_loops(good.get_sblock("C"))[0], [None, 8])
    good.vectorize(good.get_loops(good.get_sblock("D"))[-1])
    wrong = s_tir.Schedule(mod)
    wrong.unsafe_set_dtype(wrong.get_sblock("C"), 0, "int32")
    return mod, good, wrong


def qdq_convnet_model(seed: int = 0) -> onnx.ModelProto:
    """Input -> Q -> [3x3/2 conv, u8 input zero point 100 with padding, u8 weights with per-channel
    zero points (the int16 path), bias] -> Q -> [3x3 depthwise, s8 weights] -> Q -> residual-free
    global pool -> Gemm (transB, s8 weights) -> Q -> DQ: every case of the rewrite, small."""
    rng = np.random.default_rng(seed)
    wq = rng.integers(0, 256, (8, 3, 3, 3)).astype(np.uint8)
    dw = rng.integers(-127, 128, (8, 1, 3, 3)).astype(np.int8)
    fc = rng.integers(-127, 128, (10, 8)).astype(np.int8)
    inits = [
        const("xs", np.float32(0.02)), const("xz", np.uint8(100)),
        const("wq", wq), const("ws", rng.uniform(0.002, 0.004, 8).astype(np.float32)),
        const("wz", rng.integers(110, 140, 8).astype(np.uint8)),
        const("bq", rng.integers(-500, 500, 8).astype(np.int32)),
        const("bs", (0.02 * rng.uniform(0.002, 0.004, 8)).astype(np.float32)),
        const("ys", np.float32(0.03)), const("yz", np.uint8(7)),
        const("dq", dw), const("dws", rng.uniform(0.01, 0.02, 8).astype(np.float32)),
        const("dwz", np.zeros(8, np.int8)),
        const("zs", np.float32(0.05)), const("zz", np.uint8(0)),
        const("fcq", fc), const("fcs", rng.uniform(0.01, 0.02, 10).astype(np.float32)),
        const("fcz", np.zeros(10, np.int8)),
        const("ps", np.float32(0.05)), const("pz", np.uint8(3)),
        const("os", np.float32(0.1)), const("oz", np.uint8(128)),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["input", "xs", "xz"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xf"]),
        helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wf"], axis=0),
        helper.make_node("DequantizeLinear", ["bq", "bs"], ["bf"], axis=0),
        helper.make_node("Conv", ["xf", "wf", "bf"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("QuantizeLinear", ["c1", "ys", "yz"], ["c1q"]),
        helper.make_node("DequantizeLinear", ["c1q", "ys", "yz"], ["c1f"]),
        helper.make_node("DequantizeLinear", ["dq", "dws", "dwz"], ["dwf"], axis=0),
        helper.make_node("Conv", ["c1f", "dwf"], ["c2"], pads=[1, 1, 1, 1], group=8),
        helper.make_node("Relu", ["c2"], ["c2r"]),
        helper.make_node("QuantizeLinear", ["c2r", "zs", "zz"], ["c2q"]),
        helper.make_node("DequantizeLinear", ["c2q", "zs", "zz"], ["c2f"]),
        helper.make_node("GlobalAveragePool", ["c2f"], ["pool"]),
        helper.make_node("Flatten", ["pool"], ["flat"]),
        helper.make_node("QuantizeLinear", ["flat", "ps", "pz"], ["flatq"]),
        helper.make_node("DequantizeLinear", ["flatq", "ps", "pz"], ["flatf"]),
        helper.make_node("DequantizeLinear", ["fcq", "fcs", "fcz"], ["fcf"], axis=0),
        helper.make_node("Gemm", ["flatf", "fcf"], ["logits_f"], transB=1),
        helper.make_node("QuantizeLinear", ["logits_f", "os", "oz"], ["lq"]),
        helper.make_node("DequantizeLinear", ["lq", "os", "oz"], ["logits"]),
    ]
    return make_model(nodes, [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 32, 32])],
                      [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], inits, opset=13)
