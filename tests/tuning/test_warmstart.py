"""Warm start: every task without a record starts from its checked, measured default schedule."""

from __future__ import annotations

import json
import re

from tvm_pipeline.api import CompileOptions, compile as compile_model, prepare, tune
from tvm_pipeline.models import MobileNetSpec, export_mobilenet
from tvm_pipeline.tuning import costmodel
from tvm_pipeline.tuning import database as db
from tvm_pipeline.tuning.tune import TaskState, TuneOptions


def test_warm_start_seeds_every_task_and_its_records_build_a_valid_model(small_v2, tmp_path):
    prepared = prepare(small_v2)
    logs = tmp_path / "logs"
    shown = []
    result = tune(prepared, TuneOptions(max_trials=4, trials_per_iter=4, logs=str(logs), seed=0),
                  report=lambda progress: shown.append(progress.trials))
    started = result.progress.started_from
    assert started.startswith("warm start: ") and "seeded with their checked default" in started
    assert shown and shown[0] == 0                  # reported before the first batch
    # every task had a measured time before any search: its default's
    assert all(task.best_us is not None for task in result.progress.tasks)
    # and, where the shipped logs have a tuned kernel of its structure, a time to expect
    assert "first tuned (share of the time x expected speed-up): " in started
    attainable = [t.attainable_us for t in result.progress.tasks if t.attainable_us is not None]
    assert len(attainable) >= len(result.progress.tasks) // 2 and min(attainable) > 0
    folder = logs / prepared.target.name
    records = [json.loads(line) for line in (folder / db.RECORD_FILE).read_text().splitlines()]
    workloads = {r[0] for r in records}
    assert len(workloads) == len(result.progress.tasks)
    # the seeded traces replay through the database: compile takes them all as tuned, and the
    # model still computes what ONNX Runtime computes (compile validates before writing)
    built = compile_model(prepared, tmp_path / "v2.tvm",
                          CompileOptions(logs=str(logs), shipped_logs=False))
    assert built.validation.passed
    assert len(built.build.tuned_kernels) + len(built.build.default_kernels) == \
        built.build.kernels_total and not built.build.naive_kernels
    assert len(built.build.tuned_kernels) >= len(result.progress.tasks) - 2


def test_tasks_are_taken_by_share_of_time_times_expected_speedup():
    near_limit = TaskState("near", 1, 0, best_us=100.0, attainable_us=95.0)   # speed-up 1.1 (floor)
    far = TaskState("far", 1, 0, best_us=60.0, attainable_us=15.0)            # 4x
    unknown = TaskState("unknown", 2, 0, best_us=20.0)                        # the prior, 2x
    unmeasured = TaskState("unmeasured", 1, 0)
    order = sorted([near_limit, far, unknown, unmeasured], key=lambda t: -t.expected_gain_us)
    assert [t.name for t in order] == ["unmeasured", "far", "unknown", "near"]
    assert far.expected_gain_us == 45.0 and unknown.expected_gain_us == 20.0


def test_cold_start_seeds_nothing(small_v2, tmp_path):
    prepared = prepare(small_v2)
    result = tune(prepared, TuneOptions(max_trials=4, trials_per_iter=4, logs=str(tmp_path),
                                        warm_start=False))
    assert result.progress.started_from == "warm start: none (disabled (--cold))"
    assert sum(task.best_us is not None for task in result.progress.tasks) < len(result.progress.tasks) / 2


def test_next_model_starts_from_borrowed_schedules_and_the_saved_cost_model(small_v2, tmp_path,
                                                                          monkeypatch):
    """A model nobody tuned, on a root where another model was tuned: its tasks are also seeded
    with the nearest tuned kernel's schedule (checked, timed, recorded), and the search starts
    from the cost model the first run saved."""
    monkeypatch.setattr(costmodel, "MAX_SAMPLES", 10**6)     # every measurement is kept
    logs = tmp_path / "logs"
    first = prepare(small_v2)
    tune(first, TuneOptions(max_trials=8, trials_per_iter=8, logs=str(logs), seed=0))
    folder = logs / first.target.name
    saved = costmodel.load([folder])
    assert saved.samples >= 8 and saved.model.booster is not None
    other = tmp_path / "v2_0.35_112.onnx"
    export_mobilenet(MobileNetSpec("v2", 0.35, 112), other)
    prepared = prepare(other)
    second = tune(prepared, TuneOptions(max_trials=4, trials_per_iter=4, logs=str(logs), seed=0))
    started = second.progress.started_from
    assert f"cost model: trained on {saved.samples} measurements" in started
    lent = int(re.search(r"(\d+) also with the nearest tuned kernel's", started).group(1))
    assert lent >= len(second.progress.tasks) // 2
    built = compile_model(prepared, tmp_path / "v2b.tvm",
                          CompileOptions(logs=str(logs), shipped_logs=False))
    assert built.validation.passed and not built.build.naive_kernels
    assert costmodel.load([folder]).samples == saved.samples + second.trials   # all kept
