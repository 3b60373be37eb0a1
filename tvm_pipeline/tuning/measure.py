"""Where tuning candidates are built and timed: here, or on remote devices through a tracker.

Local: ``PersistentLocalBuilder`` + MetaSchedule's ``LocalRunner``. Remote: the same builder
linking each candidate into a ``.so`` with the target's (cross) toolchain, and MetaSchedule's
``RPCRunner`` asking the tracker for devices under the key, one runner worker per registered
device, so a farm of N devices measures N candidates at once.

A remote batch in which *every* candidate failed to run means the devices are gone (killed,
unreachable, hung past the session timeout), not that the schedules are bad: ``DeviceWatch``
stops the run before that batch reaches the database, and the tune stage reports it as a
``RemoteError``; everything measured before stays in the database.
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms
from tvm.support.popen_pool import PopenPoolExecutor

from .builders import PersistentLocalBuilder
from ..errors import RemoteError, UsageError
from ..run.remote import RemoteOptions, find_devices, parse_address
from ..target.spec import TargetSpec, physical_cores, use_physical_cores
from ..target.toolchains import toolchain_for


@dataclass
class Measurement:
    builder: PersistentLocalBuilder
    runner: object                    # ms.runner.Runner
    watch: "DeviceWatch | None"       # remote only: measure callback run before AddToDatabase
    where: str                        # for progress lines: "this machine" or "2 devices 'rpi4' ..."
    guard: "CorrectnessGuard | None" = None   # local only: wrong candidates never win a task

    def close(self) -> None:
        """Stop the builder's workers (removing the candidates' files) and the runner's (an RPC
        runner's workers may still be waiting on a dead tracker: they are killed, not waited
        for)."""
        self.builder.close()
        if self.guard is not None:
            self.guard.close()
        pool = getattr(self.runner, "pool", None)
        if pool is not None:
            pool.shutdown(wait=False)


class _DevicesGone(Exception):
    """Raised inside MetaSchedule's loop to stop it before a dead batch is committed."""


@derived_object
class DeviceWatch(ms.measure_callback.PyMeasureCallback):
    """Stops tuning when every candidate of a remote batch failed to run."""

    def __init__(self, where: str):
        self.where = where
        self.error: RemoteError | None = None

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
        ran = [r for b, r in zip(builder_results, runner_results) if b.error_msg is None]
        if ran and all(r.error_msg is not None for r in ran):
            lines = [ln.strip() for ln in str(ran[0].error_msg).splitlines() if ln.strip()]
            first = next((ln for ln in lines if not ln.startswith("RPCRunner: An exception")),
                         lines[0] if lines else "?")[:300]
            self.error = RemoteError(
                f"Every candidate of the last batch ({len(ran)}) failed to run on the {self.where}; "
                f"the device stopped answering or is gone. First error: {first}",
                hint="Records measured before this batch are kept in the database: restart the "
                     "device (scripts/arm-device start, or its RPC server) and re-run the same "
                     "tune command to continue.")
            raise _DevicesGone(self.error.message)


# Timing of one candidate on this machine: the mean of 2 repeats of at least 20 ms each (the stock
# 3 runs x 100 ms spent more time timing than building on 2 cores; kernels of interest run 0.01-5
# ms, so 20 ms still averages 4 to 2000 calls).
LOCAL_EVALUATOR = ms.runner.EvaluatorConfig(number=1, repeat=2, min_repeat_ms=20)


def local(build_timeout_s: float, run_timeout_s: float, target=None) -> Measurement:
    """Build and time here; with ``target`` (a tvm Target this machine runs), every candidate that
    would become the best of its task is first checked against the unscheduled kernel."""
    builder = PersistentLocalBuilder(physical_cores(), build_timeout_s)
    use_physical_cores()      # candidates are timed on as many threads as the built model runs on
    runner = ms.runner.LocalRunner(timeout_sec=run_timeout_s, evaluator_config=LOCAL_EVALUATOR)
    guard = None
    if target is not None:
        guard = CorrectnessGuard(runner, builder, target)
        runner = guard
    return Measurement(builder, runner, None, "this machine", guard)


@derived_object
class _Done(ms.runner.PyRunnerFuture):
    def __init__(self, result):
        super().__init__()
        self._result = result

    def done(self) -> bool:
        return True

    def result(self):
        return self._result


@dataclass
class _TaskCheck:
    reference: object                  # verify.Reference
    best_s: float | None               # fastest candidate known correct (or already recorded)


@derived_object
class CorrectnessGuard(ms.runner.PyRunner):
    """Wraps the local runner: after a batch is timed, candidates faster than the best of their
    task are checked (fastest first) against the unscheduled kernel on seeded arguments until one
    passes; a wrong one is turned into a failed run ("wrong output ..."), so MetaSchedule records
    it as failed (never the best of a task, never applied) and the search moves on. MetaSchedule's
    own loop has no such check (AutoTVM had one).

    The tuning scheduler calls ``set_task`` before each batch (tasks are measured one at a time).
    """

    def __init__(self, inner, builder: PersistentLocalBuilder, target):
        super().__init__()
        self.inner = inner
        self.builder = builder
        self.target = target
        self.tasks: dict[int, _TaskCheck] = {}
        self.current: _TaskCheck | None = None
        self.checked = 0
        self.rejected: list[str] = []   # one line per rejected candidate

    def set_task(self, task_id: int, workload, best_s: float | None) -> None:
        from . import verify  # pylint: disable=import-outside-toplevel

        if task_id not in self.tasks:
            self.tasks[task_id] = _TaskCheck(verify.Reference.of(workload, self.target), best_s)
        self.current = self.tasks[task_id]

    def run(self, runner_inputs):
        results = [f.result() for f in self.inner.run(runner_inputs)]
        if self.current is not None:
            self._guard(runner_inputs, results)
        return [_Done(r) for r in results]

    def _guard(self, runner_inputs, results) -> None:
        task = self.current
        timed = sorted((sum(float(s) for s in r.run_secs) / len(r.run_secs), i)
                       for i, r in enumerate(results) if r.error_msg is None and r.run_secs)
        for mean_s, i in timed:
            if task.best_s is not None and mean_s >= task.best_s:
                break
            self.checked += 1
            dev = self.builder.check(runner_inputs[i].artifact_path, task.reference)
            if dev <= 1.0:
                task.best_s = mean_s
                break
            message = (f"wrong output: deviates {dev:.3g}x the tolerance from the unscheduled "
                       f"kernel on seeded inputs (rejected by tvm-pipeline)")
            self.rejected.append(message)
            results[i] = ms.runner.RunnerResult(None, message)

    def close(self) -> None:
        for task in self.tasks.values():
            task.reference.remove()


def remote(spec: TargetSpec, options: RemoteOptions, build_timeout_s: float,
           ndk: str | None = None) -> Measurement:
    """Builder and runner for devices under a key at a tracker (checked before tuning starts).
    ``options.timeout_s`` bounds each candidate's RPC session (request, upload, load, time)."""
    if not options.tracker:
        raise UsageError("Remote tuning goes through a tracker: pass --tracker HOST:PORT --key KEY.",
                         hint="MetaSchedule's RPC runner asks a tracker for devices; start one with "
                              "`python -m tvm.exec.rpc_tracker` and register the device's RPC "
                              "server with it (scripts/arm-device start --tracker 127.0.0.1:9190).")
    toolchain = toolchain_for(spec, ndk)      # a missing cross compiler fails before any device
    key = options.key or spec.rpc_key
    count = max(1, len(find_devices(options, key)))   # one runner worker per device
    host, port = parse_address(options.tracker, "--tracker")
    timeout = max(1, int(options.timeout_s))
    runner = ms.runner.RPCRunner(
        rpc_config=ms.runner.RPCConfig(tracker_host=host, tracker_port=port, tracker_key=key,
                                       session_priority=options.priority,
                                       session_timeout_sec=timeout),
        max_workers=count)
    # The stock runner's worker pool has no timeout: a worker waits forever for a device that left
    # the tracker, or on a device that froze. Bound each candidate (request, upload, run) instead;
    # a worker past it is killed and the candidate reported as timed out.
    runner.pool.shutdown()
    runner.pool = PopenPoolExecutor(max_workers=count, timeout=timeout)
    where = f"{count} device(s) with key '{key}' at tracker {options.tracker}"
    builder = PersistentLocalBuilder(physical_cores(), build_timeout_s,
                                     compiler=toolchain.compiler or "g++")
    return Measurement(builder, runner, DeviceWatch(where), where)
