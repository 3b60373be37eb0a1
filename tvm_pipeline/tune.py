"""Stage 3, tune: MetaSchedule with the XGBoost cost model on the prepared module.

* Budgets: ``max_trials`` for this run, ``trials_per_task`` counted *including* the records already
  in the database (so re-running continues where the last run stopped, and a task that has its
  budget is not tuned again), and an optional wall-clock ``time_budget_s``.
* Records: MetaSchedule's AddToDatabase callback appends every measured candidate to the target's
  JSON database as soon as its batch is measured; Ctrl-C or a kill loses at most the batch in
  flight, and ``database.repair`` drops a line cut by a kill.
* Progress: a measure callback reports tasks done, trials, and the best estimated latency
  (sum over kernels of weight x best measured time) after every batch.
"""

from __future__ import annotations

import collections
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import tvm
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms

from . import database as db
from .errors import TuningError
from .prepare import PreparedModule

_FAILED = 1e9


@dataclass(frozen=True)
class TuneOptions:
    max_trials: int = 2000              # trials measured by this run (all tasks together)
    trials_per_task: int = 64           # per-task budget, records already in the database included
    trials_per_iter: int = 64           # candidates per measured batch
    time_budget_s: float | None = None  # stop after the batch that crosses this wall-clock budget
    logs: str | None = None             # writable tuning-log root (see database.writable_root)
    seed: int | None = None
    build_timeout_s: float = 120.0      # generous: a loaded 2-core machine starts workers slowly
    run_timeout_s: float = 30.0


@dataclass
class TaskState:
    name: str
    weight: int
    trials_before: int
    trials: int = 0
    best_us: float | None = None        # best measured mean latency of one call, microseconds

    @property
    def total_trials(self) -> int:
        return self.trials_before + self.trials


@dataclass
class TuneProgress:
    tasks: list[TaskState]
    trials: int
    elapsed_s: float
    budget_trials: int
    trials_per_task: int

    @property
    def tasks_done(self) -> int:
        return sum(t.total_trials >= self.trials_per_task for t in self.tasks)

    @property
    def estimated_ms(self) -> float | None:
        """Sum of weight x best latency over tasks that have a measurement; None until all do."""
        if any(t.best_us is None for t in self.tasks):
            return None
        return sum(t.weight * t.best_us for t in self.tasks) / 1000.0


@dataclass
class TuneResult:
    database_dir: Path
    progress: TuneProgress
    stopped_by: str                     # "budget", "time", "interrupt", "nothing-to-do"
    records_before: int
    records_after: int

    @property
    def trials(self) -> int:
        return self.progress.trials

    def to_dict(self) -> dict:
        p = self.progress
        return {"database": str(self.database_dir), "stopped_by": self.stopped_by,
                "trials": p.trials, "seconds": round(p.elapsed_s, 1),
                "records_before": self.records_before, "records_after": self.records_after,
                "estimated_ms": p.estimated_ms, "tasks_done": p.tasks_done, "tasks": len(p.tasks),
                "per_task": [{"name": t.name, "weight": t.weight, "trials": t.total_trials,
                              "best_us": t.best_us} for t in p.tasks]}


class _TimeUp(Exception):
    pass


@derived_object
class _ProgressCallback(ms.measure_callback.PyMeasureCallback):
    """Counts trials, tracks best latencies, reports, and stops at the wall-clock budget."""

    def __init__(self, state: TuneProgress, report: Callable[[TuneProgress], None] | None,
                 deadline: float | None, start: float):
        self.state = state
        self.report = report
        self.deadline = deadline
        self.start = start
        self.time_up = False

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
        task = self.state.tasks[task_id]
        for build, run in zip(builder_results, runner_results):
            task.trials += 1
            self.state.trials += 1
            if build.error_msg is None and run.error_msg is None and run.run_secs:
                us = 1e6 * sum(float(s) for s in run.run_secs) / len(run.run_secs)
                if us < _FAILED and (task.best_us is None or us < task.best_us):
                    task.best_us = us
        self.state.elapsed_s = time.perf_counter() - self.start
        if self.report:
            self.report(self.state)
        if self.deadline is not None and time.perf_counter() >= self.deadline:
            self.time_up = True
            for i in range(len(self.state.tasks)):
                task_scheduler.terminate_task(i)


def _existing(database, mod) -> tuple[int, float | None]:
    """Records already measured for a workload, and the best mean latency among them (us)."""
    if not database.has_workload(mod):
        return 0, None
    workload = database.commit_workload(mod)
    records = database.get_top_k(workload, 1 << 30)
    best = None
    if records:
        secs = [float(s) for s in records[0].run_secs]
        best = 1e6 * sum(secs) / len(secs)
    return len(records), best


def tune(prepared: PreparedModule, options: TuneOptions = TuneOptions(),
         report: Callable[[TuneProgress], None] | None = None) -> TuneResult:
    """Tune every kernel of ``prepared`` into the target's database and return what was done."""
    target = prepared.target.to_tvm()
    if target.kind.name == "llvm" and "num-cores" not in prepared.target.tvm:
        raise TuningError(f"Target {prepared.target.name} has no \"num-cores\"; MetaSchedule needs it "
                          "to tune an llvm target.", hint=f"Add it to {prepared.target.path}.")
    folder = db.writable_root(options.logs) / prepared.target.name
    database = db.open_json_database(folder, create=True)
    records_before = db.count_records(folder)
    extracted = ms.relax_integration.extract_tasks(prepared.mod, target)
    states, todo = [], []
    for task in extracted:
        done, best = _existing(database, task.dispatched[0])
        state = TaskState(task.task_name, int(task.weight), done, best_us=best)
        if done < options.trials_per_task:
            states.append(state)
            todo.append(task)
    progress = TuneProgress(states, 0, 0.0, options.max_trials, options.trials_per_task)
    if not todo:
        return TuneResult(folder, progress, "nothing-to-do", records_before, records_before)
    remaining = [options.trials_per_task - s.trials_before for s in states]
    per_task = max(remaining)
    budget = min(options.max_trials, sum(remaining))
    work_dir = folder / "logs"
    contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
        todo, work_dir=str(work_dir), seed=options.seed)
    start = time.perf_counter()
    deadline = start + options.time_budget_s if options.time_budget_s else None
    callback = _ProgressCallback(progress, report, deadline, start)
    stopped_by = "budget"
    _quiet_metaschedule_logs()
    try:
        ms.tune_tasks(
            tasks=contexts, task_weights=weights, work_dir=str(work_dir),
            max_trials_global=budget, max_trials_per_task=per_task,
            num_trials_per_iter=options.trials_per_iter, database=database,
            builder=ms.builder.LocalBuilder(max_workers=_cores(target),
                                            timeout_sec=options.build_timeout_s),
            runner=ms.runner.LocalRunner(timeout_sec=options.run_timeout_s),
            measure_callbacks=[*ms.MeasureCallback.create("default"), callback],
        )
    except KeyboardInterrupt:
        stopped_by = "interrupt"
    except Exception as err:  # a TVM error surfaced through the FFI
        raise TuningError(f"Tuning {prepared.loaded.name} for {prepared.target.name} failed: "
                          f"{type(err).__name__}: {str(err).strip()[-800:]}",
                          hint=f"Records measured so far are kept in {folder}; logs are in "
                               f"{work_dir}.") from err
    if callback.time_up and stopped_by == "budget":
        stopped_by = "time"
    progress.elapsed_s = time.perf_counter() - start
    return TuneResult(folder, progress, stopped_by, records_before, db.count_records(folder))


def _cores(target) -> int:
    return int(target.attrs.get("num-cores", os.cpu_count() or 1))


def _quiet_metaschedule_logs() -> None:
    """MetaSchedule prints a table per batch at INFO; the progress callback replaces it."""
    if not os.environ.get("TVM_PIPELINE_DEBUG"):
        logging.getLogger("tvm.s_tir.meta_schedule").setLevel(logging.WARNING)
