"""One comparison rule, one seeded-input generator and one failed-run predicate for every check."""

from __future__ import annotations

import numpy as np

from tvm_pipeline.codegen.devicecheck.numerics import _compare as device_compare
from tvm_pipeline.numbers import compare_arrays, mean_run_seconds, seeded_array
from tvm_pipeline.run.validate import Tolerances, compare
from tvm_pipeline.tuning.verify import deviation

NAN, INF = float("nan"), float("inf")


def test_one_nan_never_hides_the_other_errors():
    want = np.array([NAN, 1.0, 2.0, 3.0, 4.0], np.float32)
    got = np.array([NAN, 1.0, 2.0, 3.0, 9.0], np.float32)      # matching NaN, one real error
    assert not compare_arrays(got, want, 1e-5, 1e-3).passed
    assert deviation([got], [want]) > 1                        # kernel checks (tuning, distill)
    assert device_compare([got], [want], 1e-5, 1e-3)[1] is False   # PoCL device checks
    report = compare([[got]], [[want]], ["y"], Tolerances(allow_nonfinite=True))
    assert not report.passed and "max abs error 5.0e+00" in report.outputs[0].failure


def test_non_finite_values_must_match_exactly():
    want = np.array([INF, -INF, NAN, 0.0])
    assert compare_arrays(want.copy(), want, 0, 0).passed
    for got in ([-INF, -INF, NAN, 0.0], [INF, -INF, 0.0, 0.0], [INF, -INF, NAN, NAN]):
        c = compare_arrays(np.array(got), want, 1.0, 1.0)
        assert not c.passed and c.mismatched.sum() == 1 and c.deviation == INF


def test_seeded_inputs_and_failed_runs():
    rng = np.random.default_rng(0)
    f, i, b = (seeded_array(rng, (64,), t) for t in ("float32", "int32", "bool"))
    assert f.dtype == np.float32 and -1 <= f.min() and f.max() <= 1
    assert i.dtype == np.int32 and set(np.unique(i)) <= {0, 1, 2, 3} and b.dtype == bool
    again = seeded_array(np.random.default_rng(0), (64,), "float32")
    assert np.array_equal(f, again)
    assert mean_run_seconds([1e-3, 3e-3]) == 2e-3
    assert mean_run_seconds([1e10]) is None and mean_run_seconds([]) is None
    assert mean_run_seconds(None) is None
