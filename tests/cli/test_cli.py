"""The tvm-pipeline command line: what users type, what they read, and the exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import onnx
import pytest

from conftest import exported_style_model
from tvm_pipeline.errors import InputFileError, ModelError, UsageError, ValidationError


def test_models_export_reports_paper_numbers(cli, tmp_path):
    out = tmp_path / "v1.onnx"
    res = cli("models", "export", "--arch", "v1", "--alpha", "1.0", "--resolution", "224", "-o", out)
    assert res.code == 0 and out.exists()
    assert "4.21 M params" in res.out and "569 M multiply-adds" in res.out
    res = cli("models", "export", "--arch", "v2", "--alpha", "0.5", "--resolution", "160",
              "--opset", "11", "-o", tmp_path / "v2.onnx", "--json")
    data = json.loads(res.out)
    assert res.code == 0 and data["name"] == "mobilenet_v2_0.5_160" and data["macs"] > 0


def test_models_export_rejects_bad_spec(cli, tmp_path):
    res = cli("models", "export", "--arch", "v1", "--opset", "30", "-o", tmp_path / "x.onnx")
    assert res.code == UsageError.exit_code and "opset" in res.err
    assert not (tmp_path / "x.onnx").exists()


def test_inspect_table(cli, small_v2):
    res = cli("inspect", small_v2)
    assert res.code == 0
    for text in ("input", "logits", "depthwise", "pointwise", "1x1", "every operator is supported"):
        assert text in res.out, text
    data = json.loads(cli("inspect", small_v2, "--json").out)
    assert data["macs"] > 0 and data["params"] > 0


def test_targets_lists_files_and_marks_host(cli):
    res = cli("targets")
    assert res.code == 0 and "x86-avx512" in res.out and "x86-avx2" in res.out
    assert "* " in res.out  # this x86 host matches one of them
    data = json.loads(cli("targets", "--json").out)
    assert {t["name"] for t in data} >= {"x86-avx2", "x86-avx512"}
    assert all("kind" in t["tvm"] for t in data)


def test_unknown_target_lists_known_ones(cli, small_v2):
    res = cli("compile", small_v2, "--target", "nonexistent")
    assert res.code == UsageError.exit_code and "x86-avx512" in res.err


def test_compile_validate_bench_json(cli, tmp_path, small_v2):
    art = tmp_path / "small.tvm"
    res = cli("compile", small_v2, "-o", art, "--untuned", "--samples", "2")
    assert res.code == 0, res.err
    assert "PASSED" in res.out and " default (" in res.out and art.is_dir()
    assert " 0 naive" in res.out         # --untuned: every kernel on its default schedule
    report = json.loads(cli("validate", art, "--json", "--samples", "2").out)
    assert report["passed"] is True and report["outputs"][0]["max_abs"] < 1e-4
    bench = json.loads(cli("bench", art, "--runs", "3", "--warmup", "1", "--json").out)
    for key in ("tvm_median_ms", "ort_median_ms", "tvm_p90_ms", "tvm_p99_ms", "tvm_std_ms", "ratio"):
        assert key in bench, key
    # impossible tolerance: non-zero exit naming the tensor and its numbers
    res = cli("validate", art, "--atol", "0", "--rtol", "0", "--min-cosine", "1")
    assert res.code == ValidationError.exit_code and "logits" in res.err and "max abs" in res.err


def test_foreign_model_with_input_shape(cli, tmp_path):
    path = tmp_path / "exported.onnx"
    onnx.save(exported_style_model(), path)
    res = cli("compile", path, "--input-shape", "x:1,3,48,48", "-o", tmp_path / "e.tvm", "--json")
    assert res.code == 0, res.err
    meta = json.loads(res.out)
    assert meta["validation"]["passed"] and meta["validation"]["outputs"][0]["max_abs"] <= 1e-4


@pytest.mark.parametrize("case", ["missing", "malformed", "dynamic", "wrong-shape", "unsupported",
                                  "fifo", "endless", "huge-dim", "zero-budget"])
def test_bad_input_clear_error_no_traceback(case, tmp_path):
    """Run the real console entry point in a subprocess: one paragraph, non-zero, no traceback."""
    args, code = _bad_case(case, tmp_path)
    proc = subprocess.run([sys.executable, "-m", "tvm_pipeline", *map(str, args)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.startswith("error: ")
    assert not list(tmp_path.glob("*.tvm")) and not list(tmp_path.glob(".*.tmp"))


def _bad_case(case: str, tmp_path):
    out = ["-o", tmp_path / "out.tvm"]
    if case == "missing":
        return ["compile", tmp_path / "missing.onnx", *out], InputFileError.exit_code
    if case == "malformed":
        path = tmp_path / "bad.onnx"
        path.write_bytes(b"not an onnx model at all" * 100)
        return ["compile", path, *out], InputFileError.exit_code
    if case == "fifo":                    # reading it would block forever
        os.mkfifo(tmp_path / "pipe.onnx")
        return ["compile", tmp_path / "pipe.onnx", *out], InputFileError.exit_code
    if case == "endless":                 # reading it would never end
        (tmp_path / "zero.onnx").symlink_to("/dev/zero")
        return ["compile", tmp_path / "zero.onnx", *out], InputFileError.exit_code
    path = tmp_path / "exported.onnx"
    model = exported_style_model()
    if case == "unsupported":
        model.graph.node[1].op_type = "Celu"           # HardSwish -> an op Relax does not import
        model.graph.node[1].name = "/act/Celu"
        path_u = tmp_path / "unsupported.onnx"
        onnx.save(model, path_u)
        return (["compile", path_u, "--input-shape", "x:1,3,32,32", *out], ModelError.exit_code)
    onnx.save(model, path)
    if case == "dynamic":
        return ["compile", path, *out], UsageError.exit_code
    if case == "huge-dim":
        return ["compile", path, "--input-shape", f"x:1,3,{2**63},32", *out], UsageError.exit_code
    if case == "zero-budget":
        return ["tune", path, "--input-shape", "x:1,3,32,32", "--time-budget", "0",
                "--logs", tmp_path / "logs"], UsageError.exit_code
    return ["compile", path, "--input-shape", "x:1,3,32", *out], UsageError.exit_code


def test_targets_lists_gpu_targets(cli):
    data = {t["name"]: t for t in json.loads(cli("targets", "--json").out)}
    for name in ("cuda-sm75", "cuda-sm80", "cuda-sm86", "cuda-sm89", "cuda-sm90"):
        assert data[name]["tvm"]["kind"] == "cuda" and data[name]["device"] == "cuda"
        assert data[name]["export"] == "native" and not data[name]["host_default"]
    assert data["jetson-orin"]["tvm"]["arch"] == "sm_87" and data["jetson-orin"]["arch"] == "aarch64"
    for name in ("mali", "adreno", "adreno-texture", "mali-linux"):
        assert data[name]["tvm"]["kind"] == "opencl" and data[name]["device"] == "opencl"
        assert data[name]["tvm"]["host"]["mtriple"].startswith("aarch64")
    assert "texture" in data["adreno-texture"]["tvm"]["keys"]
    assert data["mali"]["export"] == "ndk" and data["mali-linux"]["export"] == "cross"


def _target_file(tmp_path, name, tvm_dict):
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({**tvm_dict, "pipeline": {"description": "user target",
                                                         "export": "native"}}))
    return path


def test_vulkan_target_says_codegen_is_missing(cli, small_v2, tmp_path):
    path = _target_file(tmp_path, "my-vulkan", {"kind": "vulkan", "device": "adreno"})
    for command in ("compile", "check"):
        res = cli(command, small_v2, "--target", path)
        assert res.code == UsageError.exit_code, res.err
        assert "Vulkan codegen is not in this TVM build" in res.err and "opencl" in res.err


@pytest.mark.parametrize("arch", ["sm_42", "sm_999", None])
def test_unknown_cuda_arch_lists_valid_ones(cli, small_v2, tmp_path, arch):
    spec = {"kind": "cuda", **({"arch": arch} if arch else {})}
    res = cli("compile", small_v2, "--target", _target_file(tmp_path, "my-cuda", spec))
    assert res.code == UsageError.exit_code, res.err
    assert "not an NVIDIA GPU architecture" in res.err
    assert "sm_80" in res.err and "sm_87" in res.err and "sm_90" in res.err


def test_check_refuses_cpu_targets(cli, small_v2):
    res = cli("check", small_v2, "--target", "x86-avx2")
    assert res.code == UsageError.exit_code and "generates no GPU kernels" in res.err
