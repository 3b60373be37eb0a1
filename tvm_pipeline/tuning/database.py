"""Tuning databases: one MetaSchedule JSON database per target, shared by all models on it.

Layout: ``<logs root>/<target name>/database_workload.json`` + ``database_tuning_record.json``
(MetaSchedule's own JSON-lines format; the format is not keyed by target, apache/tvm#15549, hence one
folder per target).

``database_trials.json`` (ours) counts the trials ``distill`` removed, so that budgets per task still
count them. Two roots are consulted:

* the shipped logs (``tuned_logs/`` of the checkout, or the copy inside an installed package);
* the writable root where ``tune`` appends: ``--logs DIR``, else ``$TVM_PIPELINE_LOGS``, else the
  shipped folder when it is writable (a checkout), else ``~/.cache/tvm-pipeline/tuned_logs``.

MetaSchedule appends one JSON line per measured candidate. A process killed mid-append leaves a
truncated last line, which would make the whole database unreadable; ``repair`` drops such lines
(atomically rewriting the file) so that no complete record is ever lost.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from filelock import FileLock, Timeout

from ..errors import TVM_ERRORS, TuningError, notice
from ..paths import atomic_write, check_folder, writing
from ..resources import data_dir

WORKLOAD_FILE = "database_workload.json"
RECORD_FILE = "database_tuning_record.json"
TRIALS_FILE = "database_trials.json"    # ours: trials that ``distill`` dropped, per workload hash
LOGS_ENV = "TVM_PIPELINE_LOGS"
LOCK_FILE = ".database.lock"            # filelock: held by every process that writes the files
JOURNAL_FILE = ".database.replacing"    # ours: both files' new versions are complete (see replace)
_NEW = ".new"


def shipped_root() -> Path:
    return data_dir("tuned_logs")


def writable_root(explicit: str | os.PathLike | None = None) -> Path:
    if explicit:
        return Path(explicit)
    if os.environ.get(LOGS_ENV):
        return Path(os.environ[LOGS_ENV])
    shipped = shipped_root()
    if os.access(shipped, os.W_OK):
        return shipped
    return Path.home() / ".cache" / "tvm-pipeline" / "tuned_logs"


def writable_folder(target_name: str, explicit: str | os.PathLike | None = None) -> Path:
    """The target's database folder in the writable root, checked to be writable (before tuning)."""
    flag = "--logs" if explicit else f"--logs (or ${LOGS_ENV})"
    return check_folder(writable_root(explicit) / target_name, "tuning records", flag)


def database_dirs(target_name: str, explicit: str | os.PathLike | None = None,
                  shipped: bool = True) -> list[Path]:
    """Existing database folders for a target, writable one first, without duplicates (without the
    shipped logs when ``shipped`` is false)."""
    dirs = []
    for root in (writable_root(explicit), *([shipped_root()] if shipped else [])):
        folder = (root / target_name).resolve()
        if (folder / WORKLOAD_FILE).exists() and folder not in dirs:
            dirs.append(folder)
    return dirs


@dataclass(frozen=True)
class RepairReport:
    dropped_lines: int


def json_lines(lines) -> str:
    """``lines`` as MetaSchedule's JSON-lines files hold them: compact JSON, one per line."""
    return "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines)


def replace(folder: Path, workloads: list, records: list) -> None:
    """Replace both files at once (``distill`` dropping workloads: the records' line numbers
    change with the workload file, so one file must never be seen without the other). Both new
    files are written beside the old ones, then a journal, then each is renamed into place; an
    interrupted replace is finished (journal written) or undone (not yet) by the next
    :func:`repair`."""
    for name, lines in ((WORKLOAD_FILE, workloads), (RECORD_FILE, records)):
        atomic_write(folder / (name + _NEW), json_lines(lines))
    atomic_write(folder / JOURNAL_FILE, "both new files complete\n")
    _finish_replace(folder)


def _finish_replace(folder: Path) -> None:
    journal = folder / JOURNAL_FILE
    for name in (WORKLOAD_FILE, RECORD_FILE):
        new = folder / (name + _NEW)
        if new.exists() and journal.exists():
            os.replace(new, folder / name)
        else:
            new.unlink(missing_ok=True)
    journal.unlink(missing_ok=True)


def workload_hashes(prepared, target) -> set[str]:
    """The structural hashes under which a database holds the kernels of ``prepared`` (a
    ``PreparedModule``) for ``target`` (a ``tvm.target.Target``), as ``tune`` extracts them."""
    import tvm_ffi  # pylint: disable=import-outside-toplevel
    from tvm.s_tir import meta_schedule as ms  # pylint: disable=import-outside-toplevel

    return {str(tvm_ffi.structural_hash(task.dispatched[0]))
            for task in ms.relax_integration.extract_tasks(prepared.mod, target)}


def repair(folder: Path) -> RepairReport:
    """Finish or undo an interrupted :func:`replace`, then drop unparseable lines (a record cut by
    a kill) so that MetaSchedule can load the rest."""
    _finish_replace(folder)
    dropped = 0
    for name in (WORKLOAD_FILE, RECORD_FILE):
        path = folder / name
        if not path.exists():
            continue
        raw = path.read_text()
        good = []
        for line in raw.splitlines():
            if not line.strip():
                continue
            try:
                json.loads(line)
            except json.JSONDecodeError:
                dropped += 1
                continue
            good.append(line)
        text = "".join(line + "\n" for line in good)
        if text != raw:
            atomic_write(path, text)
    return RepairReport(dropped)


def digest(folders: list[Path]) -> str | None:
    """A content hash of the databases applied to a build (recorded in artifact metadata)."""
    if not folders:
        return None
    sha = hashlib.sha256()
    for folder in folders:
        for name in (WORKLOAD_FILE, RECORD_FILE):
            path = folder / name
            if path.exists():
                sha.update(path.read_bytes())
    return sha.hexdigest()


def read_trials(folder: Path) -> dict[str, int]:
    """Workload structural hash -> trials measured but no longer in the record file (distilled)."""
    path = folder / TRIALS_FILE
    if not path.exists():
        return {}
    try:
        return {str(k): int(v) for k, v in json.loads(path.read_text()).items()}
    except (json.JSONDecodeError, AttributeError, ValueError) as err:
        raise TuningError(f"{path} is not a JSON object of trial counts: {err}",
                          hint="Restore it from git, or delete it (tune will then re-tune tasks "
                               "whose records were distilled).") from err


def write_trials(folder: Path, trials: dict[str, int]) -> None:
    atomic_write(folder / TRIALS_FILE, json.dumps(dict(sorted(trials.items())), indent=0) + "\n")


def _numbered_json_lines(path: Path) -> list[tuple[int, object]]:
    """(line number, parsed line) of a JSON-lines file's non-blank lines (none when it is absent)."""
    if not path.exists():
        return []
    parsed = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                parsed.append((number, json.loads(line)))
            except json.JSONDecodeError as err:
                raise _line_error(path, number, f"is not JSON ({err.msg})") from err
    return parsed


def _line_error(path: Path, number: int, what: str) -> TuningError:
    return TuningError(f"{path}, line {number}, {what}: this is not a MetaSchedule tuning database "
                       "as tvm-pipeline writes it.", hint="Move the database folder aside and re-tune, "
                       "or restore the file from git.")


def _is_workload(line) -> bool:
    """``[structural hash, serialized TIR]``."""
    return (isinstance(line, list) and len(line) == 2 and isinstance(line[0], (str, int))
            and isinstance(line[1], str))


def _is_record(line, workloads: int) -> bool:
    """``[workload line index, [trace, run seconds or null, target, argument info]]``."""
    if not (isinstance(line, list) and len(line) == 2 and isinstance(line[1], list)):
        return False
    index, record = line
    secs = record[1] if len(record) >= 2 else "missing"
    return (isinstance(index, int) and not isinstance(index, bool) and 0 <= index < workloads
            and (secs is None or isinstance(secs, list) and all(
                isinstance(s, (int, float)) and not isinstance(s, bool) for s in secs)))


def read_workloads(path: Path) -> list:
    """The workload lines of ``path``, each checked to be one."""
    lines = _numbered_json_lines(path)
    for number, line in lines:
        if not _is_workload(line):
            raise _line_error(path, number, "is not a workload [structural hash, TIR]")
    return [line for _, line in lines]


def read_records(path: Path, workloads: int) -> list:
    """The record lines of ``path``, each checked to be one that points at one of ``workloads``
    workload lines."""
    lines = _numbered_json_lines(path)
    for number, line in lines:
        if not _is_record(line, workloads):
            raise _line_error(path, number, "is not a tuning record [workload index < "
                              f"{workloads}, [trace, run seconds, ...]]")
    return [line for _, line in lines]


def merge(into: Path, sources: Sequence[Path]) -> int:
    """Append the tuning records (and distilled trial counts) of the databases in ``sources`` to
    the one in ``into``; return how many records were added. Every source is checked before
    anything is written. Workloads are matched by their JSON line (structural hash and TIR); new
    ones are appended, and records are re-pointed at ``into``'s line numbers. The workload file is
    written before the record file, each atomically: an interrupted merge leaves at most unused
    workload lines."""
    for source in sources:
        if into.resolve() == source.resolve():
            raise TuningError(f"Cannot merge the tuning database in {into} into itself.",
                              hint="--merge takes another tuning-log root.")
        if not (source / WORKLOAD_FILE).exists():
            raise TuningError(f"No tuning database in {source} (no {WORKLOAD_FILE}) to merge.",
                              hint="Pass the root that tune wrote to (its --logs); the target's "
                                   "folder inside it is used.")
    added = 0
    for source in sources:
        added += _merge_one(into, source)
    return added


def _merge_one(into: Path, source: Path) -> int:
    repair(source)
    into.mkdir(parents=True, exist_ok=True)
    repair(into)
    ours = read_workloads(into / WORKLOAD_FILE)
    read_records(into / RECORD_FILE, len(ours))
    theirs = read_workloads(source / WORKLOAD_FILE)
    index_of = {json.dumps(w, sort_keys=True): i for i, w in enumerate(ours)}
    mapping = {}
    for i, workload in enumerate(theirs):
        key = json.dumps(workload, sort_keys=True)
        if key not in index_of:
            index_of[key] = len(ours)
            ours.append(workload)
        mapping[i] = index_of[key]
    records = [[mapping[i], record] for i, record in read_records(source / RECORD_FILE, len(theirs))]
    atomic_write(into / WORKLOAD_FILE, json_lines(ours))
    existing = (into / RECORD_FILE).read_text() if (into / RECORD_FILE).exists() else ""
    atomic_write(into / RECORD_FILE, existing + json_lines(records))
    trials = read_trials(into)
    for shash, count in read_trials(source).items():
        trials[shash] = trials.get(shash, 0) + count
    if trials:
        write_trials(into, trials)
    return len(records)


def count_records(folder: Path) -> int:
    path = folder / RECORD_FILE
    if not path.exists():
        return 0
    with path.open() as handle:
        return sum(1 for line in handle if line.strip())


def _lock(folder: Path) -> FileLock:
    return FileLock(str(folder / LOCK_FILE))


@contextlib.contextmanager
def locked(folder: Path, purpose: str):
    """Hold ``folder``'s database lock (waiting, with a notice, while another process holds it).

    Every writer holds it: ``tune`` for its whole run (its records point at workload lines by
    number, so no other process may rewrite the files under it), ``distill`` from its read to its
    replace, and a reader's ``repair``."""
    with writing(folder, "the tuning database", "--logs"):
        folder.mkdir(parents=True, exist_ok=True)
        lock = _lock(folder)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            notice(f"waiting for another tvm-pipeline process to finish with the tuning database "
                   f"in {folder} before {purpose}")
            lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _snapshot(folder: Path, into: Path) -> Path:
    """A repaired copy of ``folder``'s database in ``into`` (while a writer holds the lock)."""
    for name in (WORKLOAD_FILE, RECORD_FILE):
        if (folder / name).exists():
            shutil.copyfile(folder / name, into / name)
    repair(into)
    return into


def _load(folder: Path, create: bool):
    from tvm.s_tir import meta_schedule as ms  # pylint: disable=import-outside-toplevel

    try:
        return ms.database.JSONDatabase(str(folder / WORKLOAD_FILE), str(folder / RECORD_FILE),
                                        allow_missing=create)
    except TVM_ERRORS as err:
        raise TuningError(f"The tuning database in {folder} cannot be loaded: "
                          f"{str(err).strip()[-300:]}",
                          hint="Move the folder aside and re-tune, or restore it from git.") from err


def open_json_database(folder: Path, *, create: bool = False):
    """A MetaSchedule JSONDatabase on ``folder`` after repairing it.

    ``create``: the caller writes to it and holds :func:`locked`. A reader repairs the files in
    place when it can take the lock at once; while a writer holds it, it loads a repaired copy."""
    if create:
        folder.mkdir(parents=True, exist_ok=True)
        repair(folder)
        return _load(folder, create)
    if not os.access(folder, os.W_OK):
        return _load(folder, create)
    lock = _lock(folder)
    try:
        with lock.acquire(timeout=0):
            repair(folder)
            return _load(folder, create)
    except Timeout:
        with tempfile.TemporaryDirectory(prefix="tvm-pipeline-db-") as copy:
            return _load(_snapshot(folder, Path(copy)), create)



def union(databases: list):
    """One database over ``databases`` (an empty one for none)."""
    from tvm.s_tir import meta_schedule as ms  # pylint: disable=import-outside-toplevel

    if not databases:
        return ms.database.MemoryDatabase()
    return databases[0] if len(databases) == 1 else ms.database.UnionDatabase(*databases)
