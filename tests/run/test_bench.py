"""Latency measurement: statistics, the TVM/ORT schedule, and the report (ORT stands in for TVM)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tvm_pipeline.run.bench import BenchOptions, BenchResult, LatencyStats, bench, time_runner
from tvm_pipeline.errors import UsageError
from tvm_pipeline.models.mobilenet import MobileNetSpec, build_mobilenet
from tvm_pipeline.run.validate import ort_runner

STATS = ("median", "mean", "p90", "p99", "std", "min")
FAST = BenchOptions(warmup=1, runs=5, threads=1)


@pytest.fixture(scope="module")
def runners():
    model = build_mobilenet(MobileNetSpec("v2", 0.25, 96))
    return ort_runner(model, threads=1), ort_runner(model, threads=1)


@pytest.fixture(scope="module")
def feeds():
    rng = np.random.default_rng(0)
    return {"input": rng.uniform(-1, 1, (1, 3, 96, 96)).astype(np.float32)}


def assert_ordered(stats: LatencyStats) -> None:
    assert 0 < stats.min_ms <= stats.median_ms <= stats.p90_ms <= stats.p99_ms <= stats.max_ms
    assert stats.min_ms <= stats.mean_ms <= stats.max_ms and stats.std_ms >= 0


def test_stats_from_seconds():
    stats = LatencyStats.from_seconds([0.004, 0.001, 0.003, 0.002])
    assert stats.runs == 4
    assert stats.mean_ms == pytest.approx(2.5) and stats.median_ms == pytest.approx(2.5)
    assert stats.min_ms == pytest.approx(1.0) and stats.max_ms == pytest.approx(4.0)
    assert stats.p90_ms == pytest.approx(3.7) and stats.p99_ms == pytest.approx(3.97)
    assert stats.std_ms == pytest.approx(np.std([1, 2, 3, 4]))
    one = LatencyStats.from_seconds([0.005])
    assert one.min_ms == one.median_ms == one.p99_ms == one.max_ms == pytest.approx(5.0)
    with pytest.raises(UsageError):
        LatencyStats.from_seconds([])


def test_bench_against_reference(runners, feeds):
    tvm, ort = runners
    result = bench(tvm, ort, feeds, FAST)
    assert result.tvm.runs == result.ort.runs == 5 and result.warmup == 1 and result.threads == 1
    assert_ordered(result.tvm)
    assert_ordered(result.ort)
    assert result.ratio == pytest.approx(result.tvm.median_ms / result.ort.median_ms)
    data = json.loads(json.dumps(result.to_dict()))
    for prefix in ("tvm", "ort"):
        for stat in STATS:
            assert isinstance(data[f"{prefix}_{stat}_ms"], float)
    assert data["ratio"] == pytest.approx(result.ratio)
    assert (data["runs"], data["warmup"], data["threads"]) == (5, 1, 1)
    text = result.format()
    assert "TVM" in text and "ONNX Runtime" in text and "median" in text and "p99" in text
    assert "than ONNX Runtime (median)" in text or "as fast as" in text


def test_bench_without_reference(runners, feeds):
    result = bench(runners[0], None, feeds, FAST)
    assert result.ort is None and result.ratio is None
    assert_ordered(result.tvm)
    data = result.to_dict()
    assert data["ratio"] is None and all(data[f"ort_{s}_ms"] is None for s in STATS)
    assert "ONNX Runtime" not in result.format()


def test_schedule_counts_and_alternates():
    calls: list[str] = []

    def fake(tag):
        def run(feeds):
            calls.append(tag)
            return [feeds["x"]]
        return run
    feeds = {"x": np.zeros(1, np.float32)}
    result = bench(fake("tvm"), fake("ort"), feeds, BenchOptions(warmup=2, runs=7))
    assert calls.count("tvm") == calls.count("ort") == 9
    assert calls[:4] == ["tvm", "tvm", "ort", "ort"]           # both warmed up first
    timed = calls[4:]
    assert timed[:2] == ["tvm", "tvm"] and timed[2:4] == ["ort", "ort"]  # block 0: TVM, ORT
    assert timed[4:8] == ["ort", "ort", "tvm", "tvm"]          # block 1: ORT first (ABBA)
    assert result.tvm.runs == result.ort.runs == 7
    calls.clear()
    stats = time_runner(fake("t"), feeds, BenchOptions(warmup=3, runs=4))
    assert len(calls) == 7 and stats.runs == 4


def test_format_ratio_words():
    slow = LatencyStats.from_seconds([0.002] * 3)
    fast = LatencyStats.from_seconds([0.001] * 3)
    text = BenchResult(slow, fast, 2, 1).format()
    assert "TVM is 2.00x slower than ONNX Runtime (median)" in text
    assert "TVM is 2.00x faster than" in BenchResult(fast, slow, 2, 1).format()
    assert BenchResult(slow, fast, 2, 1).ratio == pytest.approx(2.0)


def test_bad_options():
    with pytest.raises(UsageError, match="runs=0"):
        BenchOptions(runs=0)
    with pytest.raises(UsageError):
        BenchOptions(threads=0)
