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
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import UsageError
from ..target.spec import physical_cores
from .feeds import Runner

BLOCKS = 5   # alternating timing blocks per runner (fewer when runs < BLOCKS)
COOL_DOWN_S = 0.2   # rest between blocks: spinning thread pools go idle
BUSY_CORES = 0.25   # other processes' load above this many cores makes a result unreliable
_STATS = ("mean", "median", "p90", "p99", "std", "min", "max")


@dataclass(frozen=True)
class BenchOptions:
    warmup: int = 10
    runs: int = 50
    seed: int = 0
    threads: int | None = None     # None: one per physical core

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


@dataclass
class BenchResult:
    tvm: LatencyStats
    ort: LatencyStats | None
    threads: int
    warmup: int
    other_load: float | None = None   # cores used by other processes while timing

    @property
    def reliable(self) -> bool:
        return self.other_load is None or self.other_load <= BUSY_CORES

    @property
    def ratio(self) -> float | None:
        """TVM median / ONNX Runtime median (> 1: TVM is slower); None without a reference."""
        if self.ort is None or self.ort.median_ms <= 0:
            return None
        return self.tvm.median_ms / self.ort.median_ms

    def to_dict(self) -> dict:
        """Flat dict: ``tvm_<stat>_ms``, ``ort_<stat>_ms`` (None without ORT), ratio, runs..."""
        data: dict = {"runs": self.tvm.runs, "warmup": self.warmup, "threads": self.threads}
        for prefix, stats in (("tvm", self.tvm), ("ort", self.ort)):
            for stat in _STATS:
                data[f"{prefix}_{stat}_ms"] = getattr(stats, f"{stat}_ms") if stats else None
        data["ratio"] = self.ratio
        data["other_load_cores"] = None if self.other_load is None else round(self.other_load, 3)
        data["reliable"] = self.reliable
        return data

    def format(self) -> str:
        """A table (milliseconds) with rows TVM and ONNX Runtime, then the ratio line."""
        cols = ("mean", "median", "p90", "p99", "std")
        lines = [f"Latency in ms over {self.tvm.runs} runs after {self.warmup} warm-up call(s)"
                 + (f", ONNX Runtime on {self.threads} thread(s):" if self.ort else ":"),
                 f"{'':14}" + "".join(f"{c:>10}" for c in cols)]
        for label, stats in (("TVM", self.tvm), ("ONNX Runtime", self.ort)):
            if stats is not None:
                lines.append(f"{label:14}" + "".join(f"{getattr(stats, c + '_ms'):10.3f}"
                                                     for c in cols))
        ratio = self.ratio
        if not self.reliable:
            lines.append(f"UNRELIABLE: other processes used {self.other_load:.2f} cores while "
                         "timing; re-run on a quiet machine")
        if ratio is not None:
            if ratio >= 1.005:
                lines.append(f"TVM is {ratio:.2f}x slower than ONNX Runtime (median)")
            elif ratio <= 1 / 1.005:
                lines.append(f"TVM is {1 / ratio:.2f}x faster than ONNX Runtime (median)")
            else:
                lines.append("TVM is as fast as ONNX Runtime (median, within 0.5%)")
        return "\n".join(lines)


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


class _OtherLoad:
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

    def __enter__(self) -> "_OtherLoad":
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
        with _OtherLoad() as load:
            stats = time_runner(runner, feeds, options)
        return BenchResult(stats, None, threads, options.warmup, load.cores)
    _timed(runner, feeds, options.warmup)
    _timed(reference, feeds, options.warmup)
    blocks = min(BLOCKS, options.runs)
    sizes = [options.runs // blocks + (b < options.runs % blocks) for b in range(blocks)]
    times: dict[str, list[float]] = {"tvm": [], "ort": []}
    with _OtherLoad() as load:
        for b, size in enumerate(sizes):
            order = (("tvm", runner), ("ort", reference))
            for key, fn in (order if b % 2 == 0 else order[::-1]):
                time.sleep(COOL_DOWN_S)
                times[key] += _timed(fn, feeds, size)
    return BenchResult(LatencyStats.from_seconds(times["tvm"]),
                       LatencyStats.from_seconds(times["ort"]), threads, options.warmup,
                       load.cores)
