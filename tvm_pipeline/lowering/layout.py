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

After fusion, ``AttachAttrLayoutFreeBuffers`` marks the constant weights of each kernel as
layout-free, so MetaSchedule's ``RewriteLayout`` may pick a packed weight layout per schedule. At
build time ``SplitLayoutRewritePreproc`` splits that packing into its own function, and
``FoldConstant`` runs it on the constant weights: the artifact holds packed weights, and its
interface (one input, one output) does not change (no ``transform_params`` step for users).
"""

from __future__ import annotations

import tvm
import tvm_ffi
from tvm import relax, topi
from tvm.relax.expr_functor import PyExprMutator, mutator

_CALL_TIR = "relax.call_tir"
_CLIP = "relax.clip"
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
        if not isinstance(call.op, tvm.ir.Op) or call.op.name != _CALL_TIR:
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


def channels_last_passes() -> list:
    """Relax (before LegalizeOps): NCHW convolutions and their activations to NHWC."""
    return [
        clip_to_ops,
        relax.transform.ConvertLayout({"relax.nn.conv2d": ["NHWC", "HWIO"]}),
        relax.transform.FoldConstant(),
    ]


def mark_weights_passes() -> list:
    """After fusion: constant weights are layout-free (MetaSchedule may pack them)."""
    return [relax.transform.AttachAttrLayoutFreeBuffers(), relax.transform.DeadCodeElimination()]


def pack_weights_passes() -> list:
    """After the database is applied: run the weight packing on the constants at compile time."""
    return [relax.transform.SplitLayoutRewritePreproc(), relax.transform.FoldConstant(),
            relax.transform.DeadCodeElimination()]
