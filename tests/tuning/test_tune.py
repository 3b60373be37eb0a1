"""Tuning for real (tiny budgets): records survive SIGKILL, re-running resumes, compile applies them."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import onnx
from onnx import TensorProto, helper

from conftest import const, make_model
from tvm_pipeline.target.spec import detect_host_target
from tvm_pipeline.tuning import database as db


def tiny_cnn(path, size: int = 16):
    """conv3x3 + clip -> depthwise 3x3 + clip: two fused conv kernels (plus layout transposes)."""
    rng = np.random.default_rng(0)
    f32 = TensorProto.FLOAT
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Clip", ["c1", "lo", "hi"], ["a1"]),
        helper.make_node("Conv", ["a1", "w2", "b2"], ["c2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                         group=8),
        helper.make_node("Clip", ["c2", "lo", "hi"], ["y"]),
    ]
    inits = [const("w1", rng.normal(0, .3, (8, 3, 3, 3)).astype(np.float32)),
             const("b1", rng.normal(0, .1, (8,)).astype(np.float32)),
             const("w2", rng.normal(0, .3, (8, 1, 3, 3)).astype(np.float32)),
             const("b2", rng.normal(0, .1, (8,)).astype(np.float32)),
             const("lo", np.array(0, np.float32)), const("hi", np.array(6, np.float32))]
    model = make_model(nodes, [helper.make_tensor_value_info("x", f32, [1, 3, size, size])],
                       [helper.make_tensor_value_info("y", f32, [1, 8, size, size])], inits)
    onnx.save(model, path)
    return path


def _tune_cmd(model, logs, *extra):
    return [sys.executable, "-m", "tvm_pipeline", "tune", str(model), "--logs", str(logs),
            "--trials-per-iter", "4", *map(str, extra)]


def test_repair_drops_a_record_cut_by_a_kill(tmp_path):
    folder = tmp_path / "t"
    folder.mkdir()
    (folder / db.WORKLOAD_FILE).write_text('["a", "b"]\n')
    (folder / db.RECORD_FILE).write_text('[0, [1]]\n[0, [2]]\n[0, [3')
    assert db.repair(folder).dropped_lines == 1
    assert db.count_records(folder) == 2
    assert (folder / db.RECORD_FILE).read_text() == '[0, [1]]\n[0, [2]]\n'


def test_tune_killed_then_resumed_keeps_every_record(tmp_path):
    model = tiny_cnn(tmp_path / "tiny.onnx")
    logs = tmp_path / "logs"
    records = logs / detect_host_target().name / db.RECORD_FILE   # tune targets this machine
    stderr = tmp_path / "tune.stderr"
    with stderr.open("w") as err:
        proc = subprocess.Popen(_tune_cmd(model, logs, "--trials", "400", "--trials-per-task", "100"),
                                stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    deadline = time.time() + 400
    try:
        while time.time() < deadline and "best estimated latency" not in stderr.read_text():
            assert proc.poll() is None, stderr.read_text()
            time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    progress = stderr.read_text()
    # live display (the first batch may be the input transpose, whose space has one candidate)
    assert re.search(r"trials [1-4]/", progress) and "best estimated latency" in progress
    db.repair(records.parent)
    killed_with = db.count_records(records.parent)
    assert killed_with >= 1

    # resume: a wall-clock budget of 1 s stops after the first batch, records only grow
    res = subprocess.run(_tune_cmd(model, logs, "--trials", "400", "--trials-per-task", "100",
                                   "--time-budget", "1s", "--json"),
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["records_before"] == killed_with
    assert out["records_after"] > killed_with and out["stopped_by"] == "time"
    done_before = sum(t["trials"] for t in out["per_task"]) - out["trials"]
    assert done_before == killed_with  # the per-task budget counts what the database holds

    # every task to 4 trials (the layout transposes have a single candidate each), then a per-task
    # budget already met: nothing to do
    res = subprocess.run(_tune_cmd(model, logs, "--trials", "400", "--trials-per-task", "4"),
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    res = subprocess.run(_tune_cmd(model, logs, "--trials", "10", "--trials-per-task", "1", "--json"),
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0 and json.loads(res.stdout)["stopped_by"] == "nothing-to-do"

    # compile applies the records: tuned kernels, still validated against ONNX Runtime
    res = subprocess.run([sys.executable, "-m", "tvm_pipeline", "compile", str(model), "--logs",
                          str(logs), "-o", str(tmp_path / "tiny.tvm"), "--json"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    meta = json.loads(res.stdout)
    assert meta["kernels"]["tuned"]["count"] >= 1 and meta["validation"]["passed"]
    assert meta["database"]["digest"]

    # distill: best verified record per kernel; the budget still counts the dropped trials
    res = subprocess.run([sys.executable, "-m", "tvm_pipeline", "distill", "--logs", str(logs),
                          "--json"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    distilled = json.loads(res.stdout)
    assert distilled["records_after"] < distilled["records_before"] and distilled["verified"] >= 1
    assert distilled["bytes_after"] < distilled["bytes_before"]
    res = subprocess.run(_tune_cmd(model, logs, "--trials", "1", "--trials-per-task", "4", "--json"),
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    todo = json.loads(res.stdout)["per_task"]    # tasks still under budget: only 1-candidate ones
    assert all("conv" not in t["name"] for t in todo), todo

    # the same network at another size has no records: its kernels borrow the tuned schedules of
    # the 16x16 ones instead of running naive, and the build still validates
    other = tiny_cnn(tmp_path / "tiny24.onnx", size=24)
    res = subprocess.run([sys.executable, "-m", "tvm_pipeline", "compile", str(other), "--logs",
                          str(logs), "-o", str(tmp_path / "tiny24.tvm"), "--json"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    meta = json.loads(res.stdout)
    assert meta["kernels"]["tuned"]["count"] == 0 and meta["kernels"]["borrowed"]["count"] >= 1
    assert meta["validation"]["passed"]


def test_ctrl_c_stops_cleanly_and_keeps_records(tmp_path):
    model = tiny_cnn(tmp_path / "tiny.onnx")
    logs = tmp_path / "logs"
    stderr = tmp_path / "tune.stderr"
    with stderr.open("w") as err:
        proc = subprocess.Popen(_tune_cmd(model, logs, "--trials", "400", "--trials-per-task", "100"),
                                stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True)
    try:
        deadline = time.time() + 400
        while time.time() < deadline and "best estimated latency" not in stderr.read_text():
            assert proc.poll() is None, stderr.read_text()
            time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGINT)     # what a terminal sends on Ctrl-C
        out, _ = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, stderr.read_text()
    assert "stopping after the batch in flight" in stderr.read_text()
    assert "Traceback" not in stderr.read_text()
    kept = db.count_records(logs / detect_host_target().name)
    assert kept >= 1 and f"holds {kept} records" in out
    assert re.search(r"s with start-up: \d+\.\d\d trials/s\)", out), out


def _pooled_cnn(path, extra_conv: bool):
    """conv3x3 + relu (+ conv1x1 + relu) -> global max pool: the pool is a kernel of its own, the
    same kernel in both variants but with its reduction block named after a different tensor.
    (Not an average pool: CPU lowering makes that a matrix product, ``lowering.means``.)"""
    rng = np.random.default_rng(1)
    f32 = TensorProto.FLOAT
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["a1"])]
    inits = [const("w1", rng.normal(0, .3, (16, 3, 3, 3)).astype(np.float32))]
    if extra_conv:
        nodes += [helper.make_node("Conv", ["a1", "w2"], ["c2"], kernel_shape=[1, 1]),
                  helper.make_node("Relu", ["c2"], ["a2"])]
        inits.append(const("w2", rng.normal(0, .3, (16, 16, 1, 1)).astype(np.float32)))
    nodes.append(helper.make_node("GlobalMaxPool", [nodes[-1].output[0]], ["y"]))
    model = make_model(nodes, [helper.make_tensor_value_info("x", f32, [1, 3, 16, 16])],
                       [helper.make_tensor_value_info("y", f32, [1, 16, 1, 1])], inits)
    onnx.save(model, path)
    return path


def _reduction_blocks(prepared) -> set[str]:
    return {line.split('T.sblock("')[1].split('"')[0]
            for _, func in prepared.mod.functions_items() if hasattr(func, "body")
            for line in func.script().splitlines() if 'T.sblock("' in line and "_red" in line}


def test_two_models_with_the_same_kernel_under_other_names_tune_into_one_loadable_database(
        tmp_path):
    from tvm_pipeline.api import prepare, tune  # pylint: disable=import-outside-toplevel
    from tvm_pipeline.tuning.tune import TuneOptions  # pylint: disable=import-outside-toplevel

    first = prepare(_pooled_cnn(tmp_path / "a.onnx", extra_conv=False))
    second = prepare(_pooled_cnn(tmp_path / "b.onnx", extra_conv=True))
    assert _reduction_blocks(first) != _reduction_blocks(second)    # the case this is about
    logs = tmp_path / "logs"
    for prepared, trials in ((first, 4), (second, 8)):
        tune(prepared, TuneOptions(logs=str(logs), trials_per_task=trials, trials_per_iter=4,
                                   warm_start=False))
    folder = logs / first.target.name
    database = db.open_json_database(folder)        # MetaSchedule replays every record's trace
    assert len(database.get_all_tuning_records()) == db.count_records(folder) > 8


def test_a_time_budget_is_the_budget_unless_trials_are_given():
    from tvm_pipeline.tuning.tune import TuneOptions  # pylint: disable=import-outside-toplevel

    assert TuneOptions().budget() == (2000, 64)
    trials, per_task = TuneOptions(time_budget_s=600.0).budget()
    assert trials > 100_000 and per_task == 512    # 10 minutes at 3-4 trials/s: time binds
    assert TuneOptions(time_budget_s=600.0, max_trials=300, trials_per_task=8).budget() == (300, 8)
    assert TuneOptions(trials_per_task=8).budget() == (2000, 8)
    assert TuneOptions(time_budget_s=0.0).budget() == (2000, 64)   # no deadline either: untimed
