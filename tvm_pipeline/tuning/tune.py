"""Stage 3, tune: MetaSchedule with the XGBoost cost model on the prepared module.

* Budgets: ``max_trials`` for this run, ``trials_per_task`` counted *including* the records already
  in the database (so re-running continues where the last run stopped, and a task that has its
  budget is not tuned again), and an optional wall-clock ``time_budget_s``. Trial budgets left
  unset follow the time budget (``TuneOptions.budget``): with one, the time binds.
* Records: MetaSchedule's AddToDatabase callback appends every measured candidate to the target's
  JSON database as soon as its batch is measured, before the next batch is built. Ctrl-C
  finishes and saves the batch in flight, then stops; a kill loses at most that batch, and
  ``database.repair`` drops a line cut by the kill.
* Progress: a measure callback reports tasks done, trials, and the best estimated latency
  (sum over kernels of weight x best measured time) after every batch.
* Correctness: on a target this machine runs, ``measure.CorrectnessGuard`` checks every candidate
  that would become its task's best against the unscheduled kernel before the batch is recorded;
  a wrong one is recorded as a failed run.
* Throughput: candidates build in persistent worker processes and are linked there
  (``builders``); timing is 2 x 20 ms per candidate (``measure.LOCAL_EVALUATOR``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms

from . import costmodel
from . import database as db
from . import measure
from .warmstart import WarmStart, seed_defaults
from ..target import intrinsics
from ..errors import TVM_ERRORS, TuningError
from ..numbers import mean_run_seconds
from ..lowering import schedules
from ..console import native_stderr
from ..lowering.prepare import PreparedModule

if TYPE_CHECKING:  # pragma: no cover
    from ..run.remote import RemoteOptions


@dataclass(frozen=True)
class SearchOptions:
    """MetaSchedule's evolutionary search effort per batch (its defaults: 512 and 4)."""

    population: int = 512
    genetic_iters: int = 4


FAST_SEARCH = SearchOptions(population=256, genetic_iters=2)
SEARCH_PRESETS = {"fast": FAST_SEARCH, "full": SearchOptions()}
PRIOR_SPEEDUP = 2.0           # expected of a kernel no tuned kernel of its structure tells about
SPEEDUP_RANGE = (1.1, 4.0)    # expected speed-ups are clipped to this (a nearest kernel can be far)


UNTIMED_BUDGET = (2000, 64)           # (trials this run, trials per task): see TuneOptions.budget
TIMED_BUDGET = (1_000_000, 512)


@dataclass(frozen=True)
class TuneOptions:
    max_trials: int | None = None       # trials this run measures, all tasks (+ <1 batch)
    warm_start: bool = True             # seed untuned tasks with their measured default schedule
                                        # and start from the saved cost model (costmodel)
    trials_per_task: int | None = None  # per-task budget, records already in the database included
    trials_per_iter: int = 64           # candidates per measured batch
    time_budget_s: float | None = None  # stop after the batch that crosses this wall-clock budget
    logs: str | None = None             # writable tuning-log root (see database.writable_root)
    seed: int | None = None
    search: SearchOptions = FAST_SEARCH
    build_timeout_s: float = 30.0       # per candidate (workers are already running)
    run_timeout_s: float = 30.0         # per candidate (remote: the RPC session of one candidate)
    remote: "RemoteOptions | None" = None   # measure on devices at a tracker (remote.RemoteOptions)
    ndk: str | None = None              # remote Android devices: NDK root or clang++ for candidates

    def budget(self) -> tuple[int, int]:
        """(trials this run, trials per task), the ones left unset defaulted. Without a time
        budget: 2,000 and 64, a run of about ten minutes. With one, the time is the budget: no
        limit on the run and 512 per task (2,000 trials at 3.4/s would stop a 30-minute run after
        ten minutes, and 64 per task a model of 31 kernels after 1,984 trials)."""
        trials, per_task = TIMED_BUDGET if self.time_budget_s else UNTIMED_BUDGET
        return (trials if self.max_trials is None else self.max_trials,
                per_task if self.trials_per_task is None else self.trials_per_task)


@dataclass
class TaskState:
    name: str
    weight: int
    trials_before: int
    trials: int = 0
    best_us: float | None = None        # best measured mean latency of one call, microseconds
    history: list = field(default_factory=list)   # best_us after each measured batch
    exhausted: bool = False             # the search space has no unmeasured candidate left
    attainable_us: float | None = None  # at the FLOP rate of the nearest tuned kernel (warm start)

    @property
    def total_trials(self) -> int:
        return self.trials_before + self.trials

    @property
    def expected_speedup(self) -> float:
        """What tuning can expect to gain on this kernel: best time / attainable time (within
        ``SPEEDUP_RANGE``), ``PRIOR_SPEEDUP`` when either is unknown."""
        if self.best_us is None or not self.attainable_us:
            return PRIOR_SPEEDUP
        low, high = SPEEDUP_RANGE
        return min(high, max(low, self.best_us / self.attainable_us))

    @property
    def expected_gain_us(self) -> float:
        """Microseconds per model run that tuning this kernel is expected to save (unmeasured
        kernels first: infinite)."""
        if self.best_us is None:
            return float("inf")
        return self.weight * self.best_us * (1 - 1 / self.expected_speedup)


@dataclass
class TuneProgress:
    tasks: list[TaskState]
    trials: int
    elapsed_s: float
    budget_trials: int
    trials_per_task: int
    started_from: str = ""              # what the search starts from (warm start), for humans

    @property
    def tasks_done(self) -> int:
        return sum(t.total_trials >= self.trials_per_task or t.exhausted for t in self.tasks)

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
    checked: int = 0                    # candidates checked against the unscheduled kernel
    rejected: list[str] = field(default_factory=list)   # why each wrong candidate was rejected

    @property
    def trials(self) -> int:
        return self.progress.trials

    def to_dict(self) -> dict:
        p = self.progress
        return {"database": str(self.database_dir), "stopped_by": self.stopped_by,
                "trials": p.trials, "seconds": round(p.elapsed_s, 1),
                "records_before": self.records_before, "records_after": self.records_after,
                "started_from": p.started_from,
                "candidates_checked": self.checked, "candidates_rejected": self.rejected,
                "estimated_ms": p.estimated_ms, "tasks_done": p.tasks_done, "tasks": len(p.tasks),
                "per_task": [{"name": t.name, "weight": t.weight, "trials": t.total_trials,
                              "best_us": t.best_us} for t in p.tasks]}


@derived_object
class _ProgressCallback(ms.measure_callback.PyMeasureCallback):
    """Counts trials, tracks best latencies, reports, and flags the wall-clock deadline."""

    def __init__(self, state: TuneProgress, report: Callable[[TuneProgress], None] | None,
                 deadline: float | None, start: float):
        self.state = state
        self.report = report
        self.deadline = deadline
        self.start = start
        self.time_up = False
        self.interrupted = False

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
        task = self.state.tasks[task_id]
        task.exhausted = not runner_results
        for build, run in zip(builder_results, runner_results):
            task.trials += 1
            self.state.trials += 1
            mean = mean_run_seconds(run.run_secs) if build.error_msg is None and \
                run.error_msg is None else None
            if mean is not None and (task.best_us is None or 1e6 * mean < task.best_us):
                task.best_us = 1e6 * mean
        task.history.append(task.best_us)
        self.state.elapsed_s = time.perf_counter() - self.start
        if self.report:
            self.report(self.state)
        if self.deadline is not None and time.perf_counter() >= self.deadline:
            self.time_up = True


@derived_object
class _SequentialGradientScheduler(ms.task_scheduler.PyTaskScheduler):
    """MetaSchedule's gradient-based task choice, but every batch is measured and committed to
    the database before the next one is built.

    The stock gradient scheduler sends one batch of *every* task before joining any (for MobileNet
    on 2 cores that is ~30 minutes with nothing in the database and no progress shown), and it
    builds the next batch while the previous one is being timed, which on a 2-core machine
    disturbs the timings. Here a kill loses at most one batch, progress shows after every batch,
    and the wall-clock budget is honoured between batches.
    """

    def __init__(self, progress: TuneProgress, callback: _ProgressCallback, seed: int | None,
                 on_task: Callable[[int], None] | None = None):
        super().__init__()
        self.progress = progress
        self.callback = callback
        self.on_task = on_task
        self.last: int | None = None
        self.visited: set[int] = set()
        self.rng = random.Random(seed)

    def next_task_id(self) -> int:
        tasks = self._outer().tasks_  # pylint: disable=no-member
        if self.last is not None and not tasks[self.last].is_terminated:
            self.join_running_task(self.last)          # measure callbacks commit the records
        self.last = None
        if self.callback.time_up or self.callback.interrupted:
            return -1
        for i, task in enumerate(tasks):
            if not task.is_terminated and self.progress.tasks[i].exhausted:
                self._outer().terminate_task(i)  # pylint: disable=no-member
        alive = [i for i, t in enumerate(tasks) if not t.is_terminated]
        if not alive:
            return -1
        # first one batch per task, by expected gain (share of the model's time x expected
        # speed-up; tasks with no time at all before those), then by gradient
        fresh = sorted((i for i in alive if i not in self.visited),
                       key=lambda i: self.progress.tasks[i].expected_gain_us, reverse=True)
        choice = fresh[0] if fresh else self._by_gradient(alive)
        self.visited.add(choice)
        self.last = choice
        if self.on_task is not None:
            self.on_task(choice)
        return choice

    def _by_gradient(self, alive: list[int], window: int = 3, alpha: float = 0.2) -> int:
        scores = []
        for i in alive:
            state = self.progress.tasks[i]
            hist = [h for h in state.history if h is not None]
            if not hist:
                scores.append(-1e9)
                continue
            best, n = hist[-1], len(hist)
            g1 = (hist[-1 - window] - best) / window if n > window else 0.0
            scores.append((alpha * g1 + (1 - alpha) * best / n) * state.weight)
        top = max(scores)
        if top == min(scores):
            return self.rng.choice(alive)
        return alive[scores.index(top)]


class _StopOnInterrupt:
    """First Ctrl-C: finish and commit the batch in flight, then stop cleanly. Second: abort now.

    (A KeyboardInterrupt raised inside MetaSchedule's C++ loop comes back as an opaque error, and
    would lose the batch that was being measured.)"""

    def __init__(self, callback: _ProgressCallback):
        self.callback = callback
        self.previous = None

    def _handler(self, signum, frame):
        if self.callback.interrupted:
            raise KeyboardInterrupt
        self.callback.interrupted = True
        sys.stderr.write("\ninterrupt: stopping after the batch in flight is measured and saved "
                         "(Ctrl-C again to abort it)\n")

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            current = signal.getsignal(signal.SIGINT)
            if current not in (signal.SIG_IGN, None):
                self.previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def _existing(database, mod, counts: dict) -> tuple[int, float | None]:
    """Trials already recorded for a workload (failed ones included), and its best latency (us)."""
    if not database.has_workload(mod):
        return 0, None
    workload = database.commit_workload(mod)
    best = database.get_top_k(workload, 1)
    mean = mean_run_seconds(best[0].run_secs) if best else None
    return counts.get(workload, 0), None if mean is None else 1e6 * mean


def _as_stored(database, task):
    """``task`` with the database's own copy of its kernel where it holds one.

    MetaSchedule files a kernel under a stored workload that is structurally equal to it, and
    structural equality ignores block names, which Relax derives from tensor names (a mean's
    reduction block is ``<input>_red``). Two models' squeeze-excite means are the same kernel
    with differently named blocks: tuned as extracted, the second model's records would name blocks
    the stored workload does not have, and MetaSchedule then fails to load the whole database
    (seen tuning GhostNet after MobileNet V3-large into one root: 189 such records). Tuned as the
    stored copy, every record names the blocks of the workload it is filed under."""
    mod = task.dispatched[0]
    if not database.has_workload(mod):
        return task
    stored = database.commit_workload(mod).mod
    return ms.ExtractedTask(task.task_name, task.mod, task.target, [stored], task.weight)


def _records_per_workload(database, folder: Path) -> dict:
    """Trials per workload: records in the database plus those ``distill`` removed."""
    counts: dict = {}
    for record in database.get_all_tuning_records():
        counts[record.workload] = counts.get(record.workload, 0) + 1
    distilled = db.read_trials(folder)
    if distilled:
        for workload in list(counts):
            counts[workload] += distilled.get(str(workload.as_json()[0]), 0)
    return counts


def tune(prepared: PreparedModule, options: TuneOptions = TuneOptions(),
         report: Callable[[TuneProgress], None] | None = None) -> TuneResult:
    """Tune every kernel of ``prepared`` into the target's database and return what was done."""
    target = prepared.target.to_tvm()
    if target.kind.name == "llvm" and "num-cores" not in prepared.target.tvm:
        raise TuningError(f"Target {prepared.target.name} has no \"num-cores\"; MetaSchedule needs it "
                          "to tune an llvm target.", hint=f"Add it to {prepared.target.path}.")
    folder = db.writable_folder(prepared.target.name, options.logs)
    # TVM's C++ warnings (a candidate's tile that the intrinsic does not fit prints the kernel)
    with db.locked(folder, "tuning"), native_stderr(folder / "logs" / "native.log"):
        return _tune_into(folder, target, prepared, options, report)


def _tune_into(folder: Path, target, prepared: PreparedModule, options: TuneOptions,
               report: Callable[[TuneProgress], None] | None) -> TuneResult:
    """``tune`` with the database folder locked."""
    # records of tensorized kernels name their intrinsic: it must exist before a database loads
    intrinsics.register_for(target.kind.name, prepared.target.arch)
    database = db.open_json_database(folder, create=True)
    records_before = db.count_records(folder)
    max_trials, per_task_budget = options.budget()
    extracted = [_as_stored(database, task)
                 for task in ms.relax_integration.extract_tasks(prepared.mod, target)]
    others = [d for d in db.database_dirs(prepared.target.name, options.logs)
              if d != folder.resolve()]
    warm = (seed_defaults(database, extracted, prepared.target, target,
                          lambda: [database, *map(db.open_json_database, others)])
            if options.warm_start else WarmStart(why_none="disabled (--cold)"))
    states, todo = [], []
    counts = _records_per_workload(database, folder)
    for task in extracted:
        done, best = _existing(database, task.dispatched[0], counts)
        attainable = warm.attainable.get(task.task_name)
        state = TaskState(task.task_name, int(task.weight), done, best_us=best,
                          attainable_us=None if attainable is None else 1e6 * attainable)
        if done < per_task_budget:
            states.append(state)
            todo.append(task)
    remaining = [per_task_budget - s.trials_before for s in states]
    budget = min(max_trials, sum(remaining))   # what this run can actually measure
    model = costmodel.load([folder, *others]) if options.warm_start else None
    started = warm.summary({t.task_name: int(t.weight) for t in extracted}) + _first_tuned(states)
    progress = TuneProgress(states, 0, 0.0, budget, per_task_budget,
                            started + ("\n" + model.summary() if model is not None else ""))
    if not todo:
        return TuneResult(folder, progress, "nothing-to-do", records_before, records_before)
    per_task = max(remaining)
    work_dir = folder / "logs"
    first = todo[0].dispatched[0]
    space = schedules.search_space(first[first.get_global_vars()[0]], target)
    # MetaSchedule's log set-up binds a console handler to sys.stdout; keep stdout for results.
    with contextlib.redirect_stdout(sys.stderr), _unnamed_handlers_set_aside():
        contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
            todo, work_dir=str(work_dir), seed=options.seed, space=space,
            strategy=ms.search_strategy.EvolutionarySearch(
                population_size=options.search.population,
                genetic_num_iters=options.search.genetic_iters))
    _quiet_metaschedule_console()
    if options.remote is not None and options.remote.enabled:
        where = measure.remote(prepared.target, options.remote, options.build_timeout_s,
                               options.ndk)
    else:
        where = measure.local(options.build_timeout_s, options.run_timeout_s,
                              target if prepared.target.runs_on_host else None)
    start = time.perf_counter()
    deadline = start + options.time_budget_s if options.time_budget_s else None
    callback = _ProgressCallback(progress, report, deadline, start)

    def on_task(task_id: int) -> None:
        if where.guard is not None:
            best_us = progress.tasks[task_id].best_us
            where.guard.set_task(task_id, contexts[task_id].mod, best_us / 1e6 if best_us else None)

    scheduler = _SequentialGradientScheduler(progress, callback, options.seed, on_task)
    if report:
        report(progress)                # trials 0: what the search starts from
    stopped_by = "budget"
    cost_model = model.model if model is not None else costmodel.new_model()
    finished = False
    try:
        with _StopOnInterrupt(callback):
            ms.tune_tasks(
                tasks=contexts, task_weights=weights, work_dir=str(work_dir),
                max_trials_global=budget, max_trials_per_task=per_task,
                num_trials_per_iter=options.trials_per_iter, database=database,
                builder=where.builder, runner=where.runner,
                measure_callbacks=_callbacks(callback, where.watch),
                task_scheduler=scheduler, cost_model=cost_model,
            )
        finished = True
    except TVM_ERRORS as err:  # a TVM error surfaced through the FFI (a second Ctrl-C lands here too)
        if where.watch is not None and where.watch.error is not None:
            raise where.watch.error from None
        if not callback.interrupted:
            raise TuningError(f"Tuning {prepared.loaded.name} for {prepared.target.name} failed: "
                              f"{str(err).strip()[-800:] or 'no message'}",
                              hint=f"Records measured so far are kept in {folder}; logs are in "
                                   f"{work_dir}.") from err
        finished = True          # interrupted: a clean stop
    finally:
        where.close()
        _save_cost_model(cost_model, folder, model is None, raise_errors=finished)
    if callback.interrupted:
        stopped_by = "interrupt"
    if callback.time_up and stopped_by == "budget":
        stopped_by = "time"
    progress.elapsed_s = time.perf_counter() - start
    guard = where.guard
    return TuneResult(folder, progress, stopped_by, records_before, db.count_records(folder),
                      guard.checked if guard else 0, list(guard.rejected) if guard else [])


def _save_cost_model(model, folder: Path, cold: bool, raise_errors: bool) -> None:
    """Save the cost model with the database (``--cold``: add its measurements to the saved ones).
    When tuning is ending on an error, a failed save is only reported: it must not hide that
    error."""
    try:
        if cold:
            costmodel.add_to(folder, model)
        else:
            costmodel.save(model, folder)
    except OSError as err:
        if raise_errors:
            raise TuningError(f"Could not save the cost model into {folder}: {err.strerror or err}.",
                              hint="The tuning records are saved; free space or fix the "
                                   "folder's permissions, then tune again to save it.") from err
        sys.stderr.write(f"note: the cost model was not saved into {folder} ({err})\n")


def _first_tuned(states: list[TaskState], count: int = 3) -> str:
    """The kernels the search takes first (largest expected gain), with their share of the model's
    time and expected speed-up."""
    known = [t for t in states if t.best_us is not None]
    if not known:
        return ""
    total = sum(t.weight * t.best_us for t in known)
    top = sorted(known, key=lambda t: -t.expected_gain_us)[:count]
    return ("; first tuned (share of the time x expected speed-up): "
            + ", ".join(f"{t.name} ({100 * t.weight * t.best_us / total:.0f}% x "
                        f"{t.expected_speedup:.1f})" for t in top))


def _callbacks(progress: _ProgressCallback, watch=None) -> list:
    """MetaSchedule's defaults, with progress reported right after the records are committed
    (before the slower cost-model update), and a remote device watch before the commit."""
    defaults = list(ms.MeasureCallback.create("default"))
    return [*([watch] if watch is not None else []), defaults[0], progress, *defaults[1:]]


@contextlib.contextmanager
def _unnamed_handlers_set_aside():
    """MetaSchedule's logging set-up (``logging.config.dictConfig``) lists its logger's handlers
    by name and fails on one without a name (a host application's, such as pytest's log
    capture): set those aside while it runs."""
    logger = logging.getLogger("tvm.s_tir.meta_schedule")
    unnamed = [h for h in logger.handlers if h.get_name() is None]
    for handler in unnamed:
        logger.removeHandler(handler)
    try:
        yield
    finally:
        for handler in unnamed:
            logger.addHandler(handler)


def _quiet_metaschedule_console() -> None:
    """MetaSchedule prints a table per batch; the progress callback replaces it (the full logs
    stay in the work dir). TVM_PIPELINE_DEBUG=1 keeps it."""
    if os.environ.get("TVM_PIPELINE_DEBUG"):
        return
    for handler in logging.getLogger("tvm.s_tir.meta_schedule").handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.setLevel(logging.WARNING)
