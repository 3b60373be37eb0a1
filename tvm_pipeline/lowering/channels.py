"""Channels padded to whole vectors.

In the channels-last layout every kernel vectorizes along the channels. A layer with 1000 output
channels (SqueezeNet's classifier), 72, 120 or 40 (MobileNet V3, MNASNet), or 24 has no tile of
whole 16-lane vectors (AVX-512): every tiling leaves a part vector at the end of each pixel or
falls back to 8-lane vectors throughout. Measured on this machine (x86-avx512, default schedules,
kernels timed inside MNASNet 1.0-224): pointwise convolutions to 24, 40 and 72 channels ran at
176-214 GFLOP/s beside 290-380 for their neighbours, the depthwise convolution on 72 channels at
82 GFLOP/s beside 112-134; SqueezeNet's 1000-channel classifier, tuned, at 241 beside 400-450
(30% of the model's time).

``pad_channels`` gives a standard convolution zero weights for the missing output channels and
carries the padded tensor (ncnn's and XNNPACK's channel packing) through every op that treats the
channels independently: elementwise activations, bias and scale constants (padded with their last
channel's value, so the padded lanes stay finite), residual adds of two padded tensors, depthwise
convolutions (padded weights and groups), spatial means (squeeze-and-excite). A standard
convolution reads a padded input with zero weights for the padded channels, so whatever they hold
does not reach its output. A tensor stays padded only where every op that reads it can (``_Plan``);
elsewhere (concatenation, pooling, reshape, channel shuffle, the model's output) the convolution
that pads is sliced at once, before its bias and activation, and Relax fuses the slice into its
kernel. (Sliced after them, the kernel's epilogue would read only part of a padded bias, and
MetaSchedule's weight-layout rewrite of TVM 0.27 then packs that bias modulo the part's length,
writing the padded entries over real ones: caught by the kernel check on ShuffleNet V2.)

A MobileNet inverted-residual block with 72 expanded channels so computes 80 throughout and
slices nothing: expand, depthwise and project all vectorize in whole vectors. The extra work is at
most ``MAX_GROWTH`` of the layer's (24 -> 32 channels).
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

MAX_GROWTH = Fraction(1, 3)     # padded channels per real channel, at most
_CONV2D = "relax.nn.conv2d"
_SLICE = "relax.strided_slice"
_MEAN = "relax.mean"
# ops that compute each element from the same element of their inputs
_UNARY = frozenset(f"relax.{name}" for name in (
    "nn.relu", "nn.silu", "nn.gelu", "sigmoid", "tanh", "clip", "round", "floor", "ceil",
    "negative", "abs", "astype", "exp", "sqrt", "rsqrt"))
_BINARY = frozenset(f"relax.{name}" for name in (
    "add", "subtract", "multiply", "divide", "maximum", "minimum", "power"))


def padded(channels: int, lanes: int) -> int | None:
    """The channel count rounded up to whole vectors of ``lanes``, or None where it already is
    whole, is narrower than one vector, or would grow by more than ``MAX_GROWTH``."""
    if lanes <= 1 or channels % lanes == 0 or channels < lanes:
        return None
    whole = -(-channels // lanes) * lanes
    return whole if whole - channels <= MAX_GROWTH * channels else None


def static_shape(expr) -> list[int] | None:
    shape = getattr(getattr(expr, "ty", None), "shape", None)
    values = list(getattr(shape, "values", None) or [])
    if not values or not all(isinstance(v, tvm.tirx.IntImm) for v in values):
        return None
    return [int(v) for v in values]


def _grow(array: np.ndarray, axis: int, size: int, fill: str) -> np.ndarray:
    """``array`` padded along ``axis`` to ``size``: with zeros (``fill="zero"``) or with its
    last entry (``"edge"``)."""
    pad = [(0, 0)] * array.ndim
    pad[axis] = (0, size - array.shape[axis])
    return np.pad(array, pad, mode="constant" if fill == "zero" else "edge")


def _op(value) -> str | None:
    if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op):
        return value.op.name
    return None


def _conv_weight(value) -> tuple[int, ...] | None:
    """The shape of the constant HWIO weight of an NHWC convolution, or None for any other op
    (the weights themselves are read only where a convolution is rewritten)."""
    if _op(value) != _CONV2D:
        return None
    attrs, weight = value.attrs, value.args[1]
    if (attrs.data_layout != "NHWC" or attrs.kernel_layout != "HWIO"
            or (attrs.out_layout or "NHWC") != "NHWC"
            or not isinstance(weight, tvm.ir.expr.Constant)):
        return None
    return tuple(weight.value.shape)


def _depthwise(value, weight: tuple[int, ...]) -> bool:
    groups = int(value.attrs.groups)
    return groups > 1 and groups == weight[3] and weight[2] == 1


def _constant_fits(arg, channels: int) -> bool:
    """A constant operand of an elementwise op on a padded tensor: a scalar, or per channel."""
    if not isinstance(arg, tvm.ir.expr.Constant):
        return False
    shape = arg.value.shape
    return not shape or shape[-1] in (1, channels)


class _Plan:
    """Which tensors of a Relax function are computed with padded channels."""

    def __init__(self, func: relax.Function, lanes: int):
        self.lanes = lanes
        self.bindings = [b for block in func.body.blocks for b in block.bindings
                         if isinstance(b, relax.VarBinding)]
        self.users: dict = {}
        for binding in self.bindings:
            for used in relax.analysis.free_vars(binding.value):    # tuple fields included
                self.users.setdefault(used, []).append(binding)
        self.width: dict = {}       # var -> (real channels, padded channels)

    def solve(self) -> dict:
        """Padded where the op can compute it so and every reader can read it so: a fixpoint
        of a forward pass (what can be padded, given its inputs) and a backward one (drop what a
        reader cannot read padded)."""
        candidates = {b.var for b in self.bindings}
        while True:
            self.width = {}
            for binding in self.bindings:
                if binding.var in candidates:
                    found = self._paddable(binding.value)
                    if found is not None:
                        self.width[binding.var] = found
            kept = {var for var in self.width if self._readers_take_it(var)}
            if kept == candidates & set(self.width):
                return {var: self.width[var] for var in kept}
            candidates = kept

    def _paddable(self, value) -> tuple[int, int] | None:
        name = _op(value)
        weight = _conv_weight(value)
        if weight is not None:
            if int(value.attrs.groups) == 1:
                whole = padded(weight[3], self.lanes)
                return None if whole is None else (weight[3], whole)
            source = self.width.get(value.args[0])
            if _depthwise(value, weight) and source and source[0] == weight[3]:
                return source
            return None
        if name in _UNARY or name in _BINARY:
            inputs = [self.width.get(a) for a in value.args]
            found = {w for w in inputs if w is not None}
            if len(found) != 1:
                return None
            width = found.pop()
            if all(w is not None or _constant_fits(a, width[0])
                   for a, w in zip(value.args, inputs)):
                return width
            return None
        if name == _MEAN and value.args[0] in self.width:
            axes = value.attrs.axis
            if axes is not None and value.attrs.keepdims and all(int(a) % 4 != 3 for a in axes):
                return self.width[value.args[0]]
        return None

    def _readers_take_it(self, var) -> bool:
        if not isinstance(var, relax.DataflowVar):
            return False        # the function's output
        for reader in self.users.get(var, []):
            weight = _conv_weight(reader.value)
            standard = (weight is not None and int(reader.value.attrs.groups) == 1
                        and reader.value.args[0].same_as(var))
            if not standard and reader.var not in self.width:
                return False
        return True


@mutator
class _PadChannels(PyExprMutator):
    def __init__(self, mod: tvm.IRModule, lanes: int):
        super().__init__(mod)
        self._lanes = lanes
        self._plan: dict = {}       # var of the original function -> (real, padded channels)
        self._padded: dict = {}     # var of the original function -> its padded var
        self._binding = None

    def pad(self, func: relax.Function) -> relax.Function:
        self._plan = _Plan(func, self._lanes).solve()
        self._padded = {}
        return self.visit_expr(func)

    def visit_var_binding_(self, binding):
        self._binding = binding.var
        super().visit_var_binding_(binding)

    def visit_call_(self, call):  # pylint: disable=arguments-renamed
        original, var = call, self._binding
        call = super().visit_call_(call)
        weight = _conv_weight(original)
        if weight is not None:
            return self._conv(original, call, weight[3], var)
        if var not in self._plan:
            return call
        args = [self._padded.get(a, a) for a in original.args]
        if _op(original) == _MEAN:
            padded_call = relax.op.mean(args[0], axis=[int(a) for a in call.attrs.axis],
                                        keepdims=True)
        else:
            channels, width = self._plan[var]
            args = [relax.const(_grow(a.value.numpy(), a.value.ndim - 1, width, "edge"))
                    if isinstance(a, tvm.ir.expr.Constant) and a.value.ndim
                    and a.value.shape[-1] == channels != 1 else a for a in args]
            padded_call = relax.Call(call.op, args, call.attrs, call.ty_args)
        return self._emit_padded(padded_call, var)

    def _emit_padded(self, call, var):
        """Emit ``call``, the padded form of ``var``; ``var`` becomes the slice of its real
        channels (unused, as the plan padded only what every reader reads padded)."""
        self._padded[var] = self.builder_.emit(call)
        return relax.op.strided_slice(self._padded[var], axes=[3], begin=[0],
                                      end=[self._plan[var][0]])

    def _conv(self, original, call, channels: int, var):
        attrs, data = call.attrs, call.args[0]
        groups = int(attrs.groups)
        reads_padded = original.args[0] in self._padded
        whole = self._plan[var][1] if var in self._plan else (
            None if groups != 1 else padded(channels, self._lanes))
        if whole is None and not reads_padded:
            return call
        weight = call.args[1].value.numpy()
        depthwise = _depthwise(original, weight.shape)
        if reads_padded:
            data = self._padded[original.args[0]]
            if not depthwise:       # zero weights for the padded input channels
                weight = _grow(weight, 2, static_shape(data)[3], "zero")
        if whole is not None:
            weight = _grow(weight, 3, whole, "zero")
            groups = whole if depthwise else 1
        conv = relax.op.nn.conv2d(
            data, relax.const(weight), strides=attrs.strides, padding=attrs.padding,
            dilation=attrs.dilation, groups=groups, data_layout="NHWC", kernel_layout="HWIO",
            out_layout="NHWC", out_dtype=attrs.out_dtype)
        if var in self._plan:
            return self._emit_padded(conv, var)
        if whole is None:
            return conv
        # padded here only: sliced before the bias and activation (see the module's doc)
        return relax.op.strided_slice(self.builder_.emit(conv), axes=[3], begin=[0],
                                      end=[channels])


def pad_channels(lanes: int) -> tvm.transform.Pass:
    """Convolutions' output channels padded to whole vectors of ``lanes``, and the padding carried
    through the channel-wise ops that follow (see the module's doc)."""

    @tvm.transform.module_pass(opt_level=0, name="PadChannels")
    def rewrite(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        convs = _PadChannels(mod, lanes)
        for gv, func in list(mod.functions_items()):
            if isinstance(func, relax.Function):
                convs.builder_.update_func(gv, convs.pad(func))
        return relax.transform.DeadCodeElimination()(convs.builder_.get())

    return rewrite
