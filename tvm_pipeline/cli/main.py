"""``tvm-pipeline``: argparse only; every subcommand parses, resolves, and calls the library.

Errors: a :class:`~tvm_pipeline.errors.PipelineError` prints one paragraph and exits with its code;
anything else is an internal error (exit 70) whose traceback ``TVM_PIPELINE_DEBUG=1`` shows.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
import traceback

from ..errors import EXIT_INTERNAL, EXIT_INTERRUPTED, INTERRUPTED, PipelineError
from . import (bench, bisect, check, classify, compile as compile_cmd, demo, distill, inspect,
               models, profile, quantize, report, rpc, sweep, targets, tune, validate)

SUBCOMMANDS = (models, inspect, quantize, targets, tune, distill, compile_cmd, check, validate, bench, classify,
               profile, bisect, sweep, report, rpc, demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tvm-pipeline",
        description="Compile, tune, validate and benchmark ONNX vision models with Apache TVM.",
        epilog="Lifecycle: models export -> inspect -> tune (-> distill) -> compile (validates) -> bench/classify. "
               "Set TVM_PIPELINE_DEBUG=1 for tracebacks.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in SUBCOMMANDS:
        module.register(sub)
    return parser


def _on_sigint(signum, frame) -> None:
    """Ctrl-C: remember it (TVM may hand the KeyboardInterrupt back as an error of its own, see
    ``errors.INTERRUPTED``), then interrupt as Python does."""
    INTERRUPTED.set()
    signal.default_int_handler(signum, frame)


def main(argv: list[str] | None = None) -> int:
    INTERRUPTED.clear()
    in_main = threading.current_thread() is threading.main_thread()  # signals go to the main thread
    ignored = in_main and signal.getsignal(signal.SIGINT) is signal.SIG_IGN   # e.g. `cmd &` in sh
    if not in_main or ignored:
        return _run(build_parser().parse_args(argv))
    previous = signal.signal(signal.SIGINT, _on_sigint)
    try:
        return _run(build_parser().parse_args(argv))
    except KeyboardInterrupt:       # while parsing the arguments
        return _interrupted()
    finally:
        _restore_sigint(previous)


def _restore_sigint(previous) -> None:
    """Put back the caller's SIGINT handler, after dropping an interrupt still pending: TVM's FFI
    can re-raise the one it caught, and with Python's default handler back that would kill the
    process at exit (status -2 instead of 130)."""
    if INTERRUPTED.is_set():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        time.sleep(0.01)                # Python runs pending handlers between bytecodes: drained
    signal.signal(signal.SIGINT, previous)


def _run(args: argparse.Namespace) -> int:
    debug = bool(os.environ.get("TVM_PIPELINE_DEBUG"))
    try:
        code = int(args.run(args) or 0)
        if INTERRUPTED.is_set():        # an interrupt something swallowed: the result is not trusted
            raise KeyboardInterrupt
        return code
    except PipelineError as err:
        if INTERRUPTED.is_set():
            return _interrupted()
        if debug:
            traceback.print_exc()
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except BrokenPipeError:   # `tvm-pipeline inspect m.onnx | head`: the reader left, fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        return _interrupted()
    except Exception as err:  # pylint: disable=broad-except
        if INTERRUPTED.is_set():
            return _interrupted()
        if debug:
            traceback.print_exc()
        print(f"internal error: {type(err).__name__}: {err}\nThis is a bug in tvm-pipeline. Re-run "
              "with TVM_PIPELINE_DEBUG=1 to see the traceback and include it in a report.",
              file=sys.stderr)
        return EXIT_INTERNAL



def _interrupted() -> int:
    print("interrupted", file=sys.stderr)
    return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
