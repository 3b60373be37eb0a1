"""``tvm-pipeline distill --target T``: keep the best verified records of a tuning database."""

from __future__ import annotations

import argparse

from . import common
from ..errors import UsageError


def register(sub) -> None:
    parser = sub.add_parser("distill", help="shrink a target's tuning database to the best verified "
                                            "records per kernel")
    common.add_target(parser)
    common.add_logs(parser)
    parser.add_argument("--keep", type=int, default=1,
                        help="records kept per kernel, fastest first (default 1)")
    parser.add_argument("--no-verify", action="store_true",
                        help="keep the fastest records without checking them against the "
                             "unscheduled kernels (checks need a target this machine runs)")
    parser.add_argument("--merge", action="append", default=[], metavar="ROOT",
                        help="first append the records of this tuning-log root's database for the "
                             "target (what tune --logs ROOT wrote); repeatable")
    parser.add_argument("--replace", action="store_true",
                        help="the merged records replace this database's records of the kernels "
                             "they cover, instead of competing with them: for a run re-tuned on "
                             "another machine (run times of two machines do not compare; a "
                             "warm-started run re-measured the old best schedules there)")
    parser.add_argument("--prune-to", action="append", default=[], metavar="MODEL",
                        help="keep only the kernels this ONNX model compiles to on the target "
                             "(repeatable): every other kernel's records and workload are dropped, "
                             "e.g. those a lowering change gave other shapes. Kernels without any "
                             "record are always dropped")
    common.add_json(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..api import distill  # pylint: disable=import-outside-toplevel

    if args.keep < 1:
        raise UsageError(f"--keep must be >= 1 (got {args.keep}).")
    if args.replace and not args.merge:
        raise UsageError("--replace needs --merge ROOT: it says what the merged records replace.",
                         hint="tvm-pipeline distill --target T --merge ROOT --replace")
    result = distill(args.target, args.logs, args.keep, not args.no_verify, args.merge,
                     args.replace, prune_to=args.prune_to)
    if args.json:
        common.emit_json(result.to_dict())
        return 0
    mb = 1024 * 1024
    if result.merged:
        print(f"merged {result.merged} records from {', '.join(args.merge)}"
              + (f", replacing {result.replaced} records of the kernels they cover"
                 if args.replace else ""))
    if result.cost_samples:
        print(f"merged their cost models: {result.cost_samples} measurements kept, re-trained")
    for problem in result.cost_ignored:
        print(f"note: ignored the unreadable cost model {problem}")
    if args.prune_to:
        print(f"dropped {result.pruned} kernels that none of {', '.join(args.prune_to)} compiles to")
    print(f"{result.folder}: {result.records_before} -> {result.records_after} records, "
          f"{result.workloads} -> {result.workloads_after} kernels, "
          f"{result.bytes_before / mb:.1f} MB -> "
          f"{result.bytes_after / mb:.1f} MB; {result.verified} kept records verified against the "
          f"unscheduled kernels, {len(result.rejected)} dropped as wrong")
    for line in result.rejected:
        print(f"  {line}")
    if result.note:
        print(f"note: {result.note}")
    return 0
