"""``quantize``: ONNX Runtime's static quantizer (QDQ), reported against the float model."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
from PIL import Image


def _qdq_ops(path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def test_quantize_with_seeded_samples_writes_a_qdq_model_and_reports_it(cli, small_v2, tmp_path):
    out = tmp_path / "v2.int8.onnx"
    result = cli("quantize", small_v2, "-o", out, "--samples", "8", "--held-back", "4", "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= _qdq_ops(out)
    assert report["quantized_ops"]["Conv"] > 10 and report["held_back"] == 4
    assert report["int8_bytes"] < report["float_bytes"] / 2
    (logits,) = report["outputs"]
    assert 0.0 < logits["cosine"] <= 1.0 and logits["top1_agreement"] is not None
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: np.zeros((1, 3, 96, 96), np.float32)}
    assert session.run(None, feed)[0].shape == (1, 1000)      # ONNX Runtime runs what we wrote
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]


def test_quantize_calibrates_on_images_and_holds_some_back(cli, small_v2, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (120, 140, 3), dtype=np.uint8)).save(images / f"{i}.png")
    out = tmp_path / "q.onnx"
    result = cli("quantize", small_v2, "-o", out, "--calibration", images, "--method", "entropy",
                 "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["held_back"] == 1 and report["calibration"].startswith("5 images")
    assert report["method"] == "entropy" and out.is_file()


def test_quantize_bad_inputs_are_clear_errors_and_write_nothing(cli, small_v2, tmp_path):
    missing = cli("quantize", small_v2, "-o", tmp_path / "q.onnx", "--calibration",
                  tmp_path / "nope")
    assert missing.code == 3 and "Calibration folder" in missing.err
    folder = cli("quantize", small_v2, "-o", tmp_path)
    assert folder.code == 2 and "folder" in folder.err
    none = cli("quantize", small_v2, "-o", tmp_path / "q.onnx", "--samples", "0")
    assert none.code == 2 and "--samples" in none.err
    assert not (tmp_path / "q.onnx").exists()
    for result in (missing, folder, none):
        assert "Traceback" not in result.err


def test_the_note_on_onnx_runtimes_integer_kernels_blames_saturation_only_where_it_happens(
        tmp_path):
    """ONNX Runtime's u8 x s8 kernels saturate only on x86 without VNNI; elsewhere (and with 7-bit
    weights) their difference from the model is rounding that the network amplifies."""
    from tvm_pipeline.frontend.quantize import QuantizeReport

    def note(**kwargs) -> str:
        report = QuantizeReport(tmp_path / "q.onnx", "minmax", True, "8 seeded inputs", 4, {}, {},
                                8, 2, integer_kernels_cosine=0.97, **kwargs)
        return report.format().splitlines()[-1]

    assert "saturate" in note(saturating_host=True)
    for kwargs in ({"saturating_host": False}, {"saturating_host": True, "reduce_range": True}):
        assert "saturate" not in note(**kwargs) and "amplifies" in note(**kwargs)
