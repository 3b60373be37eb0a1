"""Transcendental functions as vectorizable polynomials: a model with SiLU, GELU (erf), tanh, exp
and softmax compiles without a call to the C library's scalar functions and still computes what
ONNX Runtime computes."""

from __future__ import annotations

import math
import shutil
import subprocess

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tvm_pipeline.api import CompileOptions, compile as compile_model, prepare
from tests.conftest import const, make_model

SCALAR_LIBM = {"expf", "exp", "tanhf", "tanh", "erff", "erf"}


def _model(seed: int = 0) -> onnx.ModelProto:
    """conv -> SiLU -> conv -> GELU (erf form, as torch exports it) -> tanh -> exp -> mean ->
    linear -> softmax."""
    rng = np.random.default_rng(seed)
    inits = [const("c1.w", rng.normal(0, 0.4, (16, 3, 3, 3)).astype(np.float32)),
             const("c2.w", rng.normal(0, 0.2, (32, 16, 1, 1)).astype(np.float32)),
             const("fc.w", rng.normal(0, 0.3, (10, 32)).astype(np.float32)),
             const("sqrt2", np.float32(math.sqrt(2))), const("one", np.float32(1)),
             const("half", np.float32(0.5))]
    node = helper.make_node
    nodes = [
        node("Conv", ["x", "c1.w"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        node("Sigmoid", ["c1"], ["s"]), node("Mul", ["c1", "s"], ["silu"]),
        node("Conv", ["silu", "c2.w"], ["c2"], kernel_shape=[1, 1]),
        node("Div", ["c2", "sqrt2"], ["d"]), node("Erf", ["d"], ["e"]),
        node("Add", ["e", "one"], ["e1"]), node("Mul", ["c2", "e1"], ["g0"]),
        node("Mul", ["g0", "half"], ["gelu"]),
        node("Tanh", ["gelu"], ["t"]), node("Exp", ["t"], ["ex"]),
        node("GlobalAveragePool", ["ex"], ["pool"]), node("Flatten", ["pool"], ["flat"]),
        node("Gemm", ["flat", "fc.w"], ["fc"], transB=1), node("Softmax", ["fc"], ["probs"], axis=1),
    ]
    f32 = TensorProto.FLOAT
    return make_model(nodes, [helper.make_tensor_value_info("x", f32, [1, 3, 20, 20])],
                      [helper.make_tensor_value_info("probs", f32, [1, 10])], inits, opset=13)


@pytest.mark.skipif(shutil.which("nm") is None, reason="needs binutils' nm")
def test_transcendentals_vectorize_and_agree_with_onnx_runtime(tmp_path):
    path = tmp_path / "transcendental.onnx"
    onnx.save(_model(), path)
    prepared = prepare(path)
    if prepared.target.device != "cpu":
        pytest.skip("fast math is a CPU lowering")
    result = compile_model(prepared, tmp_path / "t.tvm", CompileOptions(use_database=False))
    assert result.validation.passed
    assert result.build.naive_kernels == [], result.build.naive_reasons
    symbols = subprocess.run(["nm", "-D", "--undefined-only", str(result.artifact.library)],
                             capture_output=True, text=True, check=True).stdout
    called = {line.split()[-1].split("@")[0] for line in symbols.splitlines() if line.strip()}
    assert not called & SCALAR_LIBM, called & SCALAR_LIBM
