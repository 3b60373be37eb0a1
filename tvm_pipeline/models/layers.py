"""Shared pieces of the model builders: a seeded ONNX graph builder, spec checks, atomic export.

:class:`GraphBuilder` emits nodes the way PyTorch's ONNX exporter does for the layers that
torchvision/timm CNNs use: ``Conv`` without bias followed by an inference-form
``BatchNormalization``; ``Relu``; ``Clip(0, 6)`` for ReLU6 (min/max as shared initializers
``relu6.min``/``relu6.max``); ``HardSwish`` from opset 14, and at opset 13 torch's opset-9 form
``x * HardSigmoid(x)`` (``alpha=1/6, beta=0.5``); squeeze-excite as ``GlobalAveragePool -> Conv
(1x1, bias) -> Relu -> Conv (1x1, bias) -> HardSigmoid -> Mul``; ``Split``/``Concat``; channel
shuffle as ``Reshape -> Transpose -> Reshape``; ``MaxPool``; ``GlobalAveragePool -> Flatten ->
Gemm`` heads. Every node ``N`` writes one tensor ``N_out``; the final one writes ``"logits"``.

Weights are random but seeded (``numpy.random.default_rng(seed)``) and drawn in graph order, so
the same arguments give a byte-identical model. Initialisation keeps activations informative for
a uniform[-1, 1] image at any depth: each conv/fc weight is drawn He-normal, centred per output
filter (as in Weight Standardization, Qiao et al. 2019) and rescaled to give its output unit
variance, using the input's variance that the builder propagates analytically with per-channel
means (1/3 for the image; exact Gaussian moments through BN and ReLU/ReLU6, Gauss-Hermite
quadrature through HardSwish, the squeeze-excite gate and max-pooling, taken as the max of k^2
independent draws; added over residual adds, channel-weighted over concats). The ReLU after
ResNet's residual add needs the means: the identity path carries max-pooled ReLU outputs with
mean ~1.5, and a zero-mean estimate let feature variance grow ~10x by the last stage. Across the
corpus at 96x96, feature maps then keep a std of ~0.3-2.5 and logits ~0.15-0.45. BN statistics:
gamma ~ U(0.8, 1.2), beta ~ N(0, 0.1), running mean ~ N(0, 0.1), running var ~ U(0.5, 1.5), so
BN folding is non-trivial; conv biases ~ N(0, 0.1); fully-connected biases ~ N(0, 0.01).
"""

from __future__ import annotations

import math
import os
import secrets
from dataclasses import dataclass, replace

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tvm_pipeline.errors import InputFileError, UsageError

IR_VERSION = 8  # ONNX Runtime 1.31 refuses IR > 13; IR 8 covers opsets up to 18
INPUT_NAME, OUTPUT_NAME = "input", "logits"
IMAGE_VARIANCE = 1.0 / 3.0  # Var of U(-1, 1)
HARDSWISH_OPSET = 14  # first opset with the HardSwish op
ACTIVATIONS = ("relu", "relu6", "hardswish")
_GH_NODES, _GH_WEIGHTS = np.polynomial.hermite_e.hermegauss(48)  # E over N(0, 1)
_GH_WEIGHTS = _GH_WEIGHTS / _GH_WEIGHTS.sum()


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round to a multiple of ``divisor`` (>= ``divisor``), never more than 10% down (Keras,
    torchvision ``_make_divisible``, timm ``make_divisible``)."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * value else new


# --- argument checks shared by the spec dataclasses ------------------------------------------

def is_int(value: object) -> bool:
    """True for Python/numpy integers, False for bools and everything else."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def spec_error(spec: object, field: str, allowed: str) -> UsageError:
    """``UsageError`` naming ``Spec.field``, its bad value, and what it accepts."""
    kind = type(spec).__name__
    return UsageError(f"{kind}.{field} = {getattr(spec, field)!r} is not valid: "
                      f"{field} must be {allowed}.",
                      hint=f"Fix {field} (spec {spec!r}) and build again.")


def check_common_fields(spec: object, min_opset: int, max_opset: int) -> None:
    """Check the ``resolution``, ``batch``, ``num_classes``, ``seed`` and ``opset`` fields that
    every spec has; raise :func:`spec_error` for the first bad one."""
    for field, low, allowed in (
            ("resolution", 32, "an integer >= 32 (e.g. 224, 192, 160, 128, 96)"),
            ("batch", 1, "an integer >= 1"), ("num_classes", 1, "an integer >= 1"),
            ("seed", 0, "an integer >= 0")):
        value = getattr(spec, field)
        if not is_int(value) or value < low:
            raise spec_error(spec, field, allowed)
    opset = getattr(spec, "opset")
    if not is_int(opset) or not min_opset <= opset <= max_opset:
        raise spec_error(spec, "opset", f"an integer in the supported range "
                                        f"{min_opset}..{max_opset} inclusive")


# --- variance propagation for the initialisation ---------------------------------------------

def _relu_moments(mu: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel E[max(0, y)] and E[max(0, y)^2] for y ~ N(mu, s^2), exactly (the clip of
    ReLU6 at 6 is ~never hit)."""
    a = mu / s
    cdf = 0.5 * (1.0 + np.vectorize(math.erf)(a / math.sqrt(2.0)))
    pdf = np.exp(-0.5 * a * a) / math.sqrt(2.0 * math.pi)
    first = mu * cdf + s * pdf
    second = (mu * mu + s * s) * cdf + mu * s * pdf
    return first, second


def _hard_sigmoid(y: np.ndarray) -> np.ndarray:
    return np.clip(y / 6.0 + 0.5, 0.0, 1.0)


def _gaussian_moments(fn, mu: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel E[fn(y)] and E[fn(y)^2] for y ~ N(mu, s^2), by Gauss-Hermite quadrature."""
    values = fn(mu[:, None] + s[:, None] * _GH_NODES[None, :])
    return values @ _GH_WEIGHTS, (values * values) @ _GH_WEIGHTS


def _max_relu_moments(mu: np.ndarray, s: np.ndarray, n: int) -> tuple[np.ndarray, float]:
    """Per-channel mean and channel-averaged variance of ``max(0, max of n iid N(mu, s^2))``:
    a k x k max-pool (n = k^2) of ReLU outputs; ReLU is monotone, so it commutes with the max."""
    z = _GH_NODES[None, :]
    density = n * (0.5 * (1.0 + np.vectorize(math.erf)(z / math.sqrt(2.0)))) ** (n - 1)
    values = np.maximum(mu[:, None] + s[:, None] * z, 0.0)
    first = (values * density) @ _GH_WEIGHTS
    second = (values * values * density) @ _GH_WEIGHTS
    return first, float(np.mean(second - first * first))


def _activation_moments(kind: str, mu: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, float]:
    """Per-channel mean and the channel-averaged variance of ``kind`` applied to N(mu, s^2)."""
    if kind in ("relu", "relu6"):
        first, second = _relu_moments(mu, s)
    else:
        first, second = _gaussian_moments(lambda y: y * _hard_sigmoid(y), mu, s)
    return first, float(np.mean(second - first * first))


@dataclass(frozen=True, eq=False)
class Value:
    """A feature map of the graph being built: ONNX name, ``[N, channels, height, width]``,
    its variance ``var`` (per channel, averaged over channels), its per-channel mean ``mu``
    (None: zero) and, while it is an affine function of a unit-variance conv output, that
    function's per-channel scale ``sd`` (None: ``sqrt(var)`` for every channel). ``pre`` is the
    per-channel (mean, std) of the Gaussian a ReLU/ReLU6 was applied to, for max-pooling."""

    name: str
    channels: int
    height: int
    width: int
    var: float
    mu: np.ndarray | None = None
    sd: np.ndarray | None = None
    pre: tuple[np.ndarray, np.ndarray] | None = None

    def gaussian(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel (mean, std), taking the values as Gaussian."""
        mu = np.zeros(self.channels) if self.mu is None else self.mu
        sd = np.full(self.channels, math.sqrt(self.var)) if self.sd is None else self.sd
        return mu, sd


def _out_size(size: int, kernel: int, stride: int, pads: tuple[int, int], ceil: bool) -> int:
    span = size + sum(pads) - kernel
    return (-(-span // stride) if ceil else span // stride) + 1


def _tf_same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'SAME' padding (extra pixel at the end), as timm's ``tf_`` models use."""
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class GraphBuilder:
    """Accumulates nodes and seeded initializers; tracks shapes and variances (module doc)."""

    def __init__(self, seed: int, *, batch: int = 1, opset: int = 13, bn_epsilon: float = 1e-3,
                 tf_same_padding: bool = False):
        self.rng = np.random.default_rng(seed)
        self.batch, self.opset, self.bn_epsilon = batch, opset, bn_epsilon
        self.tf_same_padding = tf_same_padding
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[TensorProto] = []
        self.shared: dict[str, TensorProto] = {}  # constants used by many nodes; stored first

    # --- plumbing ------------------------------------------------------------------------------
    def const(self, name: str, array: np.ndarray, dtype: type = np.float32) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(array, dtype), name))
        return name

    def shared_const(self, name: str, array, dtype: type = np.float32) -> str:
        if name not in self.shared:
            self.shared[name] = numpy_helper.from_array(np.asarray(array, dtype), name)
        return name

    def node(self, op: str, name: str, inputs: list[str], output: str | None = None,
             **attrs) -> str:
        out = output or f"{name}_out"
        self.nodes.append(helper.make_node(op, inputs, [out], name=name, **attrs))
        return out

    def weights(self, shape: tuple[int, ...], var_in: float) -> np.ndarray:
        """He-normal draw, centred per output filter, scaled to give unit output variance."""
        w = self.rng.standard_normal(shape)
        axes = tuple(range(1, len(shape)))
        w = w - w.mean(axis=axes, keepdims=True)
        fan_in = math.prod(shape[1:])
        he_std = math.sqrt(2.0 / fan_in)
        gain = 1.0 / math.sqrt(2.0 * var_in)  # 1/sqrt(fan_in*var_in) = He std x gain
        return w / w.std(axis=axes, keepdims=True) * he_std * gain

    def input(self, resolution: int) -> Value:
        return Value(INPUT_NAME, 3, resolution, resolution, IMAGE_VARIANCE)

    # --- convolutions ----------------------------------------------------------------------------
    def conv(self, name: str, x: Value, c_out: int, kernel: int, stride: int = 1,
             groups: int = 1, bias: bool = False, pad: int | None = None) -> Value:
        """``Conv`` named ``name`` (weight ``name.weight``, bias ``name.bias``); ``pad`` defaults
        to ``kernel // 2`` (TF 'SAME' when the builder has ``tf_same_padding``)."""
        w = self.weights((c_out, x.channels // groups, kernel, kernel), x.var)
        inputs = [x.name, self.const(f"{name}.weight", w)]
        shift = np.zeros(c_out)
        if bias:
            shift = self.rng.normal(0.0, 0.1, c_out)
            inputs.append(self.const(f"{name}.bias", shift))
        pad_h, pad_w = (self._pads(size, kernel, stride, pad) for size in (x.height, x.width))
        y = self.node("Conv", name, inputs, kernel_shape=[kernel, kernel],
                      strides=[stride, stride], pads=[pad_h[0], pad_w[0], pad_h[1], pad_w[1]],
                      group=groups)
        return Value(y, c_out, _out_size(x.height, kernel, stride, pad_h, False),
                     _out_size(x.width, kernel, stride, pad_w, False), 1.0, shift,
                     np.ones(c_out))

    def _pads(self, size: int, kernel: int, stride: int, pad: int | None) -> tuple[int, int]:
        if pad is None and self.tf_same_padding:
            return _tf_same_pads(size, kernel, stride)
        return (kernel // 2 if pad is None else pad,) * 2

    def batch_norm(self, name: str, x: Value) -> Value:
        """Inference-form ``BatchNormalization`` of a (unit-variance, zero-mean) conv output."""
        c = x.channels
        gamma = self.rng.uniform(0.8, 1.2, c)
        beta = self.rng.normal(0.0, 0.1, c)
        mean = self.rng.normal(0.0, 0.1, c)
        var = self.rng.uniform(0.5, 1.5, c)
        inputs = [x.name] + [self.const(f"{name}.{n}", a) for n, a in
                             (("scale", gamma), ("bias", beta), ("mean", mean), ("var", var))]
        y = self.node("BatchNormalization", name, inputs, epsilon=self.bn_epsilon)
        # The conv output has zero mean and unit variance by construction, so after the BN
        # each channel is ~N(mu, s^2) with:
        s_bn = gamma / np.sqrt(var + self.bn_epsilon)
        mu_bn = beta - s_bn * mean
        return replace(x, name=y, var=float(np.mean(s_bn ** 2)), mu=mu_bn, sd=s_bn)

    def conv_bn(self, prefix: str, x: Value, c_out: int, kernel: int, stride: int = 1,
                groups: int = 1, act: str | None = None) -> Value:
        """``prefix.conv`` -> ``prefix.bn`` (-> activation ``prefix.<act>``)."""
        y = self.batch_norm(f"{prefix}.bn", self.conv(f"{prefix}.conv", x, c_out, kernel,
                                                      stride, groups))
        return self.activation(f"{prefix}.{act}", y, act) if act else y

    def inverted_residual(self, prefix: str, x: Value, hidden: int, out: int, kernel: int,
                          stride: int, act: str, se_channels: int = 0) -> Value:
        """MobileNetV2-style block (Sandler et al. 2018; also MNASNet's, EfficientNet's and, with
        squeeze-excite after the depthwise conv, MobileNetV3's): 1x1 expand (skipped when
        ``hidden`` equals the input width), kxk depthwise, optional SE, linear 1x1 projection,
        residual add when stride is 1 and the width is unchanged."""
        y = x
        if hidden != x.channels:
            y = self.conv_bn(f"{prefix}.expand", y, hidden, 1, act=act)
        y = self.conv_bn(f"{prefix}.dw", y, hidden, kernel, stride=stride, groups=hidden, act=act)
        if se_channels:
            y = self.squeeze_excite(f"{prefix}.se", y, se_channels)
        y = self.conv_bn(f"{prefix}.project", y, out, 1)
        return self.add(f"{prefix}.add", x, y) if stride == 1 and x.channels == out else y

    def inverted_residual_stages(self, x: Value, stages, act: str,
                                 index: int = 1) -> tuple[Value, int]:
        """Stages of ``(expansion, channels, repeats, first stride, kernel)`` named
        ``features.<index>`` (counting on from ``index``); returns the output and next index."""
        for expansion, channels, repeats, first_stride, kernel in stages:
            for j in range(repeats):
                x = self.inverted_residual(f"features.{index}", x, x.channels * expansion,
                                           channels, kernel, first_stride if j == 0 else 1, act)
                index += 1
        return x, index

    # --- activations ---------------------------------------------------------------------------
    def activation(self, name: str, x: Value, kind: str) -> Value:
        """``kind`` in :data:`ACTIVATIONS`, emitted as torch's exporter does at this opset."""
        if kind == "relu":
            y = self.node("Relu", name, [x.name])
        elif kind == "relu6":
            y = self.node("Clip", name, [x.name, self.shared_const("relu6.min", 0.0),
                                         self.shared_const("relu6.max", 6.0)])
        elif kind == "hardswish" and self.opset >= HARDSWISH_OPSET:
            y = self.node("HardSwish", name, [x.name])
        elif kind == "hardswish":
            gate = self.node("HardSigmoid", f"{name}.gate", [x.name], alpha=1.0 / 6.0, beta=0.5)
            y = self.node("Mul", name, [x.name, gate])
        else:
            raise ValueError(f"unknown activation {kind!r}; expected one of {ACTIVATIONS}")
        mean, var = _activation_moments(kind, *x.gaussian())
        pre = x.gaussian() if kind in ("relu", "relu6") else None
        return Value(y, x.channels, x.height, x.width, var, mean, pre=pre)

    def squeeze_excite(self, prefix: str, x: Value, reduced: int) -> Value:
        """torchvision/timm SE with a hard-sigmoid gate: pool, fc1, ReLU, fc2, gate, scale."""
        pooled = self.global_pool(f"{prefix}.avgpool", x)
        hidden = self.activation(f"{prefix}.relu", self.conv(f"{prefix}.fc1", pooled, reduced, 1,
                                                             bias=True), "relu")
        logits = self.conv(f"{prefix}.fc2", hidden, x.channels, 1, bias=True)
        gate = self.node("HardSigmoid", f"{prefix}.gate", [logits.name], alpha=1.0 / 6.0,
                         beta=0.5)
        gate_mean, gate_square = _gaussian_moments(_hard_sigmoid, *logits.gaussian())
        y = self.node("Mul", f"{prefix}.scale", [x.name, gate])
        return Value(y, x.channels, x.height, x.width, x.var * float(np.mean(gate_square)),
                     x.gaussian()[0] * gate_mean)

    # --- tensor plumbing ---------------------------------------------------------------------
    def add(self, name: str, a: Value, b: Value) -> Value:
        """Residual add of independent values: means and variances add."""
        return replace(a, name=self.node("Add", name, [a.name, b.name]), var=a.var + b.var,
                       mu=a.gaussian()[0] + b.gaussian()[0], sd=None, pre=None)

    def concat(self, name: str, parts: list[Value]) -> Value:
        channels = sum(p.channels for p in parts)
        var = sum(p.var * p.channels for p in parts) / channels
        y = self.node("Concat", name, [p.name for p in parts], axis=1)
        pre = None
        if all(p.pre is not None for p in parts):
            pre = tuple(np.concatenate(stats) for stats in zip(*(p.pre for p in parts)))
        return Value(y, channels, parts[0].height, parts[0].width, var,
                     np.concatenate([p.gaussian()[0] for p in parts]), pre=pre)

    def split(self, name: str, x: Value, sizes: list[int]) -> list[Value]:
        """``Split`` on channels (sizes as an int64 input, opset >= 13)."""
        outs = [f"{name}_out{i}" for i in range(len(sizes))]
        sizes_name = self.shared_const(f"split.{'_'.join(map(str, sizes))}", sizes, np.int64)
        self.nodes.append(helper.make_node("Split", [x.name, sizes_name], outs, name=name, axis=1))
        means = np.split(x.gaussian()[0], np.cumsum(sizes)[:-1])
        return [Value(o, c, x.height, x.width, x.var, m) for o, c, m in zip(outs, sizes, means)]

    def channel_shuffle(self, prefix: str, x: Value, groups: int) -> Value:
        """ShuffleNet's ``view(N, g, C/g, H, W) -> transpose(1, 2) -> view(N, C, H, W)``."""
        dims = (self.batch, groups, x.channels // groups, x.height, x.width)
        grouped = self.shared_const("shape." + "x".join(map(str, dims)), dims, np.int64)
        flat_dims = (self.batch, x.channels, x.height, x.width)
        flat = self.shared_const("shape." + "x".join(map(str, flat_dims)), flat_dims, np.int64)
        y = self.node("Reshape", f"{prefix}.view", [x.name, grouped])
        y = self.node("Transpose", f"{prefix}.transpose", [y], perm=[0, 2, 1, 3, 4])
        mu = x.gaussian()[0].reshape(groups, -1).T.reshape(-1)
        return replace(x, name=self.node("Reshape", f"{prefix}.flatten", [y, flat]), mu=mu,
                       sd=None, pre=None)

    def max_pool(self, name: str, x: Value, kernel: int, stride: int, pad: int = 0,
                 ceil_mode: bool = False) -> Value:
        """``MaxPool``; after a ReLU its moments are those of the max of ``kernel^2``
        independent pre-activation draws (it raises the mean ~3.5x for a 3x3 window)."""
        y = self.node("MaxPool", name, [x.name], kernel_shape=[kernel, kernel],
                      strides=[stride, stride], pads=[pad] * 4, ceil_mode=int(ceil_mode))
        size = [_out_size(s, kernel, stride, (pad, pad), ceil_mode) for s in (x.height, x.width)]
        mean, var = x.mu, x.var
        if x.pre is not None:
            mean, var = _max_relu_moments(*x.pre, kernel * kernel)
        return Value(y, x.channels, size[0], size[1], var, mean)

    def global_pool(self, name: str, x: Value) -> Value:
        """Keeps ``var`` (the spatial variance the init uses for the next layer's gain)."""
        return replace(x, name=self.node("GlobalAveragePool", name, [x.name]), height=1, width=1,
                       sd=None, pre=None)

    def flatten(self, name: str, x: Value, output: str | None = None) -> Value:
        return replace(x, name=self.node("Flatten", name, [x.name], output, axis=1))

    def dense(self, name: str, x: Value, n_out: int, output: str | None = None) -> Value:
        """``Gemm`` (``transB=1``) with weight ``name.weight`` and bias ``name.bias``."""
        w = self.const(f"{name}.weight", self.weights((n_out, x.channels), x.var))
        shift = self.rng.normal(0.0, 0.01, n_out)
        b = self.const(f"{name}.bias", shift)
        y = self.node("Gemm", name, [x.name, w, b], output, transB=1)
        return Value(y, n_out, 1, 1, 1.0, shift, np.ones(n_out))

    def classifier(self, x: Value, num_classes: int, fc: str = "classifier.fc") -> Value:
        """``pool`` (GlobalAveragePool) -> ``flatten`` -> ``fc`` (Gemm) writing the logits."""
        pooled = self.flatten("flatten", self.global_pool("pool", x))
        return self.dense(fc, pooled, num_classes, output=OUTPUT_NAME)

    # --- the model -----------------------------------------------------------------------------
    def finish(self, graph_name: str, resolution: int, num_classes: int, *, doc: str,
               producer: str, props: dict[str, str]) -> onnx.ModelProto:
        """Wrap the nodes into a checked model with input ``input`` and output ``logits``."""
        graph = helper.make_graph(
            self.nodes, graph_name,
            [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT,
                                           [self.batch, 3, resolution, resolution])],
            [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT,
                                           [self.batch, num_classes])],
            initializer=list(self.shared.values()) + self.inits, doc_string=doc)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)],
                                  ir_version=IR_VERSION, producer_name=producer)
        helper.set_model_props(model, props)
        onnx.checker.check_model(model, full_check=True)
        return model


def check_path(path: object, caller: str) -> None:
    """``UsageError`` unless ``path`` is a str or path-like (checked before building)."""
    if not isinstance(path, (str, os.PathLike)):
        raise UsageError(f"{caller}() needs a file path, got {type(path).__name__}.",
                         hint="Pass a str or pathlib.Path ending in .onnx.")


def save_model(model: onnx.ModelProto, path: str | os.PathLike, label: str) -> None:
    """Write ``model`` (called ``label`` in errors) to ``path`` atomically: a temp file in the
    same folder, fsynced, then renamed over the target."""
    target = os.path.abspath(os.fspath(path))
    if os.path.isdir(target):
        raise InputFileError(f"Cannot write the {label} model to '{target}': it is a "
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
            f"Cannot write the {label} model to '{target}': {exc.strerror or exc}.",
            hint="Check that the directory exists and is writable, or choose another path.",
        ) from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
