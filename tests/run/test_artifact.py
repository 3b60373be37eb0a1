"""Artifacts: a re-compiled artifact at the same path is the one that runs."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import onnx
from onnx import TensorProto, helper

from conftest import const, make_model
from tvm_pipeline import compile as compile_model, prepare
from tvm_pipeline.run.artifact import load_artifact


def _affine(path, scale: float):
    f32 = TensorProto.FLOAT
    model = make_model([helper.make_node("Mul", ["x", "s"], ["y"])],
                       [helper.make_tensor_value_info("x", f32, [1, 4])],
                       [helper.make_tensor_value_info("y", f32, [1, 4])],
                       [const("s", np.full((1, 4), scale, np.float32))])
    onnx.save(model, path)
    return path


def test_recompiling_to_the_same_path_runs_the_new_build_in_the_same_process(tmp_path):
    out = tmp_path / "m.tvm"
    x = {"x": np.ones((1, 4), np.float32)}
    compile_model(prepare(_affine(tmp_path / "a.onnx", 2.0)), out)
    assert np.allclose(load_artifact(out).runner()(x)[0], 2.0)
    compile_model(prepare(_affine(tmp_path / "b.onnx", 3.0)), out)
    # the dynamic loader caches libraries by path: without care this would run the first build
    assert np.allclose(load_artifact(out).runner()(x)[0], 3.0)
    assert np.allclose(load_artifact(out).runner()(x)[0], 3.0)


def test_artifacts_run_on_every_physical_core(tmp_path):
    """TVM's default pool on x86 is half the logical CPUs (1 thread on a 2-core VM); artifacts run
    on the physical cores, as ONNX Runtime and the tuned schedules do. A fresh process, without
    TVM_NUM_THREADS: the test session's pool may exist already."""
    out = tmp_path / "m.tvm"
    compile_model(prepare(_affine(tmp_path / "a.onnx", 2.0)), out)
    script = textwrap.dedent(f"""
        import numpy as np, tvm
        from tvm_pipeline.run.artifact import load_artifact
        from tvm_pipeline.target.spec import physical_cores
        runner = load_artifact({str(out)!r}).runner()
        runner({{"x": np.ones((1, 4), np.float32)}})
        print(tvm.runtime.num_threads(), physical_cores())
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("TVM_NUM_THREADS", "OMP_NUM_THREADS")}
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    threads, cores = map(int, res.stdout.split())
    assert threads == cores
    # an explicit choice wins
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env={**env, "TVM_NUM_THREADS": "1"}, timeout=300)
    assert res.returncode == 0 and res.stdout.split()[0] == "1", res.stderr[-2000:]
