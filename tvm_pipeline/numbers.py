"""Numbers judged one way everywhere: the tolerance comparator, the seeded inputs, a failed run.

**The comparison rule** (validation against ONNX Runtime, kernel checks while tuning, device checks
on PoCL): an element passes when both values are finite and ``|got - want| <= atol + rtol * s``,
where ``s`` is ``|want|`` element-wise (or one ``scale`` per tensor, for kernel checks: the largest
finite ``|want|``); or when both are the same non-finite value (NaN and NaN, +Inf and +Inf, -Inf
and -Inf). Any other non-finite value on either side fails that element. Non-finite elements
never enter the error magnitudes, so one NaN never hides the errors of the other elements. Whether
matching non-finite values are acceptable at all is the caller's decision (validation refuses them
unless ``--allow-nonfinite``: agreement on NaN proves nothing).

**Seeded inputs**: floats uniform in [-1, 1] (the MobileNet preprocessing range), integers in
[0, 4), booleans at random, from ``numpy.random.default_rng(seed)``.

**A failed run**: MetaSchedule records a candidate that failed to build or run with a run time of
1e10 s; any mean of 1e9 s or more, or no time at all, is a failed run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

FAILED_RUN_S = 1e9


@dataclass(frozen=True)
class Comparison:
    """Element-wise comparison of two arrays of one shape (see the module's rule)."""

    diff: np.ndarray          # |got - want| where both are finite, else 0
    allowed: np.ndarray       # atol + rtol * scale, broadcast to the arrays' shape
    finite: np.ndarray        # both finite
    mismatched: np.ndarray    # a non-finite value on either side that the other does not match

    @property
    def max_abs(self) -> float:
        return float(self.diff.max(initial=0.0))

    @property
    def deviation(self) -> float:
        """The worst error in units of the allowed error (<= 1 passes; inf: non-finite mismatch)."""
        if self.mismatched.any():
            return float("inf")
        return float((self.diff / self.allowed).max(initial=0.0))

    @property
    def passed(self) -> bool:
        return self.deviation <= 1.0


def compare_arrays(got: np.ndarray, want: np.ndarray, atol: float, rtol: float,
                   scale: float | None = None) -> Comparison:
    """Compare ``got`` with ``want`` (same shape) under the module's rule."""
    g, w = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    finite = np.isfinite(g) & np.isfinite(w)
    same = (g == w) | (np.isnan(g) & np.isnan(w))
    w0 = np.where(finite, w, 0.0)
    diff = np.where(finite, np.abs(np.where(finite, g, 0.0) - w0), 0.0)
    magnitude = np.abs(w0) if scale is None else np.full(w0.shape, scale)
    allowed = np.maximum(atol + rtol * magnitude, np.finfo(np.float64).tiny)
    return Comparison(diff, allowed, finite, ~finite & ~same)


def finite_scale(want: np.ndarray) -> float:
    """The largest finite magnitude of ``want`` (the per-tensor scale of kernel checks)."""
    w = np.asarray(want, dtype=np.float64)
    return float(np.abs(w[np.isfinite(w)]).max(initial=0.0))


def seeded_array(rng: np.random.Generator, shape: Sequence[int], dtype) -> np.ndarray:
    """One seeded input of ``shape`` and ``dtype`` (see the module's rule)."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return rng.uniform(-1.0, 1.0, shape).astype(dtype)
    if dtype.kind == "b":
        return rng.random(shape) < 0.5
    return rng.integers(0, 4, shape).astype(dtype)


def mean_run_seconds(run_secs) -> float | None:
    """The mean of a record's run times, or None for a failed run."""
    secs = [float(s) for s in run_secs or []]
    if not secs:
        return None
    mean = sum(secs) / len(secs)
    return None if mean >= FAILED_RUN_S else mean
