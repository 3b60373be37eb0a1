"""Running artifacts on a remote device through TVM RPC: a server (``--rpc HOST:PORT``) or a
tracker that hands out devices registered under a key (``--tracker HOST:PORT --key KEY``).

A :class:`RemoteRunner` uploads the artifact's library, loads it on the device, opens the device
the target names (``cpu``, ``cuda``, ``opencl``...) and runs the relax VM there; it is a drop-in
for the local runner in ``validate`` and ``bench`` (which then times on the device itself with
TVM's time evaluator). Every remote step runs under a deadline, so a dead, hung or missing device
gives a :class:`~tvm_pipeline.errors.RemoteError` in bounded time, never a hang.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import TVM_ERRORS, RemoteError, UsageError
from .feeds import flatten_outputs

PROBE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class RemoteOptions:
    rpc: str | None = None          # HOST:PORT of a TVM RPC server
    tracker: str | None = None      # HOST:PORT of a TVM RPC tracker
    key: str | None = None          # device key at the tracker (default: the target's rpc_key)
    timeout_s: float = 120.0        # bound on every remote step (connect, upload, load, run)
    priority: int = 1               # tracker request priority

    def __post_init__(self) -> None:
        if self.rpc and self.tracker:
            raise UsageError("Pass either --rpc HOST:PORT (one server) or --tracker HOST:PORT "
                             "(devices by key), not both.")
        if self.key and not self.tracker:
            raise UsageError("--key selects devices at a tracker: pass --tracker HOST:PORT too.")
        if self.timeout_s <= 0:
            raise UsageError(f"--timeout must be positive (got {self.timeout_s}).")
        for flag, value in (("--rpc", self.rpc), ("--tracker", self.tracker)):
            if value:
                parse_address(value, flag)

    @property
    def enabled(self) -> bool:
        return bool(self.rpc or self.tracker)

    def describe(self, key: str | None = None) -> str:
        if self.rpc:
            return f"RPC server {self.rpc}"
        key = self.key or key
        return (f"device with key '{key}' at tracker {self.tracker}" if key else
                f"a device at tracker {self.tracker} (key: the target's rpc_key)")


def parse_address(text: str, flag: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"{flag} {text!r} is not HOST:PORT.", hint=f"For example {flag} "
                         "127.0.0.1:9090 (server) or 127.0.0.1:9190 (tracker).")
    return host, int(port)


class _Expired(BaseException):
    """Raised inside a remote call by the deadline's alarm (BaseException: TVM must not eat it)."""


@contextlib.contextmanager
def deadline(seconds: float, what: str, where: str, on_expire=None):
    """Bound a blocking remote step: ``RemoteError`` after ``seconds`` (main thread; else unbounded).

    At expiry ``on_expire`` runs first, inside the signal handler (e.g. to sever the session's
    socket): a call blocked where TVM swallows the interruption (freeing a remote object waits for
    the device's answer) then fails at once instead of hanging."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired = []

    def expire(signum, frame):  # pylint: disable=unused-argument
        fired.append(True)
        if on_expire is not None:
            on_expire()
        raise _Expired()

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    except BaseException:
        if not fired:
            raise
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    if fired:   # expired (even if the interruption was swallowed and the step limped on)
        raise RemoteError(f"Timed out after {seconds:g} s while {what} on {where}: the device "
                          "stopped answering.",
                          hint="Check that the device is alive (its RPC server log), or raise "
                               "--timeout for slow devices (emulated ones take ~6 s per "
                               "full-size MobileNet inference).")


DEAD_HINT = ("The RPC server may have died or been restarted; check it (for the emulated device: "
             "scripts/arm-device status) and retry. Re-run with TVM_PIPELINE_DEBUG=1 for the full "
             "traceback.")
_CLOSED = ("kShutdown", "code == RPCCode::kReturn", "closed", "Connection reset", "Broken pipe")


def _rpc_error(err: Exception, what: str, where: str, hint: str) -> RemoteError:
    text = str(err).strip()
    last = next((ln.strip() for ln in reversed(text.splitlines()) if ln.strip()), type(err).__name__)
    if any(word in text for word in _CLOSED):
        last = f"the device closed the connection ({last})"
    if "cannot find server that matches key" in text:
        hint = ("This RPC server is registered with a tracker and only accepts sessions the "
                "tracker hands out: use --tracker HOST:PORT --key KEY instead of --rpc.")
    return RemoteError(f"Remote step failed while {what} on {where}: {last}", hint=hint)


@contextlib.contextmanager
def remote_step(options: RemoteOptions, what: str, where: str, hint: str = DEAD_HINT,
                on_expire=None):
    """A remote call with a deadline, whose failures become ``RemoteError`` with context."""
    with deadline(options.timeout_s, what, where, on_expire):
        try:
            yield
        except RemoteError:
            raise
        except (*TVM_ERRORS, OSError) as err:  # TVM's errors for socket failures, or the OS's
            raise _rpc_error(err, what, where, hint) from err


def probe(host: str, port: int, flag: str) -> None:
    """A plain TCP connect first, so that a wrong address fails in seconds with a clear message."""
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
            return
    except OSError as err:
        raise RemoteError(f"Cannot reach {flag} {host}:{port}: {err.strerror or err}.",
                          hint="Check the address and that the RPC server or tracker runs there "
                               "(for the emulated device: scripts/arm-device start).") from err


def tracker_summary(address: str, timeout_s: float = 30.0) -> dict:
    """The tracker's ``summary()``: ``queue_info`` (per key: free, pending) and ``server_info``."""
    import tvm.rpc  # pylint: disable=import-outside-toplevel

    host, port = parse_address(address, "--tracker")
    probe(host, port, "tracker")
    options = RemoteOptions(tracker=address, timeout_s=timeout_s)
    with remote_step(options, "asking the tracker for its devices", f"tracker {address}"):
        return tvm.rpc.connect_tracker(host, port).summary()


def devices_by_key(summary: dict) -> dict[str, list[str]]:
    """``{key: ["HOST:PORT", ...]}`` of the servers registered at a tracker."""
    out: dict[str, list[str]] = {key: [] for key in summary.get("queue_info", {})}
    for info in summary.get("server_info", []):
        key = str(info.get("key", "")).split(":", 1)[-1]   # "server:KEY"
        addr = info.get("addr", ["?", "?"])
        out.setdefault(key, []).append(f"{addr[0]}:{addr[1]}")
    return out


def find_devices(options: RemoteOptions, key: str | None) -> list[str]:
    """The servers registered under ``key`` at the tracker; a clear error when there are none."""
    if not key:
        raise UsageError("No device key: the target names no rpc_key.", hint="Pass --key KEY.")
    summary = tracker_summary(options.tracker, options.timeout_s)
    devices = devices_by_key(summary)
    if key not in devices:
        queues = summary.get("queue_info", {})
        listed = ", ".join(f"{k} ({queues.get(k, {}).get('free', 0)} free)" for k in devices)
        raise RemoteError(f"No device is registered under key '{key}' at tracker {options.tracker}; "
                          f"keys there: {listed or 'none'}.",
                          hint="Pass the right --key, or start the device's RPC server with "
                               f"--tracker {options.tracker} --key {key}.")
    return devices[key]


def _tcp_fds() -> set[int]:
    import psutil  # pylint: disable=import-outside-toplevel

    return {c.fd for c in psutil.Process().net_connections(kind="tcp") if c.fd >= 0}


def sever(fds: set[int]) -> None:
    """Shut down the sockets of a session whose device stopped answering: its teardown would
    otherwise block forever sending to a peer that never reads."""
    for fd in fds:
        try:
            with socket.socket(fileno=os.dup(fd)) as sock:
                sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def connect(options: RemoteOptions, key: str | None = None):
    """An RPC session to the server, or to a free device with ``key`` at the tracker."""
    import tvm.rpc  # pylint: disable=import-outside-toplevel

    where = options.describe(key)
    if options.rpc:
        host, port = parse_address(options.rpc, "--rpc")
        probe(host, port, "RPC server")
        with remote_step(options, "connecting", where):
            return tvm.rpc.connect(host, port)
    key = options.key or key
    find_devices(options, key)
    host, port = parse_address(options.tracker, "--tracker")
    with remote_step(options, f"waiting for a free device with key '{key}'", where):
        tracker = tvm.rpc.connect_tracker(host, port)
        return tracker.request(key, priority=options.priority, max_retry=1)


RUNTIME_HINTS = {
    kind: (f"PyPI's apache-tvm wheels have no {name} runtime: run the RPC server from a TVM "
           f"runtime built with USE_{name.upper()}=ON on the device (see the README's GPU "
           "targets section), or compile for a target that matches the device.")
    for kind, name in (("opencl", "OpenCL"), ("cl", "OpenCL"), ("vulkan", "Vulkan"))}


class RemoteRunner:
    """Runs an artifact on a remote device; same interface as ``artifact.LocalRunner``."""

    def __init__(self, artifact, options: RemoteOptions):
        import tvm  # pylint: disable=import-outside-toplevel
        from tvm import relax  # pylint: disable=import-outside-toplevel

        self._tvm = tvm
        self.options = options
        target = artifact.metadata["target"]
        self.where = options.describe(target.get("rpc_key"))
        before = _tcp_fds()
        self.session = connect(options, target.get("rpc_key"))
        self.fds = _tcp_fds() - before
        self.device = self._open_device(target.get("device", "cpu"))
        self._target = target
        lib = self.load_library(artifact.library)
        with self.step("starting the model"):
            self.lib = lib
            self.vm = relax.VirtualMachine(lib, self.device)
        self.names = [t["name"] for t in artifact.inputs]

    def load_library(self, path: Path):
        """Upload a library compiled for the target and load it on the device."""
        target = self._target
        data = path.read_bytes()
        name = f"tvm-pipeline-{hashlib.sha256(data).hexdigest()[:16]}.so"
        with self.step(f"uploading {path.name} ({len(data) >> 10} KiB)"):
            self.session.upload(bytearray(data), name)
        with remote_step(self.options, f"loading the library compiled for target "
                                       f"'{target.get('name')}' ({target.get('arch') or '?'})",
                         self.where,
                         hint="The device cannot load it: compile for a target that matches the "
                              "device's CPU and OS (see `tvm-pipeline targets`), e.g. "
                              "`tvm-pipeline compile MODEL --target rpi4`.",
                         on_expire=lambda: sever(self.fds)):
            return self.session.load_module(name)

    def _open_device(self, kind: str):
        """The target's device on the server, checked before anything is uploaded."""
        missing = RemoteError(f"{self.where} has no {kind} device (or its TVM runtime was built "
                              f"without {kind} support).", hint=RUNTIME_HINTS.get(
                                  kind, "Start the RPC server on a machine with that device and a "
                                        "TVM runtime that supports it, or compile for a target that "
                                        "matches the device."))
        with self.step(f"opening device {kind}(0)"):
            try:
                device = self.session.device(kind, 0)
                present = bool(device.exist)
            except RemoteError:
                raise
            except TVM_ERRORS as err:  # the device API is not in that runtime at all
                raise missing from err
        if not present:
            raise missing
        return device

    def step(self, what: str):
        return remote_step(self.options, what, self.where, on_expire=lambda: sever(self.fds))

    def to_device(self, feeds: dict[str, np.ndarray]) -> list:
        with self.step("copying inputs to the device"):
            return [self._tvm.runtime.tensor(np.ascontiguousarray(feeds[n]), self.device)
                    for n in self.names]

    def run_device(self, args: list):
        """Run ``main`` on the device; its outputs, fetched one tensor at a time (a tuple of
        outputs is an object on the device, which RPC cannot copy back as a whole)."""
        with self.step("running the model"):
            self.vm.set_input("main", *args)
            self.vm.invoke_stateful("main")
        with self.step("copying outputs back"):
            return self.vm.get_outputs("main")

    def __call__(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        result = self.run_device(self.to_device(feeds))
        with self.step("copying outputs back"):
            return flatten_outputs(result)

    def timed(self, feeds: dict[str, np.ndarray], runs: int) -> list[float]:
        """Per-run seconds measured on the device by TVM's time evaluator (no network in them)."""
        if runs <= 0:
            return []
        args = self.to_device(feeds)
        evaluator = self.vm.time_evaluator("main", self.device, number=1, repeat=1)
        times = []
        for i in range(runs):       # one deadline per run: a slow device is not a hung one
            with self.step(f"timing run {i + 1}/{runs} on the device"):
                times.append(float(evaluator(*args).results[0]))
        return times
