"""Default schedules for the CPU kernels that neither the database nor borrowing scheduled.

Each such kernel gets the default schedule of ``lowering.schedules`` and, before it is used, the
kernel check of ``tuning.verify``: the scheduled kernel and the unscheduled one run on the same
seeded arguments and must agree. Targets this machine cannot run (an ARM board, another x86
extension) are checked on this machine's CPU: the schedule is a transformation of the loop nest, and the same
scheduled TIR compiled for the host must compute what the unscheduled kernel computes. All kernels
of a model are checked in one library (see ``check_target`` for the optimisation level).
A kernel whose default fails (no sketch replays, or the check fails) stays naive, with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import tvm

from ..lowering.schedules import CpuParams, SketchError, default_schedule
from ..target import intrinsics
from ..target.spec import TargetSpec, physical_cores
from ..tuning import verify
from ..tuning.borrow import is_scheduled


@dataclass
class DefaultsResult:
    scheduled: list[str] = field(default_factory=list)      # kernels given a checked default
    naive: dict[str, str] = field(default_factory=dict)     # kernel -> why it stays naive


def cpu_params(spec: TargetSpec, target: tvm.target.Target) -> CpuParams:
    cores = int(target.attrs.get("num-cores", 0) or physical_cores())
    return CpuParams(vector_bits=spec.vector_bits, vector_registers=spec.vector_registers,
                     cores=cores)


def check_target(spec: TargetSpec, target: tvm.target.Target) -> tvm.target.Target:
    """Where default schedules are checked: the target itself when it runs here, else this
    machine's CPU; at LLVM ``-O0`` (what is checked is the schedule, a transformation of the loop
    nest, and unoptimised code compiles 3x faster; the artifact's optimised code is then checked
    whole against ONNX Runtime by validation)."""
    base = dict(spec.tvm) if spec.runs_on_host else {
        "kind": "llvm", "num-cores": physical_cores()}
    return tvm.target.Target({**base, "opt-level": 0})


def apply_defaults(mod: tvm.IRModule, spec: TargetSpec,
                   target: tvm.target.Target) -> tuple[tvm.IRModule, DefaultsResult]:
    """Give every unscheduled kernel of ``mod`` its checked default schedule (CPU targets)."""
    result = DefaultsResult()
    pending = [(gv, f) for gv, f in mod.functions_items()
               if isinstance(f, tvm.tirx.PrimFunc) and not is_scheduled(f)]
    if not pending:
        return mod, result
    intrinsics.register_for(target.kind.name, spec.arch)
    params, checked_on = cpu_params(spec, target), check_target(spec, target)
    sketched = {}
    for gv, func in pending:
        try:
            sketched[gv] = default_schedule(func, target, params).func
        except SketchError as err:
            result.naive[gv.name_hint] = f"no default schedule applies ({err})"
    for gv, deviation in _check(mod, sketched, checked_on).items():
        if deviation > 1.0:
            result.naive[gv.name_hint] = (f"its default schedule computed wrong results "
                                          f"({deviation:.3g}x the tolerance) and was dropped")
            continue
        mod[gv] = sketched[gv]
        result.scheduled.append(gv.name_hint)
    return mod, result


def _check(mod: tvm.IRModule, sketched: dict, checked_on: tvm.target.Target) -> dict:
    """Deviation of each default schedule from its unscheduled kernel: all kernels in one build;
    if that build fails, kernel by kernel, so that only the culprit is dropped."""
    pairs = [(mod[gv], func) for gv, func in sketched.items()]
    try:
        return dict(zip(sketched, verify.schedule_deviations(pairs, checked_on)))
    except tvm.TVMError:
        out = {}
        for gv, pair in zip(sketched, pairs):
            try:
                out[gv] = verify.schedule_deviations([pair], checked_on)[0]
            except tvm.TVMError:
                out[gv] = float("inf")
        return out
