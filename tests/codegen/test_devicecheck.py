"""Device checks of GPU kernels on real builds of MobileNet V2 0.25-96: nvcc for CUDA; clang, PoCL
build and the kernel-level numerical check on PoCL for OpenCL; corrupted kernels are caught and
named."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from tvm_pipeline.api import CompileOptions, check as check_verb, compile as compile_model, prepare
from tvm_pipeline.errors import ToolchainError
from tvm_pipeline.codegen.devicecheck.check import (FAILED, PASSED, SKIPPED, CheckInput, CheckOptions,
                                       run_checks)
from tvm_pipeline.codegen.devicecheck.kernels import device_code, tir_function

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="needs a C++ compiler")


@pytest.fixture(scope="session")
def cuda_compiled(small_v2, tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu") / "v2-cuda.tvm"
    return compile_model(prepare(small_v2, "cuda-sm80"), out, CompileOptions(use_database=False))


@pytest.fixture(scope="session")
def mali_compiled(small_v2, tmp_path_factory):
    """The OpenCL artifact a machine without an Android NDK can produce (aarch64 Linux host)."""
    if shutil.which("aarch64-linux-gnu-g++") is None:
        pytest.skip("needs g++-aarch64-linux-gnu (scripts/setup.sh installs it)")
    out = tmp_path_factory.mktemp("gpu") / "v2-mali.tvm"
    return compile_model(prepare(small_v2, "mali-linux"), out, CompileOptions(use_database=False))


def _by_check(report) -> dict:
    return {r.check: r for r in report.results}


def _inputs(compiled, code, options=CheckOptions()) -> CheckInput:
    build = compiled.build
    return CheckInput(code, build.prepared.target.to_tvm(), build.ir, build.prepared.mod, options)


def test_cuda_compile_checks_every_kernel_with_nvcc(cuda_compiled):
    meta = cuda_compiled.artifact.metadata
    checks = {c["check"]: c for c in meta["device_checks"]["checks"]}
    assert set(checks) == {"nvcc"}
    assert meta["kernels"]["default"]["count"] == cuda_compiled.build.kernels_total == 33   # DLight
    assert meta["kernels"]["naive"]["count"] == 0
    if shutil.which("nvcc") is None:
        assert checks["nvcc"]["status"] == SKIPPED and "not on PATH" in checks["nvcc"]["detail"]
        return
    assert checks["nvcc"]["status"] == PASSED and checks["nvcc"]["kernels"] == 33
    assert "compute_80" in checks["nvcc"]["command"]
    fatbin = cuda_compiled.artifact.path / "kernels.fatbin"
    assert fatbin.stat().st_size > 10_000 and "NVRTC" in meta["files"]["kernels.fatbin"]["note"]
    assert meta["validation"]["skipped"].startswith("target cuda-sm80 does not run on this machine")


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc")
def test_nvcc_names_the_broken_kernel(cuda_compiled):
    code = device_code(cuda_compiled.build.executable)
    victim = code.names[3]
    broken = code.with_kernel(victim, code.kernels[victim].replace("{", "{ undeclared_symbol = 1;", 1))
    report = run_checks("cuda-sm80", _inputs(cuda_compiled, broken))
    nvcc = _by_check(report)["nvcc"]
    assert nvcc.status == FAILED and [f.kernel for f in nvcc.failures] == [victim]
    assert "undeclared_symbol" in nvcc.failures[0].message
    with pytest.raises(ToolchainError, match=victim) as err:
        report.raise_for_failures()
    assert "nvcc" in str(err.value) and err.value.exit_code == 5


def test_missing_nvcc_is_skipped_not_passed(cuda_compiled, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))      # a PATH with no nvcc on it
    code = device_code(cuda_compiled.build.executable)
    report = run_checks("cuda-sm80", _inputs(cuda_compiled, code))
    nvcc = _by_check(report)["nvcc"]
    assert nvcc.status == SKIPPED and "nvcc is not on PATH" in nvcc.detail and not nvcc.files
    assert not report.failed and "SKIPPED" in report.format()


def test_opencl_artifact_passes_clang_pocl_and_numerics(mali_compiled):
    meta = mali_compiled.artifact.metadata
    checks = {c["check"]: c for c in meta["device_checks"]["checks"]}
    assert list(checks) == ["clang", "pocl-build", "pocl-numerics"]
    assert all(c["status"] == PASSED for c in checks.values()), checks
    per_kernel = checks["pocl-numerics"]["per_kernel"]
    assert len(per_kernel) == 33 and all(k["status"] == "verified" for k in per_kernel)
    errors = [k["max_abs_error"] for k in per_kernel]
    assert max(errors) <= 1e-4 and min(errors) >= 0
    assert meta["target"]["device"] == "opencl" and meta["toolchain"]["export"] == "cross"
    assert (mali_compiled.artifact.path / "model.so").exists()


def _corrupt_clip(code) -> tuple[str, str]:
    """Swap max and min in the clip (ReLU6) of one fused conv kernel: it still compiles."""
    victim = next(n for n in code.names if "maximum" in n and "conv2d" in n)
    text, swapped = re.subn(r"\b(f?)min\((\(\w+\))?(f?)max\(", r"\1max(\2\3min(",
                             code.kernels[victim], count=1)
    assert swapped == 1, code.kernels[victim]
    return victim, text


def test_numerical_check_catches_a_wrong_but_compiling_kernel(mali_compiled):
    code = device_code(mali_compiled.build.executable)
    victim, text = _corrupt_clip(code)
    report = run_checks("mali-linux", _inputs(mali_compiled, code.with_kernel(victim, text)))
    checks = _by_check(report)
    assert checks["clang"].status == PASSED and checks["pocl-build"].status == PASSED
    numerics = checks["pocl-numerics"]
    assert numerics.status == FAILED and [f.kernel for f in numerics.failures] == [victim]
    bad = [k for k in numerics.per_kernel if k.status == "mismatch"]
    assert [k.function for k in bad] == [tir_function(victim)] and bad[0].max_abs_error > 0.1
    with pytest.raises(ToolchainError, match=re.escape(victim)):
        report.raise_for_failures()


def test_clang_names_a_kernel_that_does_not_compile(mali_compiled):
    code = device_code(mali_compiled.build.executable)
    victim = code.names[-1]
    broken = code.with_kernel(victim, code.kernels[victim].replace("{", "{ int oops = ;", 1))
    report = run_checks("mali-linux", _inputs(mali_compiled, broken, CheckOptions(numerics=False)))
    clang = _by_check(report)["clang"]
    assert clang.status == FAILED and [f.kernel for f in clang.failures] == [victim]
    assert "expected expression" in clang.failures[0].message
    assert _by_check(report)["pocl-build"].status == SKIPPED      # after a failure


def test_check_command_verifies_adreno_without_ndk(cli, small_v2, monkeypatch):
    for var in ("TVM_NDK_CC", "ANDROID_NDK_HOME", "ANDROID_NDK_ROOT"):
        monkeypatch.delenv(var, raising=False)
    res = cli("check", small_v2, "--target", "adreno", "--json")
    assert res.code == 0, res.err
    data = json.loads(res.out)
    checks = {c["check"]: c for c in data["checks"]}
    assert data["passed"] and all(c["status"] == PASSED for c in checks.values()), checks
    per_kernel = checks["pocl-numerics"]["per_kernel"]
    assert len(per_kernel) == 33 and all(k["status"] == "verified" for k in per_kernel)
    assert all(k["max_abs_error"] <= 1e-4 for k in per_kernel)


def test_adreno_texture_builds_and_numerics_flag_lane_by_lane_texture_writes(small_v2):
    """The texture tag compiles (depthwise fix, corrected TIR pipeline) and every kernel passes clang
    and PoCL's build. On PoCL, image2d reads agree with the CPU; but TVM 0.27 writes some textures
    lane by lane (VectorizeLoop falls back to a serial loop, and each write_imagef stores a
    broadcast scalar to the whole texel), and exactly those functions are flagged."""
    run = check_verb(prepare(small_v2, "adreno-texture"))
    checks = _by_check(run.report)
    assert checks["clang"].status == PASSED and checks["pocl-build"].status == PASSED
    code = device_code(run.build.executable)
    results = {r.function: r for r in checks["pocl-numerics"].per_kernel}
    assert len(results) == run.build.kernels_total > 33 and any("depthwise" in f for f in results)
    writes_texture = {f for f, r in results.items()
                      if any("write_imagef" in code.kernels[k] for k in r.kernels)}
    reads_texture = {f for f, r in results.items()
                     if any("READ_IMAGEF(" in code.kernels[k] for k in r.kernels)} - writes_texture
    assert writes_texture and reads_texture
    for function, result in results.items():
        expected = "mismatch" if function in writes_texture else "verified"
        assert result.status == expected, (function, result.reason)
        if expected == "verified":
            assert result.max_abs_error <= 1e-4
    assert checks["pocl-numerics"].status == FAILED
    with pytest.raises(ToolchainError):
        run.report.raise_for_failures()
