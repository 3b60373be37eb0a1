"""What goes into and comes out of a model run: runner type, image preprocessing, output flattening.

Preprocessing is that of ``keras.applications.mobilenet(_v2).preprocess_input``: RGB, resized
(bilinear) to the model's input size, scaled to ``x / 127.5 - 1`` ([-1, 1]). The layout (NCHW or
NHWC) is read from the input shape: the axis of size 3.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..errors import InputFileError, UsageError

Runner = Callable[[dict[str, np.ndarray]], list[np.ndarray]]


def _dim(d: object) -> bool:
    return isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d > 0


def _layout(shape: Sequence[int | str]) -> tuple[str, int, int, int]:
    """(``"NCHW"``/``"NHWC"``, batch, H, W) of an image input shape."""
    shape = tuple(shape)
    if len(shape) == 4 and shape[1] == 3 and _dim(shape[2]) and _dim(shape[3]):
        layout, (h, w) = "NCHW", shape[2:]
    elif len(shape) == 4 and shape[3] == 3 and _dim(shape[1]) and _dim(shape[2]):
        layout, (h, w) = "NHWC", shape[1:3]
    else:
        raise UsageError(f"Input shape {list(shape)} is not an RGB image shape.",
                         hint="Image inputs must be NCHW [1,3,H,W] or NHWC [1,H,W,3] with static "
                              "H and W; fix it with --input-shape when compiling.")
    batch = shape[0] if _dim(shape[0]) else 1
    return layout, int(batch), int(h), int(w)


def preprocess(image_path: str | Path, shape: Sequence[int], dtype: str = "float32") -> np.ndarray:
    """Load ``image_path`` as a batch for an input of ``shape`` (MobileNet preprocessing)."""
    from PIL import Image, UnidentifiedImageError  # pylint: disable=import-outside-toplevel

    layout, batch, h, w = _layout(shape)
    try:
        np_dtype = np.dtype(dtype)
    except TypeError as err:
        raise UsageError(f"Unknown input dtype {dtype!r} for an image input.") from err
    if np_dtype.kind != "f":
        raise UsageError(f"Image inputs must be floating point; this model's input is {np_dtype}.",
                         hint="MobileNet preprocessing produces floats in [-1, 1].")
    path = Path(image_path)
    if not path.is_file():
        raise InputFileError(f"Image {path} does not exist" + (" (it is a directory)."
                             if path.is_dir() else "."), hint="Pass a JPEG or PNG file.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                rgb = img.convert("RGB").resize((w, h), Image.Resampling.BILINEAR)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise InputFileError(f"Image {path} declares more pixels than an image may have here "
                             f"(over {Image.MAX_IMAGE_PIXELS} pixels): decoding it could exhaust "
                             "memory.", hint="Pass a photo of ordinary size; it is resized to "
                             f"{w}x{h} anyway.") from err
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise InputFileError(f"Cannot read image {path}: {err}.",
                             hint="Pass a readable JPEG or PNG file.") from err
    x = np.asarray(rgb, dtype=np.float32) / 127.5 - 1.0          # H, W, 3
    if layout == "NCHW":
        x = x.transpose(2, 0, 1)
    return np.ascontiguousarray(np.repeat(x[None], batch, axis=0).astype(np_dtype))


def flatten_tensors(result) -> list:
    """The VM's result (a tensor or nested tuples of them) as a flat list of tensors."""
    return [result] if hasattr(result, "numpy") else [t for r in result for t in flatten_tensors(r)]


def flatten_outputs(result) -> list[np.ndarray]:
    return [t.numpy() for t in flatten_tensors(result)]
