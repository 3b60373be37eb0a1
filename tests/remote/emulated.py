"""Helpers for the remote tests: emulated aarch64 devices (QEMU user mode + the real aarch64 TVM
runtime) started with the project's own scripts/arm-device, exactly as a user would."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARM_DEVICE = ROOT / "scripts" / "arm-device"
KEY = "rpi4"


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive free loopback ports."""
    for base in range(23000 + os.getpid() % 2000 * 8, 65000, 8):
        socks = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                sock.bind(("127.0.0.1", port))
                socks.append(sock)
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError("no free ports")


@dataclass
class Devices:
    env: dict
    ports: list[int]
    tracker: str | None
    key: str | None

    def rpc(self, i: int = 0) -> str:
        return f"127.0.0.1:{self.ports[i]}"

    def status(self) -> list[dict]:
        out = subprocess.run([str(ARM_DEVICE), "status", "--json"], env=self.env,
                             capture_output=True, text=True, check=False).stdout
        return json.loads(out or "[]")

    def server(self, port: int) -> dict:
        return next(r for r in self.status() if r["role"] == "server" and r["port"] == port)

    def log(self, port: int) -> str:
        return Path(self.server(port)["log"]).read_text()

    def signal(self, port: int, sig: int) -> None:
        os.killpg(self.server(port)["pid"], sig)

    def stop(self, config=None) -> None:
        proc = subprocess.run([str(ARM_DEVICE), "stop"], env=self.env, capture_output=True,
                              text=True, check=False)
        for line in proc.stderr.splitlines() if config is not None else ():
            say(config, f"  {line}")


def say(config, line: str) -> None:
    """Show a step in the test log as it happens (CI's log shows the device's life cycle)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"[emulated aarch64] {line}")


def start_devices(config, tmp_path_factory, count: int, with_tracker: bool) -> Devices:
    env = {**os.environ, "TVM_PIPELINE_ARM_RUN": str(tmp_path_factory.mktemp("arm-run"))}
    base = free_ports(count + 1)
    ports = list(range(base, base + count))
    cmd = [str(ARM_DEVICE), "start", "--devices", str(count), "--port", str(base)]
    tracker = f"127.0.0.1:{base + count}" if with_tracker else None
    if tracker:
        cmd += ["--tracker", tracker, "--key", KEY]
    say(config, "$ " + " ".join([ARM_DEVICE.name, *cmd[1:]]))
    start = time.monotonic()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, check=False)
    for line in proc.stderr.splitlines():
        say(config, f"  {line}")
    say(config, f"  (exit {proc.returncode} after {time.monotonic() - start:.1f} s)")
    devices = Devices(env, ports, tracker, KEY if tracker else None)
    if proc.returncode != 0:
        devices.stop()
        pytest.fail(f"scripts/arm-device start failed (exit {proc.returncode}):\n{proc.stderr}")
    return devices


def cli_process(*args, env=None) -> subprocess.Popen:
    """``tvm-pipeline ARGS`` in its own process (for tests that break the device under it)."""
    return subprocess.Popen([sys.executable, "-m", "tvm_pipeline", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)
