"""Warm start: a task's search begins from the schedules the target already has for it, measured here.

MetaSchedule's evolutionary search seeds its population with the best records the database holds
for the workload (``init_measured_ratio``) and fills the rest with random samples of the design
space. A task with no record starts from random samples only, which on a CPU are mostly far slower
than the default schedule that ``compile`` would use anyway: the first batches are spent finding
what is already known. Here, before the search, every task without a record gets up to two seeds,
each checked against the unscheduled kernel, timed on this machine and committed as a measured
record:

* its default schedule (``lowering.schedules``);
* the schedule of the nearest tuned kernel of the same structure in the target's databases (the
  shipped logs and the user's root), its tiles adapted (``borrow``): what ``compile`` would borrow.

The search mutates from the better of them, and the task ordering knows each task's time from the
start (share of the model = weight x time) and what it can expect to gain: the time the kernel would
take at the FLOP rate the nearest tuned kernel of its structure reached (``attainable``; see
``tune``'s task order). The cost model's own warm start is ``costmodel``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

from tvm.s_tir import meta_schedule as ms

from . import verify
from .borrow import attainable_seconds, nearest_schedule, scheduled, similar, tuned_workloads
from ..lowering.schedules import SketchError, cpu_params, default_schedule


@dataclass
class WarmStart:
    seeded: dict[str, float] = field(default_factory=dict)   # task -> best seed's seconds per call
    borrowed: set[str] = field(default_factory=set)          # tasks whose best seed is borrowed
    lent: int = 0                                            # borrowed seeds committed
    # task -> seconds per call at the FLOP rate the nearest tuned kernel of its structure reached
    attainable: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)    # task -> why it starts cold
    why_none: str | None = None                              # why nothing was seeded at all

    def summary(self, weights: dict[str, int]) -> str:
        if self.why_none:
            return f"warm start: none ({self.why_none})"
        if not self.seeded and not self.skipped:
            return "warm start: not needed (every task has records)"
        text = (f"warm start: {len(self.seeded)} task(s) seeded with their checked default "
                f"schedule, {self.lent} also with the nearest tuned kernel's (faster for "
                f"{len(self.borrowed)})")
        if self.seeded:
            total = sum(weights.get(t, 1) * s for t, s in self.seeded.items())
            text += f", measured here ({1e3 * total:.2f} ms per run with the faster of each)"
        if self.skipped:
            text += f"; {len(self.skipped)} start cold"
        return text


@dataclass(frozen=True)
class _Seed:
    task: object                # MetaSchedule's extracted task
    func: object                # the scheduled kernel
    trace: object
    borrowed: bool


def seed_defaults(database, tasks: list, spec, target,
                  donors: Callable[[], list] = list) -> WarmStart:
    """Commit measured seed records (default schedule; nearest tuned kernel's schedule from the
    databases ``donors()`` returns, called only if some task needs a seed) for every task of
    ``tasks`` (MetaSchedule's extracted tasks) that has no record in ``database``. Targets this
    machine cannot run start cold."""
    if not spec.runs_on_host:
        return WarmStart(why_none=f"{spec.name} does not run here, so defaults cannot be timed")
    if target.kind.name != "llvm":
        return WarmStart(why_none="default schedules are for CPU targets")
    result = WarmStart()
    seeds = _seeds(database, tasks, cpu_params(spec, target), target, donors, result)
    deviations = verify.checked_deviations([(s.task.dispatched[0]["main"], s.func) for s in seeds],
                                           verify.check_target(spec, target))
    correct = [s for s, d in zip(seeds, deviations) if d <= 1.0]
    for seed, d in zip(seeds, deviations):
        if d > 1.0 and not seed.borrowed:
            result.skipped[seed.task.task_name] = f"its default computed wrong results ({d:.3g}x)"
    seconds = verify.time_kernels([s.func for s in correct], target)
    for seed, secs in zip(correct, seconds):
        if math.isnan(secs):
            continue            # not measurable without its weight repacking: no seed
        mod = seed.task.dispatched[0]
        database.commit_tuning_record(ms.database.TuningRecord(
            seed.trace, database.commit_workload(mod), [secs], target,
            ms.arg_info.ArgInfo.from_prim_func(mod["main"])))
        name = seed.task.task_name
        result.lent += seed.borrowed
        if name not in result.seeded or secs < result.seeded[name]:
            result.seeded[name] = secs
            result.borrowed.discard(name)
            if seed.borrowed:
                result.borrowed.add(name)
        result.skipped.pop(name, None)
    return result


def _has_record(database, mod) -> bool:
    return database.has_workload(mod) and bool(database.get_top_k(database.commit_workload(mod), 1))


def _seeds(database, tasks: list, params, target, donors, result: WarmStart) -> list[_Seed]:
    """The default and borrowed schedules of the tasks without a record."""
    pending = [t for t in tasks if not _has_record(database, t.dispatched[0])]
    tuned = tuned_workloads(donors()) if pending else []    # donors are opened only when needed
    seeds = []
    for task in pending:
        mod = task.dispatched[0]
        try:
            sketched = default_schedule(mod["main"], target, params)
            seeds.append(_Seed(task, sketched.func, sketched.trace, False))
        except SketchError as err:
            result.skipped[task.task_name] = str(err)
        candidates = similar(mod["main"], tuned)
        attainable = attainable_seconds(mod["main"], candidates)
        if attainable is not None:
            result.attainable[task.task_name] = attainable
        sch = nearest_schedule(mod["main"], candidates, target)
        if sch is not None:
            seeds.append(_Seed(task, scheduled(sch), sch.trace, True))
    return seeds
