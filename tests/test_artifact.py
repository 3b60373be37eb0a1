"""Artifacts: a re-compiled artifact at the same path is the one that runs."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from conftest import const, make_model
from tvm_pipeline import compile as compile_model, prepare
from tvm_pipeline.artifact import load_artifact


def _affine(path, scale: float):
    f32 = TensorProto.FLOAT
    model = make_model([helper.make_node("Mul", ["x", "s"], ["y"])],
                       [helper.make_tensor_value_info("x", f32, [1, 4])],
                       [helper.make_tensor_value_info("y", f32, [1, 4])],
                       [const("s", np.full((1, 4), scale, np.float32))])
    onnx.save(model, path)
    return path


def test_recompiling_to_the_same_path_runs_the_new_build_in_the_same_process(tmp_path):
    out = tmp_path / "m.tvm"
    x = {"x": np.ones((1, 4), np.float32)}
    compile_model(prepare(_affine(tmp_path / "a.onnx", 2.0)), out)
    assert np.allclose(load_artifact(out).runner()(x)[0], 2.0)
    compile_model(prepare(_affine(tmp_path / "b.onnx", 3.0)), out)
    # the dynamic loader caches libraries by path: without care this would run the first build
    assert np.allclose(load_artifact(out).runner()(x)[0], 3.0)
    assert np.allclose(load_artifact(out).runner()(x)[0], 3.0)
