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

# when to interrupt, as a fraction of the time from the "compiling" line to the end of an
# uninterrupted compile on this machine (measured once); -1: 1 s of CPU before that line
MOMENTS = (-1.0, 0.0, 0.1, 0.3, 0.5, 0.75)


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


def _compile(model, out):
    return subprocess.Popen([sys.executable, "-m", "tvm_pipeline", "compile", str(model),
                             "--untuned", "-o", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_ctrl_c_as_in_a_terminal)


@pytest.fixture(scope="module")
def compile_seconds(small_v2, tmp_path_factory) -> float:
    """Seconds from the "compiling" line to the end of the same compile, uninterrupted."""
    proc = _compile(small_v2, tmp_path_factory.mktemp("timed") / "v2.tvm")
    assert "compiling" in proc.stderr.readline()
    start = time.perf_counter()
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return time.perf_counter() - start


@pytest.mark.parametrize("moment", MOMENTS)
def test_ctrl_c_during_compile_exits_130_and_writes_nothing(small_v2, compile_seconds, tmp_path,
                                                            moment):
    out = tmp_path / "v2.tvm"
    proc = _compile(small_v2, out)
    if moment < 0:
        _wait_for_start(proc)
    else:
        assert "compiling" in proc.stderr.readline()
        time.sleep(moment * compile_seconds)
    assert proc.poll() is None, "compile finished before the interrupt: use an earlier moment"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err and "internal error" not in err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []       # no staging folder either
