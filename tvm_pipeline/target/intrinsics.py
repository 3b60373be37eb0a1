"""Register only the tensor intrinsics a target's tuning can use.

MetaSchedule's ``TuneContext`` runs ``import tvm.s_tir.tensor_intrin``, whose ``__init__`` builds
the intrinsics of every backend (CUDA alone takes ~20 s here), although a target's schedule rules
only refer to its own (x86: ``x86``'s AVX-512/VNNI dot products; ARM: ``arm_cpu``'s). For the
targets below, ``register_for`` puts the package in ``sys.modules`` without running its
``__init__`` and imports just the submodules named; the ``import`` in ``TuneContext`` then finds
it and does nothing. Any other target imports the package as usual (every backend's intrinsics).
A later call for another target adds its submodules, so the order of calls does not matter.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

_PACKAGE = "tvm.s_tir.tensor_intrin"
_ALL = ("cuda", "arm_cpu", "x86", "rocm", "hexagon", "riscv_cpu")   # what its __init__ imports

# (TVM target kind, machine) -> the intrinsic modules its MetaSchedule schedule rules use
_MODULES = {
    ("llvm", "x86_64"): ("x86",),
    ("llvm", "aarch64"): ("arm_cpu",),
    ("llvm", "armv7l"): ("arm_cpu",),
}


def register_for(kind: str, arch: str) -> tuple[str, ...]:
    """Import the tensor intrinsics for a target of TVM kind ``kind`` running on ``arch``; return
    the submodules imported (all of them for targets not listed above)."""
    names = _MODULES.get((kind, arch))
    if names is None:
        importlib.import_module(_PACKAGE)
        names = _ALL
    elif _PACKAGE not in sys.modules:
        spec = importlib.util.find_spec(_PACKAGE)
        package = importlib.util.module_from_spec(spec)   # its __init__ is not run
        sys.modules[_PACKAGE] = package
        setattr(importlib.import_module("tvm.s_tir"), "tensor_intrin", package)
    for name in names:
        importlib.import_module(f"{_PACKAGE}.{name}")
    return names
