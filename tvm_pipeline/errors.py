"""One exception hierarchy for the whole pipeline, mapped to exit codes in one place.

Every error a user can cause (bad file, bad flag, unsupported model, numbers that disagree) is a
:class:`PipelineError`. The CLI prints ``str(err)`` as one paragraph and exits with ``err.exit_code``;
nothing else in the package decides exit codes.
"""

from __future__ import annotations

import threading

import sys


class PipelineError(Exception):
    """Base class: a one-paragraph message saying what failed, where, and what to do."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None, details: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = details

    def __str__(self) -> str:
        text = self.message
        if self.hint:
            text += f" {self.hint}"
        if self.details:
            text += "\n" + self.details.rstrip()
        return text


class UsageError(PipelineError):
    """A flag or argument has a bad value (wrong --input-shape, unknown target name...)."""

    exit_code = 2


class InputFileError(PipelineError):
    """A file given by the user is missing, unreadable, or not what it claims to be."""

    exit_code = 3


class ModelError(PipelineError):
    """The model is well-formed but cannot go through the pipeline (e.g. unsupported operators)."""

    exit_code = 4


class ToolchainError(PipelineError):
    """An external tool or the TVM compiler failed; carries the failing command and its stderr."""

    exit_code = 5

    def __init__(self, message: str, *, command: list[str] | None = None, stderr: str = "",
                 hint: str | None = None):
        details = None
        if command:
            details = "command: " + " ".join(command)
        if stderr:
            details = (details + "\n" if details else "") + "stderr:\n" + stderr.strip()[-4000:]
        super().__init__(message, hint=hint, details=details)
        self.command = command
        self.stderr = stderr


class TuningError(PipelineError):
    """Tuning could not run or was interrupted; measured records are always kept on disk."""

    exit_code = 6


class ValidationError(PipelineError):
    """The compiled module disagrees with the ONNX Runtime reference beyond tolerance."""

    exit_code = 7

    def __init__(self, message: str, *, report=None, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.report = report


class RemoteError(PipelineError):
    """A remote device (TVM RPC server or tracker) is unreachable, failed, or timed out."""

    exit_code = 8


# What TVM 0.27 raises through its FFI (``tvm_ffi.core.ERROR_NAME_TO_TYPE``; TVM's own kinds, such
# as ``tvm.error.InternalError``, derive from these). There is no ``tvm.TVMError`` any more. Catch
# these only around the TVM call that raises them, never around the project's own code.
TVM_ERRORS = (RuntimeError, ValueError, TypeError, AttributeError, KeyError, IndexError,
              AssertionError)


# Set by the CLI's SIGINT handler. Ctrl-C raises KeyboardInterrupt in whatever Python code runs at
# that moment, and when that is a callback inside a TVM pass, TVM's FFI hands it back as one of
# TVM_ERRORS: code that catches those to try something else must call ``raise_if_interrupted``
# first, so that an interrupt never turns into another build.
INTERRUPTED = threading.Event()


def raise_if_interrupted() -> None:
    """Re-raise Ctrl-C that TVM reported as an error of its own."""
    if INTERRUPTED.is_set():
        raise KeyboardInterrupt


def notice(message: str) -> None:
    """Something the user should know that is not an error: one line on stderr."""
    print(f"notice: {message}", file=sys.stderr, flush=True)


EXIT_INTERRUPTED = 130
EXIT_INTERNAL = 70
