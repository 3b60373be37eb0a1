"""Artifacts: a re-compiled artifact at the same path is the one that runs; a damaged one is refused
before anything loads it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from conftest import const, make_model
from tvm_pipeline import compile as compile_model, prepare, validate
from tvm_pipeline.errors import InputFileError
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


def _damage(path, case: str):
    meta_path = path / "metadata.json"
    meta = json.loads(meta_path.read_text())
    if case == "truncated-library":           # used to crash the loader with SIGBUS
        data = (path / "model.so").read_bytes()
        (path / "model.so").write_bytes(data[: len(data) // 2])
    elif case == "swapped-library":
        (path / "model.so").write_bytes((path / "model.so").read_bytes() + b"\0")
    elif case == "library-outside":
        meta["library"] = "../../../etc/passwd"
        meta_path.write_text(json.dumps(meta))
    elif case == "unknown-version":
        meta["format_version"] = 99
        meta_path.write_text(json.dumps(meta))
    elif case == "metadata-list":
        meta_path.write_text("[1, 2, 3]")
    elif case == "metadata-not-utf8":
        meta_path.write_bytes(b"\xff\xfe{\x00")
    elif case == "unknown-key":
        meta_path.write_text(json.dumps({**meta, "surprise": 1}))
    elif case == "wrong-type":
        meta["inputs"][0]["shape"] = "1x4"
        meta_path.write_text(json.dumps(meta))
    return {"truncated-library": "truncated", "swapped-library": "replaced",
            "library-outside": "not a file name inside", "unknown-version": "version 99",
            "metadata-list": "not tvm-pipeline metadata",
            "metadata-not-utf8": "not valid JSON", "unknown-key": "unknown keys \\['surprise'\\]",
            "wrong-type": "\"shape\" must be a list of integers"}[case]


@pytest.mark.parametrize("case", ["truncated-library", "swapped-library", "library-outside",
                                  "unknown-version", "metadata-list", "metadata-not-utf8",
                                  "unknown-key", "wrong-type"])
def test_damaged_artifacts_are_refused_before_loading(case, tmp_path):
    out = tmp_path / "m.tvm"
    compile_model(prepare(_affine(tmp_path / "a.onnx", 2.0)), out)
    expected = _damage(out, case)
    with pytest.raises(InputFileError, match=expected) as info:
        load_artifact(out)
    assert info.value.exit_code == 3
    # the CLI: one paragraph, exit 3, no crash or traceback
    res = subprocess.run([sys.executable, "-m", "tvm_pipeline", "validate", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 3 and "Traceback" not in res.stderr, res.stderr
    assert "metadata.json" in res.stderr or "model.so" in res.stderr


def test_recorded_shapes_that_no_longer_fit_the_model_are_refused(cli, tmp_path):
    out = tmp_path / "m.tvm"
    compile_model(prepare(_affine(tmp_path / "a.onnx", 2.0)), out)
    meta = json.loads((out / "metadata.json").read_text())
    meta["inputs"][0]["shape"] = [1, 5]
    (out / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(InputFileError, match="do not fit the model"):
        validate(out)
    res = cli("validate", out)
    assert res.code == InputFileError.exit_code and "metadata.json" in res.err
    assert "a.onnx" in res.err and "Error" not in res.err


def test_staging_left_by_a_killed_compile_is_removed_by_the_next(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    abandoned = tmp_path / f".m.tvm.{dead}.abc123.tmp"
    abandoned.mkdir()
    (abandoned / "model.so").write_bytes(b"half a library")
    mine = tmp_path / f".m.tvm.{os.getpid()}.def456.tmp"     # a live process's: kept
    mine.mkdir()
    compile_model(prepare(_affine(tmp_path / "a.onnx", 2.0)), tmp_path / "m.tvm")
    assert not abandoned.exists() and mine.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["a.onnx", "m.tvm", mine.name])
