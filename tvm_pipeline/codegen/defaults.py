"""Default schedules for the CPU kernels that neither the database nor borrowing scheduled.

Each such kernel gets the default schedule of ``lowering.schedules`` and, before it is used, the
kernel check of ``tuning.verify``: the scheduled kernel and the unscheduled one run on the same
seeded arguments and must agree. Targets this machine cannot run (an ARM board, another x86
extension) are checked on this machine's CPU: the schedule is a transformation of the loop nest, and the same
scheduled TIR compiled for the host must compute what the unscheduled kernel computes; a kernel
tensorized with the target's int8 dot product is checked through its untensorized twin there
(``Sketched.for_check``). All kernels of a model are checked in one library (see ``check_target``
for the optimisation level).
A kernel whose default fails (no sketch replays, or the check fails) stays naive, with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import tvm

from ..lowering.schedules import SketchError, cpu_params, default_schedule
from ..target import intrinsics
from ..target.spec import TargetSpec
from ..tuning import verify
from ..tuning.borrow import is_scheduled


RACE_MARGIN = 0.10   # a default replaces a tuned schedule only when this much faster


@dataclass
class DefaultsResult:
    scheduled: list[str] = field(default_factory=list)      # kernels given a checked default
    naive: dict[str, str] = field(default_factory=dict)     # kernel -> why it stays naive
    # kernel -> (seconds with its tuned or borrowed schedule, with the default) where the default
    # won the race on this machine and replaced it
    replaced: dict[str, tuple[float, float]] = field(default_factory=dict)



def apply_defaults(mod: tvm.IRModule, spec: TargetSpec,
                   target: tvm.target.Target) -> tuple[tvm.IRModule, DefaultsResult]:
    """Give every unscheduled kernel of ``mod`` its checked default schedule (CPU targets)."""
    result = DefaultsResult()
    pending = [(gv, f) for gv, f in mod.functions_items()
               if isinstance(f, tvm.tirx.PrimFunc) and not is_scheduled(f)]
    if not pending:
        return mod, result
    intrinsics.register_for(target.kind.name, spec.arch)
    params, checked_on = cpu_params(spec, target), verify.check_target(spec, target)
    sketched = {}
    for gv, func in pending:
        try:
            sketched[gv] = default_schedule(func, target, params)
        except SketchError as err:
            result.naive[gv.name_hint] = f"no default schedule applies ({err})"
    checked = {gv: s.for_check(spec.runs_on_host) for gv, s in sketched.items()}
    for gv, deviation in _check(mod, checked, checked_on).items():
        if deviation > 1.0:
            result.naive[gv.name_hint] = (f"its default schedule computed wrong results "
                                          f"({deviation:.3g}x the tolerance) and was dropped")
            continue
        mod[gv] = sketched[gv].func
        result.scheduled.append(gv.name_hint)
    return mod, result


def race(mod: tvm.IRModule, unscheduled: tvm.IRModule, kernels: list[str], spec: TargetSpec,
         target: tvm.target.Target, result: DefaultsResult) -> tvm.IRModule:
    """Time each of ``kernels`` (tuned or borrowed) against its default schedule on this machine
    and keep the default where it is correct and more than ``RACE_MARGIN`` faster: a database
    tuned elsewhere, with few trials or on other thread counts can lose to the defaults here."""
    if not spec.runs_on_host or not kernels:
        return mod
    intrinsics.register_for(target.kind.name, spec.arch)
    params = cpu_params(spec, target)
    sketched = {}
    for name in kernels:
        gv = unscheduled.get_global_var(name)
        try:
            sketched[gv] = default_schedule(unscheduled[gv], target, params).func
        except SketchError:
            continue
    deviations = _check(unscheduled, sketched, verify.check_target(spec, target))
    correct = {gv: f for gv, f in sketched.items() if deviations[gv] <= 1.0}
    names = list(correct)
    # each pair timed back to back (not all of one kind first): drifts of the machine over the
    # timing hit both sides alike
    seconds = verify.time_kernels([f for gv in names for f in (mod[gv.name_hint], correct[gv])],
                                  target)
    for i, gv in enumerate(names):
        mine, default = seconds[2 * i], seconds[2 * i + 1]
        if default * (1 + RACE_MARGIN) < mine:
            mod[gv.name_hint] = correct[gv]
            result.replaced[gv.name_hint] = (mine, default)
    return mod


def _check(mod: tvm.IRModule, sketched: dict, checked_on: tvm.target.Target) -> dict:
    """Deviation of each default schedule (GlobalVar -> PrimFunc) from its unscheduled kernel."""
    pairs = [(mod[gv], func) for gv, func in sketched.items()]
    return dict(zip(sketched, verify.checked_deviations(pairs, checked_on)))
