"""The deployable artifact: one folder holding the compiled library and its metadata.

    mobilenet_v2.tvm/
        model.so         # relax VM executable (tvm.runtime.load_module + relax.VirtualMachine)
        metadata.json    # inputs/outputs, target, TVM version, database digest, validation result

Folders are written next to their destination and renamed into place, so a failed or interrupted
compile never leaves a half-written artifact.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import json
import os
import platform
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import TVM_ERRORS, InputFileError, UsageError, raise_if_interrupted
from ..paths import check_new_folder, writing
from ..schema import Field, check_object
from .feeds import flatten_outputs
from ..target.spec import use_physical_cores

FORMAT = "tvm-pipeline-artifact"
FORMAT_VERSION = 2          # 2: "kernels" by schedule source; the library's size and sha256
LIBRARY = "model.so"
METADATA = "metadata.json"


@dataclass
class Artifact:
    path: Path
    metadata: dict[str, Any]

    @property
    def library(self) -> Path:
        return self.path / self.metadata.get("library", LIBRARY)

    @property
    def inputs(self) -> list[dict[str, Any]]:
        return self.metadata["inputs"]

    @property
    def outputs(self) -> list[dict[str, Any]]:
        return self.metadata["outputs"]

    @property
    def target_name(self) -> str:
        return self.metadata["target"]["name"]

    def check_model(self, model, where: str | os.PathLike) -> None:
        """The inputs recorded in metadata fit ``model`` (an ONNX ModelProto): the same names,
        ranks and fixed dimensions, so that the reference can run on the artifact's feeds."""
        from ..frontend.analysis import model_io  # pylint: disable=import-outside-toplevel

        theirs = {t.name: t.shape for t in model_io(model)[0]}
        ours = {t["name"]: t["shape"] for t in self.inputs}

        def fits(name: str) -> bool:
            shape, recorded = theirs.get(name), ours[name]
            return shape is not None and len(shape) == len(recorded) and all(
                not isinstance(d, int) or d <= 0 or d == r for d, r in zip(shape, recorded))
        if set(theirs) != set(ours) or not all(fits(name) for name in ours):
            raise InputFileError(f"{self.path / METADATA} records the inputs {ours}, which do not "
                                 f"fit the model {where} (inputs {theirs}).",
                                 hint="Recompile the artifact from that model; never edit its "
                                      "files.")

    def check_runs_here(self) -> None:
        """A clear error instead of a loader crash when the artifact is for another machine."""
        from ..target.spec import device_exists  # pylint: disable=import-outside-toplevel

        target = self.metadata["target"]
        arch, device = target.get("arch") or target.get("host_arch"), target.get("device", "cpu")
        hint = ("Run it on the device with --rpc HOST:PORT (or --tracker HOST:PORT --key KEY), or "
                "compile for this machine with `tvm-pipeline compile MODEL --target host`.")
        if arch and arch != platform.machine():
            raise UsageError(f"Artifact {self.path} was compiled for target '{self.target_name}', "
                             f"which runs on {arch}; this machine is {platform.machine()}.", hint=hint)
        if not device_exists(device):
            raise UsageError(f"Artifact {self.path} was compiled for target '{self.target_name}', "
                             f"whose kernels run on a {device} device; this machine has none.",
                             hint=hint)

    def runner(self, remote=None):
        """A callable ``feeds -> list of numpy outputs``: on this machine, or on the remote device
        that ``remote`` (a :class:`~tvm_pipeline.run.remote.RemoteOptions`) names."""
        if remote is not None and remote.enabled:
            from .remote import RemoteRunner  # pylint: disable=import-outside-toplevel

            return RemoteRunner(self, remote)
        self.check_runs_here()
        return LocalRunner(self)


class LocalRunner:
    """Runs an artifact in this process with TVM's relax VM."""

    def __init__(self, artifact: Artifact):
        import tvm  # pylint: disable=import-outside-toplevel
        from tvm import relax  # pylint: disable=import-outside-toplevel

        self._tvm = tvm
        use_physical_cores()
        self.device = tvm.cpu()
        try:
            lib = tvm.runtime.load_module(str(_loadable_path(artifact.library)))
        except TVM_ERRORS as err:
            raise InputFileError(f"Cannot load the compiled library {artifact.library}: "
                                 f"{str(err).strip().splitlines()[-1] if str(err).strip() else err}",
                                 hint="Recompile the artifact with `tvm-pipeline compile`.") from err
        self.lib = lib
        self.vm = relax.VirtualMachine(lib, self.device)
        self.names = [t["name"] for t in artifact.inputs]
        self._main = self.vm["main"]

    def step(self, what: str):  # pylint: disable=unused-argument
        """The remote runner bounds each step with a deadline; here there is nothing to bound."""
        return contextlib.nullcontext()

    def to_device(self, feeds: dict[str, np.ndarray]) -> list:
        return [self._tvm.runtime.tensor(np.ascontiguousarray(feeds[n]), self.device)
                for n in self.names]

    def run_device(self, args: list):
        return self._main(*args)

    def __call__(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return flatten_outputs(self.run_device(self.to_device(feeds)))


@functools.cache
def _copies_dir() -> Path:
    """This process's folder of library copies (see ``_loadable_path``), removed at exit."""
    path = Path(tempfile.mkdtemp(prefix="tvm-pipeline-libs-"))
    atexit.register(shutil.rmtree, path, True)
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def library_record(path: Path) -> dict[str, Any]:
    """What metadata records of a library: its file name, size and sha256."""
    return {"library": path.name, "library_bytes": path.stat().st_size,
            "library_sha256": _sha256(path)}


def _loadable_path(library: Path) -> Path:
    """A path under which the dynamic loader sees this version of ``library``.

    The loader keeps one copy of a library per path name for the whole process: re-compiling an
    artifact to the same folder and loading it again in the same process would silently run the
    first build. Each version (inode, size, modification time) is loaded from its own copy in a
    per-process folder; an unchanged library keeps its name, hence its already-loaded copy."""
    stat = library.stat()
    copy = _copies_dir() / f"{stat.st_ino}-{stat.st_size}-{stat.st_mtime_ns}-{library.name}"
    if not copy.exists():
        staging = copy.with_suffix(".partial")
        shutil.copyfile(library, staging)
        os.replace(staging, copy)
    return copy


def _positive(dims) -> str | None:
    return None if all(d > 0 for d in dims) else "must hold dimensions >= 1"


_TENSOR = {"name": Field(str, required=True), "shape": Field(list[int], True, _positive),
           "dtype": Field(str, required=True)}
_MODEL = {"name": Field(str | None), "path": Field(str | None), "sha256": Field(str | None)}
_TARGET = {"name": Field(str, required=True), "path": Field(str), "tvm": Field(dict),
           "description": Field(str), "export": Field(str), "cross_compiler": Field(str | None),
           "arch": Field(str), "device": Field(str), "rpc_key": Field(str | None)}
METADATA_SCHEMA = {
    "format": Field(str, required=True), "format_version": Field(int, required=True),
    "library": Field(str, required=True), "library_bytes": Field(int, required=True),
    "library_sha256": Field(str, required=True), "model": Field(dict, required=True),
    "inputs": Field(list[dict], True, lambda v: None if v else "must list at least one input"),
    "outputs": Field(list[dict], True, lambda v: None if v else "must list at least one output"),
    "created": Field(str), "built_on": Field(str), "toolchain": Field(dict),
    "target": Field(dict, required=True), "tvm_version": Field(str), "database": Field(dict),
    "kernels": Field(dict), "build_seconds": Field(float), "device_checks": Field(dict | None),
    "integer": Field(dict | None, required=False),
    "files": Field(dict), "validation": Field(dict | None),
}
_HINT = "Recompile the artifact; never edit its files."


def _check_schema(metadata: dict[str, Any], meta_path: Path) -> None:
    """Every key known and of its type, nested objects too (see ``METADATA_SCHEMA``)."""
    check_object(metadata, METADATA_SCHEMA, str(meta_path), hint=_HINT)
    check_object(metadata["model"], _MODEL, f"{meta_path} (\"model\")", hint=_HINT)
    check_object(metadata["target"], _TARGET, f"{meta_path} (\"target\")", hint=_HINT)
    for key in ("inputs", "outputs"):
        for n, tensor in enumerate(metadata[key]):
            check_object(tensor, _TENSOR, f"{meta_path} (\"{key}\" item {n})", hint=_HINT)


def _read_metadata(meta_path: Path) -> dict[str, Any]:
    try:
        metadata = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputFileError(f"{meta_path} is not valid JSON text ({err}).",
                             hint="Recompile the artifact.") from err
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise InputFileError(f"{meta_path} is not tvm-pipeline metadata (no \"format\": "
                             f"\"{FORMAT}\" object).", hint="Pass the folder written by "
                             "`tvm-pipeline compile -o PATH`, or recompile it.")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise InputFileError(f"{meta_path} has artifact format version "
                             f"{metadata.get('format_version')!r}; this tvm-pipeline reads version "
                             f"{FORMAT_VERSION}.", hint="Recompile the artifact with this version "
                             "of tvm-pipeline.")
    _check_schema(metadata, meta_path)
    return metadata


def _check_library(path: Path, metadata: dict[str, Any]) -> None:
    """The library named in metadata: inside the folder, present, and the bytes compile wrote."""
    name = metadata.get("library")
    if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
        raise InputFileError(f"{path / METADATA} names the library {name!r}, which is not a file "
                             "name inside the artifact folder.", hint="Recompile the artifact.")
    library = path / name
    if not library.is_file():
        raise InputFileError(f"Artifact {path} lacks its library {name}.",
                             hint="Recompile the artifact.")
    size = library.stat().st_size
    if size != metadata.get("library_bytes") or _sha256(library) != metadata.get("library_sha256"):
        raise InputFileError(f"The library {library} is not the one compile wrote ({size} bytes; "
                             f"metadata records {metadata.get('library_bytes')} bytes and another "
                             "sha256): it was truncated, damaged or replaced.",
                             hint="Recompile the artifact; never edit its files.")


def load_artifact(path: str | os.PathLike) -> Artifact:
    path = Path(path)
    meta_path = path / METADATA
    if not path.exists():
        raise InputFileError(f"Artifact {path} does not exist.",
                             hint="Create it with `tvm-pipeline compile MODEL -o PATH`.")
    if not meta_path.is_file():
        raise InputFileError(f"{path} is not a tvm-pipeline artifact (no {METADATA} inside).",
                             hint="Pass the folder written by `tvm-pipeline compile -o PATH`.")
    metadata = _read_metadata(meta_path)
    _check_library(path, metadata)
    return Artifact(path, metadata)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True             # alive, another user's
    return True


def _remove_abandoned_staging(destination: Path) -> None:
    """Staging folders of ``destination`` left by a killed compile (their process is gone)."""
    for stale in destination.parent.glob(f".{destination.name}.*.tmp"):
        pid = stale.name[len(destination.name) + 2:].split(".", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)


def check_destination(destination: str | os.PathLike) -> Path:
    """Refuse, before any work, a ``-o`` path that compile could not write an artifact to."""
    return check_new_folder(destination, "the artifact", "-o",
                            replaceable=lambda folder: (folder / METADATA).is_file())


class StagedArtifact:
    """A temporary folder next to the destination, renamed into place by ``commit``."""

    def __init__(self, destination: str | os.PathLike):
        self.destination = check_destination(destination)
        with writing(self.destination, "the artifact", "-o"):
            self.destination.parent.mkdir(parents=True, exist_ok=True)
            _remove_abandoned_staging(self.destination)
            self.path = Path(tempfile.mkdtemp(dir=self.destination.parent, suffix=".tmp",
                                              prefix=f".{self.destination.name}.{os.getpid()}."))

    def write_metadata(self, metadata: dict[str, Any]) -> None:
        """Write metadata.json, recording the library (already written) by size and sha256."""
        metadata = {"format": FORMAT, "format_version": FORMAT_VERSION,
                    **library_record(self.path / LIBRARY), **metadata}
        (self.path / METADATA).write_text(json.dumps(metadata, indent=2, default=str) + "\n")

    def artifact(self) -> Artifact:
        return Artifact(self.path, json.loads((self.path / METADATA).read_text()))

    def commit(self) -> Artifact:
        raise_if_interrupted()       # Ctrl-C during the build: nothing gets written
        dest = check_destination(self.destination)     # again: it may have changed meanwhile
        backup = None
        with writing(dest, "the artifact", "-o"):
            if dest.exists():
                backup = dest.with_name(f".{dest.name}.old")
                shutil.rmtree(backup, ignore_errors=True)
                os.replace(dest, backup)
            os.replace(self.path, dest)
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)
        return load_artifact(dest)

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self) -> "StagedArtifact":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.path.exists():
            self.discard()
