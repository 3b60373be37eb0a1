"""Warm start: a task's search begins from its checked default schedule, measured here.

MetaSchedule's evolutionary search seeds its population with the best records the database holds
for the workload (``init_measured_ratio``) and fills the rest with random samples of the design
space. A task with no record starts from random samples only, which on a CPU are mostly far slower
than the default schedule that ``compile`` would use anyway: the first batches are spent finding
what is already known. Here, before the search, every task without a record gets its default
schedule (``lowering.schedules``), checked against the unscheduled kernel, timed on this machine,
and committed as a measured record: the search mutates from there, and the task ordering knows
each task's time from the start (share of the model = weight x time).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tvm.s_tir import meta_schedule as ms

from . import verify
from ..lowering.schedules import SketchError, cpu_params, default_schedule


@dataclass
class WarmStart:
    seeded: dict[str, float] = field(default_factory=dict)   # task -> default's seconds per call
    skipped: dict[str, str] = field(default_factory=dict)    # task -> why it starts cold
    why_none: str | None = None                              # why nothing was seeded at all

    def summary(self, weights: dict[str, int]) -> str:
        if self.why_none:
            return f"warm start: none ({self.why_none})"
        total = sum(weights.get(t, 1) * s for t, s in self.seeded.items()) or 1.0
        top = sorted(self.seeded, key=lambda t: -weights.get(t, 1) * self.seeded[t])[:3]
        text = (f"warm start: {len(self.seeded)} task(s) seeded with their checked default "
                f"schedule, measured here ({1e3 * total:.2f} ms per run with defaults only)")
        if top:
            text += "; first tuned: " + ", ".join(
                f"{t} ({100 * weights.get(t, 1) * self.seeded[t] / total:.0f}%)" for t in top)
        if self.skipped:
            text += f"; {len(self.skipped)} start cold"
        return text


def seed_defaults(database, tasks: list, spec, target) -> WarmStart:
    """Commit a measured default-schedule record for every task of ``tasks`` (MetaSchedule's
    extracted tasks) that has none in ``database``. Targets this machine cannot run start cold."""
    if not spec.runs_on_host:
        return WarmStart(why_none=f"{spec.name} does not run here, so defaults cannot be timed")
    if target.kind.name != "llvm":
        return WarmStart(why_none="default schedules are for CPU targets")
    result = WarmStart()
    params = cpu_params(spec, target)
    candidates = []
    for task in tasks:
        mod = task.dispatched[0]
        if database.has_workload(mod) and database.get_top_k(database.commit_workload(mod), 1):
            continue
        try:
            candidates.append((task, mod, default_schedule(mod["main"], target, params)))
        except SketchError as err:
            result.skipped[task.task_name] = str(err)
    deviations = verify.checked_deviations([(m["main"], s.func) for _, m, s in candidates],
                                           verify.check_target(spec, target))
    correct = [c for c, d in zip(candidates, deviations) if d <= 1.0]
    for (task, _, _), d in zip(candidates, deviations):
        if d > 1.0:
            result.skipped[task.task_name] = f"its default computed wrong results ({d:.3g}x)"
    seconds = verify.time_kernels([s.func for _, _, s in correct], target)
    for (task, mod, sketched), secs in zip(correct, seconds):
        database.commit_tuning_record(ms.database.TuningRecord(
            sketched.trace, database.commit_workload(mod), [secs], target,
            ms.arg_info.ArgInfo.from_prim_func(mod["main"])))
        result.seeded[task.task_name] = secs
    return result
