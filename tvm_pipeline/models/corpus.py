"""A corpus of public ImageNet CNN architectures built as ONNX graphs with seeded weights.

Nothing is downloaded: each architecture is re-implemented from its reference definition (named
in its builder's docstring and in :data:`ARCHITECTURES`) with :class:`~.layers.GraphBuilder`, so
the graphs look like what ``torch.onnx.export`` writes for the torchvision/timm model (Conv
without bias + inference BatchNormalization, Relu / Clip(0, 6) / HardSwish, HardSigmoid-gated
squeeze-excite, Split/Concat and Reshape-Transpose-Reshape channel shuffles, MaxPool,
GlobalAveragePool/Flatten/Gemm heads; Dropout omitted). Weights are random but seeded and scaled
so that a uniform[-1, 1] image gives finite, informative logits (see :mod:`.layers`); they are
NOT trained. ``mobilenet_v1``/``mobilenet_v2`` (width 1.0) come from :mod:`.mobilenet`.

All models: input ``"input"`` float32 ``[batch, 3, R, R]``, output ``"logits"`` float32
``[batch, num_classes]``. Each entry carries its published parameter and multiply-add counts
(224x224, 1000 classes); :func:`~tvm_pipeline.frontend.analysis.analyze` reproduces them to
within 2% (params) and 8% (MACs). ``analyze`` counts Conv and Gemm weights, biases and MACs
only: BatchNorm (folded into the convs), activations, squeeze-excite multiplies, residual adds,
pooling, concat and shuffles are excluded; torchvision's parameter counts include the BatchNorm
gamma/beta, hence our counts are up to ~1% lower.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import onnx

from tvm_pipeline.errors import UsageError
from tvm_pipeline.frontend.analysis import ModelCost, analyze
from tvm_pipeline.models.layers import (OUTPUT_NAME, GraphBuilder, Value, check_common_fields,
                                        check_path, make_divisible, save_model, spec_error)
from tvm_pipeline.models.mobilenet import MobileNetSpec, build_mobilenet

MIN_OPSET, MAX_OPSET = 13, 18  # Split takes its sizes as an input from opset 13
Body = Callable[[GraphBuilder, Value, int], Value]


# --- MobileNetV3 (Howard et al. 2019), torchvision.models.mobilenet_v3_{large,small} ------------
# torchvision _mobilenet_v3_conf rows: (kernel, expanded, out, SE, activation RE/HS, stride)
V3_LARGE = ((3, 16, 16, 0, "RE", 1), (3, 64, 24, 0, "RE", 2), (3, 72, 24, 0, "RE", 1),
            (5, 72, 40, 1, "RE", 2), (5, 120, 40, 1, "RE", 1), (5, 120, 40, 1, "RE", 1),
            (3, 240, 80, 0, "HS", 2), (3, 200, 80, 0, "HS", 1), (3, 184, 80, 0, "HS", 1),
            (3, 184, 80, 0, "HS", 1), (3, 480, 112, 1, "HS", 1), (3, 672, 112, 1, "HS", 1),
            (5, 672, 160, 1, "HS", 2), (5, 960, 160, 1, "HS", 1), (5, 960, 160, 1, "HS", 1))
V3_SMALL = ((3, 16, 16, 1, "RE", 2), (3, 72, 24, 0, "RE", 2), (3, 88, 24, 0, "RE", 1),
            (5, 96, 40, 1, "HS", 2), (5, 240, 40, 1, "HS", 1), (5, 240, 40, 1, "HS", 1),
            (5, 120, 48, 1, "HS", 1), (5, 144, 48, 1, "HS", 1), (5, 288, 96, 1, "HS", 2),
            (5, 576, 96, 1, "HS", 1), (5, 576, 96, 1, "HS", 1))
V3_ACTIVATIONS = {"RE": "relu", "HS": "hardswish"}


def _mobilenet_v3(config: tuple, last_channel: int) -> Body:
    """torchvision ``MobileNetV3``: 3x3/2 stem (HardSwish), inverted residuals with SE of
    ``make_divisible(expanded // 4, 8)`` channels, 1x1 conv to 6x the last width, then
    pool -> Linear(last_channel) -> HardSwish -> Linear(classes)."""
    def body(b: GraphBuilder, x: Value, num_classes: int) -> Value:
        x = b.conv_bn("features.0", x, 16, 3, stride=2, act="hardswish")
        for i, (kernel, expanded, out, se, act, stride) in enumerate(config, start=1):
            x = b.inverted_residual(f"features.{i}", x, expanded, out, kernel, stride,
                                    V3_ACTIVATIONS[act],
                                    se_channels=make_divisible(expanded // 4) if se else 0)
        x = b.conv_bn(f"features.{len(config) + 1}", x, 6 * x.channels, 1, act="hardswish")
        x = b.flatten("flatten", b.global_pool("avgpool", x))
        x = b.activation("classifier.1", b.dense("classifier.0", x, last_channel), "hardswish")
        return b.dense("classifier.3", x, num_classes, output=OUTPUT_NAME)
    return body


# --- inverted-residual nets: (expansion, channels, repeats, first stride, kernel) ---------------
# timm _gen_efficientnet_lite arch_def (ds_r1_k3_s1_e1_c16, ir_r2_k3_s2_e6_c24, ...)
EFFICIENTNET_LITE0 = ((1, 16, 1, 1, 3), (6, 24, 2, 2, 3), (6, 40, 2, 2, 5), (6, 80, 3, 2, 3),
                      (6, 112, 3, 1, 5), (6, 192, 4, 2, 5), (6, 320, 1, 1, 3))
# torchvision MNASNet(1.0): separable conv to 16, then _stack(...) for depths 24..320
MNASNET_1_0 = ((1, 16, 1, 1, 3), (3, 24, 3, 2, 3), (3, 40, 3, 2, 5), (6, 80, 3, 2, 5),
               (6, 96, 2, 1, 3), (6, 192, 4, 2, 5), (6, 320, 1, 1, 3))


def _inverted_residual_net(stages: tuple, act: str) -> Body:
    """3x3/2 stem of 32, inverted-residual ``stages``, 1x1 conv to 1280, pool, fc (the shape
    of timm's EfficientNet-lite and torchvision's MNASNet; the first stage, expansion 1, is the
    depthwise-separable block without a residual)."""
    def body(b: GraphBuilder, x: Value, num_classes: int) -> Value:
        x = b.conv_bn("features.0", x, 32, 3, stride=2, act=act)
        x, index = b.inverted_residual_stages(x, stages, act)
        x = b.conv_bn(f"features.{index}", x, 1280, 1, act=act)
        return b.classifier(x, num_classes)
    return body


# --- ShuffleNetV2 x1.0 (Ma et al. 2018), torchvision.models.shufflenet_v2_x1_0 ------------------
SHUFFLENET_STAGES = ((4, 116), (8, 232), (4, 464))  # (repeats, output channels)


def _shuffle_unit(b: GraphBuilder, prefix: str, x: Value, out: int, stride: int) -> Value:
    """torchvision ``InvertedResidual``: stride 1 splits the channels in half and transforms one
    half; stride 2 transforms the whole input in two branches; concat, then shuffle (2 groups)."""
    half = out // 2
    if stride == 1:
        left, right = b.split(f"{prefix}.split", x, [half, half])
    else:
        left = b.conv_bn(f"{prefix}.branch1.0", x, x.channels, 3, stride, groups=x.channels)
        left = b.conv_bn(f"{prefix}.branch1.2", left, half, 1, act="relu")
        right = x
    right = b.conv_bn(f"{prefix}.branch2.0", right, half, 1, act="relu")
    right = b.conv_bn(f"{prefix}.branch2.3", right, half, 3, stride, groups=half)
    right = b.conv_bn(f"{prefix}.branch2.5", right, half, 1, act="relu")
    return b.channel_shuffle(f"{prefix}.shuffle", b.concat(f"{prefix}.cat", [left, right]), 2)


def _shufflenet_v2(b: GraphBuilder, x: Value, num_classes: int) -> Value:
    """torchvision ``ShuffleNetV2([4, 8, 4], [24, 116, 232, 464, 1024])``."""
    x = b.conv_bn("conv1", x, 24, 3, stride=2, act="relu")
    x = b.max_pool("maxpool", x, 3, 2, pad=1)
    for stage, (repeats, out) in enumerate(SHUFFLENET_STAGES, start=2):
        for i in range(repeats):
            x = _shuffle_unit(b, f"stage{stage}.{i}", x, out, 2 if i == 0 else 1)
    return b.classifier(b.conv_bn("conv5", x, 1024, 1, act="relu"), num_classes, fc="fc")


# --- SqueezeNet 1.1 (Iandola et al. 2016), torchvision.models.squeezenet1_1 ---------------------
# features index: (squeeze, expand) channels of each Fire module
SQUEEZENET_FIRES = {3: (16, 64), 4: (16, 64), 6: (32, 128), 7: (32, 128), 9: (48, 192),
                    10: (48, 192), 11: (64, 256), 12: (64, 256)}
SQUEEZENET_POOLS = (2, 5, 8)  # MaxPool(3, 2, ceil_mode=True)


def _conv_relu(b: GraphBuilder, name: str, x: Value, c_out: int, kernel: int, stride: int = 1,
               pad: int | None = None) -> Value:
    """SqueezeNet's Conv (with bias, no BN) -> ReLU."""
    y = b.conv(name, x, c_out, kernel, stride, bias=True, pad=pad)
    return b.activation(f"{name}.relu", y, "relu")


def _fire(b: GraphBuilder, prefix: str, x: Value, squeeze: int, expand: int) -> Value:
    s = _conv_relu(b, f"{prefix}.squeeze", x, squeeze, 1)
    return b.concat(f"{prefix}.cat", [_conv_relu(b, f"{prefix}.expand1x1", s, expand, 1),
                                      _conv_relu(b, f"{prefix}.expand3x3", s, expand, 3)])


def _squeezenet1_1(b: GraphBuilder, x: Value, num_classes: int) -> Value:
    """torchvision ``SqueezeNet("1_1")``; the classifier is Conv 1x1 -> ReLU -> avg pool."""
    x = _conv_relu(b, "features.0", x, 64, 3, stride=2, pad=0)
    for i in range(2, 13):
        x = (b.max_pool(f"features.{i}", x, 3, 2, ceil_mode=True) if i in SQUEEZENET_POOLS
             else _fire(b, f"features.{i}", x, *SQUEEZENET_FIRES[i]))
    x = _conv_relu(b, "classifier.1", x, num_classes, 1)
    return b.flatten("flatten", b.global_pool("classifier.3", x), output=OUTPUT_NAME)


# --- ResNet-18 (He et al. 2016), torchvision.models.resnet18 -----------------------------------
def _basic_block(b: GraphBuilder, prefix: str, x: Value, out: int, stride: int) -> Value:
    y = b.conv_bn(f"{prefix}.conv1", x, out, 3, stride, act="relu")
    y = b.conv_bn(f"{prefix}.conv2", y, out, 3)
    shortcut = (x if stride == 1 and x.channels == out
                else b.conv_bn(f"{prefix}.downsample", x, out, 1, stride))
    return b.activation(f"{prefix}.relu", b.add(f"{prefix}.add", y, shortcut), "relu")


def _resnet18(b: GraphBuilder, x: Value, num_classes: int) -> Value:
    """torchvision ``ResNet(BasicBlock, [2, 2, 2, 2])``."""
    x = b.conv_bn("conv1", x, 64, 7, stride=2, act="relu")
    x = b.max_pool("maxpool", x, 3, 2, pad=1)
    for layer, out in enumerate((64, 128, 256, 512), start=1):
        for i in range(2):
            x = _basic_block(b, f"layer{layer}.{i}", x, out, 2 if layer > 1 and i == 0 else 1)
    return b.classifier(x, num_classes, fc="fc")


# --- GhostNet 1.0 (Han et al. 2020), timm ghostnet_100 (version v1) -----------------------------
# timm ghostnet.py cfgs, one tuple per stage: (kernel, expanded, out, SE ratio, stride)
GHOSTNET_STAGES = (
    ((3, 16, 16, 0, 1),), ((3, 48, 24, 0, 2),), ((3, 72, 24, 0, 1),),
    ((5, 72, 40, 0.25, 2),), ((5, 120, 40, 0.25, 1),), ((3, 240, 80, 0, 2),),
    ((3, 200, 80, 0, 1), (3, 184, 80, 0, 1), (3, 184, 80, 0, 1), (3, 480, 112, 0.25, 1),
     (3, 672, 112, 0.25, 1)),
    ((5, 672, 160, 0.25, 2),),
    ((5, 960, 160, 0, 1), (5, 960, 160, 0.25, 1), (5, 960, 160, 0, 1), (5, 960, 160, 0.25, 1)))


def _ghost_module(b: GraphBuilder, prefix: str, x: Value, out: int, relu: bool) -> Value:
    """timm ``GhostModule`` (ratio 2, dw 3x3): 1x1 primary conv to ``ceil(out/2)``, depthwise
    "cheap" conv of it, concat. Every width here is even, so no channel slice follows."""
    act = "relu" if relu else None
    init = math.ceil(out / 2)
    primary = b.conv_bn(f"{prefix}.primary_conv", x, init, 1, act=act)
    cheap = b.conv_bn(f"{prefix}.cheap_operation", primary, out - init, 3, groups=init, act=act)
    return b.concat(f"{prefix}.cat", [primary, cheap])


def _ghost_bottleneck(b: GraphBuilder, prefix: str, x: Value, kernel: int, mid: int, out: int,
                      se_ratio: float, stride: int) -> Value:
    """timm ``GhostBottleneck``: ghost (ReLU), strided depthwise (BN only), SE with a hard-sigmoid
    gate of ``make_divisible(mid * ratio, 4)``, linear ghost, add (dw + 1x1 conv shortcut when
    the shape changes)."""
    y = _ghost_module(b, f"{prefix}.ghost1", x, mid, relu=True)
    if stride > 1:
        y = b.conv_bn(f"{prefix}.conv_dw", y, mid, kernel, stride, groups=mid)
    if se_ratio:
        y = b.squeeze_excite(f"{prefix}.se", y, make_divisible(mid * se_ratio, 4))
    y = _ghost_module(b, f"{prefix}.ghost2", y, out, relu=False)
    shortcut = x
    if stride > 1 or x.channels != out:
        shortcut = b.conv_bn(f"{prefix}.shortcut.0", x, x.channels, kernel, stride,
                             groups=x.channels)
        shortcut = b.conv_bn(f"{prefix}.shortcut.2", shortcut, out, 1)
    return b.add(f"{prefix}.add", y, shortcut)


def _ghostnet_100(b: GraphBuilder, x: Value, num_classes: int) -> Value:
    """timm ``GhostNet(cfgs, width=1.0)``: 16-channel stem, the stages above, 1x1 conv to 960,
    pool, ``conv_head`` 1x1 (bias) to 1280 -> ReLU, flatten, Linear."""
    x = b.conv_bn("conv_stem", x, 16, 3, stride=2, act="relu")
    for stage, blocks in enumerate(GHOSTNET_STAGES):
        for i, (kernel, mid, out, se_ratio, stride) in enumerate(blocks):
            x = _ghost_bottleneck(b, f"blocks.{stage}.{i}", x, kernel, mid, out, se_ratio, stride)
    x = b.conv_bn(f"blocks.{len(GHOSTNET_STAGES)}.0", x, 960, 1, act="relu")
    x = b.global_pool("global_pool", x)
    x = b.activation("act2", b.conv("conv_head", x, 1280, 1, bias=True), "relu")
    return b.dense("classifier", b.flatten("flatten", x), num_classes, output=OUTPUT_NAME)


# --- the registry ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Architecture:
    """One corpus entry: how to build it and its published size at 224x224, 1000 classes."""

    name: str
    description: str
    source: str           # where the definition (and the published figures) come from
    params: float         # published parameter count
    macs: float           # published multiply-adds per image at 224x224
    body: Body | None = None        # None: built by tvm_pipeline.models.mobilenet
    mobilenet_arch: str | None = None  # "v1"/"v2" when body is None
    bn_epsilon: float = 1e-5
    tf_same_padding: bool = False   # timm tf_* models pad like TensorFlow 'SAME'
    # exact parameter count of the reference implementation (torchvision's num_params, the
    # EfficientNet-lite TF code's), which includes the BatchNorm gamma and beta
    reference_params: int | None = None

    def to_dict(self) -> dict:
        return {"name": self.name, "description": self.description, "source": self.source,
                "params": self.params, "macs": self.macs,
                "reference_params": self.reference_params}


ARCHITECTURES: dict[str, Architecture] = {a.name: a for a in (
    Architecture("mobilenet_v1", "MobileNet V1 1.0, depthwise-separable convs, ReLU6",
                 "Howard et al. 2017, Table 8 (4.2 M, 569 M)", 4.2e6, 569e6,
                 mobilenet_arch="v1"),
    Architecture("mobilenet_v2", "MobileNet V2 1.0, inverted residuals, ReLU6",
                 "torchvision mobilenet_v2 (3.50 M, 0.30 GFLOPS); Sandler et al. 2018",
                 3.5e6, 300e6, mobilenet_arch="v2", reference_params=3_504_872),
    Architecture("mobilenet_v3_large", "MobileNet V3 large, SE + HardSwish",
                 "torchvision mobilenet_v3_large (5.48 M, 0.22 GFLOPS); Howard et al. 2019",
                 5.48e6, 217e6, _mobilenet_v3(V3_LARGE, 1280), bn_epsilon=1e-3,
                 reference_params=5_483_032),
    Architecture("mobilenet_v3_small", "MobileNet V3 small, SE + HardSwish",
                 "torchvision mobilenet_v3_small (2.54 M, 0.06 GFLOPS); Howard et al. 2019",
                 2.54e6, 56e6, _mobilenet_v3(V3_SMALL, 1024), bn_epsilon=1e-3,
                 reference_params=2_542_856),
    Architecture("efficientnet_lite0", "EfficientNet-lite0: ReLU6, no SE, TF 'SAME' padding",
                 "timm tf_efficientnet_lite0 (4.65 M, 0.4 GMACs); Tan & Le 2019",
                 4.65e6, 385e6, _inverted_residual_net(EFFICIENTNET_LITE0, "relu6"),
                 bn_epsilon=1e-3, tf_same_padding=True, reference_params=4_652_008),
    Architecture("mnasnet1_0", "MNASNet-A 1.0 (no SE), inverted residuals, ReLU",
                 "torchvision mnasnet1_0 (4.38 M, 0.31 GFLOPS); Tan et al. 2019 (312 M)",
                 4.38e6, 312e6, _inverted_residual_net(MNASNET_1_0, "relu"),
                 reference_params=4_383_312),
    Architecture("shufflenet_v2_x1_0", "ShuffleNet V2 1.0x: channel split, concat, shuffle",
                 "torchvision shufflenet_v2_x1_0 (2.28 M, 0.14 GFLOPS); Ma et al. 2018 (146 M)",
                 2.28e6, 146e6, _shufflenet_v2, reference_params=2_278_604),
    Architecture("squeezenet1_1", "SqueezeNet 1.1: fire modules, conv biases, no BN",
                 "torchvision squeezenet1_1 (1.24 M, 0.35 GFLOPS); Iandola et al. 2016",
                 1.24e6, 349e6, _squeezenet1_1, reference_params=1_235_496),
    Architecture("resnet18", "ResNet-18: basic blocks, 3x3 convs, ReLU",
                 "torchvision resnet18 (11.69 M, 1.81 GFLOPS); He et al. 2016",
                 11.69e6, 1814e6, _resnet18, reference_params=11_689_512),
    Architecture("ghostnet_100", "GhostNet 1.0 (v1): ghost modules, SE with hard-sigmoid gate",
                 "timm ghostnet_100 (5.18 M, 0.15 GMACs); Han et al. 2020 (141 M)",
                 5.18e6, 141e6, _ghostnet_100),
)}


def list_models() -> list[Architecture]:
    """The corpus entries in registry order."""
    return list(ARCHITECTURES.values())


def get_architecture(name: object) -> Architecture:
    """The entry called ``name``; :class:`UsageError` listing the valid names otherwise."""
    if not isinstance(name, str) or name not in ARCHITECTURES:
        raise UsageError(f"Unknown corpus model {name!r}: valid names are "
                         f"{', '.join(ARCHITECTURES)}.",
                         hint="Run `tvm-pipeline models list` to see them with their sizes.")
    return ARCHITECTURES[name]


@dataclass(frozen=True)
class CorpusSpec:
    """What to build: a corpus ``name`` (a key of :data:`ARCHITECTURES`) and its input size.
    ``alpha`` (width multiplier, None = 1.0) exists only for mobilenet_v1/mobilenet_v2, which
    are delegated to :class:`MobileNetSpec` (and accept its opsets, 11..18)."""

    name: str
    resolution: int = 224
    batch: int = 1
    seed: int = 0
    opset: int = 13
    num_classes: int = 1000
    alpha: float | None = None

    def mobilenet_spec(self) -> MobileNetSpec | None:
        """The equivalent :class:`MobileNetSpec` for mobilenet_v1/v2, else None."""
        arch = get_architecture(self.name)
        if arch.mobilenet_arch is None:
            return None
        alpha = 1.0 if self.alpha is None else self.alpha
        return MobileNetSpec(arch.mobilenet_arch, alpha, self.resolution, self.batch,
                             self.opset, self.num_classes, self.seed)

    @property
    def label(self) -> str:
        """Graph and default file name, e.g. ``resnet18_224`` or ``mobilenet_v2_1.0_224``."""
        mobilenet = self.mobilenet_spec()
        return mobilenet.name if mobilenet else f"{self.name}_{self.resolution}"

    def validate(self) -> None:
        """Raise :class:`UsageError` naming the first bad field and the values it accepts."""
        mobilenet = self.mobilenet_spec()  # checks the name
        if mobilenet is not None:
            mobilenet.validate()
            return
        if self.alpha is not None:
            raise spec_error(self, "alpha", "left unset (None): only mobilenet_v1 and "
                                            "mobilenet_v2 have a width multiplier")
        check_common_fields(self, MIN_OPSET, MAX_OPSET)


def build_spec(spec: CorpusSpec) -> onnx.ModelProto:
    """Build the ONNX model for ``spec`` (validated first; checked by the ONNX checker)."""
    if not isinstance(spec, CorpusSpec):
        raise UsageError(f"build_spec() expects a CorpusSpec, got {type(spec).__name__}.",
                         hint='Create one, e.g. CorpusSpec("resnet18", resolution=224).')
    spec.validate()
    mobilenet = spec.mobilenet_spec()
    if mobilenet is not None:
        return build_mobilenet(mobilenet)
    arch = get_architecture(spec.name)
    b = GraphBuilder(spec.seed, batch=spec.batch, opset=spec.opset, bn_epsilon=arch.bn_epsilon,
                     tf_same_padding=arch.tf_same_padding)
    arch.body(b, b.input(spec.resolution), spec.num_classes)
    return b.finish(
        spec.label, spec.resolution, spec.num_classes,
        doc=f"{arch.description}; after {arch.source}. Random weights (seed {spec.seed}), "
            "not trained.",
        producer="tvm_pipeline.models.corpus",
        props={"arch": spec.name, "resolution": str(spec.resolution), "batch": str(spec.batch),
               "num_classes": str(spec.num_classes), "seed": str(spec.seed),
               "source": arch.source, "weights": "random (seeded), not trained"})


def build_model(name: str, resolution: int = 224, *, batch: int = 1, seed: int = 0,
                opset: int = 13, num_classes: int = 1000) -> onnx.ModelProto:
    """Build corpus model ``name`` (see :func:`list_models`) as an ``onnx.ModelProto``."""
    return build_spec(CorpusSpec(name, resolution, batch, seed, opset, num_classes))


def export_spec(spec: CorpusSpec, path: str | os.PathLike) -> ModelCost:
    """Build ``spec``, write it atomically to ``path`` and return its :func:`analyze` cost."""
    check_path(path, "export_spec")
    model = build_spec(spec)
    save_model(model, path, spec.label)
    return analyze(model)


def export_model(name: str, path: str | os.PathLike, resolution: int = 224, *, batch: int = 1,
                 seed: int = 0, opset: int = 13, num_classes: int = 1000) -> ModelCost:
    """Build corpus model ``name``, write it atomically to ``path``; return its cost."""
    return export_spec(CorpusSpec(name, resolution, batch, seed, opset, num_classes), path)
