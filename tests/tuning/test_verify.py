"""Kernel-level checks of schedules, and the tuning guard that rejects wrong candidates."""

from __future__ import annotations

import tvm
from tvm.s_tir import meta_schedule as ms

from conftest import matmul_relu_kernel
from tvm_pipeline.tuning import measure, verify
from tvm_pipeline.tuning.builders import PersistentLocalBuilder

TARGET = {"kind": "llvm", "num-cores": 2}


def test_check_kernel_tells_a_wrong_schedule_from_a_right_one():
    mod, good, wrong = matmul_relu_kernel()
    target = tvm.target.Target(TARGET)
    reference = verify.Reference.of(mod, target)
    try:
        assert verify.check_kernel(good.mod, target, reference) <= 1.0
        assert verify.check_kernel(wrong.mod, target, reference) > 100.0
    finally:
        reference.remove()


def test_guard_turns_a_wrong_new_best_into_a_failed_run():
    mod, good, wrong = matmul_relu_kernel()
    target = tvm.target.Target(TARGET)
    builder = PersistentLocalBuilder(1, 60.0)
    runner = ms.runner.LocalRunner(timeout_sec=60, evaluator_config=measure.LOCAL_EVALUATOR)
    guard = measure.CorrectnessGuard(runner, builder, target)
    args_info = ms.arg_info.ArgInfo.from_prim_func(mod["main"])

    def measure_batch(*schedules):
        built = builder.build([ms.builder.BuilderInput(s.mod, target) for s in schedules])
        assert all(b.error_msg is None for b in built), [b.error_msg for b in built]
        inputs = [ms.runner.RunnerInput(b.artifact_path, "cpu", args_info) for b in built]
        return [f.result() for f in guard.run(inputs)]

    try:
        guard.set_task(0, mod, None)
        [bad] = measure_batch(wrong)                  # first ever candidate of the task: checked
        assert bad.run_secs is None and "wrong output" in bad.error_msg
        [ok] = measure_batch(good)
        assert ok.error_msg is None and ok.run_secs
        assert guard.checked == 2 and len(guard.rejected) == 1
        # a slower correct candidate is not re-checked; a wrong one claiming to be faster is
        guard.tasks[0].best_s = 1e9
        [bad_again] = measure_batch(wrong)
        assert "wrong output" in bad_again.error_msg and guard.checked == 3
    finally:
        builder.close()
        guard.close()


def test_integer_results_may_differ_by_one_unit_on_a_few_elements_only():
    """A requantized 8-bit output is a rounded float: a schedule that computes the float one ulp
    differently (an FMA) moves a value on a rounding tie by one unit, which passes; more such
    elements, or any element further off, fail."""
    import numpy as np

    want = np.arange(10_000).astype(np.uint8).reshape(100, 100)
    tie = want.copy()
    tie[3, 4] += 1
    assert verify.deviation([tie], [want]) <= 1.0
    assert verify.deviation([want], [want]) == 0.0
    spread = want.copy()
    spread[:, :20] += 1                      # 20% of the elements one unit off: a wrong rounding
    assert verify.deviation([spread], [want]) > 1.0
    far = want.copy()
    far[3, 4] += 2
    assert verify.deviation([far], [want]) > 1.0
    floats = want.astype(np.float32)         # floats keep the relative rule (255 * 1e-3 here)
    off = floats.copy()
    off[3, 4] += 1.0
    assert verify.deviation([off], [floats]) > 1.0
