"""MobileNet V1 (Howard et al. 2017) and V2 (Sandler et al. 2018) built directly as ONNX graphs.

Only ``onnx.helper``/``numpy_helper`` are used (no framework). The weights are random but seeded
(``numpy.random.default_rng(spec.seed)``), so the same spec gives a byte-identical file; they are
NOT trained, the models exist to exercise compilation, tuning and validation.

Graph conventions: one input ``"input"`` float32 ``[batch, 3, R, R]`` (NCHW), one output
``"logits"`` float32 ``[batch, num_classes]`` (no Softmax). Every conv is ``Conv`` (no bias) ->
``BatchNormalization`` (inference form) -> ``Clip(0, 6)`` (ReLU6, min/max as initializers),
except V2's linear projection conv (no Clip). Head: ``GlobalAveragePool`` -> ``Flatten`` ->
``Gemm``. Channel counts follow Keras/torchvision: V1 ``int(c*alpha)``, V2
``make_divisible(c*alpha, 8)`` with a last conv of 1280 (``make_divisible(1280*alpha, 8)`` when
alpha > 1). Nodes are named like torchvision (``features.3.dw.conv``, ``classifier.fc``). The
graph builder, the initialisation and the atomic export are shared with the rest of the model
corpus (:mod:`tvm_pipeline.models.layers`, :mod:`tvm_pipeline.models.corpus`).

Initialisation (tuned so that a uniform[-1, 1] image gives informative logits): conv and fc
weights are drawn He-normal, then each output filter is centred to zero mean (as in Weight
Standardization, Qiao et al. 2019) and rescaled to std ``sqrt(2/fan_in) * gain`` with
``gain = 1/sqrt(2*v_in)``, ``v_in`` being the input's per-channel variance propagated
analytically while building (1/3 for the image, exact Gaussian ReLU moments after BN+ReLU6,
summed over residual adds). Every conv output thus has about unit variance, matching the BN
running variances drawn from U(0.5, 1.5), so activations keep a std of ~0.7 with ~50% zeros and
<0.5% at 6 at every depth. Plain He weights make ReLU6 outputs' positive mean dominate deep
features, so every noise image got the same top-1 class, and in V2 the linear bottlenecks and
residual adds grow the variance until up to ~25% of ReLU6 outputs sit at 6. BN gamma
~ U(0.8, 1.2), beta ~ N(0, 0.1), mean ~ N(0, 0.1), var ~ U(0.5, 1.5), epsilon 1e-3 (so BN
folding is non-trivial); fc bias ~ N(0, 0.01). Logits then have a std of about 0.3.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import onnx

from tvm_pipeline.frontend.analysis import ModelCost, analyze
from tvm_pipeline.errors import UsageError
from tvm_pipeline.models.layers import (GraphBuilder, Value, check_common_fields,
                                        check_path, make_divisible, save_model, spec_error)

MIN_OPSET, MAX_OPSET = 11, 18
BN_EPSILON = 1e-3
ARCHS = ("v1", "v2")
# V1 depthwise-separable blocks: (pointwise filters, depthwise stride)
V1_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
             (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))
# V2 inverted residual stages: (expansion t, channels c, repeats n, first stride s)
V2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
             (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def _alpha_text(alpha: float) -> str:
    text = f"{float(alpha):.4g}"
    return text if ("." in text or "e" in text) else text + ".0"


@dataclass(frozen=True)
class MobileNetSpec:
    """What to build; ``name`` is e.g. ``mobilenet_v2_1.0_224``."""

    arch: str
    alpha: float = 1.0
    resolution: int = 224
    batch: int = 1
    opset: int = 13
    num_classes: int = 1000
    seed: int = 0

    @property
    def name(self) -> str:
        return f"mobilenet_{self.arch}_{_alpha_text(self.alpha)}_{self.resolution}"

    def validate(self) -> None:
        """Raise :class:`UsageError` naming the first bad field and the values it accepts."""
        if self.arch not in ARCHS:
            raise spec_error(self, "arch", '"v1" or "v2"')
        alpha_ok = (isinstance(self.alpha, (int, float, np.floating))
                    and not isinstance(self.alpha, bool))
        min_alpha = 1 / 32 if self.arch == "v1" else 0.0  # V1 stem has int(32*alpha) channels
        if not alpha_ok or not math.isfinite(self.alpha) or self.alpha <= min_alpha:
            raise spec_error(self, "alpha", "a finite positive float"
                             + (" >= 1/32 for v1" if min_alpha else "")
                             + " (the papers use 1.0, 0.75, 0.5, 0.25)")
        check_common_fields(self, MIN_OPSET, MAX_OPSET)


def _build_v1(b: GraphBuilder, alpha: float, x: Value) -> Value:
    c = int(32 * alpha)
    x = b.conv_bn("features.0", x, c, 3, stride=2, act="relu6")
    for i, (filters, stride) in enumerate(V1_BLOCKS, start=1):
        x = b.conv_bn(f"features.{i}.dw", x, x.channels, 3, stride=stride, groups=x.channels,
                      act="relu6")
        x = b.conv_bn(f"features.{i}.pw", x, int(filters * alpha), 1, act="relu6")
    return x


def _build_v2(b: GraphBuilder, alpha: float, x: Value) -> Value:
    x = b.conv_bn("features.0", x, make_divisible(32 * alpha), 3, stride=2, act="relu6")
    stages = [(t, make_divisible(c * alpha), n, s, 3) for t, c, n, s in V2_STAGES]
    x, index = b.inverted_residual_stages(x, stages, "relu6")
    last = make_divisible(1280 * alpha) if alpha > 1.0 else 1280
    return b.conv_bn(f"features.{index}", x, last, 1, act="relu6")


def build_mobilenet(spec: MobileNetSpec) -> onnx.ModelProto:
    """Build the ONNX model for ``spec`` (validated first) and run the ONNX checker on it."""
    if not isinstance(spec, MobileNetSpec):
        raise UsageError(f"build_mobilenet() expects a MobileNetSpec, got {type(spec).__name__}.",
                         hint='Create one, e.g. MobileNetSpec("v2", alpha=1.0, resolution=224).')
    spec.validate()
    b = GraphBuilder(spec.seed, batch=spec.batch, opset=spec.opset, bn_epsilon=BN_EPSILON)
    body = _build_v1 if spec.arch == "v1" else _build_v2
    b.classifier(body(b, float(spec.alpha), b.input(spec.resolution)), spec.num_classes)
    return b.finish(
        spec.name, spec.resolution, spec.num_classes,
        doc=f"MobileNet {spec.arch} alpha={spec.alpha} resolution={spec.resolution}; "
            f"random weights (seed {spec.seed}), not trained.",
        producer="tvm_pipeline.models.mobilenet",
        props={"arch": spec.arch, "alpha": repr(float(spec.alpha)),
               "resolution": str(spec.resolution), "batch": str(spec.batch),
               "num_classes": str(spec.num_classes), "seed": str(spec.seed),
               "weights": "random (seeded), not trained"})


def export_mobilenet(spec: MobileNetSpec, path: str | os.PathLike) -> ModelCost:
    """Build ``spec`` and write it atomically to ``path``; return its :func:`analyze` cost."""
    check_path(path, "export_mobilenet")
    model = build_mobilenet(spec)
    save_model(model, path, spec.name)
    return analyze(model)
