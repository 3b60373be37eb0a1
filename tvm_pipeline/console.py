"""What reaches the user's terminal from native code.

TVM's C++ logs warnings straight to file descriptor 2 for failures its callers handle: the
tensorize postprocessor prints the whole kernel each time a tile does not fit the intrinsic (a
grouped INT8 convolution prints ~60 lines per sketch and ~3000 lines in a two-minute tuning run),
and nothing in TVM sets a level for them. :func:`native_stderr` sends what native code writes to
file descriptor 2 into a log (or drops it) for a block, while Python's ``sys.stderr`` keeps
writing to the terminal.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def native_stderr(into: Path | None = None) -> Iterator[None]:
    """Within the block, writes to file descriptor 2 (TVM's C++ log, LLVM, child processes
    started inside it) go to ``into`` (appended; its folder is created) or to the null device;
    Python's ``sys.stderr`` is rebound to the original descriptor, so our own messages still
    show. Nests: each level restores what it found."""
    if into is not None:
        into.parent.mkdir(parents=True, exist_ok=True)
    sink = os.open(into if into is not None else os.devnull,
                   os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    original = os.dup(2)
    python_stderr = sys.stderr
    rebound = _uses_fd2(python_stderr)
    try:
        os.dup2(sink, 2)
        if rebound:
            sys.stderr = os.fdopen(os.dup(original), "w", buffering=1,
                                   encoding=python_stderr.encoding, errors="backslashreplace")
        yield
    finally:
        if rebound:     # left open: a log handler made inside the block may still hold it
            sys.stderr.flush()
            sys.stderr = python_stderr
        os.dup2(original, 2)
        os.close(original)
        os.close(sink)


def _uses_fd2(stream) -> bool:
    """Whether ``stream`` writes to file descriptor 2 (not, e.g., a test's in-memory capture)."""
    try:
        return stream.fileno() == 2
    except (AttributeError, OSError, ValueError):
        return False
