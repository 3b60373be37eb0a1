"""Device checks: every generated GPU kernel goes through the real device compilers available here,
and (OpenCL) runs on PoCL against the CPU build of the same fused function (``numerics``).

Checks by device code kind (``CHECKS``):

- ``cuda``: ``nvcc --fatbin`` for the target's arch (SASS + PTX): the kernels compile ahead of time
  exactly as NVRTC will compile them on the device; the fatbin is kept for the artifact.
- ``opencl``: ``clang -x cl -cl-std=CL2.0 -target spir64`` (front end + SPIR codegen, one file per
  kernel program), PoCL's build of each program (as TVM's OpenCL runtime builds it), then the
  kernel-level numerical check on PoCL.

A check whose tool is missing is SKIPPED with the reason, never passed. A failure names the kernel,
the command and the compiler's message.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable

from ...target.capabilities import nvcc_archs
from .results import (FAILED, PASSED, SKIPPED, CheckInput, CheckOptions, CheckReport,
                      CheckResult, KernelFailure)

CLANG_NAMES = ("clang", "clang-19", "clang-18", "clang-17", "clang-16", "clang-15", "clang-14")
FATBIN = "kernels.fatbin"


def _run(command: list[str], cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          check=False)


def _errors_by_kernel(output: str, locate: Callable[[str], str | None]) -> list[KernelFailure]:
    """Group compiler error lines by the kernel ``locate(line)`` names (error lines with no source
    location, such as "2 errors generated.", only when no line has one)."""
    grouped: dict[str, list[str]] = {}
    unlocated: list[str] = []
    for line in output.splitlines():
        if "error" not in line:
            continue
        kernel = locate(line)
        (grouped.setdefault(kernel, []) if kernel else unlocated).append(line.strip())
    if not grouped and unlocated:
        grouped["(module)"] = unlocated
    return [KernelFailure(k, "\n".join(v[:8])) for k, v in grouped.items()]


def _cuda_arch(target) -> str:
    return str(target.attrs.get("arch", ""))


def check_nvcc(inp: CheckInput) -> CheckResult:
    start, arch = time.perf_counter(), _cuda_arch(inp.target)
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return CheckResult("nvcc", SKIPPED, "nvcc is not on PATH (install the CUDA toolkit); the "
                           "CUDA kernels were not compile-checked", len(inp.code.kernels))
    supported = nvcc_archs(nvcc)
    if re.sub(r"[af]$", "", arch) not in supported:
        return CheckResult("nvcc", SKIPPED, f"this nvcc cannot compile for {arch} (it supports "
                           f"{', '.join(supported)})", len(inp.code.kernels))
    number = arch[3:]
    with tempfile.TemporaryDirectory(prefix="tvmp-nvcc-") as tmp:
        work = Path(tmp)
        (work / "kernels.cu").write_text(inp.code.source)
        command = [nvcc, "--fatbin", "-O3", "-gencode", f"arch=compute_{number},code=[sm_{number},"
                   f"compute_{number}]", "--expt-relaxed-constexpr", "-o", FATBIN, "kernels.cu"]
        proc = _run(command, work)
        seconds = time.perf_counter() - start
        detail = f"{len(inp.code.kernels)} kernels compiled to SASS+PTX for {arch} ({FATBIN})"
        if proc.returncode == 0:
            return CheckResult("nvcc", PASSED, detail, len(inp.code.kernels), seconds=seconds,
                               command=command, files={FATBIN: (work / FATBIN).read_bytes()})

    def locate(line: str) -> str | None:
        match = re.match(r"kernels\.cu\((\d+)\)", line)
        if not match:
            return None
        return inp.code.kernel_at_line(int(match.group(1))) or "(module prefix)"

    failures = _errors_by_kernel(proc.stdout + proc.stderr, locate) or [
        KernelFailure("(module)", (proc.stdout + proc.stderr).strip()[-1500:])]
    return CheckResult("nvcc", FAILED, f"nvcc failed for {arch}", len(inp.code.kernels), failures,
                       seconds, command)


def _clang() -> str | None:
    return next((found for name in CLANG_NAMES if (found := shutil.which(name))), None)


def check_clang(inp: CheckInput) -> CheckResult:
    start, clang = time.perf_counter(), _clang()
    count = len(inp.code.kernels)
    if clang is None:
        return CheckResult("clang", SKIPPED, "clang is not on PATH (apt-get install clang); the "
                           "OpenCL kernels were not checked by an OpenCL C compiler", count)
    with tempfile.TemporaryDirectory(prefix="tvmp-clang-") as tmp:
        work = Path(tmp)
        files = []
        for name in inp.code.kernels:
            (work / f"{name}.cl").write_text(inp.code.program(name))
            files.append(f"{name}.cl")
        # Every OpenCL driver defines __OPENCL_VERSION__ (the platform version); clang's spir64
        # target does not, and TVM's texture kernels select read_imagef's signature with it.
        command = [clang, "-x", "cl", "-cl-std=CL2.0", "-target", "spir64",
                   "-D__OPENCL_VERSION__=200", "-c", "-emit-llvm", "-Wno-everything"]
        proc = _run(command + files, work)
    seconds = time.perf_counter() - start
    detail = f"{count} kernel programs compiled to SPIR (OpenCL C 2.0)"
    if proc.returncode == 0:
        return CheckResult("clang", PASSED, detail, count, seconds=seconds, command=command + ["K.cl"])

    def locate(line: str) -> str | None:
        match = re.match(r"(\w+)\.cl:\d+", line)
        return match.group(1) if match else None

    failures = _errors_by_kernel(proc.stderr, locate)
    return CheckResult("clang", FAILED, f"clang rejected {len(failures)} kernel program(s)", count,
                       failures, seconds, command + ["K.cl"])


def check_pocl_build(inp: CheckInput) -> CheckResult:
    from .pocl import KernelBuildError, open_pocl  # pylint: disable=import-outside-toplevel

    start, count = time.perf_counter(), len(inp.code.kernels)
    device, reason = open_pocl()
    if device is None:
        return CheckResult("pocl-build", SKIPPED, reason, count)
    failures = []
    for name in inp.code.kernels:
        try:
            device.build(inp.code.program(name), name)
        except KernelBuildError as err:
            failures.append(KernelFailure(name, err.log))
    status = FAILED if failures else PASSED
    return CheckResult("pocl-build", status, f"{count - len(failures)}/{count} kernel programs built "
                       f"by {device.name}, as TVM's OpenCL runtime builds them", count, failures,
                       time.perf_counter() - start)


def check_pocl_numerics(inp: CheckInput) -> CheckResult:
    from .numerics import verify  # pylint: disable=import-outside-toplevel

    if not inp.options.numerics:
        return CheckResult("pocl-numerics", SKIPPED, "disabled (--no-numerics)", len(inp.code.kernels))
    return verify(inp)


CHECKS: dict[str, tuple[Callable[[CheckInput], CheckResult], ...]] = {
    "cuda": (check_nvcc,),
    "opencl": (check_clang, check_pocl_build, check_pocl_numerics),
}


def run_checks(target_name: str, inp: CheckInput) -> CheckReport:
    """Every check for the device code's kind; a later check is skipped once one failed."""
    results: list[CheckResult] = []
    for check in CHECKS.get(inp.code.kind, ()):
        if any(r.status == FAILED for r in results):
            name = check.__name__.replace("check_", "").replace("_", "-")
            results.append(CheckResult(name, SKIPPED, "an earlier check failed", len(inp.code.kernels)))
            continue
        results.append(check(inp))
    return CheckReport(target_name, results)


def check_build(build, options: CheckOptions = CheckOptions()) -> CheckReport | None:
    """Run the device checks on a ``BuildResult`` (None: a CPU build, nothing to check)."""
    from .kernels import device_code  # pylint: disable=import-outside-toplevel

    code = device_code(build.executable)
    if code is None:
        return None
    spec = build.prepared.target
    return run_checks(spec.name, CheckInput(code, spec.to_tvm(), build.ir, build.prepared.mod, options))
