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
alpha > 1). Nodes are named like torchvision (``features.3.dw.conv``, ``classifier.fc``).

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
import secrets
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tvm_pipeline.frontend.analysis import ModelCost, analyze
from tvm_pipeline.errors import InputFileError, UsageError

MIN_OPSET, MAX_OPSET = 11, 18
IR_VERSION = 8  # ONNX Runtime 1.31 refuses IR > 13; IR 8 covers opsets up to 18
BN_EPSILON = 1e-3
INPUT_NAME, OUTPUT_NAME = "input", "logits"
ARCHS = ("v1", "v2")
# V1 depthwise-separable blocks: (pointwise filters, depthwise stride)
V1_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
             (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))
# V2 inverted residual stages: (expansion t, channels c, repeats n, first stride s)
V2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
             (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round to a multiple of ``divisor`` (>= ``divisor``), never more than 10% down (Keras)."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * value else new


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
        def bad(field: str, allowed: str) -> UsageError:
            return UsageError(f"MobileNetSpec.{field} = {getattr(self, field)!r} is not valid: "
                              f"{field} must be {allowed}.",
                              hint=f"Fix {field} (spec {self!r}) and build again.")

        def is_int(v: object) -> bool:
            return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

        if self.arch not in ARCHS:
            raise bad("arch", '"v1" or "v2"')
        alpha_ok = (isinstance(self.alpha, (int, float, np.floating))
                    and not isinstance(self.alpha, bool))
        min_alpha = 1 / 32 if self.arch == "v1" else 0.0  # V1 stem has int(32*alpha) channels
        if not alpha_ok or not math.isfinite(self.alpha) or self.alpha <= min_alpha:
            raise bad("alpha", "a finite positive float" + (" >= 1/32 for v1" if min_alpha else "")
                      + " (the papers use 1.0, 0.75, 0.5, 0.25)")
        for field, low, allowed in (
                ("resolution", 32, "an integer >= 32 (e.g. 224, 192, 160, 128, 96)"),
                ("batch", 1, "an integer >= 1"), ("num_classes", 1, "an integer >= 1"),
                ("seed", 0, "an integer >= 0")):
            value = getattr(self, field)
            if not is_int(value) or value < low:
                raise bad(field, allowed)
        if not is_int(self.opset) or not MIN_OPSET <= self.opset <= MAX_OPSET:
            raise bad("opset", f"an integer in the supported range {MIN_OPSET}..{MAX_OPSET} "
                               "inclusive")


def _relu_variance(mu: np.ndarray, s: np.ndarray) -> float:
    """Mean over channels of Var[max(0, y)] for y ~ N(mu, s^2) (the clip at 6 is ~never hit)."""
    a = mu / s
    cdf = 0.5 * (1.0 + np.vectorize(math.erf)(a / math.sqrt(2.0)))
    pdf = np.exp(-0.5 * a * a) / math.sqrt(2.0 * math.pi)
    first = mu * cdf + s * pdf
    second = (mu * mu + s * s) * cdf + mu * s * pdf
    return float(np.mean(second - first * first))


class _Builder:
    """Accumulates nodes/initializers; tracks each tensor's variance for the init gain."""

    def __init__(self, spec: MobileNetSpec):
        self.rng = np.random.default_rng(spec.seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[TensorProto] = []
        self._const("relu6.min", np.array(0.0, np.float32))
        self._const("relu6.max", np.array(6.0, np.float32))

    def _const(self, name: str, array: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(array, np.float32), name))
        return name

    def _node(self, op: str, name: str, inputs: list[str], **attrs) -> str:
        out = f"{name}_out"
        self.nodes.append(helper.make_node(op, inputs, [out], name=name, **attrs))
        return out

    def _weights(self, shape: tuple[int, ...], var_in: float) -> np.ndarray:
        """He-normal draw, centred per output filter, scaled to give unit output variance."""
        w = self.rng.standard_normal(shape)
        axes = tuple(range(1, len(shape)))
        w = w - w.mean(axis=axes, keepdims=True)
        fan_in = math.prod(shape[1:])
        he_std = math.sqrt(2.0 / fan_in)
        gain = 1.0 / math.sqrt(2.0 * var_in)  # 1/sqrt(fan_in*var_in) = He std x gain
        return w / w.std(axis=axes, keepdims=True) * he_std * gain

    def conv_bn(self, prefix: str, x: str, var_in: float, c_in: int, c_out: int, kernel: int,
                stride: int = 1, groups: int = 1, relu6: bool = True) -> tuple[str, float]:
        """Conv -> BN (-> ReLU6); returns the output name and its estimated variance."""
        w = self._weights((c_out, c_in // groups, kernel, kernel), var_in)
        pad = kernel // 2
        y = self._node("Conv", f"{prefix}.conv", [x, self._const(f"{prefix}.conv.weight", w)],
                       kernel_shape=[kernel, kernel], strides=[stride, stride],
                       pads=[pad] * 4, group=groups)
        gamma = self.rng.uniform(0.8, 1.2, c_out)
        beta = self.rng.normal(0.0, 0.1, c_out)
        mean = self.rng.normal(0.0, 0.1, c_out)
        var = self.rng.uniform(0.5, 1.5, c_out)
        bn_inputs = [y] + [self._const(f"{prefix}.bn.{n}", a) for n, a in
                           (("scale", gamma), ("bias", beta), ("mean", mean), ("var", var))]
        y = self._node("BatchNormalization", f"{prefix}.bn", bn_inputs, epsilon=BN_EPSILON)
        # The conv output has zero mean and unit variance by construction, so after the BN
        # each channel is ~N(mu, s^2) with:
        s_bn = gamma / np.sqrt(var + BN_EPSILON)
        mu_bn = beta - s_bn * mean
        if not relu6:
            return y, float(np.mean(s_bn ** 2))
        y = self._node("Clip", f"{prefix}.relu6", [y, "relu6.min", "relu6.max"])
        return y, _relu_variance(mu_bn, s_bn)

    def add(self, name: str, a: str, b: str) -> str:
        return self._node("Add", name, [a, b])

    def head(self, x: str, var: float, channels: int, num_classes: int) -> str:
        x = self._node("GlobalAveragePool", "pool", [x])
        x = self._node("Flatten", "flatten", [x], axis=1)
        w = self._const("classifier.fc.weight", self._weights((num_classes, channels), var))
        b = self._const("classifier.fc.bias", self.rng.normal(0.0, 0.01, num_classes))
        self.nodes.append(helper.make_node("Gemm", [x, w, b], [OUTPUT_NAME],
                                           name="classifier.fc", transB=1))
        return OUTPUT_NAME


def _build_v1(b: _Builder, alpha: float, x: str, var_x: float) -> tuple[str, float, int]:
    c = int(32 * alpha)
    x, var_x = b.conv_bn("features.0", x, var_x, 3, c, 3, stride=2)
    for i, (filters, stride) in enumerate(V1_BLOCKS, start=1):
        out = int(filters * alpha)
        x, var_x = b.conv_bn(f"features.{i}.dw", x, var_x, c, c, 3, stride=stride, groups=c)
        x, var_x = b.conv_bn(f"features.{i}.pw", x, var_x, c, out, 1)
        c = out
    return x, var_x, c


def _build_v2(b: _Builder, alpha: float, x: str, var_x: float) -> tuple[str, float, int]:
    c = make_divisible(32 * alpha)
    x, var_x = b.conv_bn("features.0", x, var_x, 3, c, 3, stride=2)
    index = 1
    for t, channels, repeats, first_stride in V2_STAGES:
        out = make_divisible(channels * alpha)
        for j in range(repeats):
            stride, prefix, hidden = (first_stride if j == 0 else 1), f"features.{index}", c * t
            y, vy = x, var_x
            if t != 1:
                y, vy = b.conv_bn(f"{prefix}.expand", y, vy, c, hidden, 1)
            y, vy = b.conv_bn(f"{prefix}.dw", y, vy, hidden, hidden, 3, stride=stride,
                               groups=hidden)
            y, vy = b.conv_bn(f"{prefix}.project", y, vy, hidden, out, 1, relu6=False)
            if stride == 1 and c == out:
                x, var_x = b.add(f"{prefix}.add", x, y), var_x + vy
            else:
                x, var_x = y, vy
            c, index = out, index + 1
    last = make_divisible(1280 * alpha) if alpha > 1.0 else 1280
    x, var_x = b.conv_bn(f"features.{index}", x, var_x, c, last, 1)
    return x, var_x, last


def build_mobilenet(spec: MobileNetSpec) -> onnx.ModelProto:
    """Build the ONNX model for ``spec`` (validated first) and run the ONNX checker on it."""
    if not isinstance(spec, MobileNetSpec):
        raise UsageError(f"build_mobilenet() expects a MobileNetSpec, got {type(spec).__name__}.",
                         hint='Create one, e.g. MobileNetSpec("v2", alpha=1.0, resolution=224).')
    spec.validate()
    b = _Builder(spec)
    shape = [spec.batch, 3, spec.resolution, spec.resolution]
    body = _build_v1 if spec.arch == "v1" else _build_v2
    x, var_x, channels = body(b, float(spec.alpha), INPUT_NAME, 1.0 / 3.0)  # Var of U(-1, 1)
    b.head(x, var_x, channels, spec.num_classes)
    graph = helper.make_graph(
        b.nodes, spec.name,
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT,
                                       [spec.batch, spec.num_classes])],
        initializer=b.inits,
        doc_string=f"MobileNet {spec.arch} alpha={spec.alpha} resolution={spec.resolution}; "
                   f"random weights (seed {spec.seed}), not trained.")
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", spec.opset)],
                              ir_version=IR_VERSION, producer_name="tvm_pipeline.models.mobilenet")
    helper.set_model_props(model, {
        "arch": spec.arch, "alpha": repr(float(spec.alpha)), "resolution": str(spec.resolution),
        "batch": str(spec.batch), "num_classes": str(spec.num_classes), "seed": str(spec.seed),
        "weights": "random (seeded), not trained"})
    onnx.checker.check_model(model, full_check=True)
    return model


def export_mobilenet(spec: MobileNetSpec, path: str | os.PathLike) -> ModelCost:
    """Build ``spec`` and write it atomically to ``path``; return its :func:`analyze` cost."""
    if not isinstance(path, (str, os.PathLike)):
        raise UsageError(f"export_mobilenet() needs a file path, got {type(path).__name__}.",
                         hint="Pass a str or pathlib.Path ending in .onnx.")
    model = build_mobilenet(spec)
    target = os.path.abspath(os.fspath(path))
    if os.path.isdir(target):
        raise InputFileError(f"Cannot write the {spec.name} model to '{target}': it is a "
                             "directory.", hint="Give a file path ending in .onnx.")
    # same directory, so os.replace is an atomic rename; O_EXCL with mode 0o666 honours umask
    tmp = os.path.join(os.path.dirname(target),
                       f".{os.path.basename(target)}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as handle:
            handle.write(model.SerializeToString())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        raise InputFileError(
            f"Cannot write the {spec.name} model to '{target}': {exc.strerror or exc}.",
            hint="Check that the directory exists and is writable, or choose another path.",
        ) from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return analyze(model)
