"""Borrowing the schedule of a similar tuned kernel for a kernel without a record."""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np
import tvm
from tvm.s_tir import meta_schedule as ms

from conftest import matmul_relu_kernel
from tvm_pipeline.target.spec import TargetSpec
from tvm_pipeline.tuning import borrow, database as db, verify

TARGET = {"kind": "llvm", "num-cores": 2}


def _database_with(tmp_path, mod, sch, target):
    database = db.open_json_database(tmp_path / "logs", create=True)
    workload = database.commit_workload(mod)
    database.commit_tuning_record(ms.database.TuningRecord(
        sch.trace, workload, [1e-5], target, ms.arg_info.ArgInfo.from_prim_func(mod["main"])))
    return database


def test_a_kernel_of_another_size_borrows_the_tuned_schedule_and_stays_correct(tmp_path):
    target = tvm.target.Target(TARGET)
    tuned_mod, good, _ = matmul_relu_kernel()                   # 32x64 @ 64x48, tuned
    database = _database_with(tmp_path, tuned_mod, good, target)
    new_mod, _, _ = matmul_relu_kernel(40, 64, 56)             # never tuned
    # plus a kernel of another structure, which nothing can lend a schedule to
    a = tvm.te.placeholder((16,), name="A")
    other = tvm.te.create_prim_func([a, tvm.te.compute((16,), lambda i: a[i] + 1.0, name="B")])
    mod = tvm.IRModule({"new": new_mod["main"], "other": other})

    spec = TargetSpec("test", Path("test.json"), TARGET, arch=platform.machine())  # runs here
    out, borrowed = borrow.borrow_schedules(mod, [database], target, spec=spec)

    assert borrowed == ["new"]
    assert borrow.is_scheduled(out["new"]) and not borrow.is_scheduled(out["other"])
    assert not tvm_ffi_equal(out["new"], new_mod["main"])       # really rescheduled
    args = verify.seeded_arguments(new_mod)
    want = verify.run_kernel(new_mod, target, [x.copy() for x in args])
    got = verify.run_kernel(tvm.IRModule({"main": out["new"]}), target, args)
    assert verify.deviation(got, want) <= 1.0
    assert np.abs(got[-1]).max() > 0                           # ReLU output is not all zeros


def test_adapted_tiles_divide_the_new_extent_keeping_inner_factors():
    assert borrow._adapted_tile([4, 7, 2, 16], 896) == [4, 7, 2, 16]   # same extent: unchanged
    tiles = borrow._adapted_tile([4, 7, 2, 16], 96)
    assert np.prod(tiles) == 96 and tiles[-1] == 16 and tiles[-2] == 2
    tiles = borrow._adapted_tile([1, 1, 1, 64], 24)
    assert np.prod(tiles) == 24 and tiles[-1] == 24


def tvm_ffi_equal(a, b) -> bool:
    import tvm_ffi  # pylint: disable=import-outside-toplevel

    return tvm_ffi.structural_equal(a, b)
