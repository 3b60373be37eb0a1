"""Batched constant folding (``lowering.fold``) makes exactly the module that Relax's
FoldConstant alone makes: same kernels (tuning-database keys) and same constant values."""

from __future__ import annotations

import pytest
import tvm
import tvm_ffi
from tvm import relax

from tvm_pipeline.frontend.load import load
from tvm_pipeline.lowering import fold
from tvm_pipeline.lowering.prepare import fusion_passes, imported
from tvm_pipeline.target.spec import resolve_target


def _constant_calls(mod: tvm.IRModule) -> int:
    """Operator calls whose arguments are all constants (tensors or shapes)."""
    found = []

    def visit(expr):
        if (isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) and expr.args
                and all(isinstance(a, (tvm.ir.expr.Constant, relax.ShapeExpr)) for a in expr.args)):
            found.append(expr)

    relax.analysis.post_order_visit(mod["main"], visit)
    return len(found)


def _fused(mod: tvm.IRModule, target, batched: bool) -> tvm.IRModule:
    passes = [p for p in fusion_passes(target)
              if batched or p.info.name != "BatchedFoldConstant"]
    with target, tvm.transform.PassContext(opt_level=3):
        return tvm.transform.Sequential(passes)(mod)


@pytest.mark.parametrize("model,target_name", [("small_v2", "x86-avx2"), ("small_v2_int8", "rpi5")])
def test_batched_folding_makes_the_module_fold_constant_makes(model, target_name, request):
    target = resolve_target(target_name).to_tvm()
    mod, _ = imported(load(request.getfixturevalue(model)), target)
    assert _constant_calls(mod) > 0      # Clip bounds, bias reshapes, dequantized weights

    folded = fold.batched()(mod)         # one build evaluates all of them
    assert _constant_calls(folded) == 0

    assert tvm_ffi.structural_equal(_fused(mod, target, batched=True),
                                    _fused(mod, target, batched=False))
