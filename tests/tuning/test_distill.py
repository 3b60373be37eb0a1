"""Distilling a tuning database: best verified record per workload, trial counts kept."""

from __future__ import annotations

import json

import pytest
from tvm.s_tir import meta_schedule as ms

from conftest import matmul_relu_kernel
from tvm_pipeline.tuning import database as db
from tvm_pipeline.errors import TuningError
from tvm_pipeline.tuning.distill import distill
from tvm_pipeline.tuning.tune import _records_per_workload
from tvm_pipeline.target.spec import resolve_target


def test_distill_keeps_the_fastest_correct_record_and_counts_the_rest(tmp_path):
    spec = resolve_target(None)                      # this machine's target: records are verified
    target = spec.to_tvm()
    mod, good, wrong = matmul_relu_kernel()
    folder = tmp_path / spec.name
    database = db.open_json_database(folder, create=True)
    workload = database.commit_workload(mod)
    args_info = ms.arg_info.ArgInfo.from_prim_func(mod["main"])
    for sch, secs in ((good, 3e-6), (wrong, 1e-6), (good, 5e-6), (good, 1e10)):  # 1e10: failed
        database.commit_tuning_record(ms.database.TuningRecord(sch.trace, workload, [secs], target,
                                                               args_info))
    before = (folder / db.RECORD_FILE).stat().st_size

    result = distill(folder, spec, keep=1)

    assert (result.records_before, result.records_after, result.verified) == (4, 1, 1)
    assert len(result.rejected) == 1 and "1.0 us record deviates" in result.rejected[0]
    assert (folder / db.RECORD_FILE).stat().st_size < before
    # a fresh MetaSchedule database loads the result and returns the fast correct record
    fresh = db.open_json_database(folder)
    [best] = fresh.get_top_k(fresh.commit_workload(mod), 5)
    assert [float(s) for s in best.run_secs] == [3e-6]
    # the dropped trials still count against --trials-per-task
    assert json.loads((folder / db.TRIALS_FILE).read_text()) == {str(workload.as_json()[0]): 3}
    assert list(_records_per_workload(fresh, folder).values()) == [4]


def test_distill_without_a_database_says_what_to_do(tmp_path):
    spec = resolve_target(None)
    with pytest.raises(TuningError, match="No tuning database.*tvm-pipeline tune"):
        distill(tmp_path / spec.name, spec)


def _commit(folder, mod, schedules_and_secs, target):
    database = db.open_json_database(folder, create=True)
    workload = database.commit_workload(mod)
    args_info = ms.arg_info.ArgInfo.from_prim_func(mod["main"])
    for sch, secs in schedules_and_secs:
        database.commit_tuning_record(ms.database.TuningRecord(sch.trace, workload, [secs], target,
                                                               args_info))
    return workload


def test_distill_merges_another_database_and_keeps_the_best_of_both(tmp_path):
    spec = resolve_target(None)
    target = spec.to_tvm()
    mod, good, wrong = matmul_relu_kernel()
    other_mod, other_good, _ = matmul_relu_kernel(32, 16, 8)
    ours, theirs = tmp_path / "ours" / spec.name, tmp_path / "theirs" / spec.name
    workload = _commit(ours, mod, [(good, 5e-6)], target)
    _commit(theirs, mod, [(good, 3e-6), (wrong, 1e-6)], target)   # same kernel, faster record
    _commit(theirs, other_mod, [(other_good, 2e-6)], target)       # a kernel we do not have
    db.write_trials(theirs, {str(workload.as_json()[0]): 10})      # trials distilled over there

    result = distill(ours, spec, merge=[theirs])

    assert result.merged == 3 and result.records_after == 2 and len(result.rejected) == 1
    fresh = db.open_json_database(ours)
    [best] = fresh.get_top_k(fresh.commit_workload(mod), 5)
    assert [float(s) for s in best.run_secs] == [3e-6]
    [other] = fresh.get_top_k(fresh.commit_workload(other_mod), 5)
    assert [float(s) for s in other.run_secs] == [2e-6]
    # shared kernel: one workload line; trials = 3 records seen + 10 distilled elsewhere
    assert len((ours / db.WORKLOAD_FILE).read_text().splitlines()) == 2
    counts = {str(w.as_json()[0]): n for w, n in _records_per_workload(fresh, ours).items()}
    assert counts[str(workload.as_json()[0])] == 13
    # the merged database is left as it was
    assert db.count_records(theirs) == 3


def test_distill_merge_refuses_a_root_without_a_database_or_itself_and_writes_nothing(tmp_path):
    spec = resolve_target(None)
    mod, good, _ = matmul_relu_kernel()
    ours = tmp_path / spec.name
    _commit(ours, mod, [(good, 5e-6)], spec.to_tvm())
    theirs = tmp_path / "theirs" / spec.name
    _commit(theirs, mod, [(good, 3e-6)], spec.to_tvm())
    with pytest.raises(TuningError, match="No tuning database.*to merge"):   # checked before any
        distill(ours, spec, merge=[theirs, tmp_path / "nowhere" / spec.name])  # source is merged
    with pytest.raises(TuningError, match="into itself"):
        distill(ours, spec, merge=[ours])
    assert db.count_records(ours) == 1


@pytest.mark.parametrize("bad_line, file", [
    ('{"not": "a record"}', db.RECORD_FILE),
    ('[7, [[], [1e-6], {}, []]]', db.RECORD_FILE),        # points at a workload that is not there
    ('[0, [[], ["fast"], {}, []]]', db.RECORD_FILE),
    ('["hash"]', db.WORKLOAD_FILE),
])
def test_distill_of_a_database_with_a_wrong_schema_names_file_and_line(cli, tmp_path, bad_line, file):
    spec = resolve_target(None)
    mod, good, _ = matmul_relu_kernel()
    folder = tmp_path / "logs" / spec.name
    _commit(folder, mod, [(good, 3e-6), (good, 4e-6)], spec.to_tvm())
    path = folder / file
    path.write_text(path.read_text() + bad_line + "\n")
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    res = cli("distill", "--logs", tmp_path / "logs")
    assert res.code == TuningError.exit_code, res.err
    line = len(path.read_text().splitlines())
    assert f"{path}, line {line}" in res.err and "Error" not in res.err
    after = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    assert {k: v for k, v in after.items() if k != db.LOCK_FILE} == before


def test_distill_merge_with_replace_keeps_the_retimed_records_of_the_kernels_it_covers(tmp_path):
    """Records re-timed on another machine replace the old ones of their kernels even when the
    old ones are faster (timed on a faster machine); kernels the merge does not cover keep
    theirs; and where no re-timed record passes the check, the old ones stay."""
    spec = resolve_target(None)
    target = spec.to_tvm()
    mod, good, wrong = matmul_relu_kernel()
    other_mod, other_good, other_wrong = matmul_relu_kernel(32, 16, 8)
    third_mod, third_good, _ = matmul_relu_kernel(16, 16, 16)
    ours, theirs = tmp_path / "ours" / spec.name, tmp_path / "theirs" / spec.name
    _commit(ours, mod, [(good, 1e-6), (good, 2e-6)], target)       # the other machine: faster
    _commit(ours, other_mod, [(other_good, 4e-6)], target)
    _commit(ours, third_mod, [(third_good, 5e-6)], target)         # not re-timed
    _commit(theirs, mod, [(good, 3e-6)], target)
    _commit(theirs, other_mod, [(other_wrong, 1e-6)], target)      # re-timed, but wrong

    result = distill(ours, spec, merge=[theirs], replace=True)

    fresh = db.open_json_database(ours)
    best = {m: [float(s) for s in fresh.get_top_k(fresh.commit_workload(m), 5)[0].run_secs]
            for m in (mod, other_mod, third_mod)}
    assert best == {mod: [3e-6], other_mod: [4e-6], third_mod: [5e-6]}
    assert result.replaced == 2 and result.records_after == 3 and len(result.rejected) == 1
    # without --replace the faster old record would have won
    plain = tmp_path / "plain" / spec.name
    _commit(plain, mod, [(good, 1e-6)], target)
    distill(plain, spec, merge=[theirs])
    again = db.open_json_database(plain)
    assert [float(s) for s in again.get_top_k(again.commit_workload(mod), 1)[0].run_secs] == [1e-6]


def test_distill_replace_without_merge_is_a_usage_error(cli, tmp_path):
    res = cli("distill", "--logs", tmp_path, "--replace")
    assert res.code == 2 and "--replace needs --merge" in res.err and "Traceback" not in res.err


def test_distill_prunes_to_the_live_kernels_and_renumbers_the_records(tmp_path):
    spec = resolve_target(None)
    target = spec.to_tvm()
    kernels = [matmul_relu_kernel(*shape) for shape in ((32, 64, 48), (32, 16, 8), (16, 16, 16))]
    folder = tmp_path / spec.name
    workloads = [_commit(folder, mod, [(good, 1e-6 * (i + 2))], target)
                 for i, (mod, good, _) in enumerate(kernels)]
    orphan, _, _ = matmul_relu_kernel(8, 8, 8)
    db.open_json_database(folder).commit_workload(orphan)          # a workload without records
    live = frozenset(str(w.as_json()[0]) for w in (workloads[0], workloads[2]))

    result = distill(folder, spec, live=live)

    assert (result.workloads, result.workloads_after, result.pruned) == (4, 2, 1)
    assert result.records_after == 2
    fresh = db.open_json_database(folder)
    for index in (0, 2):      # the kept records point at their own kernels after renumbering
        [best] = fresh.get_top_k(fresh.commit_workload(kernels[index][0]), 5)
        assert [float(s) for s in best.run_secs] == [1e-6 * (index + 2)]
    assert not db.open_json_database(folder).has_workload(kernels[1][0])
    assert not db.open_json_database(folder).has_workload(orphan)


def test_an_interrupted_replace_is_finished_once_journaled_and_undone_before(tmp_path, monkeypatch):
    spec = resolve_target(None)
    mod, good, _ = matmul_relu_kernel()
    folder = tmp_path / spec.name
    _commit(folder, mod, [(good, 3e-6)], spec.to_tvm())
    workloads = db.read_workloads(folder / db.WORKLOAD_FILE)
    records = db.read_records(folder / db.RECORD_FILE, 1)
    faster = [[0, [records[0][1][0], [1e-6], *records[0][1][2:]]]]
    monkeypatch.setattr(db, "_finish_replace", lambda folder: None)    # killed before the renames
    db.replace(folder, workloads, faster)
    (folder / db.JOURNAL_FILE).unlink()                                # ... or before the journal
    monkeypatch.undo()
    db.repair(folder)
    assert db.read_records(folder / db.RECORD_FILE, 1) == records      # undone: the old database
    assert not list(folder.glob("*.new"))
    monkeypatch.setattr(db, "_finish_replace", lambda folder: None)
    db.replace(folder, workloads, faster)                              # journaled, then killed
    monkeypatch.undo()
    db.repair(folder)
    assert db.read_records(folder / db.RECORD_FILE, 1) == faster       # finished: the new one
    assert not (folder / db.JOURNAL_FILE).exists()
