"""The lifecycle verbs (tvm_pipeline.api) on real TVM builds: prepare -> compile (validating) ->
validate/bench/classify."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from PIL import Image

from conftest import exported_style_model, make_model
from tvm_pipeline.api import CompileOptions, bench, classify, compile as compile_model, prepare, validate
from tvm_pipeline.run.artifact import load_artifact
from tvm_pipeline.errors import InputFileError, ModelError, UsageError, ValidationError
from tvm_pipeline.run.bench import BenchOptions
from tvm_pipeline.run.validate import Tolerances, ValidateOptions


def test_prepare_fuses_conv_bias_activation(small_v2):
    prepared = prepare(small_v2)
    names = [k.name for k in prepared.kernels]
    # BatchNorm folded and Clip fused: every conv kernel carries its bias add and clip
    conv = [n for n in names if "conv2d" in n]
    assert conv and all("add" in n for n in conv), names
    assert not any("batch_norm" in n for n in names)
    assert sum("clip" in n or "minimum" in n for n in conv) >= len(conv) // 2
    # channels-last on CPUs: activations fused into the NHWC convolutions, transposes only at the
    # input and before the classifier's reshape (not around every Clip)
    assert not any("transpose" in n and "minimum" in n for n in names), names
    assert sum("transpose" in n for n in names) <= 2, names
    conv_func = prepared.mod[conv[0]]
    assert "conv2d_nhwc" in conv_func.script()


def test_foreign_exported_model_compiles_and_validates(tmp_path):
    """A torch-style export with dynamic dims and a Shape->Gather->Concat->Reshape subgraph."""
    path = tmp_path / "exported.onnx"
    onnx.save(exported_style_model(), path)
    prepared = prepare(path, input_shapes={"x": (1, 3, 64, 64)})
    result = compile_model(prepared, tmp_path / "exported.tvm")
    out = result.validation.outputs[0]
    assert result.validation.passed and out.max_abs <= 1e-4 and out.top1_agreement == 1.0
    meta = json.loads((tmp_path / "exported.tvm" / "metadata.json").read_text())
    assert meta["inputs"] == [{"name": "x", "shape": [1, 3, 64, 64], "dtype": "float32"}]
    assert meta["validation"]["passed"] is True
    assert meta["target"]["name"] == prepared.target.name
    kernels = meta["kernels"]
    assert kernels["total"] == result.build.kernels_total > 0
    assert kernels["naive"]["count"] == 0 and kernels["default"]["count"] > 0   # no database here
    # the artifact validates again from disk, on more samples
    report = validate(tmp_path / "exported.tvm", options=ValidateOptions(samples=5, seed=7))
    assert report.passed and report.samples == 5


def test_unsupported_operators_listed_at_once(tmp_path):
    f32 = TensorProto.FLOAT
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="relu"),
             helper.make_node("Inverse", ["a"], ["b"], name="inv1", domain="com.microsoft"),
             helper.make_node("Det", ["b"], ["c"], name="det1")]
    model = make_model(nodes, [helper.make_tensor_value_info("x", f32, [1, 3, 3])],
                       [helper.make_tensor_value_info("c", f32, [1])])
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    path = tmp_path / "unsupported.onnx"
    onnx.save(model, path)
    from tvm_pipeline.lowering.prepare import check_operators

    with pytest.raises(ModelError) as err:
        check_operators(model, str(path))
    assert "com.microsoft::Inverse" in str(err.value) and "Det" in str(err.value)
    assert "2 operator(s)" in str(err.value)


def test_compile_refuses_to_write_a_failing_artifact(small_v2, tmp_path):
    """An impossible tolerance makes validation fail: no artifact may appear."""
    prepared = prepare(small_v2)
    out = tmp_path / "never.tvm"
    impossible = ValidateOptions(samples=1, tolerances=Tolerances(atol=0.0, rtol=0.0, min_cosine=1.0))
    with pytest.raises(ValidationError, match="logits"):
        compile_model(prepared, out, CompileOptions(use_database=False, validate_options=impossible))
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".never")]


def test_validate_bench_classify_on_artifact(small_v2_artifact, tmp_path):
    report = validate(small_v2_artifact)
    assert report.passed and report.outputs[0].max_abs < 1e-4
    result = bench(small_v2_artifact, options=BenchOptions(warmup=2, runs=5))
    d = result.to_dict()
    assert d["tvm_median_ms"] > 0 and d["ort_median_ms"] > 0
    assert d["ratio"] == pytest.approx(d["tvm_median_ms"] / d["ort_median_ms"])
    image = tmp_path / "cat.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (120, 80, 3), np.uint8)).save(image)
    preds = classify(small_v2_artifact, image)
    assert len(preds) == 5 and preds[0].probability >= preds[-1].probability
    assert all(p.label for p in preds)


def test_validate_detects_a_different_model(small_v2_artifact, tmp_path):
    from tvm_pipeline.models import MobileNetSpec, export_mobilenet

    other = tmp_path / "other.onnx"
    export_mobilenet(MobileNetSpec("v2", 0.25, 96, seed=1), other)
    with pytest.raises(UsageError, match="sha256"):
        validate(small_v2_artifact, model=other)


def test_load_artifact_errors(tmp_path):
    with pytest.raises(InputFileError, match="does not exist"):
        load_artifact(tmp_path / "missing.tvm")
    with pytest.raises(InputFileError, match="not a tvm-pipeline artifact"):
        load_artifact(tmp_path)


def test_package_verbs_are_not_shadowed_by_stage_modules():
    import tvm_pipeline as tp
    import tvm_pipeline.run.bench, tvm_pipeline.tuning.tune  # noqa: F401  (imported on purpose)

    for verb in ("load", "prepare", "tune", "compile", "validate", "bench", "classify"):
        assert callable(getattr(tp, verb)), verb
    assert min(tp.TuneOptions().budget()) > 0 and tp.BenchOptions().runs > 0
