"""``tvm-pipeline report ARTIFACT -o report.html``: compile report, validation, benchmark and top
kernels in one self-contained file to share."""

from __future__ import annotations

import argparse

from . import common


def register(sub) -> None:
    parser = sub.add_parser("report", help="one shareable HTML/Markdown file: compile report, "
                                           "validation, benchmark, top kernels")
    common.add_reference(parser)
    parser.add_argument("-o", "--output", required=True, metavar="FILE",
                        help="report file; .html or .md (charts inlined, no other files)")
    parser.add_argument("--runs", type=int, default=30,
                        help="timed runs for the benchmark and the profile (default 30)")
    common.add_remote(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..api import report  # pylint: disable=import-outside-toplevel

    path = report(args.artifact, args.output, args.model, args.runs, common.remote_options(args))
    print(f"wrote {path}")
    return 0
