"""Distilling a tuning database: best verified record per workload, trial counts kept."""

from __future__ import annotations

import json

import pytest
from tvm.s_tir import meta_schedule as ms

from conftest import matmul_relu_kernel
from tvm_pipeline import database as db
from tvm_pipeline.errors import TuningError
from tvm_pipeline.stages.distill import distill
from tvm_pipeline.stages.tune import _records_per_workload
from tvm_pipeline.targets import resolve_target


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
