"""Stage 2, prepare: ONNX -> Relax, weights bound as constants, BatchNorm folded, ops fused.

The result is the fused Relax module that both ``tune`` and ``compile`` start from, so the kernels
the tuner measured are exactly the kernels the builder looks up in the database:

    from_onnx (weights as constants) -> integer kernels for QDQ models (``integer``)
    -> FoldBatchnormToConv2D -> DecomposeOpsForInference
    -> FoldConstant -> LegalizeOps -> AnnotateTIROpPattern -> FoldConstant -> FuseOps -> FuseTIR

(the lowering after FoldConstant is chosen by the target's keys, see ``backends``; each
FoldConstant first evaluates what it would fold in one batch, see ``fold``)

Binding weights as constants and folding BatchNorm keeps Clip/BN statistics out of the runtime
arguments (MetaSchedule's search space breaks on them) and lets each conv + bias + activation
(Clip/Relu6, HardSwish, HardSigmoid) become one fused kernel.
"""

from __future__ import annotations

import collections
import warnings
from dataclasses import dataclass, field

import onnx
import tvm
from tvm import relax
from tvm.relax.frontend.onnx import from_onnx
from tvm.s_tir.analysis import estimate_tir_flops

from . import backends, fold
from .integer import IntegerReport, integerize
from ..target import intrinsics
from ..target.capabilities import check_target
from ..errors import TVM_ERRORS, raise_if_interrupted, ModelError
from ..frontend.load import LoadedModel
from ..target.spec import TargetSpec


@dataclass(frozen=True)
class Kernel:
    """One fused TIR function of the prepared module."""

    name: str
    calls: int          # how many times main calls it (MetaSchedule's task weight)


@dataclass
class PreparedModule:
    loaded: LoadedModel
    target: TargetSpec
    mod: tvm.IRModule   # fused Relax module, ready for tuning and building
    kernels: list[Kernel]
    integer: IntegerReport = field(default_factory=IntegerReport)   # quantized models' layers


def supported_onnx_ops() -> frozenset[str]:
    from tvm.relax.frontend.onnx import onnx_frontend  # pylint: disable=import-outside-toplevel

    return frozenset(onnx_frontend._get_convert_map())  # pylint: disable=protected-access


def check_operators(model: onnx.ModelProto, where: str = "the model") -> None:
    """Raise one ModelError naming every operator the Relax importer cannot convert."""
    supported = supported_onnx_ops()
    bad: dict[str, list[str]] = collections.defaultdict(list)
    for node in model.graph.node:
        domain = node.domain or "ai.onnx"
        if domain not in ("ai.onnx", "") or node.op_type not in supported:
            key = node.op_type if domain == "ai.onnx" else f"{domain}::{node.op_type}"
            bad[key].append(node.name or "(unnamed)")
    if bad:
        listing = "; ".join(f"{op} ({len(nodes)}x, e.g. node '{nodes[0]}')"
                            for op, nodes in sorted(bad.items()))
        raise ModelError(
            f"{where} uses {len(bad)} operator(s) that TVM's Relax ONNX importer does not support: "
            f"{listing}.",
            hint="Re-export the model without them (e.g. a different opset or a decomposed form), "
                 "or replace those layers before compiling.")


def _relax_import(loaded: LoadedModel) -> tvm.IRModule:
    check_operators(loaded.model, str(loaded.path or "the model"))
    try:
        with warnings.catch_warnings():
            # Relax variables cannot hold a '.': the importer renames inputs such as PyTorch's
            # "input.1" and warns about each; the ONNX names stay what the artifact is fed by
            warnings.filterwarnings("ignore", message="Renaming name ", category=UserWarning)
            return from_onnx(loaded.model, keep_params_in_input=False,
                             shape_dict={k: list(v) for k, v in loaded.input_shapes.items()})
    except TVM_ERRORS as err:       # the importer raises Python errors of its own kinds too
        raise_if_interrupted()
        raise ModelError(f"TVM's ONNX importer failed on {loaded.path or 'the model'}: "
                         f"{_last_line(err)}",
                         hint="Run `tvm-pipeline inspect` on the model; shapes may still be dynamic.") from err


def _last_line(err: Exception) -> str:
    lines = str(err).strip().splitlines()
    return lines[-1] if lines else "no message"


def fusion_passes(target: tvm.target.Target, vector_bits: int = 0) -> list:
    """Relax -> fused TIR kernels. Tuning and building must share this list (database keys).
    ``vector_bits``: the target's SIMD width (its target file's ``vector_bits``)."""
    return [
        relax.transform.FoldBatchnormToConv2D(),
        relax.transform.DecomposeOpsForInference(),
        relax.transform.CanonicalizeBindings(),
        *fold.passes(),
        *backends.lowering_passes(target, vector_bits),
    ]


def list_kernels(mod: tvm.IRModule) -> list[Kernel]:
    calls: collections.Counter[str] = collections.Counter()

    def visit(expr):
        if isinstance(expr, relax.Call) and expr.op == tvm.ir.Op.get("relax.call_tir"):
            calls[expr.args[0].name_hint] += 1

    relax.analysis.post_order_visit(mod["main"], visit)
    return [Kernel(gv.name_hint, calls[gv.name_hint]) for gv, func in mod.functions_items()
            if isinstance(func, tvm.tirx.PrimFunc)]


def kernel_flops(func: tvm.tirx.PrimFunc) -> float:
    """Floating-point operations of one call of the kernel ``func`` (0 without an estimate)."""
    try:
        return float(estimate_tir_flops(tvm.IRModule({"main": func})))
    except TVM_ERRORS:      # no estimate for this loop nest
        raise_if_interrupted()
        return 0.0


def imported(loaded: LoadedModel, target: tvm.target.Target) -> tuple[tvm.IRModule, IntegerReport]:
    """The model in Relax, before fusion (quantized layers rewritten as integer operators for
    ``target``)."""
    return integerize(_relax_import(loaded), intrinsics.dot_product(target))


def prepare(loaded: LoadedModel, target: TargetSpec) -> PreparedModule:
    """Import the loaded model into Relax and fuse it into kernels for ``target``."""
    check_target(target)
    tvm_target = target.to_tvm()
    mod, integer = imported(loaded, tvm_target)
    try:
        with tvm_target, tvm.transform.PassContext(opt_level=3):
            mod = tvm.transform.Sequential(fusion_passes(tvm_target, target.vector_bits))(mod)
    except TVM_ERRORS as err:
        raise_if_interrupted()
        raise ModelError(f"Preparing {loaded.name} for target {target.name} failed in TVM: "
                         f"{str(err).strip()[-500:]}") from err
    return PreparedModule(loaded=loaded, target=target, mod=mod, kernels=list_kernels(mod),
                          integer=integer)
