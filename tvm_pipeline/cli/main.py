"""``tvm-pipeline``: argparse only; every subcommand parses, resolves, and calls the library.

Errors: a :class:`~tvm_pipeline.errors.PipelineError` prints one paragraph and exits with its code;
anything else is an internal error (exit 70) whose traceback ``TVM_PIPELINE_DEBUG=1`` shows.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

from ..errors import EXIT_INTERNAL, EXIT_INTERRUPTED, PipelineError
from . import (bench, bisect, check, classify, compile as compile_cmd, demo, distill, inspect,
               models, profile, report, rpc, sweep, targets, tune, validate)

SUBCOMMANDS = (models, inspect, targets, tune, distill, compile_cmd, check, validate, bench, classify,
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    debug = bool(os.environ.get("TVM_PIPELINE_DEBUG"))
    try:
        return int(args.run(args) or 0)
    except PipelineError as err:
        if debug:
            traceback.print_exc()
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except BrokenPipeError:   # `tvm-pipeline inspect m.onnx | head`: the reader left, fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:  # pylint: disable=broad-except
        if debug:
            traceback.print_exc()
        print(f"internal error: {type(err).__name__}: {err}\nThis is a bug in tvm-pipeline. Re-run "
              "with TVM_PIPELINE_DEBUG=1 to see the traceback and include it in a report.",
              file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
