"""Kernel-level correctness of tuned schedules: a scheduled kernel must compute what the
unscheduled one computes.

MetaSchedule only times candidates; a schedule that is fast and wrong (a bad rewrite, a codegen
bug) would win its task and land in the database. Checks compare a candidate against its workload
built unscheduled, on seeded random arguments, on this machine:

* ``Reference.of(workload, target)`` builds and runs the unscheduled kernel once per task;
* ``check_kernel`` (picklable: it runs in the builder's worker processes) builds a scheduled module,
  runs it on the same arguments, and returns the worst deviation over every argument.

Weights that the schedule packs (``RewriteLayout``) are repacked inside the checked build (the
layout-rewrite block is kept), so the same unpacked arguments feed both builds.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

import numpy as np

from ..errors import TVM_ERRORS, raise_if_interrupted
from ..numbers import compare_arrays, finite_scale, seeded_array
from ..target.spec import use_physical_cores

RTOL = 1e-3          # relative to the largest magnitude of each compared argument
ATOL = 1e-5
INTEGER_OFF_SHARE = 1e-3   # of an integer result's elements, at most one unit off


@dataclass(frozen=True)
class Reference:
    """Seeded arguments and the unscheduled kernel's results, saved for worker processes."""

    path: str            # .npz: in_<i> arguments before the call, out_<i> after

    @staticmethod
    def of(workload, target) -> "Reference":
        args, after = reference_run(workload, target)
        handle, path = tempfile.mkstemp(prefix="tvm-pipeline-ref-", suffix=".npz")
        os.close(handle)
        np.savez(path, **{f"in_{i}": a for i, a in enumerate(args)},
                 **{f"out_{i}": a for i, a in enumerate(after)})
        return Reference(path)

    def load(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        with np.load(self.path) as data:
            n = sum(1 for k in data.files if k.startswith("in_"))
            return [data[f"in_{i}"] for i in range(n)], [data[f"out_{i}"] for i in range(n)]

    def remove(self) -> None:
        if os.path.exists(self.path):
            os.unlink(self.path)


def _main(mod):
    return mod["main"] if any(gv.name_hint == "main" for gv in mod.get_global_vars()) \
        else next(iter(f for _, f in mod.functions_items()))


def seeded_arguments(mod, seed: int = 0) -> list[np.ndarray]:
    from tvm.s_tir import meta_schedule as ms  # pylint: disable=import-outside-toplevel

    rng = np.random.default_rng(seed)
    return [seeded_array(rng, [int(s) for s in info.shape], str(info.dtype))
            for info in ms.arg_info.ArgInfo.from_prim_func(_main(mod))]


def run_kernel(mod, target, args: list[np.ndarray]) -> list[np.ndarray]:
    """Build ``mod`` for ``target`` (keeping any weight-layout rewrite inside) and run it here."""
    return run_kernel_timed(mod, target, args, timed=False)[0]


def run_kernel_timed(mod, target, args: list[np.ndarray],
                     timed: bool = True) -> tuple[list[np.ndarray], float]:
    """``run_kernel``, then (``timed``) the kernel's mean time in seconds over 2 repeats of at least
    10 ms each, on the same arguments (nan when not timed)."""
    import tvm  # pylint: disable=import-outside-toplevel
    from tvm.tirx import build as tvm_build  # pylint: disable=import-outside-toplevel

    use_physical_cores()
    func = _main(mod).with_attr("global_symbol", "main")
    lib = tvm_build(tvm.IRModule({"main": func}), target=target)
    dev = tvm.cpu()
    tensors = [tvm.runtime.tensor(a, dev) for a in args]
    lib["main"](*tensors)
    outputs = [t.numpy() for t in tensors]
    if not timed:
        return outputs, float("nan")
    evaluator = lib.time_evaluator("main", dev, number=1, repeat=2, min_repeat_ms=10)
    return outputs, float(evaluator(*tensors).mean)


def deviation(got: list[np.ndarray], want: list[np.ndarray]) -> float:
    """The worst |got - want| over all arguments, in units of that argument's tolerance
    (<= 1 is a pass; the rule of :mod:`tvm_pipeline.numbers`, scaled by the argument's largest
    finite magnitude; integer arguments by :func:`integer_deviation`)."""
    worst = 0.0
    for g, w in zip(got, want):
        if g.shape != w.shape:
            return float("inf")
        worst = max(worst, integer_deviation(g, w) if w.dtype.kind in "iu" else
                    compare_arrays(g, w, ATOL, RTOL, finite_scale(w)).deviation)
    return worst


def integer_deviation(got: np.ndarray, want: np.ndarray) -> float:
    """Integer results, in units of their tolerance: one unit either way on at most
    ``INTEGER_OFF_SHARE`` of the elements. A requantized 8-bit output is a float rounded to an
    integer, and a schedule may compute that float one ulp differently (fusing a multiply and an
    add into an FMA, dividing by a reciprocal), which moves a value that lies on a rounding tie by
    one unit. A wrong schedule moves more elements, or further."""
    diff = np.abs(got.astype(np.int64) - want.astype(np.int64))
    share = np.count_nonzero(diff) / max(diff.size, 1) / INTEGER_OFF_SHARE
    furthest = float(diff.max(initial=0))
    return max(furthest, share) if furthest > 1 else share


def reference_run(workload, target) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """In-process: seeded arguments, and the unscheduled ``workload``'s results on them."""
    args = seeded_arguments(workload)
    return args, run_kernel(workload, target, [a.copy() for a in args])


def schedule_deviation(workload, scheduled, target) -> float:
    """In-process: the deviation of ``scheduled`` from the unscheduled ``workload`` (<= 1: correct)."""
    args, want = reference_run(workload, target)
    return deviation(run_kernel(scheduled, target, args), want)


def _run_built(function, args: list[np.ndarray]) -> list[np.ndarray]:
    import tvm  # pylint: disable=import-outside-toplevel

    tensors = [tvm.runtime.tensor(a, tvm.cpu()) for a in args]
    function(*tensors)
    return [t.numpy() for t in tensors]


def schedule_deviations(pairs: list[tuple], target) -> list[float]:
    """In-process, for many kernels at once: the deviation of each ``(unscheduled, scheduled)``
    PrimFunc pair (<= 1: correct). Every function goes into one library, so the compiler's fixed
    cost (code generation and JIT, ~0.15 s per library here) is paid once, not per kernel."""
    import tvm  # pylint: disable=import-outside-toplevel
    from tvm.tirx import build as tvm_build  # pylint: disable=import-outside-toplevel

    if not pairs:
        return []
    use_physical_cores()
    funcs = {}
    for i, (reference, scheduled) in enumerate(pairs):
        funcs[f"reference_{i}"] = reference.with_attr("global_symbol", f"reference_{i}")
        funcs[f"scheduled_{i}"] = scheduled.with_attr("global_symbol", f"scheduled_{i}")
    lib = tvm_build(tvm.IRModule(funcs), target=target)
    out = []
    for i, (reference, _) in enumerate(pairs):
        args = seeded_arguments(tvm.IRModule({"main": reference}))
        want = _run_built(lib[f"reference_{i}"], [a.copy() for a in args])
        out.append(deviation(_run_built(lib[f"scheduled_{i}"], args), want))
    return out


def check_target(spec, target):
    """Where schedules of ``target`` (from a TargetSpec ``spec``) are checked: the target itself
    when it runs here, else this machine's CPU; at LLVM ``-O0``. What is checked is the schedule,
    a transformation of the loop nest: the same scheduled TIR compiled for this host must compute
    what the unscheduled kernel computes, and unoptimised code compiles 3x faster (the artifact's
    optimised code is then checked whole against ONNX Runtime by validation, on the device for
    cross targets)."""
    import tvm  # pylint: disable=import-outside-toplevel
    from ..target.spec import physical_cores  # pylint: disable=import-outside-toplevel

    base = dict(spec.tvm) if spec.runs_on_host else {"kind": "llvm", "num-cores": physical_cores()}
    return tvm.target.Target({**base, "opt-level": 0})


def checked_deviations(pairs: list[tuple], target) -> list[float]:
    """:func:`schedule_deviations`, and if the one library does not build, pair by pair, so
    that only the culprit fails (``inf``)."""

    try:
        return schedule_deviations(pairs, target)
    except TVM_ERRORS:
        raise_if_interrupted()
        out = []
        for pair in pairs:
            try:
                out.append(schedule_deviations([pair], target)[0])
            except TVM_ERRORS:
                raise_if_interrupted()
                out.append(float("inf"))
        return out


def time_kernels(funcs: list, target, repeat: int = 3) -> list[float]:
    """In-process: seconds per call of each PrimFunc (best of ``repeat`` timings of at least 5 ms
    each) on seeded arguments, weight-layout rewrites left out (as MetaSchedule measures), all
    built into one library; nan for a kernel whose layout rewrite TVM cannot take out (its time
    would include repacking its weights on every call)."""
    import tvm  # pylint: disable=import-outside-toplevel
    from tvm.tirx import build as tvm_build  # pylint: disable=import-outside-toplevel

    if not funcs:
        return []
    use_physical_cores()
    named = {}
    for i, func in enumerate(funcs):
        measured = _without_layout_rewrite(func.with_attr("global_symbol", f"kernel_{i}"))
        if measured is not None:
            named[f"kernel_{i}"] = measured
    lib = tvm_build(tvm.IRModule(named), target=target) if named else None
    dev = tvm.cpu()
    out = []
    for i in range(len(funcs)):
        name = f"kernel_{i}"
        if name not in named:
            out.append(float("nan"))
            continue
        tensors = [tvm.runtime.tensor(a, dev) for a in
                   seeded_arguments(tvm.IRModule({"main": named[name]}))]
        timer = lib.time_evaluator(name, dev, number=1, repeat=repeat, min_repeat_ms=5)
        out.append(float(min(timer(*tensors).results)))
    return out


def _without_layout_rewrite(func):
    """``func`` without its weight-layout rewrite block, or None where TVM cannot take it out
    (seen on tensorized INT8 kernels whose packed weight is indexed by an expression)."""
    import tvm  # pylint: disable=import-outside-toplevel
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock  # pylint: disable=import-outside-toplevel

    try:
        mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(tvm.IRModule({"f": func}))
    except TVM_ERRORS:
        raise_if_interrupted()
        return None
    return mod["f"]


def check_kernel(mod, target, reference: Reference) -> float:
    """Worker side: the deviation of scheduled ``mod`` from the reference (<= 1: correct)."""
    args, want = reference.load()
    return deviation(run_kernel(mod, target, args), want)
