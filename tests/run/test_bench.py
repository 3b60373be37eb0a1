"""Latency measurement: statistics, the TVM/ORT schedule, and the report (ORT stands in for TVM)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tvm_pipeline.run.bench import (BUSY_CORES, DISAGREE, BenchOptions, BenchResult, IsolatedTimes,
                                    LatencyStats, bench, disagreement, time_blocks, time_runner)
from tvm_pipeline.run import isolated
from tvm_pipeline.run.artifact import METADATA, library_record
from tvm_pipeline.errors import ToolchainError, UsageError
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
    calls.clear()
    assert len(time_blocks(fake("t"), feeds, BenchOptions(warmup=3, runs=7))) == 7   # as isolated
    assert len(calls) == 10


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


def ms(value: float) -> LatencyStats:
    return LatencyStats.from_seconds([value / 1e3] * 3)


def test_disagreement_rule():
    assert disagreement(ms(10), ms(11)) == pytest.approx(0.1)
    assert disagreement(ms(11), ms(10)) == pytest.approx(0.1)          # symmetric
    agree = BenchResult(ms(10), ms(5), 2, 1, 0.0, IsolatedTimes(ms(10.9), ms(4.6), 0.0))
    assert agree.reliable and agree.reason is None
    data = agree.to_dict()
    assert data["reliable"] is True and data["reason"] is None and data["isolated"] is True
    assert data["isolated_tvm_median_ms"] == pytest.approx(10.9)
    assert data["isolated_ort_median_ms"] == pytest.approx(4.6)
    assert data["isolated_ratio"] == pytest.approx(10.9 / 4.6)
    tvm_off = BenchResult(ms(10), ms(5), 2, 1, 0.0, IsolatedTimes(ms(11.2), ms(5), 0.0))
    assert not tvm_off.reliable and "TVM's" in tvm_off.reason and "12%" in tvm_off.reason
    assert "ONNX Runtime's" not in tvm_off.reason
    ort_off = BenchResult(ms(10), ms(5), 2, 1, 0.0, IsolatedTimes(ms(10), ms(4), 0.0))
    assert not ort_off.reliable and ort_off.reason.startswith("ONNX Runtime's")
    assert f"UNRELIABLE: {ort_off.reason}" in ort_off.format()
    assert "ORT alone" in ort_off.format() and "each alone" in ort_off.format()
    busy = BenchResult(ms(10), ms(5), 2, 1, 0.0, IsolatedTimes(ms(10), ms(5), BUSY_CORES + 0.1))
    assert not busy.reliable and "cores" in busy.reason
    assert busy.to_dict()["reason"] == busy.reason and busy.to_dict()["reliable"] is False
    plain = BenchResult(ms(10), ms(5), 2, 1, 0.0).to_dict()     # no isolation: keys still there
    assert plain["isolated"] is False and plain["isolated_tvm_median_ms"] is None
    assert plain["reliable"] is True and plain["reason"] is None


def test_isolated_bench_real_model(small_v2_artifact):
    from tvm_pipeline.api import bench as api_bench
    from tvm_pipeline.run.remote import RemoteOptions

    result = api_bench(small_v2_artifact, options=BenchOptions(warmup=1, runs=5, threads=1,
                                                               isolate=True))
    iso = result.isolated
    assert iso is not None and iso.tvm.runs == iso.ort.runs == result.tvm.runs == 5
    for stats in (result.tvm, result.ort, iso.tvm, iso.ort):
        assert_ordered(stats)
    assert iso.other_load is not None and iso.other_load >= 0
    apart = max(disagreement(result.tvm, iso.tvm), disagreement(result.ort, iso.ort))
    expected = apart <= DISAGREE and max(result.other_load, iso.other_load) <= BUSY_CORES
    assert result.reliable is expected and (result.reason is None) is expected
    data = json.loads(json.dumps(result.to_dict()))
    assert data["isolated_tvm_median_ms"] == pytest.approx(iso.tvm.median_ms)
    assert data["isolated_ort_median_ms"] == pytest.approx(iso.ort.median_ms)
    assert data["reliable"] is expected and data["tvm_median_ms"] == pytest.approx(
        result.tvm.median_ms)
    alone = api_bench(small_v2_artifact, options=BenchOptions(warmup=0, runs=2, isolate=True),
                      with_reference=False)                    # --no-ort: the TVM child only
    assert alone.ort is None and alone.isolated.ort is None and alone.isolated.tvm.runs == 2
    assert alone.to_dict()["isolated_ort_median_ms"] is None
    with pytest.raises(UsageError, match="remote device"):     # isolation is of local processes
        api_bench(small_v2_artifact, options=BenchOptions(isolate=True),
                  remote=RemoteOptions(rpc="127.0.0.1:9"))


def test_child_output_must_be_a_timing():
    cmd = ["python", "-m", "tvm_pipeline.run.isolated", "tvm", "a.tvm"]
    good = isolated.parse_output("tvm", cmd, 'noise\n{"seconds": [0.1, 0.2], "other_load": 0}',
                                 "", 2)
    assert good.seconds == [0.1, 0.2] and good.other_load == 0
    for stdout in ("", "not json", '{"seconds": [0.1], "other_load": 0}', "[1, 2]",
                   '{"seconds": [0.1, -1], "other_load": 0}'):
        with pytest.raises(ToolchainError) as err:
            isolated.parse_output("tvm", cmd, stdout, "child said this", 2)
        assert "tvm_pipeline.run.isolated" in str(err.value) and "child said this" in str(err.value)


def test_failing_child_is_a_pipeline_error(small_v2_artifact, tmp_path):
    """The artifact checks out here (metadata matches its library) but its library cannot load:
    the TVM child fails, and the CLI reports that as one error with the command, no traceback."""
    art = tmp_path / "corrupt.tvm"
    shutil.copytree(small_v2_artifact.path, art)
    (art / "model.so").write_bytes(b"not a shared library" * 64)
    meta = json.loads((art / METADATA).read_text())
    (art / METADATA).write_text(json.dumps({**meta, **library_record(art / "model.so")}))
    proc = subprocess.run([sys.executable, "-m", "tvm_pipeline", "bench", str(art), "--isolate",
                           "--runs", "2", "--warmup", "0"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == ToolchainError.exit_code, proc.stderr
    assert "Traceback" not in proc.stderr and "error: The isolated timing process" in proc.stderr
    assert "command: " in proc.stderr and "-m tvm_pipeline.run.isolated tvm" in proc.stderr
    assert "model.so" in proc.stderr         # the child's own error, carried in its stderr
