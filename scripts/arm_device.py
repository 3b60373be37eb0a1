"""An emulated aarch64 device on this machine: QEMU user mode running the real aarch64 TVM runtime
as a TVM RPC server on 127.0.0.1, optionally registered with a local RPC tracker.

    scripts/arm-device start [--devices N] [--port 9090] [--tracker 127.0.0.1:9190 --key aarch64]
    scripts/arm-device status
    scripts/arm-device stop

Everything comes from Debian and PyPI packages: ``qemu-user-static`` runs Debian's arm64
``python3.11`` (unpacked into a private sysroot, no chroot, no binfmt) with the aarch64 wheels of
``apache-tvm`` and its runtime dependencies. The first ``start`` sets this up under
``$TVM_PIPELINE_ARM_HOME`` (default ``~/.cache/tvm-pipeline/arm-device``; ~550 MB, ~1 min), later
ones reuse it. Servers and the tracker run in the background; their logs and pid files are in
``HOME/run`` (or ``$TVM_PIPELINE_ARM_RUN``: ``stop`` and ``status`` act on that folder only). Timings under emulation mean nothing for speed: the device exists to prove that
cross-compiled modules compute the right numbers and that remote tuning works end to end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

HOME = Path(os.environ.get("TVM_PIPELINE_ARM_HOME",
                           Path.home() / ".cache" / "tvm-pipeline" / "arm-device"))
SYSROOT, SITE = HOME / "sysroot", HOME / "site"
RUN = Path(os.environ.get("TVM_PIPELINE_ARM_RUN", HOME / "run"))   # pid files and logs
PYTHON = HOME / "bin" / "python3-arm64"
DEBS = ["python3.11", "libstdc++6", "libgomp1"]
HOST_TOOLS = {"qemu-aarch64-static": "qemu-user-static",
              "aarch64-linux-gnu-g++": "g++-aarch64-linux-gnu"}
PLATFORMS = ["manylinux_2_28_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64"]
RUNTIME_WHEELS = ["numpy", "ml_dtypes", "typing_extensions", "psutil", "cloudpickle", "tornado"]
READY_TIMEOUT_S = 120


class DeviceError(Exception):
    """A failed step: what failed, and what to do."""


def log(message: str) -> None:
    print(f"arm-device: {message}", file=sys.stderr, flush=True)


def run(cmd: list[str], what: str, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise DeviceError(f"{what} failed (exit {proc.returncode}).\n  command: {' '.join(cmd)}\n"
                          f"{tail}")
    return proc


# ---------------------------------------------------------------------------------------- setup


def host_tools() -> None:
    missing = {tool: pkg for tool, pkg in HOST_TOOLS.items() if shutil.which(tool) is None}
    if not missing:
        return
    packages = sorted(set(missing.values()))
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise DeviceError(f"Missing {', '.join(missing)}. Install them as root: "
                          f"apt-get install -y {' '.join(packages)}")
    log(f"installing {' '.join(packages)} with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run(["apt-get", "update", "-qq"], "apt-get update", env=env)
    run(["apt-get", "install", "-y", "-qq", *packages], "apt-get install", env=env)


def _apt_sources(dest: Path) -> None:
    """The host's own Debian sources, restricted to arm64."""
    dest.mkdir(parents=True, exist_ok=True)
    lines = []
    for src in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for stanza in src.read_text().split("\n\n"):
            if "Types:" in stanza and "debian" in stanza:
                body = [ln for ln in stanza.splitlines()
                        if ln.strip() and not ln.startswith(("#", "Architectures:"))]
                lines.append("\n".join(body + ["Architectures: arm64"]))
    (dest / "arm64.sources").write_text("\n\n".join(lines) + "\n")
    legacy = Path("/etc/apt/sources.list")
    text = legacy.read_text() if legacy.exists() else ""
    debs = [ln.replace("deb ", "deb [arch=arm64] ", 1) for ln in text.splitlines()
            if ln.startswith("deb ") and "debian" in ln]
    (dest.parent / "sources.list").write_text("\n".join(debs) + "\n")
    if not lines and not debs:
        raise DeviceError("No Debian apt sources found in /etc/apt to fetch arm64 packages from.")


def sysroot() -> None:
    if (SYSROOT / "usr/bin/python3.11").exists():
        return
    apt = HOME / "apt"
    _apt_sources(apt / "sources.list.d")
    for sub in ("lists/partial", "archives/partial"):
        (apt / sub).mkdir(parents=True, exist_ok=True)
    (apt / "status").touch()
    opts = ["-o", "APT::Architecture=arm64", "-o", "APT::Architectures::=arm64",
            "-o", f"Dir::State::Lists={apt / 'lists'}", "-o", f"Dir::State::status={apt / 'status'}",
            "-o", f"Dir::Cache::Archives={apt / 'archives'}",
            "-o", f"Dir::Etc::SourceList={apt / 'sources.list'}",
            "-o", f"Dir::Etc::SourceParts={apt / 'sources.list.d'}", "-o", "Debug::NoLocking=1",
            "-o", "APT::Sandbox::User=root", "-qq"]
    log("downloading Debian arm64 python3.11 into a private sysroot")
    run(["apt-get", *opts, "update"], "apt-get update (arm64 package lists)")
    run(["apt-get", *opts, "-y", "--download-only", "install", *DEBS],
        "apt-get download of arm64 packages")
    tmp = SYSROOT.with_name("sysroot.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for deb in sorted((apt / "archives").glob("*.deb")):
        run(["dpkg-deb", "-x", str(deb), str(tmp)], f"unpacking {deb.name}")
    os.replace(tmp, SYSROOT)


def _pins() -> list[str]:
    """apache-tvm and apache-tvm-ffi at the versions installed on this host (same wire protocol)."""
    from importlib.metadata import version  # pylint: disable=import-outside-toplevel

    return [f"apache-tvm=={version('apache-tvm')}", f"apache-tvm-ffi=={version('apache-tvm-ffi')}"]


def site() -> None:
    if (SITE / "tvm" / "lib" / "libtvm_runtime_extra.so").exists():
        return
    wheels, tmp = HOME / "wheels", SITE.with_name("site.tmp")
    plat = [arg for p in PLATFORMS for arg in ("--platform", p)]
    common = [*plat, "--python-version", "3.11", "--implementation", "cp", "--only-binary", ":all:"]
    log("downloading aarch64 wheels (apache-tvm and its runtime dependencies)")
    run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", *common, "-d", str(wheels),
         *_pins(), *RUNTIME_WHEELS], "pip download of aarch64 wheels")
    shutil.rmtree(tmp, ignore_errors=True)
    run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", *common,
         "--target", str(tmp), *sorted(str(w) for w in wheels.glob("*.whl"))],
        "pip install of aarch64 wheels into the device site-packages")
    os.replace(tmp, SITE)


def wrapper() -> None:
    PYTHON.parent.mkdir(parents=True, exist_ok=True)
    PYTHON.write_text(
        "#!/bin/sh\n# aarch64 Python 3.11 under QEMU user mode (written by scripts/arm-device)\n"
        f'PYTHONHOME="{SYSROOT}/usr" PYTHONPATH="{SITE}" '
        f'exec qemu-aarch64-static -L "{SYSROOT}" -0 "$0" "{SYSROOT}/usr/bin/python3.11" "$@"\n')
    PYTHON.chmod(0o755)


def setup() -> None:
    HOME.mkdir(parents=True, exist_ok=True)
    host_tools()
    sysroot()
    site()
    wrapper()


# ----------------------------------------------------------------------------------- processes


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a zombie is not alive
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return True


def _listening(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, port)) == 0


def _records() -> list[dict]:
    RUN.mkdir(parents=True, exist_ok=True)
    out = []
    for path in sorted(RUN.glob("*.json")):
        rec = json.loads(path.read_text())
        rec["alive"] = _alive(rec["pid"])
        rec["file"] = str(path)
        out.append(rec)
    return out


def _spawn(name: str, cmd: list[str], env: dict, record: dict) -> dict:
    RUN.mkdir(parents=True, exist_ok=True)
    logfile = RUN / f"{name}.log"
    with open(logfile, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True)
    rec = {"name": name, "pid": proc.pid, "log": str(logfile), "started": time.time(), **record}
    tmp = RUN / f".{name}.json.tmp"
    tmp.write_text(json.dumps(rec))
    os.replace(tmp, RUN / f"{name}.json")
    return rec


def _wait(rec: dict, ready, what: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if not _alive(rec["pid"]):
            break
        if ready():
            return
        time.sleep(0.5)
    tail = "\n".join(Path(rec["log"]).read_text().strip().splitlines()[-10:])
    _terminate(rec)
    raise DeviceError(f"{what} did not become ready within {READY_TIMEOUT_S} s "
                      f"(log {rec['log']}):\n{tail}")


def _terminate(rec: dict) -> None:
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 2.0)):
        try:
            os.killpg(rec["pid"], sig)
        except OSError:
            break
        deadline = time.monotonic() + grace
        while _alive(rec["pid"]) and time.monotonic() < deadline:
            time.sleep(0.1)
    Path(rec.get("file", RUN / f"{rec['name']}.json")).unlink(missing_ok=True)


def start_tracker(host: str, port: int) -> None:
    if _listening(host, port):
        log(f"tracker already listening on {host}:{port}")
        return
    rec = _spawn(f"tracker-{port}", [sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", host,
                                     "--port", str(port), "--port-end", str(port + 1)],
                 dict(os.environ), {"role": "tracker", "host": host, "port": port})
    _wait(rec, lambda: _listening(host, port), f"RPC tracker on {host}:{port}")
    log(f"tracker on {host}:{port} (pid {rec['pid']})")


def spawn_server(port: int, tracker: str | None, key: str) -> dict:
    if _listening("127.0.0.1", port):
        raise DeviceError(f"Port {port} on 127.0.0.1 is already in use. Stop what uses it "
                          "(`scripts/arm-device status`) or pass --port.")
    cmd = [str(PYTHON), "-m", "tvm.exec.rpc_server", "--host", "127.0.0.1", "--port", str(port),
           "--port-end", str(port + 1),
           "--load-library", str(SITE / "tvm" / "lib" / "libtvm_runtime_extra.so")]
    if tracker:
        cmd += ["--tracker", tracker, "--key", key]
    env = {**os.environ, "TVM_USE_RUNTIME_LIB": "1"}
    return _spawn(f"server-{port}", cmd, env, {"role": "server", "host": "127.0.0.1", "port": port,
                                                "key": key if tracker else None, "tracker": tracker})


def wait_server(rec: dict) -> None:
    _wait(rec, lambda: "bind to" in Path(rec["log"]).read_text(),
          f"aarch64 RPC server on 127.0.0.1:{rec['port']}")


def _registered(tracker: str, key: str, count: int) -> bool:
    import tvm.rpc  # pylint: disable=import-outside-toplevel

    host, port = tracker.rsplit(":", 1)
    try:
        summary = tvm.rpc.connect_tracker(host, int(port)).summary()
    except Exception:  # pylint: disable=broad-except
        return False
    free = summary.get("queue_info", {}).get(key, {}).get("free", 0)
    return free >= count


def cmd_start(args: argparse.Namespace) -> int:
    setup()
    tracker = args.tracker
    if tracker:
        host, port = tracker.rsplit(":", 1)
        if host not in ("127.0.0.1", "localhost"):
            raise DeviceError("The emulated device only uses loopback addresses: pass --tracker "
                              "127.0.0.1:PORT.")
        start_tracker("127.0.0.1", int(port))
    started = [spawn_server(args.port + i, tracker, args.key) for i in range(args.devices)]
    for rec in started:           # they boot in parallel (~15 s each under emulation)
        wait_server(rec)
        log(f"aarch64 device on 127.0.0.1:{rec['port']} (pid {rec['pid']})"
            + (f", key {args.key} at tracker {tracker}" if tracker else ""))
    if tracker:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not _registered(tracker, args.key, len(started)):
            if time.monotonic() > deadline:
                raise DeviceError(f"The devices did not register with the tracker {tracker} under "
                                  f"key {args.key} within {READY_TIMEOUT_S} s; see {RUN}/*.log.")
            time.sleep(0.5)
    print(json.dumps({"devices": [f"127.0.0.1:{r['port']}" for r in started],
                      "tracker": tracker, "key": args.key if tracker else None}))
    return 0


def cmd_stop(args: argparse.Namespace) -> int:  # pylint: disable=unused-argument
    records = _records()
    for rec in sorted(records, key=lambda r: r["role"] == "tracker"):   # servers first
        _terminate(rec)
        log(f"stopped {rec['name']} (pid {rec['pid']})")
    if not records:
        log("nothing running")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    records = _records()
    if args.json:
        print(json.dumps(records, indent=2))
    for rec in records if not args.json else []:
        extra = f" key {rec['key']} via {rec['tracker']}" if rec.get("key") else ""
        state = "running" if rec["alive"] else "DEAD"
        print(f"{rec['name']:14} {state:8} pid {rec['pid']:<8} {rec['host']}:{rec['port']}{extra}")
    if not records and not args.json:
        print("no emulated device running (start one: scripts/arm-device start)")
    return 0 if records and all(r["alive"] for r in records) else 1


def cmd_setup(args: argparse.Namespace) -> int:  # pylint: disable=unused-argument
    setup()
    log(f"ready: {PYTHON}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/arm-device", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start", help="set up (first time) and start emulated aarch64 devices")
    start.add_argument("--devices", type=int, default=1, help="how many servers (default 1)")
    start.add_argument("--port", type=int, default=9090,
                       help="port of the first server; others follow (default 9090)")
    start.add_argument("--tracker", default=None, metavar="127.0.0.1:PORT",
                       help="register with this tracker (started here if none listens there)")
    start.add_argument("--key", default="aarch64", help="device key at the tracker (default aarch64)")
    start.set_defaults(run=cmd_start)
    sub.add_parser("stop", help="stop every device and tracker started here").set_defaults(
        run=cmd_stop)
    status = sub.add_parser("status", help="list devices and trackers (exit 1 if none runs)")
    status.add_argument("--json", action="store_true")
    status.set_defaults(run=cmd_status)
    sub.add_parser("setup", help="only download and unpack (idempotent)").set_defaults(run=cmd_setup)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except DeviceError as err:
        print(f"arm-device: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
