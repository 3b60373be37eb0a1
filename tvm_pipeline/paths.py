"""Paths the pipeline writes to (artifacts, tuning logs, the demo's folder), checked before any
long work, and the operating system's refusals at the write itself turned into a clear error.

Permission bits alone do not tell whether a write will succeed (root ignores them; a read-only
mount or a sandbox does not), so a check creates and removes a probe file in the nearest folder
that exists, and the real write is still guarded by :func:`writing`.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

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
