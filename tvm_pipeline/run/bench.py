"""Latency of the compiled module against ONNX Runtime, measured in the same process run.

Both are measured the same way: the full runner call (host-to-device copies, execution and the
copy of the outputs back to numpy), on the same feeds, each call timed on its own with
``time.perf_counter``. A remote runner times on the device instead (TVM's time evaluator, one run
per call), since a network round trip is not the module's latency. Schedule: warm up both (``warmup`` calls each, TVM first), then time in
alternating blocks, ABBA style (block 0: TVM then ORT, block 1: ORT then TVM, ...), so that a
drift of the machine (frequency, other load) hits both alike. ``threads`` sets ONNX Runtime's
intra-op threads (the caller builds the reference with :func:`tvm_pipeline.validate.ort_runner`);
the TVM runtime's pool is sized by ``TVM_NUM_THREADS`` before the module loads.

Between blocks both engines rest for ``COOL_DOWN_S`` so that the thread pool of the one that just
ran stops spinning before the other starts (spinning workers steal the cores the next engine
needs). The CPU time that *other* processes used during the timed blocks is measured (the whole
machine's busy time minus this process's) and reported as ``other_load`` in cores; above
``BUSY_CORES`` the result is flagged unreliable: someone else shared the machine.

With ``isolate`` (``bench --isolate``), each engine is also timed alone in a fresh process of its
own (:mod:`tvm_pipeline.run.isolated`: TVM, then ONNX Runtime, never together) on the same seeded
feed, warm-up, blocks and rests (:func:`time_blocks`), before the in-process timing. The
result then holds both medians; when either engine's in-process and isolated medians are further
apart than ``DISAGREE`` (larger / smaller - 1), or other processes' load exceeded ``BUSY_CORES``
in either phase, the result is unreliable and :attr:`BenchResult.reason` says why in one line.

Spinning: TVM's pool workers spin (``TVM_THREAD_POOL_SPIN_COUNT``, default 300000 yields) after
each parallel region before they sleep, and ONNX Runtime's intra-op workers spin too unless
``session.intra_op.allow_spinning`` is 0. The sessions of :func:`tvm_pipeline.run.validate.
ort_session` set it to 1 explicitly (ONNX Runtime's default, what a deployment gets): both engines
are timed as they run in production, with the same policy, a pool that spins between calls. What
keeps one engine's spinning off the other's timed calls is the rest before each block
(``COOL_DOWN_S``) and, with ``isolate``, separate processes. Measured on MobileNet V2 0.25-96
(x86-avx2, 2-core VM, 2 threads, quiet machine, 100 runs after 20 warm-up, two repeats):

* ORT with spinning off is much slower: medians 0.79 / 0.94 ms against 0.47 / 0.46 ms with it on
  (ABBA between the two sessions). TVM's median next to ORT spinning vs not: 0.56 vs 0.56 ms,
  then 0.73 vs 0.58 ms (within this VM's noise). Off would make ORT look ~1.8x slower than it
  deploys, so spinning stays on.
* After its last call, TVM's worker burns 0.19 s of CPU spinning, ORT's 0.06 s: the rest is
  0.3 s, above both (it was 0.2 s, which TVM's spin nearly filled).
* In-process vs isolated medians on this sub-millisecond model: TVM 0.83 vs 0.69 ms and ORT 0.74
  vs 0.57 ms in one run, TVM 0.60 vs 0.72 and ORT 0.54 vs 0.62 in the next (no consistent sign:
  run-to-run noise, which the 10% rule flags).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import UsageError
from ..target.spec import physical_cores
from .feeds import Runner

BLOCKS = 5   # alternating timing blocks per runner (fewer when runs < BLOCKS)
COOL_DOWN_S = 0.3   # rest before each block: spinning thread pools go idle
BUSY_CORES = 0.25   # other processes' load above this many cores makes a result unreliable
DISAGREE = 0.10     # in-process and isolated medians further apart than this: unreliable
_STATS = ("mean", "median", "p90", "p99", "std", "min", "max")


@dataclass(frozen=True)
class BenchOptions:
    warmup: int = 10
    runs: int = 50
    seed: int = 0
    threads: int | None = None     # None: one per physical core
    isolate: bool = False          # also time each engine alone in a fresh process

    def __post_init__(self) -> None:
        if self.runs < 1 or self.warmup < 0 or (self.threads is not None and self.threads < 1):
            raise UsageError(f"Bad benchmark options: runs={self.runs}, warmup={self.warmup}, "
                             f"threads={self.threads}.",
                             hint="Use --runs >= 1, --warmup >= 0 and --threads >= 1.")


@dataclass(frozen=True)
class LatencyStats:
    runs: int
    mean_ms: float
    median_ms: float
    p90_ms: float
    p99_ms: float
    std_ms: float           # population standard deviation
    min_ms: float
    max_ms: float

    @classmethod
    def from_seconds(cls, samples: Sequence[float]) -> "LatencyStats":
        """Statistics of per-call times given in seconds (percentiles interpolate linearly)."""
        ms = np.asarray(samples, dtype=np.float64) * 1e3
        if ms.ndim != 1 or ms.size == 0:
            raise UsageError("Latency statistics need at least one timed call.")
        median, p90, p99 = np.percentile(ms, [50, 90, 99])
        # enforce min <= median <= p90 <= p99 <= max against last-bit interpolation rounding
        ordered = np.maximum.accumulate([ms.min(), median, p90, p99, ms.max()])
        return cls(int(ms.size), float(ms.mean()), float(ordered[1]), float(ordered[2]),
                   float(ordered[3]), float(ms.std()), float(ordered[0]), float(ordered[4]))


@dataclass(frozen=True)
class IsolatedTimes:
    """Each engine timed alone, in a fresh process of its own (:mod:`tvm_pipeline.run.isolated`)."""
    tvm: LatencyStats
    ort: LatencyStats | None
    other_load: float | None = None   # most cores other processes used during a child's timing


def disagreement(in_process: LatencyStats, isolated: LatencyStats) -> float:
    """How far apart two medians are: larger / smaller - 1 (0.10: 10%), symmetric."""
    low, high = sorted((in_process.median_ms, isolated.median_ms))
    return high / low - 1 if low > 0 else math.inf


@dataclass
class BenchResult:
    tvm: LatencyStats
    ort: LatencyStats | None
    threads: int
    warmup: int
    other_load: float | None = None   # cores used by other processes while timing
    isolated: IsolatedTimes | None = None   # with ``isolate``: each engine in its own process

    def _pairs(self) -> list[tuple[str, LatencyStats, LatencyStats]]:
        """(engine, in-process, isolated) for each engine timed both ways."""
        if self.isolated is None:
            return []
        pairs = [("TVM", self.tvm, self.isolated.tvm)]
        if self.ort is not None and self.isolated.ort is not None:
            pairs.append(("ONNX Runtime", self.ort, self.isolated.ort))
        return pairs

    @property
    def busiest_load(self) -> float | None:
        """Most cores other processes used, over the in-process and the isolated timing."""
        loads = [load for load in (self.other_load, self.isolated and self.isolated.other_load)
                 if load is not None]
        return max(loads, default=None)

    @property
    def reason(self) -> str | None:
        """Why the result is unreliable, one line; None when it is reliable."""
        reasons = []
        busy = self.busiest_load
        if busy is not None and busy > BUSY_CORES:
            reasons.append(f"other processes used {busy:.2f} cores while timing (limit "
                           f"{BUSY_CORES:g})")
        for label, in_process, alone in self._pairs():
            apart = disagreement(in_process, alone)
            if apart > DISAGREE:
                reasons.append(f"{label}'s in-process median {in_process.median_ms:.3f} ms and "
                               f"isolated median {alone.median_ms:.3f} ms differ by "
                               f"{100 * apart:.0f}% (limit {100 * DISAGREE:.0f}%)")
        return "; ".join(reasons) or None

    @property
    def reliable(self) -> bool:
        return self.reason is None

    @property
    def ratio(self) -> float | None:
        """TVM median / ONNX Runtime median (> 1: TVM is slower); None without a reference."""
        return _ratio(self.tvm, self.ort)

    @property
    def isolated_ratio(self) -> float | None:
        """The same ratio between the isolated medians; None without them."""
        return None if self.isolated is None else _ratio(self.isolated.tvm, self.isolated.ort)

    def to_dict(self) -> dict:
        """Flat dict: ``tvm_<stat>_ms``, ``ort_<stat>_ms`` (None without ORT), ratio, runs...,
        ``reliable`` and its ``reason``; ``isolated_tvm_<stat>_ms``, ``isolated_ort_<stat>_ms``,
        ``isolated_ratio`` and ``isolated_other_load_cores`` (None unless isolated)."""
        iso = self.isolated
        data: dict = {"runs": self.tvm.runs, "warmup": self.warmup, "threads": self.threads}
        for prefix, stats in (("tvm", self.tvm), ("ort", self.ort)):
            for stat in _STATS:
                data[f"{prefix}_{stat}_ms"] = getattr(stats, f"{stat}_ms") if stats else None
        data["ratio"] = self.ratio
        data["other_load_cores"] = _cores(self.other_load)
        data["reliable"] = self.reliable
        data["reason"] = self.reason
        data["isolated"] = iso is not None
        for prefix, stats in (("isolated_tvm", iso and iso.tvm), ("isolated_ort", iso and iso.ort)):
            for stat in _STATS:
                data[f"{prefix}_{stat}_ms"] = getattr(stats, f"{stat}_ms") if stats else None
        data["isolated_ratio"] = self.isolated_ratio
        data["isolated_other_load_cores"] = _cores(iso.other_load if iso else None)
        return data

    def format(self) -> str:
        """A table (milliseconds) with rows TVM and ONNX Runtime, then the ratio line."""
        cols = ("mean", "median", "p90", "p99", "std")
        lines = [f"Latency in ms over {self.tvm.runs} runs after {self.warmup} warm-up call(s)"
                 + (f", ONNX Runtime on {self.threads} thread(s):" if self.ort else ":"),
                 f"{'':14}" + "".join(f"{c:>10}" for c in cols)]
        iso = self.isolated
        rows = (("TVM", self.tvm), ("ONNX Runtime", self.ort), ("TVM alone", iso and iso.tvm),
                ("ORT alone", iso and iso.ort))
        for label, stats in rows:
            if stats is not None:
                lines.append(f"{label:14}" + "".join(f"{getattr(stats, c + '_ms'):10.3f}"
                                                     for c in cols))
        if iso is not None:
            lines.append("(alone: each engine in a fresh process of its own, one after the other)")
        if not self.reliable:
            lines.append(f"UNRELIABLE: {self.reason}; re-run on a quiet machine (more --runs "
                         "steady the medians)")
        if self.ratio is not None:
            lines.append(_ratio_words(self.ratio, "median"))
        if self.isolated_ratio is not None:
            lines.append(_ratio_words(self.isolated_ratio, "median, each alone"))
        return "\n".join(lines)


def _ratio(tvm: LatencyStats, ort: LatencyStats | None) -> float | None:
    if ort is None or ort.median_ms <= 0:
        return None
    return tvm.median_ms / ort.median_ms


def _cores(load: float | None) -> float | None:
    return None if load is None else round(load, 3)


def _ratio_words(ratio: float, what: str) -> str:
    if ratio >= 1.005:
        return f"TVM is {ratio:.2f}x slower than ONNX Runtime ({what})"
    if ratio <= 1 / 1.005:
        return f"TVM is {1 / ratio:.2f}x faster than ONNX Runtime ({what})"
    return f"TVM is as fast as ONNX Runtime ({what}, within 0.5%)"


def _timed(runner: Runner, feeds: dict[str, np.ndarray], n: int) -> list[float]:
    """Seconds per call; a runner with its own ``timed`` (a remote device) times on the device."""
    if hasattr(runner, "timed"):
        return runner.timed(feeds, n)
    times = []
    for _ in range(n):
        start = time.perf_counter()
        runner(feeds)
        times.append(time.perf_counter() - start)
    return times


def time_runner(runner: Runner, feeds: dict[str, np.ndarray],
                options: BenchOptions) -> LatencyStats:
    """``options.warmup`` untimed calls, then ``options.runs`` calls each timed on its own."""
    _timed(runner, feeds, options.warmup)
    return LatencyStats.from_seconds(_timed(runner, feeds, options.runs))


def block_sizes(runs: int) -> list[int]:
    """Calls per timing block: ``runs`` split into ``min(BLOCKS, runs)`` near-equal blocks."""
    blocks = min(BLOCKS, runs)
    return [runs // blocks + (b < runs % blocks) for b in range(blocks)]


def time_blocks(runner: Runner, feeds: dict[str, np.ndarray], options: BenchOptions) -> list[float]:
    """One engine timed as :func:`bench` times it, without the other: ``options.warmup`` untimed
    calls, then the same blocks, each after the same rest; seconds per call."""
    _timed(runner, feeds, options.warmup)
    times: list[float] = []
    for size in block_sizes(options.runs):
        time.sleep(COOL_DOWN_S)
        times += _timed(runner, feeds, size)
    return times


class OtherLoad:
    """CPU time used by other processes between ``start`` and ``stop``, in cores."""

    def __init__(self):
        import psutil  # pylint: disable=import-outside-toplevel

        self._psutil, self._me = psutil, psutil.Process()

    def _busy(self) -> tuple[float, float, float]:
        total = self._psutil.cpu_times()
        mine = self._me.cpu_times()
        busy = total.user + total.system + getattr(total, "nice", 0.0)
        return busy, mine.user + mine.system + mine.children_user + mine.children_system, \
            time.perf_counter()

    def __enter__(self) -> "OtherLoad":
        self._start = self._busy()
        self.cores = 0.0
        return self

    def __exit__(self, *exc) -> None:
        end = self._busy()
        wall = max(end[2] - self._start[2], 1e-9)
        self.cores = max(0.0, (end[0] - self._start[0]) - (end[1] - self._start[1])) / wall


def bench(runner: Runner, reference: Runner | None, feeds: dict[str, np.ndarray],
          options: BenchOptions = BenchOptions()) -> BenchResult:
    """Time ``runner`` (TVM) and ``reference`` (ONNX Runtime) in alternating ABBA blocks."""
    threads = options.threads or physical_cores()
    if reference is None:
        with OtherLoad() as load:
            stats = LatencyStats.from_seconds(time_blocks(runner, feeds, options))
        return BenchResult(stats, None, threads, options.warmup, load.cores)
    _timed(runner, feeds, options.warmup)
    _timed(reference, feeds, options.warmup)
    times: dict[str, list[float]] = {"tvm": [], "ort": []}
    with OtherLoad() as load:
        for b, size in enumerate(block_sizes(options.runs)):
            order = (("tvm", runner), ("ort", reference))
            for key, fn in (order if b % 2 == 0 else order[::-1]):
                time.sleep(COOL_DOWN_S)
                times[key] += _timed(fn, feeds, size)
    return BenchResult(LatencyStats.from_seconds(times["tvm"]),
                       LatencyStats.from_seconds(times["ort"]), threads, options.warmup,
                       load.cores)
