"""What the machine code of an aarch64 CPU artifact does, per kernel, read from its disassembly.

For each kernel (``NAME_compute_``: the function TVM emits for a fused kernel; its parallel lambdas
sit in the same address range) it counts the NEON vector FMAs (``fmla vD.4s``/``.2d``; the scalar
form ``fmla sD`` does not count) and whether it starts a parallel region: TVM calls
``TVMBackendParallelLaunch`` through a pointer the loader fills in, so the kernel loads that
pointer from its GOT slot (``adrp`` + ``ldr``), found from the library's dynamic relocations.
This is evidence, without a board, that the cross-compiled kernels are vectorized and parallel.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ...errors import ToolchainError

_SYMBOL = re.compile(r"^([0-9a-f]+) <(.+)>:$")
_ADRP = re.compile(r"\badrp\s+(x\d+), ([0-9a-f]+) ")
_LDR = re.compile(r"\bldr\s+x\d+, \[(x\d+), #(\d+)\]")
_VECTOR_FMA = re.compile(r"\bfml[as]\s+v\d+\.(4s|2d|8h)")
_COMPUTE = "_compute_"
PARALLEL_LAUNCH = "__TVMBackendParallelLaunch"


@dataclass(frozen=True)
class KernelCode:
    kernel: str
    vector_fmas: int       # NEON vector FMA instructions in the kernel's code
    parallel: bool         # the kernel launches TVM's thread pool

    def to_dict(self) -> dict:
        return {"kernel": self.kernel, "vector_fmas": self.vector_fmas, "parallel": self.parallel}


def _run(command: list[str]) -> str:
    try:
        return subprocess.run(command, capture_output=True, text=True, check=True,
                              timeout=300).stdout
    except FileNotFoundError as err:
        raise ToolchainError(f"{command[0]} is not installed.", command=command,
                             hint="Install binutils for aarch64 (Debian: apt-get install "
                                  "binutils-aarch64-linux-gnu, part of g++-aarch64-linux-gnu).") from err
    except subprocess.CalledProcessError as err:
        raise ToolchainError(f"{command[0]} failed on {command[-1]}.", command=command,
                             stderr=err.stderr) from err


def _got_slots(library: Path, readelf: str) -> set[int]:
    """Addresses of the GOT slots that hold TVMBackendParallelLaunch's pointer variable."""
    slots = set()
    for line in _run([readelf, "-rW", str(library)]).splitlines():
        fields = line.split()
        if len(fields) >= 5 and fields[4].startswith(PARALLEL_LAUNCH):
            slots.add(int(fields[0], 16))
    return slots


def kernel_code(library: Path, objdump: str = "aarch64-linux-gnu-objdump",
                readelf: str = "aarch64-linux-gnu-readelf") -> dict[str, KernelCode]:
    """Kernel name -> its vector FMAs and parallel launch, from ``library``'s disassembly."""
    slots = _got_slots(library, readelf)
    counts: dict[str, list] = {}
    current, pages = None, {}
    for line in _run([objdump, "-d", "--no-show-raw-insn", str(library)]).splitlines():
        symbol = _SYMBOL.match(line)
        if symbol:
            name = symbol.group(2)
            current = name[: -len(_COMPUTE)] if name.endswith(_COMPUTE) else None
            pages = {}
            if current is not None:
                counts.setdefault(current, [0, False])
            continue
        if current is None:
            continue
        if _VECTOR_FMA.search(line):
            counts[current][0] += 1
        if adrp := _ADRP.search(line):
            pages[adrp.group(1)] = int(adrp.group(2), 16)
        elif (ldr := _LDR.search(line)) and ldr.group(1) in pages:
            if pages[ldr.group(1)] + int(ldr.group(2)) in slots:
                counts[current][1] = True
    return {name: KernelCode(name, fmas, parallel) for name, (fmas, parallel) in counts.items()}
