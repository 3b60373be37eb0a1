"""Constant folding with one build per pass instead of one per operator.

Relax's ``FoldConstant`` evaluates every operator whose inputs are all constants by legalizing it,
building it alone with LLVM and running it: about 25 ms each. An imported MobileNet has hundreds
of them (two per Clip for its bounds, a reshape per bias, a transpose per weight after the layout
conversion), so folding alone took 15 s of every ``prepare`` here, whatever the model's size.

``batched()`` finds the same operators (in dataflow blocks: calls of an operator that has a
legalization, or ``call_tir`` of a PrimFunc of the module, with static output shapes, every
argument a constant, a literal or the result of another such call, at least one a tensor), puts
them all in one Relax function whose parameters are the constants, builds it once (legalized as
``FoldConstant`` legalizes them, without fusion, for the same ``llvm`` host target: the same
kernels, so the same values), runs it, and writes each result back as the binding's value.
``FoldConstant`` then runs as before and only inlines those constants into their uses and folds
whatever this pass left (operators creating tensors from nothing, whose legalization is not a
``call_tir``). The module that comes out is the one ``FoldConstant`` alone makes: tuning-database
keys do not change.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from ..errors import TVM_ERRORS, raise_if_interrupted

CALL_TIR = "relax.call_tir"
_LITERALS = (relax.ShapeExpr, tvm.ir.StringImm, tvm.tirx.IntImm, tvm.tirx.FloatImm)


def passes() -> list:
    """What replaces ``relax.transform.FoldConstant()`` in a pass list."""
    return [batched(), relax.transform.FoldConstant()]


def batched() -> tvm.transform.Pass:
    @tvm.transform.module_pass(opt_level=0, name="BatchedFoldConstant")
    def fold(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        functions = [(gv, f) for gv, f in mod.functions_items() if isinstance(f, relax.Function)]
        if not functions:
            return mod
        mod = mod.clone()
        for gv, func in functions:
            values = _evaluate(_foldable(func, mod), mod)
            if values:
                mod[gv] = _WithValues(values, mod).visit_expr(func)
        return mod

    return fold


def _key(expr) -> int:
    return expr.__chandle__()


def _foldable(func: relax.Function, mod: tvm.IRModule) -> dict:
    """Binding var key -> its call, for every binding of ``func`` this pass folds, in order."""
    out: dict = {}
    for block in getattr(func.body, "blocks", []):
        if not isinstance(block, relax.DataflowBlock):
            continue
        for binding in block.bindings:
            if isinstance(binding, relax.VarBinding) and _can_fold(binding.value, out, mod):
                out[_key(binding.var)] = binding.value
    return out


def _can_fold(value, folded: dict, mod: tvm.IRModule) -> bool:
    if not isinstance(value, relax.Call) or not isinstance(value.op, tvm.ir.Op):
        return False
    if not _static_tensor(value.ty):
        return False
    if value.op.name == CALL_TIR:
        callee = value.args[0]
        if not (isinstance(callee, relax.GlobalVar) and callee in mod
                and isinstance(mod[callee], tvm.tirx.PrimFunc)):
            return False
        args = list(value.args[1:])
    elif value.op.get_attr("FLegalize") is None:
        return False
    else:
        args = list(value.args)
    tensors = []
    if not all(_leaf_ok(a, folded, tensors) for a in args):
        return False
    return bool(tensors)


def _leaf_ok(arg, folded: dict, tensors: list) -> bool:
    if isinstance(arg, relax.Tuple):
        return all(_leaf_ok(a, folded, tensors) for a in arg.fields)
    if isinstance(arg, tvm.ir.expr.Constant) and isinstance(arg.ty, relax.TensorType):
        tensors.append(arg)
        return True
    if isinstance(arg, relax.Var):
        tensors.append(arg)
        return _key(arg) in folded
    return isinstance(arg, _LITERALS)


def _static_tensor(ty) -> bool:
    shape = getattr(ty, "shape", None)
    return (isinstance(ty, relax.TensorType) and isinstance(shape, relax.ShapeExpr)
            and all(isinstance(d, tvm.tirx.IntImm) for d in shape.values))


class _Builder:
    """The folded calls as one Relax function of the constants they read."""

    def __init__(self, mod: tvm.IRModule):
        self.source = mod
        self.constants: dict = {}       # constant -> (parameter, array)
        self.vars: dict = {}            # folded binding var -> its var in the new function
        self.callees: dict = {}

    def collect(self, arg) -> None:
        """Register the constants and callees ``arg`` reads (before the function's parameters)."""
        if isinstance(arg, relax.Tuple):
            for field in arg.fields:
                self.collect(field)
        elif isinstance(arg, tvm.ir.expr.Constant) and _key(arg) not in self.constants:
            self.constants[_key(arg)] = (relax.Var(f"c{len(self.constants)}", arg.ty), arg.value)
        elif isinstance(arg, relax.GlobalVar):
            self.callees[arg] = self.source[arg]

    def arg(self, arg):
        if isinstance(arg, relax.Tuple):
            return relax.Tuple([self.arg(a) for a in arg.fields])
        if isinstance(arg, tvm.ir.expr.Constant):
            return self.constants[_key(arg)][0]
        if isinstance(arg, relax.Var):
            return self.vars[_key(arg)]
        return arg

    def module(self, foldable: dict) -> tvm.IRModule:
        for call in foldable.values():
            for arg in call.args:
                self.collect(arg)
        bb = relax.BlockBuilder()
        with bb.function("main", [p for p, _ in self.constants.values()]):
            with bb.dataflow():
                for key, call in foldable.items():
                    self.vars[key] = bb.emit(relax.Call(
                        call.op, [self.arg(a) for a in call.args], call.attrs, call.ty_args))
                result = bb.emit_output(relax.Tuple(list(self.vars.values())))
            bb.emit_func_output(result)
        mod = bb.get()
        for gv, func in self.callees.items():
            mod[gv] = func
        return mod


def _evaluate(foldable: dict, mod: tvm.IRModule) -> dict:
    """Binding var key -> its value as a constant, for each folded binding; {} when the batch does
    not build (``FoldConstant`` then folds one by one, as before)."""
    if not foldable:
        return {}
    builder = _Builder(mod)
    batch = builder.module(foldable)
    host = tvm.target.Target("llvm")
    cpu = relax.backend.cpu_generic.pipeline
    lower = tvm.transform.Sequential([relax.transform.LegalizeOps(),   # no fusion: op by op
                                      *cpu.dataflow_lower_passes(host), *cpu.finalize_passes(host)])
    try:
        with host:
            executable = tvm.compile(batch, target=host, relax_pipeline=lower)
        results = relax.VirtualMachine(executable, tvm.cpu())["main"](
            *[value for _, value in builder.constants.values()])
    except TVM_ERRORS:       # an operator that does not build for the host: FoldConstant skips it
        raise_if_interrupted()
        return {}
    return {key: relax.const(np.asarray(result.numpy())) for key, result in zip(foldable, results)}


@mutator
class _WithValues(PyExprMutator):
    def __init__(self, values: dict, mod: tvm.IRModule):
        super().__init__(mod)
        self.values = values

    def visit_var_binding_(self, binding):  # pylint: disable=arguments-renamed
        value = self.values.get(_key(binding.var))
        if value is None:
            return super().visit_var_binding_(binding)
        return self.builder_.emit_normalized(relax.VarBinding(binding.var, value))
