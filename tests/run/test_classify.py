"""Image classification: preprocessing, top-k with labels, the whole path with ORT as module."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tvm_pipeline.run.classify import Prediction, classify, format_predictions, preprocess, top_k
from tvm_pipeline.errors import InputFileError, UsageError
from tvm_pipeline.models.mobilenet import MobileNetSpec, build_mobilenet
from tvm_pipeline.run.validate import ort_runner


@pytest.fixture
def solid_png(tmp_path):
    path = tmp_path / "solid.png"
    Image.new("RGB", (50, 40), (255, 0, 51)).save(path)
    return path


@pytest.fixture
def photo_jpg(tmp_path):
    path = tmp_path / "photo.jpg"
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)).save(path, quality=90)
    return path


def test_preprocess_nchw_values(solid_png):
    x = preprocess(solid_png, [1, 3, 32, 24])
    assert x.shape == (1, 3, 32, 24) and x.dtype == np.float32 and x.flags.c_contiguous
    assert np.allclose(x[0, 0], 1.0) and np.allclose(x[0, 1], -1.0)
    assert np.allclose(x[0, 2], 51 / 127.5 - 1, atol=1e-6)


def test_preprocess_nhwc_layout_batch_dtype(solid_png, photo_jpg):
    x = preprocess(solid_png, (2, 16, 20, 3), dtype="float16")
    assert x.shape == (2, 16, 20, 3) and x.dtype == np.float16
    assert np.allclose(x[1, :, :, 0], 1.0) and np.allclose(x[0, :, :, 1], -1.0)
    nchw, nhwc = preprocess(photo_jpg, (1, 3, 64, 48)), preprocess(photo_jpg, (1, 64, 48, 3))
    assert np.array_equal(nchw[0].transpose(1, 2, 0), nhwc[0])
    assert -1.0 <= nchw.min() and nchw.max() <= 1.0 and nchw.std() > 0.1


def test_preprocess_grayscale_is_converted(tmp_path):
    path = tmp_path / "gray.png"
    Image.new("L", (10, 10), 255).save(path)
    assert np.allclose(preprocess(path, (1, 3, 8, 8)), 1.0)


def test_preprocess_file_errors(tmp_path):
    missing = tmp_path / "nope.jpg"
    with pytest.raises(InputFileError, match="nope.jpg does not exist"):
        preprocess(missing, (1, 3, 8, 8))
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image at all")
    with pytest.raises(InputFileError, match="Cannot read image .*junk.png") as err:
        preprocess(junk, (1, 3, 8, 8))
    assert err.value.exit_code == 3


def test_preprocess_shape_errors(solid_png):
    for shape in ([1, 4, 8, 8], [1, 3, 8], [1, 3, "h", "w"]):
        with pytest.raises(UsageError, match="not an RGB image shape"):
            preprocess(solid_png, shape)
    with pytest.raises(UsageError, match="floating point"):
        preprocess(solid_png, [1, 3, 8, 8], dtype="int64")


def test_top_k_softmax_and_labels():
    logits = np.zeros(1000, np.float32)
    logits[[0, 7, 3]] = [5.0, 4.0, 3.0]
    preds = top_k(logits, 3)
    assert [p.index for p in preds] == [0, 7, 3]
    assert preds[0].label == "tench"
    assert all(isinstance(p.label, str) and p.label for p in preds)
    e = np.exp(logits.astype(np.float64) - 5)
    assert preds[0].probability == pytest.approx(1 / e.sum())
    assert preds[0].probability > preds[1].probability > preds[2].probability


def test_top_k_probabilities_kept_and_other_class_counts():
    probs = np.array([0.1, 0.6, 0.05, 0.25])
    preds = top_k(probs, k=10)
    assert [p.index for p in preds] == [1, 3, 0, 2]
    assert preds[0] == Prediction(1, "class 1", pytest.approx(0.6))
    background = np.zeros(1001)
    background[[0, 1]] = [3.0, 2.0]
    preds = top_k(background, 2)
    assert preds[0].label == "background" and preds[1].label == "tench"
    assert top_k(np.array([[0.0, 1.0, 0.0]]), 1)[0].index == 1   # a [1, C] row is accepted
    with pytest.raises(UsageError):
        top_k(np.zeros((2, 3)))


def test_classify_with_ort_module(photo_jpg):
    model = build_mobilenet(MobileNetSpec("v2", 0.25, 96))
    runner = ort_runner(model, threads=1)
    preds = classify(runner, "input", [1, 3, 96, 96], photo_jpg, k=5)
    assert len(preds) == 5
    probs = [p.probability for p in preds]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-9
    x = preprocess(photo_jpg, (1, 3, 96, 96))
    assert preds[0].index == int(np.argmax(runner({"input": x})[0]))
    text = format_predictions(preds)
    assert len(text.splitlines()) == 5 and text.startswith(" 1.")
    assert preds[0].label in text and f"(class {preds[0].index})" in text and "%" in text


def _bomb_png(path, width=60000, height=60000):
    """A PNG whose header declares width x height pixels (3.6 G here) around a 1x1 image."""
    import struct
    import zlib

    Image.new("RGB", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4:ihdr + 12] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr:ihdr + 17]))
    data[ihdr + 17:ihdr + 21] = struct.pack(">I", crc)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("pixels", [60000, 12000])   # over PIL's error limit; over its warning one
def test_decompression_bomb_is_refused_before_decoding(cli, small_v2_artifact, tmp_path, pixels):
    bomb = _bomb_png(tmp_path / "bomb.png", pixels, pixels)
    with pytest.raises(InputFileError, match="bomb.png"):
        preprocess(bomb, (1, 3, 96, 96))
    for command in (["classify", small_v2_artifact.path, bomb],
                    ["validate", small_v2_artifact.path, "--image", bomb, "--samples", "0"]):
        res = cli(*command)
        assert res.code == InputFileError.exit_code, res.err
        assert str(bomb) in res.err and "pixels" in res.err and "Error" not in res.err
    assert {p.name for p in tmp_path.iterdir()} == {"bomb.png"}
