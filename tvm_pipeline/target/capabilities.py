"""Can this TVM build generate code for a target? Checked before any work, with a clear error.

- Code generation: TVM registers one ``target.build.<kind>`` function per backend compiled into the
  wheel; a kind without it (Vulkan in the PyPI wheel) cannot be built, whatever the target file says.
- Target attributes, per TVM target kind (``ATTRIBUTE_CHECKS``): CUDA's ``arch`` must be a real
  compute capability, or the build silently targets something no GPU is.
"""

from __future__ import annotations

import re
import shutil
import subprocess

from ..errors import UsageError
from .spec import TargetSpec

# NVIDIA compute capabilities (sm_XY); "a"/"f" suffixes select arch-specific feature sets.
CUDA_ARCHS = ("sm_50", "sm_52", "sm_53", "sm_60", "sm_61", "sm_62", "sm_70", "sm_72", "sm_75",
              "sm_80", "sm_86", "sm_87", "sm_88", "sm_89", "sm_90", "sm_100", "sm_101", "sm_103",
              "sm_110", "sm_120", "sm_121")


def has_codegen(kind: str) -> bool:
    import tvm  # pylint: disable=import-outside-toplevel

    return tvm.get_global_func(f"target.build.{kind}", allow_missing=True) is not None


def nvcc_archs(nvcc: str | None = None) -> list[str]:
    """The architectures this machine's nvcc compiles for (empty without nvcc)."""
    nvcc = nvcc or shutil.which("nvcc")
    if nvcc is None:
        return []
    out = subprocess.run([nvcc, "--list-gpu-arch"], capture_output=True, text=True, check=False)
    return [f"sm_{m}" for m in re.findall(r"compute_(\w+)", out.stdout)]


def valid_cuda_archs() -> list[str]:
    known = set(CUDA_ARCHS) | set(nvcc_archs())
    return sorted(known, key=lambda a: (int(re.sub(r"\D", "", a)), a))


def _check_cuda(spec: TargetSpec, tvm_dict: dict) -> None:
    arch = str(tvm_dict.get("arch", ""))
    base = re.sub(r"[af]$", "", arch)
    valid = valid_cuda_archs()
    if base not in valid:
        what = f'"arch": "{arch}"' if arch else 'no "arch"'
        raise UsageError(
            f"Target {spec.name} is a CUDA target with {what}, which is not an NVIDIA GPU "
            f"architecture. Valid ones: {', '.join(valid)}.",
            hint='Set "arch" to the compute capability of the GPU (e.g. "sm_80" for A100, "sm_86" '
                 'for RTX 30xx, "sm_87" for Jetson Orin), or use a shipped cuda-sm* target.')


ATTRIBUTE_CHECKS = {
    "cuda": _check_cuda,
}


def check_target(spec: TargetSpec) -> None:
    """Raise a UsageError when this TVM build cannot generate code for ``spec``."""
    import tvm  # pylint: disable=import-outside-toplevel

    parts = [spec.tvm] + ([spec.tvm["host"]] if isinstance(spec.tvm.get("host"), dict) else [])
    for part in parts:
        kind = str(part.get("kind", ""))
        if kind and not has_codegen(kind):
            buildable = sorted(k for k in tvm.target.Target.list_kinds() if has_codegen(k))
            raise UsageError(
                f"Target {spec.name} asks for {kind} code, and {kind.capitalize()} codegen is not in "
                f"this TVM build (apache-tvm {tvm.__version__} has no target.build.{kind}).",
                hint=f"Use a kind this build can generate ({', '.join(buildable)}); for phone GPUs "
                     "the OpenCL targets (mali, adreno, adreno-texture) work with this wheel, or "
                     f"build TVM from source with {kind} enabled.")
        check = ATTRIBUTE_CHECKS.get(kind)
        if check is not None:
            check(spec, part)
