"""CPU data layout: channels-last activations and weights packed at compile time.

ONNX convolutions are NCHW. On a CPU that layout vectorizes along image width (7 or 14 at the end
of a MobileNet), so the tuned kernels waste most of every vector. Channels-last (NHWC, HWIO
weights) vectorizes along channels (multiples of 8 or 16 everywhere), for pointwise and depthwise
convolutions alike. The steps, all on the Relax module before lowering:

1. ``ClipToOps``: TVM's ONNX importer emits Clip as opaque ``call_tir(maximum/minimum)``, and
   HardSigmoid/HardSwish as ``R.clip``; a layout conversion sees through neither (``R.clip`` has
   no layout inference rule in TVM 0.27), so it would wrap every activation in two transposes.
   Each such call whose PrimFunc is exactly TOPI's maximum/minimum against a scalar constant, and
   every ``R.clip`` with constant bounds, becomes ``relax.maximum``/``relax.minimum``, which carry
   layout inference (and fuse into the convolution before them).
2. ``ConvertLayout`` to NHWC/HWIO: transposes remain only at the model's input and before the
   classifier's reshape; weight transposes are folded (weights are constants).
3. Channels padded to whole vectors of the target's lanes (``channels``), before 4 so that a
   padded int8 convolution's channels are whole tiles of the instruction too.
4. On targets with an int8 dot product (``target.intrinsics.int8_dot_product``), int8 convolutions
   other than depthwise get weights packed for the instruction (``dot_product_convs``).

After fusion, ``AttachAttrLayoutFreeBuffers`` marks the constant weights of each kernel as
layout-free, so MetaSchedule's ``RewriteLayout`` may pick a packed weight layout per schedule. At
build time ``SplitLayoutRewritePreproc`` splits that packing into its own function, and
``FoldConstant`` runs it on the constant weights: the artifact holds packed weights, and its
interface (one input, one output) does not change (no ``transform_params`` step for users).
"""

from __future__ import annotations

import numpy as np
import tvm
import tvm_ffi
from tvm import relax, topi
from tvm.relax.expr_functor import PyExprMutator, mutator

from . import channels, fold
from .rewrite import function_pass
from ..target.intrinsics import DotProduct

_CLIP = "relax.clip"
_CONV2D = "relax.nn.conv2d"
_CLIP_PARTS = (("maximum", topi.maximum, relax.op.maximum),
               ("minimum", topi.minimum, relax.op.minimum))


def _topi_equivalent(func, data, scalar, te_op) -> bool:
    """Whether ``func`` is exactly ``te_op(data, scalar)`` as the importer's emit_te made it."""
    x = tvm.te.placeholder(list(data.ty.shape), data.ty.dtype)
    c = tvm.te.placeholder((), scalar.value.dtype)
    reference = tvm.te.create_prim_func([x, c, te_op(x, c)])
    return tvm_ffi.structural_equal(reference.body, func.body, map_free_vars=True)


@mutator
class _ClipToOps(PyExprMutator):
    def __init__(self, mod: tvm.IRModule):
        super().__init__(mod)
        self.mod_ = mod
        self.rewritten = 0

    def visit_call_(self, call):  # pylint: disable=arguments-renamed
        call = super().visit_call_(call)
        if isinstance(call.op, tvm.ir.Op) and call.op.name == _CLIP:
            return self._clip_op(call)
        if not isinstance(call.op, tvm.ir.Op) or call.op.name != fold.CALL_TIR:
            return call
        callee, args = call.args[0], call.args[1].fields
        if (len(args) != 2 or not isinstance(args[1], tvm.ir.expr.Constant)
                or len(args[1].value.shape) != 0 or not isinstance(args[0].ty, relax.TensorType)):
            return call
        func = self.mod_[callee]
        for prefix, te_op, relax_op in _CLIP_PARTS:
            if callee.name_hint.startswith(prefix) and _topi_equivalent(func, args[0], args[1], te_op):
                self.rewritten += 1
                return relax_op(args[0], args[1])
        return call


    def _clip_op(self, call):
        """``R.clip(x, lo, hi)`` (HardSigmoid, HardSwish) -> ``minimum(maximum(x, lo), hi)``."""
        data, low, high = call.args
        if not isinstance(data.ty, relax.TensorType):
            return call
        dtype = data.ty.dtype
        bounds = []
        for bound in (low, high):     # IntImm/FloatImm (a PrimValue in other TVM versions)
            value = getattr(bound, "value", None)
            value = getattr(value, "value", value)
            if not isinstance(value, (int, float)):
                return call
            bounds.append(relax.const(float(value), dtype))
        self.rewritten += 1
        return relax.op.minimum(relax.op.maximum(data, bounds[0]), bounds[1])


@tvm.transform.module_pass(opt_level=0, name="ClipToOps")
def clip_to_ops(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    """Replace call_tir(TOPI maximum/minimum, (x, scalar constant)) by the Relax operators."""
    mod = mod.clone()
    for gv, func in list(mod.functions_items()):
        if isinstance(func, relax.Function):
            mod[gv] = _ClipToOps(mod).visit_expr(func)
    return relax.transform.DeadCodeElimination()(mod)


def _packed_conv(data, weight, strides, padding, tile: int, depth: int):
    """NHWC convolution of 8-bit ``data`` by ``weight`` packed
    ``[KH, KW, O/tile, C/depth, tile, depth]``, int32 sums (zero padding)."""
    top, left, bottom, right = padding
    if any(padding):
        data = topi.nn.pad(data, [0, top, left, 0], [0, bottom, right, 0])
    batch, height, width, channels = data.shape
    kh, kw = weight.shape[0], weight.shape[1]
    out = (batch, (height - kh) // strides[0] + 1, (width - kw) // strides[1] + 1,
           weight.shape[2] * tile)
    ry = tvm.te.reduce_axis((0, kh), "ry")
    rx = tvm.te.reduce_axis((0, kw), "rx")
    rc = tvm.te.reduce_axis((0, channels), "rc")
    return tvm.te.compute(out, lambda n, y, x, f: tvm.te.sum(
        data[n, y * strides[0] + ry, x * strides[1] + rx, rc].astype("int32")
        * weight[ry, rx, f // tile, rc // depth, f % tile, rc % depth].astype("int32"),
        axis=[ry, rx, rc]), name="conv2d_nhwc")


@mutator
class _DotProductConvs(PyExprMutator):
    def __init__(self, mod: tvm.IRModule, dot: DotProduct):
        super().__init__(mod)
        self._dot = dot

    def visit_call_(self, call):  # pylint: disable=arguments-renamed
        call = super().visit_call_(call)
        if not isinstance(call.op, tvm.ir.Op) or call.op.name != _CONV2D:
            return call
        attrs, weight = call.attrs, call.args[1]
        if (attrs.data_layout != "NHWC" or attrs.kernel_layout != "HWIO" or int(attrs.groups) != 1
                or any(int(d) != 1 for d in attrs.dilation) or str(attrs.out_dtype) != "int32"
                or not isinstance(weight, tvm.ir.expr.Constant)
                or str(weight.value.dtype) not in {"int8", self._dot.weight}):
            return call
        kh, kw, channels, out = weight.value.shape
        tile, depth = self._dot.tile, self._dot.depth
        if out % tile or channels % depth:
            return call
        packed = (weight.value.numpy()
                  .reshape(kh, kw, channels // depth, depth, out // tile, tile)
                  .transpose(0, 1, 4, 2, 5, 3).astype(self._dot.weight))
        return self.builder_.call_te(
            _packed_conv, call.args[0], relax.const(np.ascontiguousarray(packed)),
            [int(s) for s in attrs.strides], [int(p) for p in attrs.padding], tile, depth,
            primfunc_name_hint="conv2d_nhwc_int8")


def dot_product_convs(dot: DotProduct) -> tvm.transform.Pass:
    """int8 convolutions (not depthwise) with their weights packed for the target's dot product:
    ``[KH, KW, O/tile, C/depth, tile, depth]`` (in the instruction's weight type), so that a tile
    of ``tile`` output channels (16 for x86 VNNI, 8 for AVX2, 4 for ARM sdot) by ``depth`` input
    channels (4; 2 for AVX2) is the intrinsic's ``[i, k]`` operand and lies contiguous in memory,
    as the intrinsic reads it. MetaSchedule's rules then tensorize these kernels. (Not left to MetaSchedule's layout rewrite: it does not repack the operand of a
    tensorized block, and with HWIO weights the tile is neither ``[i, k]`` nor contiguous.)"""

    return function_pass("DotProductConvs", lambda mod: _DotProductConvs(mod, dot))


def channels_last_passes(dot: DotProduct | None = None, lanes: int = 1) -> list:
    """Relax (before LegalizeOps): NCHW convolutions and their activations to NHWC; output
    channels padded to whole vectors of ``lanes`` (``channels``); int8 weights packed for the
    target's dot product when it has one (``dot_product_convs``)."""
    return [
        clip_to_ops,
        relax.transform.ConvertLayout({"relax.nn.conv2d": ["NHWC", "HWIO"]}),
        *fold.passes(),
        *([channels.pad_channels(lanes)] if lanes > 1 else []),
        *([dot_product_convs(dot)] if dot else []),
    ]


def mark_weights_passes() -> list:
    """After fusion: constant weights are layout-free (MetaSchedule may pack them)."""
    return [relax.transform.AttachAttrLayoutFreeBuffers(), relax.transform.DeadCodeElimination()]


def pack_weights_passes() -> list:
    """After the database is applied: run the weight packing on the constants at compile time.
    Packing a kernel's weights leaves a tuple of the packed constants and one item binding per
    weight; ``CanonicalizeBindings`` passes the constants to the kernel directly, so the VM does
    not build and index a tuple (4 builtin calls) before every kernel call."""
    return [relax.transform.SplitLayoutRewritePreproc(), *fold.passes(),
            relax.transform.CanonicalizeBindings(), relax.transform.DeadCodeElimination()]
