"""Distill a target's tuning database: keep the best verified records per workload.

A tuning run appends every measured candidate (64 per task per run): megabytes of records that a
build never reads, since it applies the best record of each workload. ``distill``:

* first appends the records of other databases of the same target (``merge``: say a run tuned
  into a scratch root, or on another machine of the same kind), so the best of all of them is kept;
  with ``replace``, the merged records replace this database's records of the kernels they cover
  instead: run times measured on two machines do not compare (a 2-core Zen 5 times every kernel
  faster than a 2-core Xeon, so its records would always win), and a run warm-started from this
  database re-measured its best schedules on the new machine among its own records;
* keeps, per workload, the ``keep`` fastest records whose schedules are verified on this machine
  against the unscheduled kernel (``verify``; skipped with a note for targets this machine cannot
  run); a record that fails is dropped and the next one is tried;
* drops the workloads left without a record, and with ``live`` (the structural hashes of the
  kernels some models compile to: ``--prune-to``) every workload not among them with its records:
  kernels no model produces any more (a lowering change gave them other shapes) only take space.
  Records point at workloads by line number, so then both files are rewritten together
  (``database.replace``); otherwise only the record file, atomically. An interrupted distill leaves
  the old database;
* merges the cost models saved with the merged databases into this one's (``costmodel.merge``:
  their measurements together, re-trained), so tuning a new model on this target starts from all
  of them;
* adds the trials it drops to ``database_trials.json`` (workload hash -> trials not in the record
  file), so a later ``tune`` still counts them against ``--trials-per-task`` and does not re-tune a
  finished task.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from . import costmodel
from . import database as db
from ..errors import TuningError
from ..numbers import mean_run_seconds
from ..paths import atomic_write
from ..target import intrinsics
from ..target.spec import TargetSpec


@dataclass
class DistillResult:
    folder: Path
    workloads: int                      # workload lines before
    records_before: int
    records_after: int
    bytes_before: int
    bytes_after: int
    verified: int                       # kept records checked against the unscheduled kernel
    rejected: list[str] = field(default_factory=list)   # records dropped as wrong
    note: str | None = None             # why verification was skipped
    merged: int = 0                     # records appended from the merged databases
    replaced: int = 0                   # records dropped for merged ones of the same kernel
    cost_samples: int = 0               # measurements in the merged cost model (0: not merged)
    cost_ignored: tuple[str, ...] = ()  # cost-model files that could not be read, and why
    workloads_after: int = 0
    pruned: int = 0                     # workloads with records that ``live`` left out

    def to_dict(self) -> dict:
        return {"database": str(self.folder), "workloads": self.workloads,
                "workloads_after": self.workloads_after, "pruned": self.pruned,
                "records_before": self.records_before, "records_after": self.records_after,
                "bytes_before": self.bytes_before, "bytes_after": self.bytes_after,
                "verified": self.verified, "rejected": self.rejected, "note": self.note,
                "merged": self.merged, "replaced": self.replaced,
                "cost_model_samples": self.cost_samples,
                "cost_model_ignored": list(self.cost_ignored)}


def _mean(record_json) -> float | None:
    return mean_run_seconds(record_json[1])


class _Verifier:
    """Replays a record's trace on its workload and checks the result against the unscheduled
    kernel (one reference per workload)."""

    def __init__(self, spec: TargetSpec):
        self.target = spec.to_tvm()
        # a tensorized kernel's trace names its intrinsic, which must exist before it is read
        intrinsics.register_for(self.target.kind.name, spec.arch)

    def deviation(self, workload_line: list, record_json: list) -> float:
        # pylint: disable=import-outside-toplevel
        from tvm import s_tir
        from tvm.s_tir import meta_schedule as ms

        from . import verify

        workload = ms.database.Workload.from_json(workload_line)
        record = ms.database.TuningRecord.from_json(record_json, workload)
        sch = s_tir.Schedule(workload.mod)
        record.trace.apply_to_schedule(sch, remove_postproc=False)
        return verify.schedule_deviation(workload.mod, sch.mod, self.target)


def distill(folder: Path, spec: TargetSpec, keep: int = 1, check: bool = True,
            merge: Sequence[Path] = (), replace: bool = False,
            live: frozenset[str] | None = None) -> DistillResult:
    """Rewrite ``folder``'s database with the best ``keep`` verified records per workload, after
    appending the records of the database folders in ``merge`` (with ``replace``: in place of
    ``folder``'s records of the workloads they cover); with ``live``, only the workloads whose
    structural hash it holds."""
    if not merge and not (folder / db.WORKLOAD_FILE).exists():
        raise _no_database(folder, spec)
    with db.locked(folder, "distilling"):
        return _distill_locked(folder, spec, keep, check, merge, replace, live)


def _no_database(folder: Path, spec: TargetSpec) -> TuningError:
    return TuningError(f"No tuning database in {folder} (no {db.WORKLOAD_FILE}).",
                       hint="Tune a model for this target first: tvm-pipeline tune MODEL --target "
                            f"{spec.name}.")


def _distill_locked(folder: Path, spec: TargetSpec, keep: int, check: bool,
                    merge: Sequence[Path], replace: bool,
                    live: frozenset[str] | None) -> DistillResult:
    """``distill`` with the database folder locked."""
    workload_path, record_path = folder / db.WORKLOAD_FILE, folder / db.RECORD_FILE
    if replace and merge and workload_path.exists():
        db.repair(folder)
    old = db.count_records(folder) if replace and merge else 0    # records before the merge
    merged = db.merge(folder, merge) if merge else 0
    cost_samples, cost_ignored = costmodel.merge(folder, list(merge)) if merge else (0, ())
    if not workload_path.exists():
        raise _no_database(folder, spec)
    db.repair(folder)
    workloads = db.read_workloads(workload_path)
    lines = db.read_records(record_path, len(workloads))
    retimed = {index for index, _ in lines[old:]} if old else set()
    replaced: dict[int, list] = collections.defaultdict(list)   # old records of re-timed kernels
    by_workload: dict[int, list] = {}
    for position, (index, record_json) in enumerate(lines):
        if position < old and index in retimed:
            replaced[index].append(record_json)
        else:
            by_workload.setdefault(index, []).append(record_json)
    verifier = _Verifier(spec) if check and spec.runs_on_host else None
    note = None if verifier or not check else (
        f"records were not verified: target {spec.name} does not run on this machine")
    trials = db.read_trials(folder)
    pruned = {i for i in by_workload if live is not None and str(workloads[i][0]) not in live}
    kept_lines, rejected, verified = [], [], 0
    for index in sorted(set(by_workload) - pruned):
        records = by_workload[index]
        kept = _best(records, workloads[index], keep, verifier, rejected, index)
        if not kept and replaced[index]:     # no merged record survived: the old ones stay
            old_records = replaced.pop(index)
            records = records + old_records
            kept = _best(old_records, workloads[index], keep, verifier, rejected, index)
        verified += len(kept) if verifier is not None else 0
        shash = str(workloads[index][0])
        trials[shash] = trials.get(shash, 0) + len(records) + len(replaced[index]) - len(kept)
        kept_lines.extend([index, r] for r in kept)
    for index in pruned:
        trials.pop(str(workloads[index][0]), None)
    bytes_before = workload_path.stat().st_size + (record_path.stat().st_size if lines else 0)
    used = sorted({index for index, _ in kept_lines})
    if len(used) == len(workloads):
        atomic_write(record_path, db.json_lines(kept_lines))
    else:
        renumber = {old: new for new, old in enumerate(used)}
        db.replace(folder, [workloads[i] for i in used],
                   [[renumber[index], r] for index, r in kept_lines])
    db.write_trials(folder, trials)
    return DistillResult(folder, len(workloads), len(lines), len(kept_lines), bytes_before,
                         workload_path.stat().st_size + record_path.stat().st_size, verified,
                         rejected, note, merged, sum(map(len, replaced.values())), cost_samples,
                         cost_ignored, len(used), len(pruned))


def _best(records: list, workload_line: list, keep: int, verifier: "_Verifier | None",
          rejected: list[str], index: int) -> list:
    """The ``keep`` fastest of ``records`` (of workload line ``index``) that pass the check, each
    failure noted in ``rejected``."""
    kept = []
    for record_json in sorted((r for r in records if _mean(r) is not None), key=_mean):
        if len(kept) >= keep:
            break
        if verifier is not None:
            dev = verifier.deviation(workload_line, record_json)
            if dev > 1.0:
                rejected.append(f"workload {index}: a {_mean(record_json) * 1e6:.1f} us record "
                                f"deviates {dev:.3g}x the tolerance; dropped")
                continue
        kept.append(record_json)
    return kept
