"""``tvm-pipeline tune MODEL``: MetaSchedule into the target's database, resumable."""

from __future__ import annotations

import argparse
import re
import sys
import time

from . import common
from ..errors import UsageError


def parse_duration(text: str | None) -> float | None:
    """``90``, ``90s``, ``30m``, ``1.5h`` -> seconds."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not match:
        raise UsageError(f"Cannot parse --time-budget '{text}'.",
                         hint="Use seconds or a unit: 600, 600s, 30m, 1.5h.")
    seconds = float(match[1]) * {"": 1, "s": 1, "m": 60, "h": 3600}[match[2]]
    if seconds <= 0:
        raise UsageError(f"--time-budget '{text}' is zero: a tuning run needs some time.",
                         hint="Give a positive duration (e.g. 10m), or leave --time-budget out for "
                              "no time limit.")
    return seconds


def register(sub) -> None:
    parser = sub.add_parser("tune", help="auto-tune the model's kernels (MetaSchedule, resumable)")
    common.add_model(parser)
    common.add_target(parser)
    common.add_logs(parser)
    parser.add_argument("--trials", type=int, default=None,
                        help="trials to measure in this run, all tasks together (default 2000, no "
                             "limit with --time-budget; the last batch can take it up to one "
                             "batch past)")
    parser.add_argument("--trials-per-task", type=int, default=None,
                        help="per-task budget, counting records already in the database (default "
                             "64, 512 with --time-budget)")
    parser.add_argument("--trials-per-iter", type=int, default=64,
                        help="candidates measured per batch (default 64)")
    parser.add_argument("--time-budget", default=None, metavar="DURATION",
                        help="stop after the batch that crosses this wall-clock time (e.g. 30m)")
    parser.add_argument("--search", choices=["fast", "full"], default="fast",
                        help="evolutionary search effort per batch: fast (default: population "
                             "256, 2 generations; about half the search time per batch, so more "
                             "trials in a time budget) or full (MetaSchedule's: 512, 4)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--cold", action="store_true",
                        help="no warm start: tasks without a record start from random samples "
                             "instead of their measured default and borrowed schedules, and the "
                             "cost model starts untrained (stock MetaSchedule; for comparisons)")
    common.add_remote(parser, server=False)
    common.add_ndk(parser)
    common.add_json(parser)
    parser.set_defaults(run=run)


class _Display:
    """One status line, rewritten in place on a terminal, one line per batch otherwise."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()

    def __call__(self, p) -> None:
        if p.trials == 0:
            if p.started_from:
                sys.stderr.write(p.started_from + "\n")
            return
        est = f"{p.estimated_ms:.2f} ms" if p.estimated_ms is not None else "n/a (some kernels unmeasured)"
        line = (f"[{p.elapsed_s:7.1f}s] tasks done {p.tasks_done}/{len(p.tasks)}  "
                f"trials {p.trials}/{p.budget_trials}  best estimated latency {est}")
        sys.stderr.write(("\r" + line + "\x1b[K") if self.tty else line + "\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self.tty:
            sys.stderr.write("\n")


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()      # trials/s counts the start-up (import, prepare, warm start)
    from ..api import prepare, tune  # pylint: disable=import-outside-toplevel
    from ..tuning.tune import (  # pylint: disable=import-outside-toplevel
        SEARCH_PRESETS, TuneOptions)
    from ..target.spec import resolve_target  # pylint: disable=import-outside-toplevel
    from ..target.toolchains import toolchain_for  # pylint: disable=import-outside-toplevel
    from ..tuning import database as db  # pylint: disable=import-outside-toplevel

    for flag in ("trials", "trials_per_task", "trials_per_iter"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise UsageError(f"--{flag.replace('_', '-')} must be >= 1 (got {getattr(args, flag)}).")
    time_budget = parse_duration(args.time_budget)
    options = TuneOptions(max_trials=args.trials, trials_per_task=args.trials_per_task,
                          trials_per_iter=args.trials_per_iter,
                          time_budget_s=time_budget, logs=args.logs,
                          seed=args.seed, search=SEARCH_PRESETS[args.search],
                          warm_start=not args.cold,
                          remote=common.remote_options(args), ndk=args.ndk)
    target = resolve_target(args.target)
    db.writable_folder(target.name, args.logs)   # an unwritable --logs fails before any work
    if args.tracker:
        toolchain_for(target, args.ndk)  # candidates are linked here: fail before any work
    prepared = prepare(args.model, target, common.input_shapes(args))
    where = (f" on devices with key '{args.key or prepared.target.rpc_key}' at tracker "
             f"{args.tracker}" if args.tracker else "")
    common.say(f"tuning {prepared.loaded.name} for {prepared.target.name}{where}: "
               f"{len(prepared.kernels)} kernels")
    display = _Display()
    try:
        result = tune(prepared, options, display)
    finally:
        display.close()
    if args.json:
        common.emit_json(result.to_dict())
    else:
        d, wall = result.to_dict(), time.monotonic() - started
        print(f"{d['stopped_by']}: {d['trials']} trials in {d['seconds']} s ({wall:.0f} s with "
              f"start-up: {d['trials'] / wall:.2f} trials/s); database "
              f"{d['database']} now holds {d['records_after']} records "
              f"({d['records_after'] - d['records_before']} new)")
        if d["candidates_checked"]:
            print(f"checked {d['candidates_checked']} new-best candidates against the unscheduled "
                  f"kernels: {len(d['candidates_rejected'])} rejected as wrong")
        if d["estimated_ms"] is not None:
            print(f"estimated latency of the tuned kernels: {d['estimated_ms']:.2f} ms (each timed "
                  "alone with warm caches, summed; inside the model they take longer: `compile`, "
                  "then `bench`, measure the model)")
    return 130 if result.stopped_by == "interrupt" else 0
