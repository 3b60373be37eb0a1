"""Paths the pipeline writes to (artifacts, tuning logs, the demo's folder), checked before any
long work, and the operating system's refusals at the write itself turned into a clear error.

Permission bits alone do not tell whether a write will succeed (root ignores them; a read-only
mount or a sandbox does not), so a check creates and removes a probe file in the nearest folder
that exists, and the real write is still guarded by :func:`writing`. Files and folders are
written atomically (:func:`atomic_write`, :func:`atomic_folder`): a temporary sibling renamed into
place, removed when anything (an error, Ctrl-C) stops the write.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import UsageError


def _refusal(path: Path, what: str, flag: str, reason: str) -> UsageError:
    return UsageError(f"Cannot write {what} to {path}: {reason}.",
                      hint=f"Give {flag} a path in a folder you can write to.")


def _nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists (never climbs past the file system root)."""
    current = path.absolute()
    while not os.path.lexists(current) and current != current.parent:
        current = current.parent
    return current


def _probe(folder: Path) -> str | None:
    """Why no file can be created in ``folder`` (None: one can)."""
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"{folder} is not writable"
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".tvm-pipeline-probe.")
    except OSError as err:
        return f"{folder} refuses new files ({err.strerror})"
    os.close(fd)
    os.unlink(probe)
    return None


def _given(path: str | os.PathLike, what: str, flag: str) -> Path:
    if str(path).strip() == "":
        raise UsageError(f"{flag} is empty: there is no path to write {what} to.",
                         hint=f"Give {flag} a path.")
    return Path(path)


def _require_creatable(path: Path, folder: Path, what: str, flag: str) -> None:
    """Refuse ``path`` unless ``folder`` is, or can be created as, a folder to write into."""
    existing = _nearest_existing(folder)
    if not existing.is_dir():
        raise _refusal(path, what, flag, f"{existing} is a file, not a folder")
    reason = _probe(existing)
    if reason:
        raise _refusal(path, what, flag, reason)


def check_folder(path: str | os.PathLike, what: str, flag: str) -> Path:
    """Check that ``path`` is, or can be created as, a folder that files can be written into."""
    path = _given(path, what, flag)
    _require_creatable(path, path, what, flag)
    return path


def check_new_folder(path: str | os.PathLike, what: str, flag: str,
                     replaceable=lambda folder: False) -> Path:
    """Check that a folder can be written at ``path`` (staged next to it, renamed into place):
    nothing is there, or a folder that ``replaceable`` accepts or that is empty."""
    path = _given(path, what, flag)
    if os.path.lexists(path) and not path.is_dir():
        raise UsageError(f"Refusing to write {what} to {path}: a file of that name exists.",
                         hint=f"Remove it, or give {flag} another path.")
    if path.is_dir() and any(path.iterdir()) and not replaceable(path):
        raise UsageError(f"Refusing to overwrite {path} with {what}: it is a folder holding "
                         "other files.", hint=f"Give {flag} another path.")
    _require_creatable(path, path.parent, what, flag)
    return path


@contextlib.contextmanager
def writing(path: str | os.PathLike, what: str, flag: str):
    """The operating system's refusal to write under ``path`` as a clear error."""
    try:
        yield
    except OSError as err:
        raise _refusal(Path(path), what, flag, err.strerror or "the system refused") from err


def check_new_file(path: str | os.PathLike, what: str, flag: str) -> Path:
    """Check that a file can be written at ``path`` (not a folder; its folder writable)."""
    path = _given(path, what, flag)
    if path.is_dir():
        raise UsageError(f"Cannot write {what} to {path}: it is a folder.",
                         hint=f"Give {flag} a file path.")
    _require_creatable(path, path.parent, what, flag)
    return path


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
    ``destination``. A ``destination`` that exists must be empty or hold the file ``marker`` (it
    was written here before), else nothing is touched and a UsageError says so."""
    destination = check_new_folder(destination, "the output", "the output path",
                                   lambda folder: (folder / marker).exists())
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
