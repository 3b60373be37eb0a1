"""PoCL (Portable Computing Language, a CPU OpenCL implementation) through pyopencl.

PoCL builds and runs the OpenCL C that TVM generates for phone GPUs on this machine's CPU; TVM's own
runtime here has no OpenCL. Programs are built exactly as TVM's OpenCL runtime builds them: one
program per kernel, no build options (``clBuildProgram(..., nullptr, ...)``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

POCL_PLATFORM = "Portable Computing Language"
INSTALL_HINT = "install it with `apt-get install pocl-opencl-icd` and `pip install pyopencl`"


@dataclass
class PoclDevice:
    context: object        # pyopencl.Context
    queue: object          # pyopencl.CommandQueue
    name: str

    def build(self, source: str, kernel: str):
        """Build one kernel's program; raises ``KernelBuildError`` with PoCL's build log."""
        import pyopencl as cl  # pylint: disable=import-outside-toplevel

        try:
            program = cl.Program(self.context, source).build()
            return getattr(program, kernel)
        except (cl.Error, AttributeError) as err:
            raise KernelBuildError(kernel, _build_log(err)) from err


class KernelBuildError(Exception):
    def __init__(self, kernel: str, log: str):
        super().__init__(f"{kernel}: {log}")
        self.kernel = kernel
        self.log = log


def _build_log(err: Exception) -> str:
    lines = [line for line in str(err).splitlines() if "error" in line.lower()]
    return "\n".join(lines[:12]) or str(err).strip()[-1500:]


def open_pocl() -> tuple[PoclDevice | None, str]:
    """The PoCL device, or None and the reason it is not available."""
    try:
        import pyopencl as cl  # pylint: disable=import-outside-toplevel
    except ImportError:
        return None, f"pyopencl is not installed ({INSTALL_HINT})"
    try:
        platforms = cl.get_platforms()
    except cl.Error as err:
        return None, f"no OpenCL platform ({err}); {INSTALL_HINT}"
    for platform in platforms:
        if platform.name == POCL_PLATFORM and platform.get_devices():
            device = platform.get_devices()[0]
            context = cl.Context([device])
            version = re.search(r"PoCL \S+", platform.version)
            name = f"{version.group(0) if version else platform.name} ({device.name.split('-')[0]})"
            return PoclDevice(context, cl.CommandQueue(context), name), ""
    names = ", ".join(p.name for p in platforms) or "none"
    return None, f"no PoCL OpenCL platform (platforms: {names}); {INSTALL_HINT}"
