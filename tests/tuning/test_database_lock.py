"""One tuning database, a `tune` and a `distill` at the same time: the file lock serialises them,
and no record is lost (every measured trial is either a record or counted as distilled)."""

from __future__ import annotations

import json
import subprocess
import sys

from tvm_pipeline.models import MobileNetSpec, export_mobilenet
from tvm_pipeline.target.spec import detect_host_target
from tvm_pipeline.tuning import database as db


def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "tvm_pipeline", *map(str, args)]


def _accounted(folder) -> int:
    """Records in the file plus the trials distill counted as dropped."""
    trials = json.loads((folder / db.TRIALS_FILE).read_text()) if (folder / db.TRIALS_FILE).exists() else {}
    return db.count_records(folder) + sum(trials.values())


def test_tune_and_distill_at_once_lose_no_record(tmp_path):
    model = tmp_path / "v1.onnx"
    export_mobilenet(MobileNetSpec("v1", 0.25, 96), model)
    logs, folder = tmp_path / "logs", tmp_path / "logs" / detect_host_target().name
    tune = _cli("tune", model, "--logs", logs, "--trials", "4", "--trials-per-iter", "4",
                "--trials-per-task", "64", "--json")
    first = subprocess.run(tune, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    before = db.count_records(folder)
    tuning = subprocess.Popen(tune, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in tuning.stderr:                 # the second run is about to take the lock
        if line.startswith("tuning "):
            break
    distill = subprocess.run(_cli("distill", "--logs", logs, "--no-verify", "--json"),
                             capture_output=True, text=True, timeout=600)
    out, _ = tuning.communicate(timeout=600)
    assert tuning.returncode == 0 and distill.returncode == 0, distill.stderr[-2000:]
    assert "waiting for another tvm-pipeline process" in distill.stderr   # they did overlap
    measured = json.loads(out)["trials"]
    assert measured > 0 and _accounted(folder) == before + measured
    lines = [json.loads(line) for line in (folder / db.RECORD_FILE).read_text().splitlines()]
    assert all(isinstance(line, list) and len(line) == 2 for line in lines)
