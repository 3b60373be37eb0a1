"""``tvm-pipeline targets``: the target files, with the one detected for this machine marked."""

from __future__ import annotations

import argparse

from . import common


def register(sub) -> None:
    parser = sub.add_parser("targets", help="list the target files in targets/")
    common.add_json(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import UsageError  # pylint: disable=import-outside-toplevel
    from ..target.spec import checked_targets, detect_host_target  # pylint: disable=import-outside-toplevel

    specs = checked_targets()
    try:
        host = detect_host_target().name
    except UsageError:
        host = None
    if args.json:
        common.emit_json([{**t.to_dict(), "host_default": t.name == host} for t in specs])
        return 0
    width = max(len(t.name) for t in specs)
    for spec in specs:
        mark = "*" if spec.name == host else " "
        print(f"{mark} {spec.name:<{width}}  {spec.description}")
    if host:
        print("\n* detected for this machine (the default --target)")
    return 0
