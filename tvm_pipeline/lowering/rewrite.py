"""The shell of a Relax rewrite: one expression mutator over every Relax function of a module."""

from __future__ import annotations

from collections.abc import Callable

import tvm
from tvm import relax


def function_pass(name: str, rewriter: Callable[[tvm.IRModule], object]) -> tvm.transform.Pass:
    """A module pass that visits each Relax function with ``rewriter(mod)`` (a ``PyExprMutator``)
    and returns its builder's module (with any PrimFuncs the rewriter emitted)."""

    @tvm.transform.module_pass(opt_level=0, name=name)
    def transform(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        mutator = rewriter(mod)
        for gv, func in list(mod.functions_items()):
            if isinstance(func, relax.Function):
                mutator.builder_.update_func(gv, mutator.visit_expr(func))
        return mutator.builder_.get()

    return transform


def is_float32(expr) -> bool:
    """Whether ``expr`` is a float32 tensor (by its inferred Relax type)."""
    ty = getattr(expr, "ty", None)
    return isinstance(ty, relax.TensorType) and str(ty.dtype) == "float32"
