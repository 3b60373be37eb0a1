"""Transcendental functions as polynomials that vectorize, on CPUs.

TVM lowers ``exp``, ``sigmoid``, ``tanh`` and ``erf`` on LLVM CPU targets to calls of the C
library's scalar ``expf``/``tanhf``/``erff``: LLVM has no vector math library to widen them, so a
kernel that applies one per element runs one call per element inside its vector loop. A
convolution with SiLU fused (``x * sigmoid(x)``: EfficientNet, RegNetY, MobileNetV4, MixNet...)
then runs at 8-80 GFLOP/s where the same convolution with ReLU runs at 300 (EfficientNet-B0 at
128 px: 2.5x ONNX Runtime's time, whose MLAS computes these with vector polynomials too).

``fast_math()`` replaces them, before legalization, by TOPI's polynomial versions (``fast_exp``:
a degree-7 polynomial after range reduction, relative error ~1e-7; ``fast_tanh``; ``fast_erf``),
which are plain float arithmetic: they vectorize and fuse into the producing kernel's epilogue
like an activation. Softmax becomes TOPI's ``fast_softmax`` (max-subtracted, ``fast_exp``).
float32 only; other dtypes keep the exact functions. Validation against ONNX Runtime judges the
result like any other kernel.
"""

from __future__ import annotations

import tvm
from tvm import relax, topi
from tvm.relax.expr_functor import PyExprMutator, mutator

from .rewrite import function_pass, is_float32


def _sigmoid(x):
    return topi.divide(1.0, topi.add(1.0, topi.fast_exp(topi.negative(x))))


_FAST = {
    "relax.exp": topi.fast_exp,
    "relax.sigmoid": _sigmoid,
    "relax.tanh": topi.fast_tanh,
    "relax.erf": topi.fast_erf,
}


def fast_math() -> tvm.transform.Pass:
    return function_pass("FastMath", _Rewriter)


@mutator
class _Rewriter(PyExprMutator):
    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        name = call.op.name if isinstance(call.op, tvm.ir.Op) else None
        if not call.args or not is_float32(call.args[0]):
            return call
        if name in _FAST:
            return self.builder_.call_te(_FAST[name], call.args[0],
                                         primfunc_name_hint=name.split(".")[-1])
        if name == "relax.nn.softmax":
            return self.builder_.call_te(topi.nn.fast_softmax, call.args[0], int(call.attrs.axis),
                                         primfunc_name_hint="softmax")
        return call
