"""Default CPU schedules: MetaSchedule's own design space, with decisions derived, not measured.

For one kernel, MetaSchedule's CPU space generator writes a few sketches (multi-level tiling
``SSRSRS`` of the main block with its epilogue fused at one of several levels, auto-inlining,
parallel/vectorize/unroll annotations). Tuning samples their open decisions and measures. Here
each sketch is replayed once with the decisions of ``policy`` (vector-width channel tiles, a
register tile along the image width, reductions inside), MetaSchedule's postprocessors for the
target run on it, and the first sketch that goes through (``preference``) is the kernel's default
schedule. Kernel families need no special cases: convolutions (standard, strided, grouped,
depthwise, pointwise), dense layers, pooling and reductions are all tiled blocks with spatial and
reduction axes; elementwise, layout and data-movement kernels have no tiles, only the parallel and
vectorized loops the postprocessors write.

The result is unchecked: callers verify it against the unscheduled kernel (``tuning.verify``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import tvm
from tvm import relax, s_tir
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms

from . import policy
from ...console import native_stderr
from ...target import intrinsics
from ...errors import TVM_ERRORS, raise_if_interrupted

_TILE, _SPLIT, _CATEGORICAL, _LOCATION = ("SamplePerfectTile", "Split", "SampleCategorical",
                                          "SampleComputeLocation")
_SPATIAL_LEVELS, _REDUCTION_LEVELS = 4, 2
_TILING, _TILED = "meta_schedule.tiling_structure", "SSRSRS"
_CUSTOM_RULE = "schedule_rule"
_RFACTOR = "RFactor"
_AUTO_TENSORIZE = "meta_schedule.auto_tensorize"
_VECTORIZE, _PARALLEL = "meta_schedule.vectorize", "meta_schedule.parallel"
_BYTES = ("int8", "uint8")


@dataclass(frozen=True)
class Sketched:
    func: tvm.tirx.PrimFunc     # the scheduled kernel (``tirx.is_scheduled``)
    sketch: int                 # which of MetaSchedule's design spaces it came from
    trace: object = None        # the schedule's trace, postprocessors included (a tuning record's)
    # for a kernel tensorized with an int8 dot product: the same schedule with the tensorized
    # tiles left as loops, which a CPU without that instruction can run (see ``for_check``)
    untensorized: tvm.tirx.PrimFunc | None = None

    def for_check(self, runs_here: bool) -> tvm.tirx.PrimFunc:
        """What the kernel check runs: the schedule itself where this machine runs the target;
        elsewhere its untensorized twin, which checks the tiling, the fusion and the weight
        packing (the intrinsic's instruction computes its TIR description, TVM's own contract)."""
        return self.func if runs_here or self.untensorized is None else self.untensorized


class SketchError(Exception):
    """No sketch of this kernel could be replayed with the policy's decisions."""


def without_custom_rules(func: tvm.tirx.PrimFunc) -> tvm.tirx.PrimFunc:
    """``func`` without TOPI's ``schedule_rule`` block annotations (e.g. ``meta_schedule.pool_max``):
    no CPU rule is registered under those names, and MetaSchedule warns about each before it falls
    back to its generic rules, which is what a default schedule uses anyway."""
    sch = s_tir.Schedule(tvm.IRModule({"main": func}))
    for block in sch.get_child_blocks(sch.get_sblock("root", func_name="main")):
        if _CUSTOM_RULE in sch.get(block).annotations:
            sch.unannotate(block, _CUSTOM_RULE)
    return sch.mod["main"]


def _context(func: tvm.tirx.PrimFunc, target: tvm.target.Target,
             generic: bool = False) -> ms.TuneContext:
    """MetaSchedule's search context: the rules its target picks, or ours where they do not know
    the target's dot product (``intrinsics.search_rules``); ``generic``: the plain CPU rules,
    without tensor intrinsics."""
    if generic:
        rules = (ms.schedule_rule.ScheduleRule.create("llvm"), ms.postproc.Postproc.create("llvm"))
    else:
        rules = intrinsics.search_rules(target)
    space = "post-order-apply" if rules is None else ms.space_generator.PostOrderApply(
        sch_rules=rules[0], postprocs=rules[1], mutator_probs=ms.mutator.Mutator.create("llvm"))
    return ms.TuneContext(mod=tvm.IRModule({"main": func}), target=target,
                          space_generator=space, num_threads=1)


def design_spaces(func: tvm.tirx.PrimFunc, target: tvm.target.Target) -> list:
    return list(_context(func, target).generate_design_space())


def search_space(func: tvm.tirx.PrimFunc, target: tvm.target.Target):
    """The space ``tune`` searches for kernels like ``func``: the target's schedule rules (ours
    where MetaSchedule's do not know its dot product) and :func:`postprocs`, which reject the
    candidates that cannot build before they take a trial."""
    own = intrinsics.search_rules(target)
    return ms.space_generator.PostOrderApply(
        sch_rules=own[0] if own else "from-target", mutator_probs="from-target",
        postprocs=postprocs(func, target))


def postprocs(func: tvm.tirx.PrimFunc, target: tvm.target.Target) -> list:
    """The postprocessors MetaSchedule's search runs for ``func`` on ``target``: the target's
    kind picks them (on CPUs with int8 dot-product instructions, they include ``RewriteTensorize``,
    which turns the sketches' ``auto_tensorize`` blocks into the instructions), and then
    :class:`NoVectorLoopAroundIntrinsic` before that one and :class:`PackableWeights` last;
    ``RewriteLayout`` is :class:`RewriteLayoutOfOneReader`."""
    found = _guarded(_context(func, target).space_generator.postprocs)
    at = next((i for i, p in enumerate(found) if isinstance(p, ms.postproc.RewriteTensorize)),
              None)
    if at is None or target.kind.name != "llvm":       # CPU dot products only
        return found
    return found[:at] + [NoVectorLoopAroundIntrinsic()] + found[at:] + [PackableWeights()]


@derived_object
class NoVectorLoopAroundIntrinsic(ms.postproc.PyPostproc):
    """Rejects a candidate that vectorizes a loop around a block marked for tensorization.
    MetaSchedule's search vectorizes the innermost spatial loops, and where the tiling left one of
    them outside the intrinsic's tile, TVM's loop vectorizer cannot widen the instruction's vector
    operands and the build fails ("Cannot broadcast lanes=32 ... to 128"; measured: 30-34 of each
    batch of 64 VNNI candidates). Rejected here, the search samples another candidate instead of
    spending a trial on it."""

    def _initialize_with_tune_context(self, context) -> None:
        pass

    def apply(self, sch: s_tir.Schedule) -> bool:
        for block in _blocks(sch):
            if _AUTO_TENSORIZE in sch.get(block).annotations and any(
                    _vector_loop(sch.get(loop)) for loop in sch.get_loops(block)):
                return False
        return True

    def clone(self) -> "NoVectorLoopAroundIntrinsic":
        return NoVectorLoopAroundIntrinsic()


def _guarded(found) -> list:
    """MetaSchedule's postprocessors with ``RewriteLayout`` replaced by
    :class:`RewriteLayoutOfOneReader`."""
    return [RewriteLayoutOfOneReader() if isinstance(p, ms.postproc.RewriteLayout) else p
            for p in found]


@derived_object
class RewriteLayoutOfOneReader(ms.postproc.PyPostproc):
    """MetaSchedule's ``RewriteLayout``, except in a kernel where one block is not the only reader
    of a layout-free input (a weight, a per-channel parameter): it packs that buffer for one
    reader's indices and the others then read wrong elements. MixNet's kernels of batch norm,
    SiLU and a split into four: each split block reads its quarter of the 360 per-channel
    parameters, which were packed as [45, 2] for the first quarter's indices (the default schedule
    deviated 2e4x its tolerance and the kernel stayed naive). Such buffers keep their layout; the
    other kernels are packed as before."""

    def __init__(self, plain: bool = False):
        self.inner = ms.postproc.RewriteLayout()
        self.plain = plain    # the task's kernel cannot end with a shared reader: no check

    def _initialize_with_tune_context(self, context) -> None:
        self.plain = context.mod is not None and not _may_share(context.mod)

    def apply(self, sch: s_tir.Schedule) -> bool:
        return (not self.plain and _shared_layout_free(sch)) or self.inner.apply(sch)

    def clone(self) -> "RewriteLayoutOfOneReader":
        return RewriteLayoutOfOneReader(self.plain)   # MetaSchedule clones a task's initialized one


def _shared_layout_free(sch: s_tir.Schedule) -> bool:
    """Whether a layout-free input of the scheduled kernel is read by more than one block."""
    return any(count > 1 for count in _readers(sch, _layout_free(sch.mod["main"])))


def _may_share(mod: tvm.IRModule) -> bool:
    """Whether a schedule of the unscheduled kernel ``mod`` can have a layout-free input read by
    more than one block: one is already, or a block's output is read by more than one block
    (inlining that block copies its reads into each reader: MixNet's split)."""
    sch = s_tir.Schedule(mod)
    written = [region.source for block in _blocks(sch) for region in sch.get(block).writes]
    return any(count > 1 for count in _readers(sch, _layout_free(mod["main"]) + written))


def _layout_free(func) -> list:
    if not func.attrs or "layout_free_buffers" not in func.attrs:
        return []
    return [func.params[int(i)] for i in func.attrs["layout_free_buffers"]]


def _readers(sch: s_tir.Schedule, buffers: list) -> list[int]:
    """How many blocks read each of ``buffers``."""
    blocks = [sch.get(block) for block in _blocks(sch)]
    return [sum(any(region.source.same_as(buffer) for region in block.reads) for block in blocks)
            for buffer in buffers]


@derived_object
class PackableWeights(ms.postproc.PyPostproc):
    """Rejects a candidate whose weight packing the build cannot split off (``packable``):
    MetaSchedule's layout rewrite can leave it inside the loops beside tensorized tiles, which
    times fine while tuning and then fails Relax's build (SplitLayoutRewritePreproc). Runs last,
    after RewriteLayout."""

    def _initialize_with_tune_context(self, context) -> None:
        pass

    def apply(self, sch: s_tir.Schedule) -> bool:
        return packable(sch.mod["main"])

    def clone(self) -> "PackableWeights":
        return PackableWeights()


def _vector_loop(loop) -> bool:
    return loop.kind == tvm.tirx.ForKind.VECTORIZED and not (
        isinstance(loop.extent, tvm.tirx.IntImm) and int(loop.extent) == 1)


def _tile_groups(trace) -> list[list]:
    """The SamplePerfectTile instructions of a trace, one group per tiled block (a block's samples
    follow each other, separated only by their splits)."""
    groups, current = [], []
    for inst in trace.insts:
        name = inst.kind.name
        if name == _TILE:
            current.append(inst)
        elif name != _SPLIT and current:
            groups.append(current)
            current = []
    return groups + ([current] if current else [])


def _loop_extents(func, trace) -> tuple[dict, dict]:
    """Extent of the loop each SamplePerfectTile splits (replaying the sketch as sampled), and
    the channel step of the block it tiles (``_channel_step``)."""
    sch = s_tir.Schedule(tvm.IRModule({"main": func}))
    extents, steps = {}, {}

    def record(inst, inputs, _attrs, decision):
        if inst.kind.name == _TILE:
            extents[inst] = int(sch.get(inputs[0]).extent)
            steps[inst] = _channel_step(sch, inputs[0])
        return decision

    trace.apply_to_schedule(sch, remove_postproc=True, decision_provider=record)
    return extents, steps


def _channel_step(sch: s_tir.Schedule, loop) -> int | None:
    """Where an index the block under ``loop`` reads or writes jumps along its last spatial axis
    (the channels): the divisor ``d`` of a ``channel // d`` or ``channel % d`` (a grouped
    convolution reads ``ff // 16 * 16 + rc``), the gcd of all such; None when there is none."""
    blocks = sch.get_child_blocks(loop)
    if not blocks:
        return None
    block = sch.get(blocks[0])
    spatial = [iv.var for iv in block.iter_vars if iv.iter_type == tvm.tirx.IterVar.DataPar]
    if not spatial:
        return None
    found: list[int] = []
    for region in (*block.reads, *block.writes):
        for axis in region.region:
            _steps_of(axis.min, spatial[-1], found)
    return math.gcd(*found) if found else None


def _steps_of(expr, var, found: list[int]) -> None:
    """Append the divisors of every ``var // d`` and ``var % d`` in ``expr`` to ``found``."""
    if isinstance(expr, (tvm.tirx.FloorDiv, tvm.tirx.FloorMod)) and expr.a.same_as(var) \
            and isinstance(expr.b, tvm.tirx.IntImm):
        found.append(int(expr.b.value))
    for child in (getattr(expr, "a", None), getattr(expr, "b", None)):
        if child is not None:
            _steps_of(child, var, found)


def plan(func, trace, params: policy.CpuParams) -> tuple[dict, bool]:
    """The policy's tile decisions for every SamplePerfectTile, and whether the kernel reduces."""
    extents, steps = _loop_extents(func, trace)
    decisions, reduces, tensorized = {}, False, _tensorizes(trace)
    for group in _tile_groups(trace):
        spatial = [i for i in group if int(i.attrs[0]) == _SPATIAL_LEVELS]
        reduction = [i for i in group if int(i.attrs[0]) == _REDUCTION_LEVELS]
        reduces = reduces or bool(reduction)
        tiles = policy.spatial_tiles([extents[i] for i in spatial], bool(reduction), params,
                                     steps[spatial[-1]] if spatial else None)
        if tensorized:
            # the innermost loops get vectorized, and a loop around the intrinsic's vector
            # instruction cannot be: the register tile moves one level out (still inside the
            # reduction) and the innermost level stays 1
            tiles = [[a, b, c * d, 1] for a, b, c, d in tiles]
        decisions.update(zip(spatial, tiles))
        decisions.update(zip(reduction, policy.reduction_tiles([extents[i] for i in reduction])))
    return decisions, reduces


def replay(func, trace, target, params: policy.CpuParams, postprocessors: list | None = None,
           tensorize: bool = True):
    """``trace`` replayed on ``func`` with the policy's decisions, postprocessed (by
    ``postprocessors``, default :func:`postprocs`; without ``RewriteTensorize`` when not
    ``tensorize``): the schedule, or None when a postprocessor rejects it."""
    decisions, reduces = plan(func, trace, params)
    sch = s_tir.Schedule(tvm.IRModule({"main": func}))

    def decide(inst, inputs, attrs, decision):
        name = inst.kind.name
        if name == _TILE:
            return decisions.get(inst, decision)
        if name == _CATEGORICAL:
            return policy.unroll_choice([int(c) for c in attrs[0]], reduces)
        if name == _LOCATION:
            return policy.compute_location(_tiled_spatial_axes(sch, inputs[0]),
                                           _window_taps(sch, inputs[0]))
        return decision

    trace.apply_to_schedule(sch, remove_postproc=True, decision_provider=decide)
    if not decisions:
        sch = _whole_vectors(sch)
    sch.enter_postproc()        # as MetaSchedule marks it: a record's trace can seed its search
    for postproc in postprocessors if postprocessors is not None else postprocs(func, target):
        tensorizing = isinstance(postproc, ms.postproc.RewriteTensorize)
        if tensorizing and not tensorize:
            continue
        if not (_apply_quietly(sch, postproc) if tensorizing else postproc.apply(sch)):
            return None
    if not tensorize:
        return sch       # the twin of a tensorized schedule: only checked, never built
    blocks = [sch.get(block) for block in _blocks(sch)]
    if any(_AUTO_TENSORIZE in block.annotations for block in blocks):
        return None      # RewriteTensorize could not map the policy's tiles onto the intrinsic
    if not all(_compact(match.source) for block in blocks for match in block.match_buffers):
        return None      # an intrinsic would read a strided operand as if it were contiguous
    return sch if packable(sch.mod["main"]) else None


def _apply_quietly(sch: s_tir.Schedule, rewrite) -> bool:
    """MetaSchedule's ``RewriteTensorize`` applied to ``sch`` without its C++ log: whether the
    postprocessor succeeded. Where a marked tile does not fit the intrinsic (a grouped convolution
    whose 16 x 4 tile spans groups), it drops the mark, keeps the blockized loops (which LLVM
    vectorizes: 1.8x faster than the generic sketch on RegNetY-400MF's grouped INT8
    convolutions), reports success, and prints the whole kernel to stderr, ~60 lines per
    sketch."""
    with native_stderr():
        return rewrite.apply(sch)


def _only_consumer(sch: s_tir.Schedule, block):
    """The block that alone reads ``block``'s output, or None."""
    consumers = sch.get_consumers(block)
    return sch.get(consumers[0]) if len(consumers) == 1 else None


def _tiled_spatial_axes(sch: s_tir.Schedule, block) -> int | None:
    """The spatial axes of ``block``'s only consumer where MetaSchedule tiled it ``SSRSRS``."""
    consumer = _only_consumer(sch, block)
    if consumer is None or str(consumer.annotations.get(_TILING, "")) != _TILED:
        return None
    return sum(int(v.iter_type) == int(tvm.tirx.IterVar.DataPar) for v in consumer.iter_vars)


def _window_taps(sch: s_tir.Schedule, block) -> int | None:
    """Taps per output of ``block``'s only consumer where it is a channel-wise window (a
    depthwise convolution, a pooling): its reduction runs over a few taps only, and it reads
    ``block``'s output at its own output channel (the last index follows its last spatial axis);
    None for any other consumer (a standard convolution reads every input channel)."""
    consumer = _only_consumer(sch, block)
    if consumer is None:
        return None
    spatial = [v.var for v in consumer.iter_vars if v.iter_type == tvm.tirx.IterVar.DataPar]
    reduction = [int(v.dom.extent) for v in consumer.iter_vars
                 if v.iter_type == tvm.tirx.IterVar.CommReduce]
    if not spatial or not reduction:
        return None
    written = [region.source for region in sch.get(block).writes]
    if any(str(buffer.dtype) in _BYTES for buffer in written):
        return None
    last = [region.region[-1].min for region in consumer.reads
            if any(region.source.same_as(buffer) for buffer in written)]
    follows = any(v.same_as(spatial[-1]) for index in last
                  for v in tvm.tirx.analysis.undefined_vars(index))
    return math.prod(reduction) if follows else None


def _whole_vectors(sch: s_tir.Schedule) -> s_tir.Schedule:
    """For a kernel without tiles (elementwise, layout, padding): each block's innermost loop
    vectorized whole and its outer loops in parallel, here instead of by MetaSchedule's
    postprocessor.

    The postprocessor fuses *all* loops of a block whose accesses it finds contiguous and splits
    the result by its vector length (64), predicating the remainder: when the innermost extent is
    not a multiple of it (3 image channels, 1000 classes), every lane computes its own indices
    with divisions and its loads become gathers. The input quantize + pad + NCHW->NHWC kernel of
    an INT8 MobileNet ran 652 us so (86 us unscheduled, 23 us with its rows in parallel). Here the
    vector length is the largest power of two dividing the innermost extent (up to the
    postprocessor's), or, below a vector, the extent; the outer loops are fused for parallelism as
    the postprocessor fuses them. A block this cannot schedule (a reduction loop) leaves the whole
    kernel to the postprocessor."""
    root = sch.get(sch.get_sblock("root", func_name="main")).annotations
    if _VECTORIZE not in root or _PARALLEL not in root:
        return sch
    done = sch.copy()
    top = done.get_sblock("root", func_name="main")
    try:
        for block in done.get_child_blocks(top):
            _vector_and_parallel(done, block, int(root[_VECTORIZE]), int(root[_PARALLEL]))
    except (TVM_ERRORS, ValueError):
        raise_if_interrupted()
        return sch
    done.unannotate(top, _VECTORIZE)
    done.unannotate(top, _PARALLEL)
    return done


def _vector_and_parallel(sch: s_tir.Schedule, block, vector_limit: int, parallel_limit: int):
    loops = list(sch.get_loops(block))
    extents = [sch.get(loop).extent for loop in loops]
    if not loops or not all(isinstance(e, tvm.tirx.IntImm) for e in extents):
        raise ValueError("a block without constant loops")
    extent = int(extents[-1])
    length = policy.whole_vector(extent, vector_limit)
    if length > 1:
        inner = loops[-1] if length == extent else sch.split(loops[-1], [None, length])[1]
        sch.vectorize(inner)
        loops = [loop for loop in sch.get_loops(block)][:-1]
    fused, product = [], 1
    for loop in loops:
        fused.append(loop)
        product *= int(sch.get(loop).extent)
        if product > parallel_limit:
            break
    if product > 1:
        sch.parallel(sch.fuse(*fused) if len(fused) > 1 else fused[0])


def _blocks(sch: s_tir.Schedule) -> list:
    found, stack = [], list(sch.get_child_blocks(sch.get_sblock("root", func_name="main")))
    while stack:
        block = stack.pop()
        found.append(block)
        stack.extend(sch.get_child_blocks(block))
    return found


def _compact(region) -> bool:
    """Whether a buffer region is one contiguous run of memory, as a tensor intrinsic's vector
    loads assume (its operands are declared without strides, which tensorize does not check):
    the dimensions it spans are the buffer's last ones, all but the first of them whole."""
    buffer = region.source
    shape, extents = list(buffer.shape), [r.extent for r in region.region]
    if buffer.strides or not all(isinstance(e, tvm.tirx.IntImm) for e in extents):
        return False
    spanned = [d for d, e in enumerate(extents) if int(e) != 1]
    return not spanned or (spanned == list(range(spanned[0], len(shape))) and all(
        int(extents[d]) == int(shape[d]) for d in spanned[1:]))


def packable(func: tvm.tirx.PrimFunc) -> bool:
    """Whether the build can split the schedule's weight packing off (``layout``): the packing
    blocks must sit at the kernel's root, not inside its loops (as MetaSchedule's layout rewrite
    leaves them beside some tensorized tiles)."""
    try:
        relax.transform.SplitLayoutRewritePreproc()(tvm.IRModule({"main": func}))
    except TVM_ERRORS:
        raise_if_interrupted()
        return False
    return True


def preference(spaces: list) -> list[int]:
    """The order in which sketches are tried: the multi-level tilings first, those whose
    epilogue (bias, activation, requantization) is computed inside the tiles first, and of
    those the one MetaSchedule writes last (fused at the outer level); the reduction-factoring
    (``rfactor``) sketches last, which split a reduction across threads and only pay off when
    there is nothing else to parallelise (measured on 1x1 squeeze-excite convolutions: the rfactor
    sketch's code had no vector FMA at all). MetaSchedule writes the unfused sketch first for
    plain tilings and last for tensorized ones; unfused, an INT8 1x1 convolution at 112x112
    wrote and re-read a 4.8 MB int32 buffer (21 GOP/s, against 100-140 for the fused ones)."""
    def factors(index: int) -> bool:
        return any(inst.kind.name == _RFACTOR for inst in spaces[index].trace.insts)

    def fused(index: int) -> int:
        return sum(inst.kind.name == "ReverseComputeAt" for inst in spaces[index].trace.insts)

    return sorted(range(len(spaces)), key=lambda i: (factors(i), -fused(i), -i))


def default_schedule(func, target: tvm.target.Target, params: policy.CpuParams) -> Sketched:
    """The kernel's default schedule: the most fused sketch that replays, for a kernel of 8-bit
    inputs on a target with an exact int8 dot product (``intrinsics.int8_dot_product``) from the
    target's own design space (tensorized), else from the generic CPU one; SketchError if none."""
    func = without_custom_rules(func)
    reasons: list[str] = []
    tensorize = (intrinsics.int8_dot_product(target) is not None
                 and any(str(p.dtype) in _BYTES for p in func.params))
    for generic in ((False, True) if tensorize else (True,)):
        try:
            context = _context(func, target, generic)
            spaces = list(context.generate_design_space())
        except TVM_ERRORS as err:
            raise_if_interrupted()
            reasons.append(f"MetaSchedule wrote no design space: "
                           f"{str(err).strip().splitlines()[-1][:200]}")
            continue
        found = _first_replaying(func, spaces, target, params, context, reasons)
        if found is not None:
            return found
    raise SketchError("; ".join(reasons) or "MetaSchedule wrote no sketch for it")


def _first_replaying(func, spaces, target, params, context, reasons: list[str]) -> Sketched | None:
    postprocessors = _guarded(context.space_generator.postprocs)
    for index in preference(spaces):
        try:
            scheduled = replay(func, spaces[index].trace, target, params, postprocessors)
        except TVM_ERRORS as err:
            raise_if_interrupted()
            reasons.append(f"sketch {index}: {str(err).strip().splitlines()[-1][:200]}")
            continue
        if scheduled is None:
            reasons.append(f"sketch {index}: a postprocessor rejected it")
            continue
        if not _tensorizes(spaces[index].trace):
            return Sketched(_scheduled(scheduled), index, scheduled.trace)
        twin = replay(func, spaces[index].trace, target, params, postprocessors, tensorize=False)
        if twin is None:
            reasons.append(f"sketch {index}: its untensorized twin (what is checked) does not replay")
            continue
        return Sketched(_scheduled(scheduled), index, scheduled.trace, _scheduled(twin))
    return None


def _scheduled(sch: s_tir.Schedule) -> tvm.tirx.PrimFunc:
    return sch.mod["main"].with_attr("tirx.is_scheduled", True)


def _tensorizes(trace) -> bool:
    """Whether a sketch marks blocks for tensorization (MetaSchedule's intrinsic tiling rules)."""
    return any(inst.kind.name == "Annotate" and _AUTO_TENSORIZE in str(inst.attrs)
               for inst in trace.insts)
