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
from .errors import RemoteError, UsageError
from .remote import RemoteOptions, find_devices, parse_address
from .targets import TargetSpec, physical_cores
from .toolchains import toolchain_for


@dataclass
class Measurement:
    builder: PersistentLocalBuilder
    runner: object                    # ms.runner.Runner
    watch: "DeviceWatch | None"       # remote only: measure callback run before AddToDatabase
    where: str                        # for progress lines: "this machine" or "2 devices 'rpi4' ..."

    def close(self) -> None:
        """Stop the builder's workers and the runner's (an RPC runner's workers may still be
        waiting on a dead tracker: they are killed, not waited for)."""
        self.builder.shutdown()
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


def local(build_timeout_s: float, run_timeout_s: float) -> Measurement:
    return Measurement(PersistentLocalBuilder(physical_cores(), build_timeout_s),
                       ms.runner.LocalRunner(timeout_sec=run_timeout_s), None, "this machine")


def remote(spec: TargetSpec, options: RemoteOptions, build_timeout_s: float,
           ndk: str | None = None) -> Measurement:
    """Builder and runner for devices under a key at a tracker (checked before tuning starts).
    ``options.timeout_s`` bounds each candidate's RPC session (request, upload, load, time)."""
    if not options.tracker:
        raise UsageError("Remote tuning goes through a tracker: pass --tracker HOST:PORT --key KEY.",
                         hint="MetaSchedule's RPC runner asks a tracker for devices; start one with "
                              "`python -m tvm.exec.rpc_tracker` and register the device's RPC "
                              "server with it (scripts/arm-device start --tracker 127.0.0.1:9190).")
    key = options.key or spec.rpc_key
    count = max(1, len(find_devices(options, key)))   # one runner worker per device
    host, port = parse_address(options.tracker, "--tracker")
    toolchain = toolchain_for(spec, ndk)
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
