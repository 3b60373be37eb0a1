"""Schedules for kernels the tuning database does not cover, borrowed from similar tuned kernels.

A model that was never tuned (MobileNet V1 0.75-192 when the logs hold 1.0-224) has the same kinds
of kernels as a tuned one, at other sizes: a 1x1 convolution + bias + ReLU6 of 24x24x192 is
structurally a 1x1 convolution of 14x14x512. For each kernel without a record:

1. candidates: the best record of every tuned workload with the same structure (the same blocks,
   by name and iterator kinds, and the same kernel window), nearest in loop extents first;
2. the candidate's trace is replayed on the new kernel with its tile sizes adapted (each
   ``SamplePerfectTile`` keeps the original inner factors as far as they divide the new extent),
   then MetaSchedule's postprocessors for the target run on it, as after any tuning trial;
3. on a target this machine runs, each replay that succeeds is checked against the unscheduled
   kernel (``verify``) and timed once (2 x 10 ms); the fastest correct one becomes the kernel's
   schedule (a schedule tuned for one size can fit another size badly). On other targets, the
   first replay that succeeds does.

It is a fast path, reported as such (``borrowed`` kernels, not tuned), and ``tune`` on the model
replaces it with real tuning of only those kernels.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import tvm
from tvm import s_tir
from tvm.s_tir import meta_schedule as ms

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
    except Exception:  # pylint: disable=broad-except  (no single root block: not ours to handle)
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
    """Replay ``record``'s trace on ``func`` with adapted tiles and the target's postprocessors;
    None when it does not apply."""
    mod = tvm.IRModule({"main": func})
    sch = s_tir.Schedule(mod)

    def decide(inst, inputs, _attrs, decision):
        if inst.kind.name == "SamplePerfectTile" and decision is not None:
            extent = int(sch.get(inputs[0]).extent)
            return _adapted_tile([int(d) for d in decision], extent)
        return decision

    try:
        record.trace.apply_to_schedule(sch, remove_postproc=True, decision_provider=decide)
        # MetaSchedule's postprocessors for the target kind, used uninitialized: the CPU ones read
        # nothing from a tuning context (a TuneContext would import every tensor intrinsic, ~45 s)
        for postproc in ms.postproc.Postproc.create(target.kind.name):
            if not postproc.apply(sch):
                return None
    except Exception:  # pylint: disable=broad-except  (the borrowed trace does not fit this kernel)
        return None
    return sch.mod["main"].with_attr("tirx.is_scheduled", True)


def _tuned_workloads(databases: list) -> list[tuple[_Shape, object]]:
    best: dict = {}
    for record in (r for d in databases for r in d.get_all_tuning_records()):
        secs = [float(s) for s in record.run_secs or []]
        if not secs or sum(secs) / len(secs) >= 1e9:
            continue
        mean = sum(secs) / len(secs)
        if record.workload not in best or mean < best[record.workload][0]:
            best[record.workload] = (mean, record)
    out = []
    for workload, (_, record) in best.items():
        shape = _shape(workload.mod["main"])
        if shape is not None:
            out.append((shape, record))
    return out


def borrow_schedules(mod: tvm.IRModule, databases: list, target,
                     check: bool) -> tuple[tvm.IRModule, list[str]]:
    """Schedule the unscheduled kernels of ``mod`` from similar tuned workloads of ``databases``.
    Returns the module and the names of the kernels that got a borrowed schedule. ``check``: verify
    each borrowed schedule against the unscheduled kernel on this machine."""
    from . import verify  # pylint: disable=import-outside-toplevel

    pending = [(gv, f) for gv, f in mod.functions_items()
               if isinstance(f, tvm.tirx.PrimFunc) and not is_scheduled(f)]
    if not pending:
        return mod, []
    tuned = _tuned_workloads(databases)
    borrowed = []
    for gv, func in pending:
        shape = _shape(func)
        if shape is None:
            continue
        similar = sorted((c for c in tuned if c[0].signature == shape.signature),
                         key=lambda c: _distance(c[0], shape))
        reference = None     # the unscheduled kernel's results, computed once per kernel
        best = None          # (seconds, scheduled function)
        for _, record in similar[:MAX_TRIES]:
            scheduled = _replay(record, func, target)
            if scheduled is None:
                continue
            if not check:
                best = (0.0, scheduled)
                break
            if reference is None:
                reference = verify.reference_run(tvm.IRModule({"main": func}), target)
            args, want = reference
            got, seconds = verify.run_kernel_timed(tvm.IRModule({"main": scheduled}), target, args)
            if verify.deviation(got, want) <= 1.0 and (best is None or seconds < best[0]):
                best = (seconds, scheduled)
        if best is not None:
            mod[gv] = best[1]
            borrowed.append(gv.name_hint)
    return mod, borrowed


def is_scheduled(func) -> bool:
    attrs = func.attrs
    return attrs is not None and any(str(k).endswith("is_scheduled") and bool(v)
                                     for k, v in attrs.items())
