"""Schedules for kernels the tuning database does not cover, borrowed from similar tuned kernels.

A model that was never tuned (MobileNet V1 0.75-192 when the logs hold 1.0-224) has the same kinds
of kernels as a tuned one, at other sizes: a 1x1 convolution + bias + ReLU6 of 24x24x192 is
structurally a 1x1 convolution of 14x14x512. For each kernel without a record:

1. candidates: the best record of every tuned workload with the same structure (the same blocks,
   by name and iterator kinds, and the same kernel window), nearest in loop extents first;
2. the candidate's trace is replayed on the new kernel with its tile sizes adapted (each
   ``SamplePerfectTile`` keeps the original inner factors as far as they divide the new extent),
   then MetaSchedule's postprocessors for the target run on it, as after any tuning trial;
3. the nearest candidate whose trace replays is checked against the unscheduled kernel
   (``verify``; all kernels of a model in one library); a wrong one is dropped. A schedule tuned
   for one size can fit another size badly: on targets that run here, ``compile`` then races every
   borrowed schedule against the kernel's default schedule and keeps the faster
   (``codegen.defaults.race``).

It is a fast path, reported as such (``borrowed`` kernels, not tuned), and ``tune`` on the model
replaces it with real tuning of only those kernels.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import tvm
from tvm import s_tir

from ..errors import TVM_ERRORS, raise_if_interrupted
from ..lowering.prepare import kernel_flops
from ..lowering.schedules import postprocs
from ..numbers import mean_run_seconds

_DIGITS = re.compile(r"\d+")
MAX_TRIES = 4


@dataclass(frozen=True)
class _Shape:
    signature: tuple            # structure: (block name without digits, iterator kinds) per block
    extents: tuple              # every iterator extent, in block order


def _shape(func) -> _Shape | None:
    try:
        sch = s_tir.Schedule(tvm.IRModule({"main": func}))
        blocks = [sch.get(b) for b in sch.get_child_blocks(sch.get_sblock("root", func_name="main"))]
    except TVM_ERRORS:         # no single root block: not ours to handle
        raise_if_interrupted()
        return None
    signature, extents = [], []
    for block in blocks:
        kinds = "".join(str(int(iv.iter_type)) for iv in block.iter_vars)
        sizes = [int(iv.dom.extent) for iv in block.iter_vars]
        window = tuple(s for s, k in zip(sizes, kinds) if k == "2")[:-1]   # e.g. 3x3 of a conv
        signature.append((_DIGITS.sub("", block.name_hint), kinds, window))
        extents.extend(sizes)
    return _Shape(tuple(signature), tuple(extents))


def _distance(a: _Shape, b: _Shape) -> float:
    return sum(abs(math.log(max(x, 1) / max(y, 1))) for x, y in zip(a.extents, b.extents))


def _adapted_tile(factors: list[int], extent: int) -> list[int]:
    """Tile factors for ``extent``, innermost first kept as close to ``factors`` as divides."""
    out, rest = [], extent
    for f in reversed(factors[1:]):
        g = max(d for d in range(1, min(f, rest) + 1) if rest % d == 0)
        out.insert(0, g)
        rest //= g
    return [rest, *out]


def _replay(record, func, target):
    """Replay ``record``'s trace on ``func`` with adapted tiles and the target's postprocessors
    (the schedule's trace is then a valid tuning record's, postprocessors marked as such); None
    when it does not apply."""
    mod = tvm.IRModule({"main": func})
    sch = s_tir.Schedule(mod)

    def decide(inst, inputs, _attrs, decision):
        if inst.kind.name == "SamplePerfectTile" and decision is not None:
            extent = int(sch.get(inputs[0]).extent)
            return _adapted_tile([int(d) for d in decision], extent)
        return decision

    try:
        record.trace.apply_to_schedule(sch, remove_postproc=True, decision_provider=decide)
        # the search's postprocessors: on targets with an int8 dot product they include
        # RewriteTensorize, without which a tensorized record's trace does not replay
        sch.enter_postproc()
        for postproc in postprocs(func, target):
            if not postproc.apply(sch):
                return None
    except TVM_ERRORS:         # the borrowed trace does not fit this kernel
        raise_if_interrupted()
        return None
    return sch


def scheduled(sch) -> tvm.tirx.PrimFunc:
    return sch.mod["main"].with_attr("tirx.is_scheduled", True)


def tuned_workloads(databases: list) -> list[tuple[_Shape, object]]:
    """The best record of every workload of ``databases`` that can lend its schedule."""
    best: dict = {}
    for record in (r for d in databases for r in d.get_all_tuning_records()):
        mean = mean_run_seconds(record.run_secs)
        if mean is None:
            continue
        if record.workload not in best or mean < best[record.workload][0]:
            best[record.workload] = (mean, record)
    out = []
    for workload, (_, record) in best.items():
        shape = _shape(workload.mod["main"])
        if shape is not None:
            out.append((shape, record))
    return out


def borrow_schedules(mod: tvm.IRModule, databases: list, target,
                     spec=None) -> tuple[tvm.IRModule, list[str]]:
    """Schedule the unscheduled kernels of ``mod`` from similar tuned workloads of ``databases``.
    Returns the module and the names of the kernels that got a borrowed schedule. With ``spec``
    (the TargetSpec), every borrowed schedule is first checked against the unscheduled kernel, all
    in one library (``verify.check_target``: on this machine, also for cross targets)."""
    from . import verify  # pylint: disable=import-outside-toplevel

    pending = [(gv, f) for gv, f in mod.functions_items()
               if isinstance(f, tvm.tirx.PrimFunc) and not is_scheduled(f)]
    tuned = tuned_workloads(databases) if pending else []
    replays = {}
    for gv, func in pending:
        sch = nearest_schedule(func, similar(func, tuned), target)
        if sch is not None:
            replays[gv] = scheduled(sch)
    if spec is not None and replays:
        pairs = [(mod[gv], func) for gv, func in replays.items()]
        deviations = verify.checked_deviations(pairs, verify.check_target(spec, target))
        replays = {gv: f for (gv, f), d in zip(replays.items(), deviations) if d <= 1.0}
    for gv, func in replays.items():
        mod[gv] = func
    return mod, sorted(gv.name_hint for gv in replays)


def similar(func, tuned: list) -> list:
    """The workloads of ``tuned`` (see :func:`tuned_workloads`) with ``func``'s structure, nearest
    first."""
    shape = _shape(func)
    if shape is None:
        return []
    return sorted((c for c in tuned if c[0].signature == shape.signature),
                  key=lambda c: _distance(c[0], shape))


def attainable_seconds(func, candidates: list) -> float | None:
    """Seconds per call of ``func`` at the arithmetic rate (FLOP/s) that the nearest of its
    :func:`similar` ``candidates`` reached; None without one (or without a FLOP count)."""
    if not candidates:
        return None
    record = candidates[0][1]
    donor, mine = kernel_flops(record.workload.mod["main"]), kernel_flops(func)
    seconds = mean_run_seconds(record.run_secs)
    return mine * seconds / donor if donor and mine and seconds else None


def nearest_schedule(func, candidates: list, target):
    """``func`` scheduled with the trace of the nearest of its :func:`similar` ``candidates``
    whose trace fits, as a schedule; None when none fits."""
    for _, record in candidates[:MAX_TRIES]:
        sch = _replay(record, func, target)
        if sch is not None:
            return sch
    return None


def is_scheduled(func) -> bool:
    attrs = func.attrs
    return attrs is not None and any(str(k).endswith("is_scheduled") and bool(v)
                                     for k, v in attrs.items())
