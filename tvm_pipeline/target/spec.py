"""Targets are files: ``targets/<name>.json`` holds exactly the dict that ``tvm.target.Target`` takes,
plus one key of ours, ``"pipeline"``, that says how to describe, export, and detect that target.

    {"kind": "llvm", "mcpu": "skylake-avx512",
     "pipeline": {"description": "...", "export": "native",
                  "host_requires": ["avx512f"], "host_priority": 20}}

Pipeline keys:

- ``description``: one line for ``tvm-pipeline targets``.
- ``export``: how the host code is linked (see ``toolchains``): ``native`` (this machine's g++),
  ``cross`` (the compiler named by ``cross_compiler``, from the Debian package ``toolchain_package``),
  ``ndk`` (the Android NDK's clang, found through ``--ndk``/``TVM_NDK_CC``/``ANDROID_NDK_HOME``).
- ``arch``: the machine (``uname -m``) the compiled library runs on; defaults to this machine for
  ``native`` targets. ``device``: the TVM device the kernels run on (``cpu``, ``cuda``, ``opencl``);
  a remote run opens the same device on the RPC server.
- ``rpc_key``: the tracker key that devices of this class register under.
- ``host_requires``/``host_priority``: CPU flags that make this target a candidate for the running
  host, and which candidate wins.
- ``vector_bits``/``vector_registers`` (CPU targets): the SIMD register width and count, which size
  the default schedules' vector and register tiles (default 128 and 16: NEON on ARMv7, SSE).

A target is found by file name only; nothing in the code knows any particular target.

CPU targets that run on the build host may omit ``num-cores``: it is filled in from this machine
(MetaSchedule needs it to tune an llvm target).
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputFileError, UsageError
from ..resources import data_dir

PIPELINE_KEY = "pipeline"


@dataclass(frozen=True)
class TargetSpec:
    """A resolved target file."""

    name: str
    path: Path
    tvm: dict[str, Any]                       # what tvm.target.Target receives
    description: str = ""
    export: str = "native"                    # a key of toolchains.EXPORTERS
    cross_compiler: str | None = None
    toolchain_package: str | None = None      # the Debian package that provides cross_compiler
    arch: str = ""                            # uname -m of the machine the library runs on
    device: str = "cpu"                       # TVM device kind of the kernels: cpu, cuda, opencl
    rpc_key: str | None = None
    host_requires: tuple[str, ...] = ()
    host_priority: int = 0
    vector_bits: int = 128
    vector_registers: int = 16
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def runs_on_host(self) -> bool:
        """Whether a module for this target can run on this machine (its arch, flags and device)."""
        return (self.export == "native" and self.arch == platform.machine()
                and set(self.host_requires) <= host_cpu_flags() and device_exists(self.device))

    def to_tvm(self):
        """The ``tvm.target.Target`` (imported lazily: TVM is heavy and moves fast)."""
        import tvm  # pylint: disable=import-outside-toplevel

        return tvm.target.Target(self.tvm)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": str(self.path), "tvm": self.tvm,
                "description": self.description,
                "export": self.export, "cross_compiler": self.cross_compiler,
                "arch": self.arch, "device": self.device, "rpc_key": self.rpc_key}


def targets_dir() -> Path:
    return data_dir("targets")


def physical_cores() -> int:
    """Physical CPU cores of this machine (logical ones when psutil cannot tell)."""
    try:
        import psutil  # pylint: disable=import-outside-toplevel

        return psutil.cpu_count(logical=False) or os.cpu_count() or 1
    except ImportError:
        return os.cpu_count() or 1


THREADS_ENV = "TVM_NUM_THREADS"


def use_physical_cores() -> int:
    """Size TVM's runtime thread pool to this machine's physical cores (unless ``TVM_NUM_THREADS``
    is set: the user's choice wins) and return the size. TVM's own default on x86 is half the
    logical CPUs, assuming hyper-threading: one thread on a 2-core VM, while ONNX Runtime and the
    tuned schedules (``num-cores``) use both. The pool's size is fixed at its first use in a
    process, so this runs before any module loads; the environment also reaches the worker
    processes that MetaSchedule's runner starts later."""
    os.environ.setdefault(THREADS_ENV, str(physical_cores()))
    return int(os.environ[THREADS_ENV])


def load_target_file(path: Path) -> TargetSpec:
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise InputFileError(f"Target file {path} does not exist.") from err
    except json.JSONDecodeError as err:
        raise InputFileError(f"Target file {path} is not valid JSON ({err}).",
                             hint="Fix the file; it must be the dict tvm.target.Target takes.") from err
    if not isinstance(raw, dict) or "kind" not in raw:
        raise InputFileError(f"Target file {path} has no \"kind\" key.",
                             hint="A target file is the dict tvm.target.Target takes, e.g. "
                                  '{"kind": "llvm", "mcpu": "haswell"}.')
    ours = dict(raw.pop(PIPELINE_KEY, {}))
    export = ours.pop("export", "native")
    spec = TargetSpec(
        name=path.stem,
        path=path,
        tvm=raw,
        description=ours.pop("description", ""),
        export=export,
        cross_compiler=ours.pop("cross_compiler", None),
        toolchain_package=ours.pop("toolchain_package", None),
        arch=ours.pop("arch", "") or (platform.machine() if export == "native" else ""),
        device=ours.pop("device", "cpu"),
        rpc_key=ours.pop("rpc_key", None),
        host_requires=tuple(ours.pop("host_requires", ())),
        host_priority=int(ours.pop("host_priority", 0)),
        vector_bits=int(ours.pop("vector_bits", 128)),
        vector_registers=int(ours.pop("vector_registers", 16)),
        extra=ours,
    )
    if spec.tvm.get("kind") == "llvm" and "num-cores" not in spec.tvm and spec.export == "native":
        spec.tvm["num-cores"] = physical_cores()
    return spec


def list_targets() -> list[TargetSpec]:
    return [load_target_file(p) for p in sorted(targets_dir().glob("*.json"))]


def resolve_target(name_or_path: str | None) -> TargetSpec:
    """A target by name (file stem in ``targets/``), by path to a JSON file, or ``None`` for this host."""
    if name_or_path is None or name_or_path == "host":
        return detect_host_target()
    candidate = Path(name_or_path)
    if candidate.suffix == ".json" and candidate.exists():
        return load_target_file(candidate)
    path = targets_dir() / f"{name_or_path}.json"
    if not path.exists():
        names = ", ".join(t.name for t in list_targets())
        raise UsageError(f"Unknown target '{name_or_path}'.",
                         hint=f"Known targets: {names}. Run `tvm-pipeline targets` for descriptions, "
                              "or pass a path to your own target JSON file.")
    return load_target_file(path)


def host_cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def device_exists(device: str) -> bool:
    """Whether this machine has a TVM device of that kind (``cpu`` always does)."""
    if device == "cpu":
        return True
    import tvm  # pylint: disable=import-outside-toplevel

    try:
        return bool(tvm.runtime.device(device, 0).exist)
    except Exception:  # pylint: disable=broad-except
        return False    # the runtime lacks that device API entirely


def host_matches(spec: TargetSpec) -> bool:
    """Whether ``spec`` is a candidate for this machine when no target is named."""
    return (bool(spec.host_requires) and spec.export == "native" and spec.device == "cpu"
            and spec.arch == platform.machine() and set(spec.host_requires) <= host_cpu_flags())


def detect_host_target() -> TargetSpec:
    """The best target file whose ``host_requires`` this machine satisfies."""
    candidates = [t for t in list_targets() if host_matches(t)]
    if not candidates:
        raise UsageError(
            f"No target in {targets_dir()} matches this machine ({platform.machine()}).",
            hint="Pass --target NAME (see `tvm-pipeline targets`) or a path to a target JSON file.")
    return max(candidates, key=lambda t: t.host_priority)
