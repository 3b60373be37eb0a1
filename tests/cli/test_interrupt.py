"""Ctrl-C at any moment of `compile`: exit 130, no artifact, no staging folder, never another build.

Moments are counted from the "compiling" line (the model is imported and fused by then) and spread
over the rest (default schedules and their check, codegen, export, validation), plus one during
the import itself; an interrupt that lands inside a TVM pass comes back from TVM's FFI as an error
of its own, which must still end as an interrupt. (A signal that arrives while the Python
interpreter itself is still starting kills it before any of our code runs: nothing is written
then either, but the exit status is the signal's.)"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

MOMENTS_S = (-1.0, 0.0, 1.0, 3.0, 6.0, 10.0)   # after the "compiling" line; -1: 1 s before it


def _ctrl_c_as_in_a_terminal() -> None:
    """The child's SIGINT as in a terminal: a test run started in the background (``nohup ... &``)
    would hand its children SIGINT ignored, and the CLI keeps an ignored SIGINT ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_for_start(proc, seconds: float = 1.0) -> None:
    """Sleep until the CLI has been running for ``seconds`` (its modules imported, importing ONNX
    and TVM for the model): the first moment it can act on a signal, under any machine load."""
    import psutil

    process = psutil.Process(proc.pid)
    while process.cpu_times().user + process.cpu_times().system < seconds:
        time.sleep(0.05)


@pytest.mark.parametrize("moment", MOMENTS_S)
def test_ctrl_c_during_compile_exits_130_and_writes_nothing(small_v2, tmp_path, moment):
    out = tmp_path / "v2.tvm"
    proc = subprocess.Popen([sys.executable, "-m", "tvm_pipeline", "compile", str(small_v2),
                             "--untuned", "-o", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_ctrl_c_as_in_a_terminal)
    if moment < 0:
        _wait_for_start(proc)
    else:
        assert "compiling" in proc.stderr.readline()
        time.sleep(moment)
    assert proc.poll() is None, "compile finished before the interrupt: use an earlier moment"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err and "internal error" not in err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []       # no staging folder either
