"""Analytic decisions for MetaSchedule's CPU sketches: tile sizes, unrolling, compute locations.

A sketch (MetaSchedule's design space for one kernel) leaves decisions open: the tile factors of
every loop (``SamplePerfectTile``), the unroll depth (``SampleCategorical``) and where producer
blocks are computed (``SampleComputeLocation``). Tuning picks them by measurement; here they are
derived from the loop extents and the target's vector unit, the way a hand-written CPU schedule
chooses them:

- the innermost spatial axis (channels, in the channels-last layout) is split to a multiple of the
  vector width (up to two vectors), so every FMA is a full vector;
- the next spatial axis (image width) gets a register tile of output columns, sized by
  ``register_tile`` from the target's register count;
- where an operand's index steps along the channels (a grouped convolution reads the input
  channels of one group: ``ff // 16 * 16 + rc``), the channel tile stays inside one step
  (``aligned``), else its loads become gathers;
- every other spatial loop stays outer, where MetaSchedule's postprocessor parallelises them; the
  reduction loops run inside, so the register tile accumulates over the whole reduction;
- a producer that is not inlined (the zero-padded input of a convolution) is computed inside the
  consumer's outer tiles, one tile's window at a time, except for a float depthwise convolution
  or pooling, which reads its padding inline (``compute_location``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

FLOAT_BITS = 32
LATENCY_ACCUMULATORS = 8   # independent FMAs in flight: ~4-cycle latency x 2 pipes
MAX_ACCUMULATORS = 16      # beyond this, unrolled code grows for no measured gain


@dataclass(frozen=True)
class CpuParams:
    """What the policy needs to know about a CPU target."""

    vector_bits: int = 128
    vector_registers: int = 16
    cores: int = 1

    @property
    def lanes(self) -> int:
        return max(1, self.vector_bits // FLOAT_BITS)


def cpu_params(spec, target) -> CpuParams:
    """The policy's view of a target file (``TargetSpec``) and its ``tvm.target.Target``."""
    from ...target.spec import physical_cores  # pylint: disable=import-outside-toplevel

    cores = int(target.attrs.get("num-cores", 0) or physical_cores())
    return CpuParams(vector_bits=spec.vector_bits, vector_registers=spec.vector_registers,
                     cores=cores)


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def channel_tiles(extent: int, lanes: int) -> list[int]:
    """Candidate inner factors of the channel axis: one or two whole vectors where they divide the
    extent (measured here: 1.5 or 4 vectors, or a 2 x 32 tile, keep accumulators out of registers
    and run 3-20x slower); else the largest power-of-two part of a vector; else the extent itself
    when it is shorter than a vector."""
    if extent <= lanes:
        return [extent]
    whole = [lanes * k for k in (1, 2) if extent % (lanes * k) == 0]
    if whole:
        return whole
    powers = [d for d in divisors(extent) if d <= lanes and d & (d - 1) == 0 and d > 1]
    return [max(powers)] if powers else [max(d for d in divisors(extent) if d <= lanes)]


def whole_vector(extent: int, limit: int) -> int:
    """Vector length of a loop of ``extent`` without a remainder: the largest power of two up to
    ``limit`` dividing it, or the whole extent when it is shorter than that and not a power of
    two (3 channels: one 3-lane vector)."""
    power = extent & -extent
    if power >= min(extent, limit) or extent > limit:
        return min(power, limit)
    return extent


def aligned(extent: int, step: int | None) -> int:
    """The part of a channel axis of ``extent`` that a tile may span when an operand's index
    steps every ``step`` channels (None: it does not): a tile dividing it never straddles a step.
    Measured here (x86-avx512, a 3x3 grouped convolution on 28x28x64, 16 channels per group, the
    default schedule timed alone): 32-channel tiles, two groups' inputs in one vector and a gather
    per FMA, 2,072 us (7 GFLOP/s); one group per vector 52.8 us (274 GFLOP/s)."""
    return extent if step is None else math.gcd(extent, step)


def vector_tile(extent: int, lanes: int) -> int:
    """Inner factor of the channel axis of a kernel without a reduction."""
    return max(channel_tiles(extent, lanes))


def register_tile(columns: int, channels: int, params: CpuParams) -> tuple[int, int]:
    """(output columns, channels) of the register tile of a reducing kernel.

    Each step of the reduction broadcasts one input value per column and loads one weight vector
    per channel vector, then issues columns x vectors independent FMAs, one per accumulator
    register. Measured here (AVX2, 16 registers) on MobileNet and SqueezeNet 1x1 convolutions:

    - fewer than ~8 accumulators leave the FMA pipes waiting on latency (4 cycles, 2 pipes): a
      2 x 16 tile ran 1.5x slower than 7 x 8;
    - accumulators + weight vectors + the broadcast must fit the register file, or the tile spills
      (7 x 16 on AVX2: 1.7x slower than 4 x 16); 13 x 8 fits and runs 4x faster than 1 x 8;
    - among tiles with enough accumulators, the most FMAs per load wins, then more channels.
    """
    best, best_key = (1, channel_tiles(channels, params.lanes)[0]), None
    for inner in channel_tiles(channels, params.lanes):
        vectors = -(-inner // params.lanes)
        for cols in divisors(columns):
            accumulators = cols * vectors
            if (accumulators > MAX_ACCUMULATORS
                    or accumulators + vectors + 1 > params.vector_registers):
                continue
            key = (min(accumulators, LATENCY_ACCUMULATORS), accumulators / (cols + vectors), inner)
            if best_key is None or key > best_key:
                best, best_key = (cols, inner), key
    return best


def spatial_tiles(extents: list[int], has_reduction: bool, params: CpuParams,
                  step: int | None = None) -> list[list[int]]:
    """Four-level tiles (outer, S1, S2, innermost) of every spatial axis of one block; ``step``:
    where an operand's index steps along the innermost axis (see ``aligned``)."""
    tiles = [[e, 1, 1, 1] for e in extents]
    if not extents:
        return tiles
    channels = aligned(extents[-1], step)
    if has_reduction and len(extents) >= 2:
        cols, inner = register_tile(extents[-2], channels, params)
        tiles[-2] = [extents[-2] // cols, 1, 1, cols]
    else:
        inner = vector_tile(channels, params.lanes)
    tiles[-1] = [extents[-1] // inner, 1, 1, inner]
    return tiles


def reduction_tiles(extents: list[int]) -> list[list[int]]:
    """Two-level tiles of the reduction axes: all outer, so the register tile accumulates over
    the whole reduction."""
    return [[e, 1] for e in extents]


ROOT = -1      # SampleComputeLocation's decision for "compute the producer at the root"
INLINE = -2    # ... for "inline the producer into its consumer's loads"
WINDOW_TAPS = 49   # a channel-wise window of at most this many taps reads its padding inline


def compute_location(spatial_axes: int | None, window_taps: int | None = None) -> int:
    """SampleComputeLocation's decision for a producer of a block tiled ``SSRSRS`` with
    ``spatial_axes`` spatial axes (None: the consumer is not tiled, or not alone): the index of
    the last loop of its two outer spatial tile levels, so each tile pads the input window it
    reads while it is in cache, instead of a pass over the whole padded image before the
    convolution (TVM takes the deepest legal loop at or above that index). Measured on the
    x86-avx512 default schedules of MNASNet 1.0-224's convolutions, each timed alone: 1.54 ms at
    the root, 1.25 ms here, 1.25 ms one loop deeper (inside the first reduction loop); depthwise
    convolutions gain 1.5-4x (a 5x5 on 7x7x1152: 42.5 -> 14.6 us), the others are unchanged.

    ``window_taps``: the consumer is a float channel-wise window (a depthwise convolution, a
    pooling) of that many taps per output. Up to ``WINDOW_TAPS``, its padding is inlined into its
    loads: a tile's window copy costs as much as the few taps that read it. Measured here (quiet
    machine, default schedules timed alone, window vs inline): MNASNet's 12 depthwise
    convolutions 297 -> 249 us (5x5/2 on 28x28x240: 21.1 -> 14.3 us), MobileNet V2's 329 -> 283,
    EfficientNet-B0's 741 -> 665, ResNet-18's 3x3/2 max pool 182 -> 58 us; 3 of the 34
    convolutions lost 2-6%.
    INT8 depthwise convolutions lose with it (stride 1: 1.15-1.37x slower), so ``sketch`` passes
    no taps for 8-bit inputs."""
    if window_taps is not None and window_taps <= WINDOW_TAPS:
        return INLINE
    return ROOT if spatial_axes is None else 2 * spatial_axes - 1


def unroll_choice(candidates: list[int], has_reduction: bool) -> int:
    """Index of the explicit-unroll depth: deep enough to unroll a register tile."""
    want = 16
    best = min(range(len(candidates)), key=lambda i: abs(candidates[i] - want))
    return best
