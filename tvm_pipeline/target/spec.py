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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import TVM_ERRORS, InputFileError, UsageError
from ..resources import data_dir
from ..schema import Field, check_object, one_of, positive

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
    ndk_triple: str = "aarch64-linux-android"   # export "ndk": the NDK clang's target triple
    ndk_api: int = 28                           # export "ndk": the Android API level

    @property
    def runs_on_host(self) -> bool:
        """Whether a module for this target can run on this machine (its arch, flags and device)."""
        return (self.export == "native" and self.arch == platform.machine()
                and set(self.host_requires) <= host_cpu_flags() and device_exists(self.device))

    def to_tvm(self):
        """The ``tvm.target.Target`` (imported lazily: TVM is heavy and moves fast); a dict that
        TVM refuses is an error naming the target file."""
        import tvm  # pylint: disable=import-outside-toplevel

        try:
            return tvm.target.Target(self.tvm)
        except TVM_ERRORS as err:
            reason = str(err).strip().split(". Known options", 1)[0].splitlines()[0][:300]
            raise InputFileError(f"Target file {self.path} is not a target TVM can build: {reason}.",
                                 hint=FILE_HINT) from err

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


PIPELINE_SCHEMA = {
    "description": Field(str),
    "export": Field(str, rule=one_of("native", "cross", "ndk")),
    "cross_compiler": Field(str | None),
    "toolchain_package": Field(str | None),
    "ndk_triple": Field(str),
    "ndk_api": Field(int, rule=positive),
    "arch": Field(str),
    "device": Field(str, rule=one_of("cpu", "cuda", "opencl", "vulkan")),
    "rpc_key": Field(str | None),
    "host_requires": Field(list[str]),
    "host_priority": Field(int),
    "vector_bits": Field(int, rule=positive),
    "vector_registers": Field(int, rule=positive),
}
FILE_HINT = ("A target file is the dict tvm.target.Target takes plus a \"pipeline\" object of ours "
             "(see `targets/` for examples).")


def _read_target_json(path: Path) -> dict[str, Any]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise InputFileError(f"Target file {path} does not exist.") from err
    except (OSError, UnicodeDecodeError) as err:
        raise InputFileError(f"Target file {path} cannot be read as text ({err}).") from err
    except json.JSONDecodeError as err:
        raise InputFileError(f"Target file {path} is not valid JSON ({err}).",
                             hint="Fix the file; it must be the dict tvm.target.Target takes.") from err
    if not isinstance(raw, dict) or not isinstance(raw.get("kind"), str):
        raise InputFileError(f"Target file {path} has no \"kind\" string key.",
                             hint="A target file is the dict tvm.target.Target takes, e.g. "
                                  '{"kind": "llvm", "mcpu": "haswell"}.')
    return raw


def load_target_file(path: Path) -> TargetSpec:
    raw = _read_target_json(path)
    ours = check_object(raw.pop(PIPELINE_KEY, {}), PIPELINE_SCHEMA,
                        f"The \"{PIPELINE_KEY}\" object of target file {path}", hint=FILE_HINT)
    export = ours.get("export", "native")
    spec = TargetSpec(
        name=path.stem,
        path=path,
        tvm=raw,
        description=ours.get("description", ""),
        export=export,
        cross_compiler=ours.get("cross_compiler"),
        toolchain_package=ours.get("toolchain_package"),
        ndk_triple=ours.get("ndk_triple", "aarch64-linux-android"),
        ndk_api=ours.get("ndk_api", 28),
        arch=ours.get("arch", "") or (platform.machine() if export == "native" else ""),
        device=ours.get("device", "cpu"),
        rpc_key=ours.get("rpc_key"),
        host_requires=tuple(ours.get("host_requires", ())),
        host_priority=ours.get("host_priority", 0),
        vector_bits=ours.get("vector_bits", 128),
        vector_registers=ours.get("vector_registers", 16),
    )
    if spec.tvm.get("kind") == "llvm" and "num-cores" not in spec.tvm and spec.export == "native":
        spec.tvm["num-cores"] = physical_cores()
    return spec


def list_targets() -> list[TargetSpec]:
    return [load_target_file(p) for p in sorted(targets_dir().glob("*.json"))]


def checked_targets() -> list[TargetSpec]:
    """Every target file, each one's ``tvm.target.Target`` built (a bad file fails here, named)."""
    specs = list_targets()
    for spec in specs:
        spec.to_tvm()
    return specs


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
    except TVM_ERRORS:
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
