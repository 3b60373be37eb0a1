"""Integer kernels for quantized (QDQ) models: the products of a convolution or a dense layer in
8-bit integers with 32-bit accumulation, instead of the float convolutions TVM's importer emits.

TVM 0.27's ONNX importer turns ``DequantizeLinear -> Conv`` into ``R.dequantize`` feeding a float
``R.nn.conv2d``: the model computes in float and is slower than its float original. This pass
(run on the imported module, before constants are folded) rewrites each

    conv2d(dequantize(xq, sx, zx), dequantize(Wq, sw, zw))        (Wq a constant)
    matmul(dequantize(xq, sx, zx), [permute_dims](dequantize(Wq, sw, zw)))

into

    astype(conv2d(xq, Wq - zw, out_dtype=int32) - zx * sum(Wq - zw), float32) * (sx * sw)

which is the same number: ``sum((x - zx) * (w - zw)) = sum(x * (w - zw)) - zx * sum(w - zw)``.
The correction is a per-output-channel constant; where the convolution pads and ``zx != 0``, the
input is padded with ``zx`` first (a padded tap then contributes ``zx * w``, which the correction
removes), otherwise the convolution pads with 0 itself. On targets with an int8 dot product
(4 input channels per step, 2 on AVX2) a convolution whose input channels are not a multiple of
that (a first layer's 3) gets the missing ones, with zero weights and the zero point as value, so
that it too runs on the instruction. The float tail that follows (bias add, activation, residual
add, the next ``quantize``) is elementwise, so operator fusion puts it in the same kernel: one
kernel reads uint8/int8, accumulates int32 and writes the requantized uint8/int8.

Every per-tensor ``quantize``/``dequantize`` also becomes Relax elementwise operators (``divide``,
``round``, ``add``, clip as ``maximum``/``minimum``, ``astype``): they carry layout inference, so the
channels-last conversion keeps the int8 tensors between layers instead of transposing around each
one, and they fuse into the neighbouring kernels. Rounding is TVM's ``round`` (to nearest even on
LLVM targets, ONNX's rule).

What stays float, and why, is recorded per layer (``IntegerReport``): a weight that is not a
constant, per-channel activation scales, layouts the importer does not produce.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from ..target.intrinsics import DotProduct

_Constant = tvm.ir.expr.Constant
_INT8 = ("int8", "uint8")
_LIMITS = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767)}


@dataclass(frozen=True)
class LayerDecision:
    """One convolution or dense layer of the model and the arithmetic it runs in."""

    op: str             # "conv2d" | "matmul"
    index: int          # position among the model's layers of that op
    shape: str          # e.g. "3x3/2 3->16 groups 1" or "1280->1000"
    integer: bool
    reason: str = ""    # why it stayed float (empty when integer)


@dataclass
class IntegerReport:
    layers: list[LayerDecision] = field(default_factory=list)
    requantized: int = 0        # quantize/dequantize ops turned into fusable elementwise ops

    @property
    def integer_layers(self) -> list[LayerDecision]:
        return [d for d in self.layers if d.integer]

    @property
    def float_layers(self) -> list[LayerDecision]:
        return [d for d in self.layers if not d.integer]

    @property
    def quantized(self) -> bool:
        """Whether the model had any quantize/dequantize at all."""
        return self.requantized > 0 or bool(self.integer_layers)

    def to_dict(self) -> dict:
        return {"integer_layers": len(self.integer_layers), "float_layers": len(self.float_layers),
                "layers": [asdict(d) for d in self.layers]}

    def summary(self) -> str:
        """One line, then one line per layer that stayed float."""
        lines = [f"integer kernels: {len(self.integer_layers)} of {len(self.layers)} conv/dense layers "
                 "compute in int8 x int8 -> int32"]
        lines += [f"  stayed float: {d.op} #{d.index} ({d.shape}): {d.reason}" for d in self.float_layers]
        return "\n".join(lines)


@dataclass(frozen=True)
class _Dq:
    """A ``dequantize(data, scale, zero_point, axis)`` binding seen through its variable."""

    data: relax.Expr
    scale: np.ndarray
    zero: np.ndarray
    axis: int

    @property
    def per_tensor(self) -> bool:
        return self.scale.size == 1 and self.zero.size == 1


def _constant(expr) -> np.ndarray | None:
    return expr.value.numpy() if isinstance(expr, _Constant) else None


def _scalar_params(call) -> tuple[float, float] | None:
    """(scale, zero point) of a per-tensor quantize/dequantize with constant parameters."""
    scale, zero = _constant(call.args[1]), _constant(call.args[2])
    if scale is None or zero is None or scale.size != 1 or zero.size != 1:
        return None
    return float(scale.ravel()[0]), float(zero.ravel()[0])


def _op_name(expr) -> str | None:
    if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
        return expr.op.name
    return None


@mutator
class _Integerize(PyExprMutator):
    def __init__(self, mod: tvm.IRModule, bindings: dict, dot: DotProduct | None):
        super().__init__(mod)
        self.report = IntegerReport()
        self._count = {"conv2d": 0, "matmul": 0}
        self._bindings = bindings     # the original function's var -> value
        self._dot = dot

    # -- helpers ---------------------------------------------------------------------------
    def _bound(self, expr):
        """The value a dataflow variable is bound to (the expression itself otherwise)."""
        while isinstance(expr, relax.Var) and expr in self._bindings:
            expr = self._bindings[expr]
        return expr

    def _dq(self, expr) -> _Dq | None:
        call = self._bound(expr)
        if _op_name(call) != "relax.dequantize":
            return None
        scale, zero = _constant(call.args[1]), _constant(call.args[2])
        if scale is None or zero is None or str(call.args[0].ty.dtype) not in _INT8:
            return None
        return _Dq(call.args[0], scale.astype(np.float64).ravel(), zero.astype(np.int64).ravel(),
                   int(call.attrs.axis))

    def _decide(self, op: str, shape: str, reason: str = "") -> None:
        self.report.layers.append(LayerDecision(op, self._count[op], shape, not reason, reason))
        self._count[op] += 1

    # -- visitor ---------------------------------------------------------------------------
    def visit_call_(self, call):  # pylint: disable=arguments-renamed
        name = _op_name(call)
        if name == "relax.nn.conv2d":      # matched on the original bindings
            return self._conv2d(call)
        if name == "relax.matmul":
            return self._matmul(call)
        call = super().visit_call_(call)
        if name == "relax.quantize":
            return self._quantize(call)
        if name == "relax.dequantize":
            return self._dequantize(call)
        return call

    def _activation(self, expr) -> tuple[_Dq | None, str]:
        x = self._dq(expr)
        if x is None:
            return None, "its input is not a dequantized int8/uint8 tensor"
        if not x.per_tensor:
            return None, "its input has per-channel scales (integer products need one scale)"
        return x, ""

    def _weight(self, expr, out_axis: int) -> tuple[_Dq | None, np.ndarray | None, str]:
        w = self._dq(expr)
        if w is None or not isinstance(w.data, _Constant):
            return None, None, "its weight is not a dequantized int8/uint8 constant"
        if not (w.scale.size == 1 or w.axis == out_axis):
            return None, None, f"its weight scales run along axis {w.axis}, not the output channels"
        return w, w.data.value.numpy(), ""

    def _conv2d(self, call):
        attrs = call.attrs
        data_shape = [int(d) for d in call.args[0].ty.shape]
        w_shape = [int(d) for d in call.args[1].ty.shape]
        shape = (f"{w_shape[2]}x{w_shape[3]}/{int(attrs.strides[0])} "
                 f"{data_shape[1]}->{w_shape[0]} groups {int(attrs.groups)}")
        if attrs.data_layout != "NCHW" or attrs.kernel_layout != "OIHW":
            self._decide("conv2d", shape, f"layout {attrs.data_layout}/{attrs.kernel_layout}")
            return super().visit_call_(call)
        x, why = self._activation(call.args[0])
        w, wq, why_w = self._weight(call.args[1], 0) if x else (None, None, "")
        if x is None or w is None:
            self._decide("conv2d", shape, why or why_w)
            return super().visit_call_(call)
        weights, wdtype = _centered(wq, w.zero, 0)
        data, padding = self.visit_expr(x.data), [int(p) for p in attrs.padding]
        x_zero, extra = int(x.zero[0]), 0
        dot = self._dot
        if int(attrs.groups) == 1 and dot is not None:
            data, x_zero = _as_dot_operand(data, str(x.data.ty.dtype), x_zero, dot.activation)
            # the dot product multiplies 4 (or 2) input channels at a time: a first layer's 3
            # image channels get a 4th, of zero weights (and the zero point as value: x - zx = 0)
            # (where its output channels fill the instruction's tiles: else it is not packed)
            extra = -weights.shape[1] % dot.depth if w_shape[0] % dot.tile == 0 else 0
            if extra:
                weights = np.pad(weights, ((0, 0), (0, extra), (0, 0), (0, 0)))
        spatial = bool(x_zero and any(padding))
        if spatial or extra:
            top, left, bottom, right = padding if spatial else (0, 0, 0, 0)
            data = relax.op.nn.pad(data, [0, 0, 0, extra, top, bottom, left, right],
                                   pad_value=float(x_zero))
            padding = [0, 0, 0, 0] if spatial else padding
        acc = relax.op.nn.conv2d(data, relax.const(weights, wdtype), attrs.strides, padding,
                                 attrs.dilation, attrs.groups, "NCHW", "OIHW", "NCHW", "int32")
        channels = w_shape[0]
        correction = x_zero * weights.reshape(channels, -1).astype(np.int64).sum(axis=1)
        scale = _per_channel(x.scale[0] * w.scale, channels)
        self._decide("conv2d", shape)
        return self._dequantize_acc(acc, correction, scale, (1, channels, 1, 1))

    def _matmul(self, call):
        lhs, rhs = call.args
        rhs_value, transposed = self._bound(rhs), False
        if _op_name(rhs_value) == "relax.permute_dims" and len(rhs_value.args[0].ty.shape) == 2:
            rhs, transposed = rhs_value.args[0], True
        dims = [int(d) for d in call.args[1].ty.shape]
        k, n = (dims[-2], dims[-1]) if len(dims) >= 2 else (dims[0], 1)
        shape = f"{k}->{n}"
        if len(dims) != 2:
            w = self._dq(rhs)
            self._decide("matmul", shape, "its weight is not a 2-D matrix" if w is not None and
                         isinstance(w.data, _Constant) else "both operands are activations (a "
                         "product of two tensors, as in attention), not an activation and a weight")
            return super().visit_call_(call)
        x, why = self._activation(lhs)
        w, wq, why_w = self._weight(rhs, 0 if transposed else 1) if x else (None, None, "")
        if x is None or w is None:
            self._decide("matmul", shape, why or why_w)
            return super().visit_call_(call)
        weights, wdtype = _centered(wq, w.zero, 0 if transposed else 1)
        if transposed:
            weights = np.ascontiguousarray(weights.T)
        acc = relax.op.matmul(self.visit_expr(x.data), relax.const(weights, wdtype), out_dtype="int32")
        correction = int(x.zero[0]) * weights.astype(np.int64).sum(axis=0)
        self._decide("matmul", shape)
        return self._dequantize_acc(acc, correction, _per_channel(x.scale[0] * w.scale, n), (n,))

    @staticmethod
    def _dequantize_acc(acc, correction: np.ndarray, scale: np.ndarray, shape: tuple):
        if correction.any():
            acc = relax.op.subtract(acc, relax.const(correction.astype(np.int32).reshape(shape)))
        return relax.op.multiply(relax.op.astype(acc, "float32"),
                                 relax.const(scale.astype(np.float32).reshape(shape)))

    def _quantize(self, call):
        params, dtype = _scalar_params(call), str(call.attrs.out_dtype)
        if params is None or dtype not in _LIMITS:
            return call
        self.report.requantized += 1
        scale, zero = params
        low, high = _LIMITS[dtype]
        data = call.args[0]
        src = str(data.ty.dtype)
        rank = len(data.ty.shape)
        q = relax.op.round(relax.op.divide(data, _calibrated(scale, rank, src)))
        if zero:
            q = relax.op.add(q, _calibrated(zero, rank, src))
        q = relax.op.minimum(relax.op.maximum(q, relax.const(float(low), src)),
                             relax.const(float(high), src))
        return relax.op.astype(q, dtype)

    def _dequantize(self, call):
        params = _scalar_params(call)
        if params is None or isinstance(call.args[0], _Constant):
            return call       # constants (weights, biases) are folded at compile time
        self.report.requantized += 1
        scale, zero = params
        dtype, rank = str(call.attrs.out_dtype), len(call.args[0].ty.shape)
        value = relax.op.astype(call.args[0], dtype)
        if zero:
            value = relax.op.subtract(value, _calibrated(zero, rank, dtype))
        return relax.op.multiply(value, _calibrated(scale, rank, dtype))


def _calibrated(value: float, rank: int, dtype: str) -> relax.Constant:
    """A scale or zero point found by calibration, as a tensor of one element broadcast over
    ``rank`` dimensions: unlike a scalar, which TVM writes into the kernel as a literal, it becomes
    an input of the fused kernel. Two calibrations of one model then give the same kernels, and
    the tuning records of one apply to the other."""
    return relax.const(np.full((1,) * max(rank, 1), value, dtype=dtype))


def _as_dot_operand(data, dtype: str, zero: int, wanted: str) -> tuple:
    """The activation in the type the target's dot product multiplies, with its zero point:
    uint8 <-> int8 shifts values and zero point alike by 128, so ``x - zero`` is unchanged."""
    shift = {("uint8", "int8"): -128, ("int8", "uint8"): 128}.get((dtype, wanted), 0)
    if not shift:
        return data, zero
    wide = relax.op.add(relax.op.astype(data, "int16"), relax.const(shift, "int16"))
    return relax.op.astype(wide, wanted), zero + shift


def _centered(wq: np.ndarray, zero: np.ndarray, axis: int) -> tuple[np.ndarray, str]:
    """``wq - zero`` (zero points along ``axis``) in the narrowest type holding it: int8 for
    symmetric weights (zero point 0, ONNX Runtime's default), int16 otherwise."""
    shape = [1] * wq.ndim
    shape[axis] = -1
    centered = wq.astype(np.int32) - (zero.reshape(shape) if zero.size > 1 else int(zero[0]))
    for dtype in ("int8", "int16"):
        low, high = _LIMITS[dtype]
        if centered.min(initial=0) >= low and centered.max(initial=0) <= high:
            return centered.astype(dtype), dtype
    raise AssertionError("8-bit weights minus an 8-bit zero point always fit in int16")


def _per_channel(scale: np.ndarray, channels: int) -> np.ndarray:
    return np.broadcast_to(np.asarray(scale, dtype=np.float64), (channels,)).copy()


def integerize(mod: tvm.IRModule,
               dot: DotProduct | None = None) -> tuple[tvm.IRModule, IntegerReport]:
    """Rewrite the imported module's dequantized convolutions and dense layers to integer ones
    (see the module docstring); the report says which layers did and which stayed float.
    ``dot``: the target's int8 dot product, if any: convolutions other than depthwise get their
    input in the type it multiplies ("uint8" for x86, "int8" for ARM sdot), and a first layer's
    input channels are padded to its depth."""
    if not _has_qdq(mod):
        return mod, IntegerReport()      # a float model: untouched
    mod, report = mod.clone(), IntegerReport()
    for gv, func in list(mod.functions_items()):
        if isinstance(func, relax.Function):
            mutator_ = _Integerize(mod, _bindings_of(func), dot)
            mod[gv] = mutator_.visit_expr(func)
            report.layers += mutator_.report.layers
            report.requantized += mutator_.report.requantized
    if not report.quantized:
        return mod, report
    return relax.transform.DeadCodeElimination()(mod), report


def _has_qdq(mod: tvm.IRModule) -> bool:
    found = []

    def visit(expr):
        if _op_name(expr) in ("relax.quantize", "relax.dequantize"):
            found.append(expr)

    for _, func in mod.functions_items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return bool(found)


def _bindings_of(func: relax.Function) -> dict:
    bindings = {}

    def visit(expr):
        if isinstance(expr, relax.SeqExpr):
            for block in expr.blocks:
                for binding in block.bindings:
                    if isinstance(binding, relax.VarBinding):
                        bindings[binding.var] = binding.value

    relax.analysis.post_order_visit(func, visit)
    return bindings
