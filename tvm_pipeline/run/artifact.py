"""The deployable artifact: one folder holding the compiled library and its metadata.

    mobilenet_v2.tvm/
        model.so         # relax VM executable (tvm.runtime.load_module + relax.VirtualMachine)
        metadata.json    # inputs/outputs, target, TVM version, database digest, validation result

Folders are written next to their destination and renamed into place, so a failed or interrupted
compile never leaves a half-written artifact.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputFileError, UsageError
from .feeds import flatten_outputs
from ..target.spec import use_physical_cores

FORMAT = "tvm-pipeline-artifact"
FORMAT_VERSION = 1
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
        except Exception as err:
            raise InputFileError(f"Cannot load the compiled library {artifact.library}: "
                                 f"{str(err).strip().splitlines()[-1] if str(err).strip() else err}",
                                 hint="Recompile the artifact with `tvm-pipeline compile`.") from err
        self.vm = relax.VirtualMachine(lib, self.device)
        self.names = [t["name"] for t in artifact.inputs]
        self._main = self.vm["main"]

    def to_device(self, feeds: dict[str, np.ndarray]) -> list:
        return [self._tvm.runtime.tensor(np.ascontiguousarray(feeds[n]), self.device)
                for n in self.names]

    def run_device(self, args: list):
        return self._main(*args)

    def __call__(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return flatten_outputs(self.run_device(self.to_device(feeds)))


@functools.cache
def _copies_dir() -> Path:
    """This process's folder of library copies (see ``_loadable_path``)."""
    return Path(tempfile.mkdtemp(prefix="tvm-pipeline-libs-"))


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


def load_artifact(path: str | os.PathLike) -> Artifact:
    path = Path(path)
    meta_path = path / METADATA
    if not path.exists():
        raise InputFileError(f"Artifact {path} does not exist.",
                             hint="Create it with `tvm-pipeline compile MODEL -o PATH`.")
    if not meta_path.exists():
        raise InputFileError(f"{path} is not a tvm-pipeline artifact (no {METADATA} inside).",
                             hint="Pass the folder written by `tvm-pipeline compile -o PATH`.")
    try:
        metadata = json.loads(meta_path.read_text())
    except json.JSONDecodeError as err:
        raise InputFileError(f"{meta_path} is not valid JSON ({err}).",
                             hint="Recompile the artifact.") from err
    if metadata.get("format") != FORMAT:
        raise InputFileError(f"{meta_path} is not tvm-pipeline metadata (format={metadata.get('format')!r}).")
    artifact = Artifact(path, metadata)
    if not artifact.library.exists():
        raise InputFileError(f"Artifact {path} lacks its library {artifact.library.name}.",
                             hint="Recompile the artifact.")
    return artifact


class StagedArtifact:
    """A temporary folder next to the destination, renamed into place by ``commit``."""

    def __init__(self, destination: str | os.PathLike):
        self.destination = Path(destination)
        self.destination.parent.mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(dir=self.destination.parent,
                                          prefix=f".{self.destination.name}.", suffix=".tmp"))

    def write_metadata(self, metadata: dict[str, Any]) -> None:
        metadata = {"format": FORMAT, "format_version": FORMAT_VERSION, "library": LIBRARY,
                    **metadata}
        (self.path / METADATA).write_text(json.dumps(metadata, indent=2, default=str) + "\n")

    def artifact(self) -> Artifact:
        return Artifact(self.path, json.loads((self.path / METADATA).read_text()))

    def commit(self) -> Artifact:
        dest = self.destination
        if dest.exists() and not (dest / METADATA).exists() and any(dest.iterdir()):
            self.discard()
            raise UsageError(f"Refusing to overwrite {dest}: it exists and is not an artifact.",
                             hint="Choose another -o path.")
        backup = None
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
