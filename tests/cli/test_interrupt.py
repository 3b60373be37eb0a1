"""Ctrl-C at any moment of `compile`: exit 130, no artifact, no staging folder, never another build.

Moments are spread over the compile of a small model (import, fusion, default schedules and their
check, codegen, export, validation); an interrupt that lands inside a TVM pass comes back from
TVM's FFI as an error of its own, which must still end as an interrupt."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

MOMENTS_S = (1.0, 3.0, 6.0, 10.0, 15.0)


@pytest.mark.parametrize("moment", MOMENTS_S)
def test_ctrl_c_during_compile_exits_130_and_writes_nothing(small_v2, tmp_path, moment):
    out = tmp_path / "v2.tvm"
    proc = subprocess.Popen([sys.executable, "-m", "tvm_pipeline", "compile", str(small_v2),
                             "--untuned", "-o", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(moment)
    assert proc.poll() is None, "compile finished before the interrupt: use a later moment"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err and "internal error" not in err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []       # no staging folder either
