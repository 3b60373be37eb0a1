"""targets/ and tuned_logs/ are product data: a plain `pip install .` must carry them."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_carries_targets_and_logs_and_works_outside_the_checkout(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path),
                    str(ROOT)], check=True, capture_output=True, timeout=600)
    wheel = next(tmp_path.glob("tvm_pipeline-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for target in (ROOT / "targets").glob("*.json"):
        assert f"tvm_pipeline/shipped_targets/{target.name}" in names
    for db in (*(ROOT / "tuned_logs").glob("*/database_*.json"),
               *(ROOT / "tuned_logs").glob("*/cost_model.npz")):
        assert f"tvm_pipeline/shipped_logs/{db.parent.name}/{db.name}" in names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run([sys.executable, "-m", "tvm_pipeline", "targets", "--json"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "x86-avx512" in out.stdout and str(site) in out.stdout  # read from the installed copy
