"""``tvm-pipeline rpc status --tracker HOST:PORT``: the devices a TVM RPC tracker knows, per key."""

from __future__ import annotations

import argparse

from . import common


def register(sub) -> None:
    parser = sub.add_parser("rpc", help="remote devices: what a TVM RPC tracker has registered")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    status = actions.add_parser("status", help="devices per key at a tracker")
    status.add_argument("--tracker", required=True, metavar="HOST:PORT")
    status.add_argument("--timeout", type=float, default=30.0, metavar="S",
                        help="give up after this many seconds (default 30)")
    common.add_json(status)
    status.set_defaults(run=run_status)


def run_status(args: argparse.Namespace) -> int:
    from ..run.remote import devices_by_key, tracker_summary  # pylint: disable=import-outside-toplevel

    summary = tracker_summary(args.tracker, args.timeout)
    devices = devices_by_key(summary)
    queues = summary.get("queue_info", {})
    if args.json:
        common.emit_json({"tracker": args.tracker,
                          "keys": {key: {"devices": addrs, "free": queues.get(key, {}).get("free", 0),
                                         "pending": queues.get(key, {}).get("pending", 0)}
                                   for key, addrs in sorted(devices.items())}})
        return 0
    if not devices:
        print(f"tracker {args.tracker}: no device registered")
        return 0
    print(f"tracker {args.tracker}:")
    width = max(len(k) for k in devices)
    for key, addrs in sorted(devices.items()):
        queue = queues.get(key, {})
        print(f"  {key:<{width}}  {len(addrs)} device(s), {queue.get('free', 0)} free, "
              f"{queue.get('pending', 0)} request(s) waiting: {', '.join(addrs) or '-'}")
    return 0
