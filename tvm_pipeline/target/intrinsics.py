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
    if "x86" in names:
        _vnni_for_this_llvm()
    return names


def _vnni_for_this_llvm() -> None:
    """Re-register TVM's VNNI dot product (``dot_16x4_vnni``) for the LLVM in the wheel: since
    LLVM 21, ``llvm.x86.avx512.vpdpbusd.512`` takes its two 8-bit operands as ``<64 x i8>``, and
    TVM 0.27's implementation still passes ``<16 x i32>`` (LLVM rejects the module: "Call
    parameter type does not match function signature"). Same description, same instruction."""
    # pylint: disable=import-outside-toplevel,no-member,invalid-name
    import tvm
    from tvm.s_tir import TensorIntrin
    from tvm.s_tir.tensor_intrin import x86
    from tvm.script import tirx as T

    if tvm.target.codegen.llvm_version_major() < 21:
        return

    @T.prim_func(s_tir=True)
    def impl(A: T.Buffer((4,), "uint8", offset_factor=1),
             B: T.Buffer((16, 4), "int8", offset_factor=1),
             C: T.Buffer((16,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:4], B[0:16, 0:4])
            T.writes(C[0:16])
            a = T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "uint8x4"), dtype="int32"), 16),
                              dtype="uint8x64")
            C[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"),
                C.vload([0], dtype="int32x16"), a, B.vload([0, 0], dtype="int8x64"),
                dtype="int32x16")

    TensorIntrin.register(x86.VNNI_DOT_16x4_INTRIN, x86.dot_product_16x4_u8i8i32_desc, impl,
                          override=True)


# The int8 dot-product instructions whose sums are exact (int32 sums of 8-bit products), by the
# name MetaSchedule's schedule rules give them, with the activation type each multiplies by int8
# weights. Left out on purpose: AVX-512 without VNNI (``vpmaddubsw`` saturates its int16 pair sums)
# and AVX-VNNI (MetaSchedule's VNNI intrinsic is 512 bits wide).
DOT_PRODUCT_ACTIVATIONS = {"vnni": "uint8", "dotprod": "int8"}
# output channels each instruction computes, and the input channels it sums into each of them
DOT_PRODUCT_TILES = {"vnni": 16, "dotprod": 4}
DOT_PRODUCT_DEPTH = 4


def int8_dot_product(target) -> str | None:
    """The exact int8 dot product ``target`` has (a key of ``DOT_PRODUCT_ACTIVATIONS``), or None:
    ``vnni`` (x86 AVX-512 VNNI ``vpdpbusd``, u8 x s8) or ``dotprod`` (ARM ``sdot``, s8 x s8)."""
    from tvm.target import codegen  # pylint: disable=import-outside-toplevel

    if target.kind.name != "llvm":
        return None
    if "aarch64" in str(target.attrs.get("mtriple", "")):
        return "dotprod" if bool(target.features.has_dotprod) else None
    return "vnni" if codegen.target_has_features("avx512vnni", target) else None
