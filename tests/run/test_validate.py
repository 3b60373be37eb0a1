"""The correctness gate: ONNX Runtime stands in for a correct compiled module; perturbed runners
prove that the gate fails, and says why, for each kind of disagreement."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tvm_pipeline.frontend.analysis import TensorInfo
from tvm_pipeline.errors import UsageError, ValidationError
from tvm_pipeline.models.mobilenet import MobileNetSpec, build_mobilenet
from tvm_pipeline.run.validate import (OutputReport, Tolerances, ValidateOptions, ValidationReport,
                                   check, compare, make_feeds, ort_runner, validate)

INPUTS = [TensorInfo("input", (1, 3, 96, 96), "float32")]
OUTPUTS = ["logits"]
ONE = ValidateOptions(samples=1)


@pytest.fixture(scope="module")
def model():
    return build_mobilenet(MobileNetSpec("v2", 0.25, 96))


@pytest.fixture(scope="module")
def reference(model):
    return ort_runner(model, threads=1)


@pytest.fixture(scope="module")
def module(model):
    """The "compiled module": a second, independent ONNX Runtime session (from bytes)."""
    return ort_runner(model.SerializeToString(), threads=1)


def perturbed(runner, edit):
    def run(feeds):
        outs = [o.copy() for o in runner(feeds)]
        return edit(outs)
    return run


def test_correct_module_passes(module, reference):
    report = validate(module, reference, INPUTS, OUTPUTS, ValidateOptions(samples=2))
    assert report.passed and report.samples == 2
    (out,) = report.outputs
    assert out.name == "logits" and out.shape == (1, 1000) and out.failure is None
    assert out.max_abs < 1e-4 and out.cosine > 0.9999
    assert out.top1_agreement == 1.0 and out.top5_agreement == 1.0
    check(report)  # no exception
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert data["passed"] is True and data["outputs"][0]["shape"] == [1, 1000]
    assert set(data["outputs"][0]) >= {"name", "shape", "max_abs", "max_rel", "cosine",
                                       "top1_agreement", "top5_agreement", "passed", "failure"}
    text = report.format()
    assert "PASSED" in text and "logits" in text and "1x1000" in text


def test_offset_on_one_logit_fails_with_numbers(module, reference):
    def edit(outs):
        outs[0][0, 17] += 1e-2
        return outs
    report = validate(perturbed(module, edit), reference, INPUTS, OUTPUTS, ONE)
    out = report.outputs[0]
    assert not report.passed and not out.passed
    assert 9e-3 < out.max_abs < 1.1e-2
    assert "max abs error 1.0e-02 > atol 0.0001 + rtol 0.001*|ref| at index (0, 17)" in out.failure
    with pytest.raises(ValidationError) as err:
        check(report)
    msg = str(err.value)
    assert "'logits'" in msg and "(0, 17)" in msg and "1.0e-02" in msg and "--atol" in msg
    assert err.value.report is report and err.value.exit_code == 7
    assert "FAILED" in report.format()


def test_swapped_classes_fail_top1(module, reference):
    def edit(outs):
        row = outs[0][0]
        top, low = int(np.argmax(row)), int(np.argmin(row))
        row[top], row[low] = row[low], row[top]
        return outs
    out = validate(perturbed(module, edit), reference, INPUTS, OUTPUTS, ONE).outputs[0]
    assert not out.passed and out.top1_agreement == 0.0 and out.top1_ties == 0
    assert "top-1 class differs in row 0" in out.failure and "not a numerical tie" in out.failure
    assert out.top5_agreement == pytest.approx(0.8)


def test_wrong_shape_fails_clearly(module, reference):
    out = validate(perturbed(module, lambda o: [o[0][:, :999]]), reference, INPUTS, OUTPUTS,
                   ONE).outputs[0]
    assert not out.passed
    assert "shape (1, 999) != reference (1, 1000)" in out.failure


def test_wrong_dtype_fails(module, reference):
    out = validate(perturbed(module, lambda o: [o[0].astype(np.float64)]), reference, INPUTS,
                   OUTPUTS, ONE).outputs[0]
    assert not out.passed and "dtype float64 != reference float32" in out.failure
    assert out.max_abs < 1e-4  # the numbers themselves are still compared


def test_nan_fails(module, reference):
    def edit(outs):
        outs[0][0, 3] = np.nan
        return outs
    report = validate(perturbed(module, edit), reference, INPUTS, OUTPUTS, ONE)
    out = report.outputs[0]
    assert not out.passed and "1 NaN/Inf value(s)" in out.failure and "(0, 3)" in out.failure
    assert "got nan" in out.failure
    assert report.to_dict()["outputs"][0]["max_abs"] is None  # JSON-able, no NaN/Infinity
    json.dumps(report.to_dict(), allow_nan=False)


def test_missing_and_extra_outputs_fail(module, reference):
    report = validate(lambda feeds: [], reference, INPUTS, OUTPUTS, ONE)
    assert not report.passed
    assert "the module returned 0 output(s), the model has 1" in report.outputs[0].failure
    report = validate(perturbed(module, lambda o: o + o), reference, INPUTS, OUTPUTS, ONE)
    assert report.outputs[0].passed and not report.passed
    assert "returned 2 output(s), the model has 1" in report.outputs[1].failure


def test_numerical_tie_passes_as_tie():
    ref = np.linspace(-1, 0.4, 10, dtype=np.float32)[None]
    ref[0, 3], ref[0, 7] = 0.50001, 0.5           # top-1/top-2 gap 1e-5
    got = ref.copy()
    got[0, 3], got[0, 7] = 0.5, 0.50001           # flipped by errors of 1e-5 < atol
    report = compare([[got]], [[ref]], ["scores"], Tolerances())
    out = report.outputs[0]
    assert report.passed and out.passed and out.failure is None
    assert out.top1_agreement == 0.0 and out.top1_ties == 1
    assert "accepted as numerical ties" in report.format()


def test_large_gap_flip_within_loose_tolerance_still_fails_top1():
    ref = np.array([[0.9, 0.1, 0.0, -0.1, -0.2]], dtype=np.float32)
    got = np.array([[0.1, 0.9, 0.0, -0.1, -0.2]], dtype=np.float32)
    out = compare([[got]], [[ref]], ["p"], Tolerances(atol=0.05, min_cosine=-1)).outputs[0]
    assert not out.passed and "top-1 class differs" in out.failure and out.top1_ties == 0


def test_cosine_and_zeros():
    zeros = np.zeros((2, 8), np.float32)
    out = compare([[zeros]], [[zeros.copy()]], ["z"], Tolerances()).outputs[0]
    assert out.passed and out.cosine == 1.0 and out.max_abs == 0.0
    ref = np.full((1, 3), 1e-6, np.float32)
    got = -ref                                         # within atol but pointing the other way
    out = compare([[got]], [[ref]], ["small"], Tolerances()).outputs[0]
    assert not out.passed and out.cosine == pytest.approx(-1.0)
    assert "cosine similarity -1.000000 < min_cosine 0.9999" in out.failure
    assert out.top1_agreement is None and out.top5_agreement is None   # not a [N, C>=5] tensor


def test_aggregates_over_samples():
    ref = np.ones((1, 6), np.float32)
    good, bad = ref.copy(), ref.copy()
    bad[0, 2] += 0.5
    report = compare([[good], [bad]], [[ref], [ref.copy()]], ["x"], Tolerances())
    out = report.outputs[0]
    assert report.samples == 2 and out.max_abs == pytest.approx(0.5)
    assert out.failure.count("(sample 1)") >= 1 and "(sample 0)" not in out.failure
    assert isinstance(out, OutputReport) and isinstance(report, ValidationReport)


def test_make_feeds_seeded_and_typed(tmp_path):
    infos = [TensorInfo("x", (2, 3), "float32"), TensorInfo("ids", (4,), "int64"),
             TensorInfo("mask", (4,), "bool")]
    a = make_feeds(infos, ValidateOptions(samples=2, seed=5))
    b = make_feeds(infos, ValidateOptions(samples=2, seed=5))
    c = make_feeds(infos, ValidateOptions(samples=2, seed=6))
    assert len(a) == 2 and all(np.array_equal(a[1][k], b[1][k]) for k in a[1])
    assert not np.array_equal(a[0]["x"], c[0]["x"]) and not np.array_equal(a[0]["x"], a[1]["x"])
    assert a[0]["x"].dtype == np.float32 and -1 <= a[0]["x"].min() and a[0]["x"].max() <= 1
    assert a[0]["ids"].dtype == np.int64 and a[0]["ids"].min() >= 0 and a[0]["ids"].max() < 10
    assert a[0]["mask"].dtype == np.bool_


def test_make_feeds_images(tmp_path):
    img = tmp_path / "cat.png"
    Image.new("RGB", (40, 30), (255, 0, 128)).save(img)
    feeds = make_feeds(INPUTS, ValidateOptions(samples=1, images=(img,)))
    assert len(feeds) == 2 and feeds[1]["input"].shape == (1, 3, 96, 96)
    assert feeds[1]["input"][0, 0].max() == pytest.approx(1.0)
    two = INPUTS + [TensorInfo("other", (1, 4), "float32")]
    with pytest.raises(UsageError, match="single 4-D float input"):
        make_feeds(two, ValidateOptions(samples=1, images=(img,)))


def test_make_feeds_usage_errors():
    with pytest.raises(UsageError, match="symbolic shape"):
        make_feeds([TensorInfo("input", ("batch", 3, 8, 8), "float32")], ONE)
    with pytest.raises(UsageError, match="at least one input feed"):
        make_feeds(INPUTS, ValidateOptions(samples=0))
    with pytest.raises(UsageError, match="tolerances"):
        Tolerances(atol=-1)


def test_image_validation_end_to_end(tmp_path, module, reference):
    img = tmp_path / "photo.jpg"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)).save(img)
    report = validate(module, reference, INPUTS, OUTPUTS, ValidateOptions(samples=0, images=(img,)))
    assert report.passed and report.samples == 1


def test_matching_nonfinite_outputs_fail_unless_allowed(module, reference):
    """Inf weights make both sides Inf: agreement proves nothing, so it fails by default."""
    def edit(outs):
        outs[0][0, 5] = np.inf
        return outs
    both_inf = perturbed(reference, edit)
    report = validate(perturbed(module, edit), both_inf, INPUTS, OUTPUTS, ONE)
    out = report.outputs[0]
    assert not out.passed and "ONNX Runtime itself produced 1 NaN/Inf" in out.failure
    assert "(0, 5)" in out.failure and "--allow-nonfinite" in out.failure
    allowed = ValidateOptions(samples=1, tolerances=Tolerances(allow_nonfinite=True))
    assert validate(perturbed(module, edit), both_inf, INPUTS, OUTPUTS, allowed).passed
