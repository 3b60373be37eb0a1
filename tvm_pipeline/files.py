"""Writing files and folders so that a reader never sees half of one: a temporary sibling, fsynced,
then renamed into place; removed when anything (an error, Ctrl-C) stops the write."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import UsageError


def atomic_write(path: str | os.PathLike, data: bytes | str) -> None:
    """Write ``data`` to ``path`` (parents created) with a normal file's mode."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode() if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)      # not mkstemp's 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_folder(destination: str | os.PathLike, marker: str) -> Iterator[Path]:
    """Fill a staging folder next to ``destination``; when the block succeeds, it replaces
    ``destination``. A ``destination`` that exists must hold the file ``marker`` (it was written
    here before), else nothing is touched and a UsageError says so."""
    destination = Path(destination)
    if destination.exists() and not (destination / marker).exists() and (
            not destination.is_dir() or any(destination.iterdir())):
        raise UsageError(f"Refusing to overwrite {destination}: it exists and was not written by "
                         "this command.", hint="Choose another output folder or remove it.")
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=destination.parent, prefix=f".{destination.name}.",
                                    suffix=".tmp"))
    try:
        yield staging
        (staging / marker).touch()
        old = destination.with_name(f".{destination.name}.old")
        if destination.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(destination, old)
        os.replace(staging, destination)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
