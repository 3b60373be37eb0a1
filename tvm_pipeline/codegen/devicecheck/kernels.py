"""The device code of a GPU build: the source TVM embedded in the library, split per kernel.

TVM 0.27 ships GPU kernels as source inside the exported library: CUDA C++ (compiled on the device
at load time through NVRTC) or OpenCL C (one self-contained program per kernel, delimited by
``// Function: NAME`` lines; the OpenCL runtime builds each one separately). ``DeviceCode`` keeps
that source as a prefix plus one segment per kernel, so a check can name the kernel a compiler
message belongs to, and a test can edit one kernel and check again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

OPENCL_DELIMITER = "// Function: "
_CUDA_DEFINITION = re.compile(
    r'^extern "C" __global__ void (?:__launch_bounds__\(\d+\) )?(\w+)\(.*\{\s*$', re.MULTILINE)
_KERNEL_SUFFIX = re.compile(r"_kernel(_\d+)?$")
DEVICE_KINDS = ("cuda", "opencl")


@dataclass(frozen=True)
class DeviceCode:
    kind: str                                  # device module kind: "cuda" or "opencl"
    prefix: str                                # text before the first kernel (CUDA: headers, declarations)
    kernels: dict[str, str] = field(default_factory=dict)   # kernel name -> its segment, in order

    @property
    def source(self) -> str:
        """The whole module source, as embedded in the library."""
        return self.prefix + "".join(self.kernels.values())

    @property
    def names(self) -> list[str]:
        return list(self.kernels)

    def program(self, kernel: str) -> str:
        """What a device compiles for ``kernel``: its own program (OpenCL), else the whole module."""
        return self.kernels[kernel] if self.kind == "opencl" else self.source

    def kernel_at_line(self, line: int) -> str | None:
        """The kernel whose segment holds 1-based ``line`` of ``source`` (None: the prefix)."""
        start = self.prefix.count("\n") + 1
        for name, text in self.kernels.items():
            end = start + text.count("\n")
            if start <= line < end:
                return name
            start = end
        return None

    def with_kernel(self, kernel: str, text: str) -> "DeviceCode":
        """A copy with one kernel's segment replaced (tests corrupt a kernel this way)."""
        if kernel not in self.kernels:
            raise KeyError(kernel)
        return DeviceCode(self.kind, self.prefix, {**self.kernels, kernel: text})


def tir_function(kernel: str) -> str:
    """The fused TIR function a device kernel was split from (``f_kernel``, ``f_kernel_1`` -> f)."""
    return _KERNEL_SUFFIX.sub("", kernel)


def _split(source: str, starts: list[tuple[int, str]]) -> tuple[str, dict[str, str]]:
    if not starts:
        return source, {}
    bounds = [pos for pos, _ in starts] + [len(source)]
    return source[:bounds[0]], {name: source[bounds[i]:bounds[i + 1]]
                                for i, (_, name) in enumerate(starts)}


def parse(kind: str, source: str) -> DeviceCode:
    if kind == "opencl":
        starts = [(m.start(), m.group(1)) for m in
                  re.finditer(rf"(?m)^{re.escape(OPENCL_DELIMITER)}(\w+)\s*$", source)]
    else:
        starts = [(m.start(), m.group(1)) for m in _CUDA_DEFINITION.finditer(source)]
    prefix, kernels = _split(source, starts)
    return DeviceCode(kind, prefix, kernels)


def device_module(module):
    """The first imported module of a device kind in a library's import tree (None: CPU only)."""
    if module.kind in DEVICE_KINDS:
        return module
    for child in module.imports:
        found = device_module(child)
        if found is not None:
            return found
    return None


def device_code(executable) -> DeviceCode | None:
    """The device code of a built ``relax.VMExecutable`` (None for CPU-only builds)."""
    module = device_module(executable.mod)
    if module is None:
        return None
    return parse(module.kind, module.inspect_source())
