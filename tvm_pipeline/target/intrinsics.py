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
from dataclasses import dataclass

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
        _register_avx2_pair_dot()
    return names


AVX2_PAIR_DOT = "dot_8x2_u8i16_avx2"


def _register_avx2_pair_dot() -> None:
    """``AVX2_PAIR_DOT``: 8 int32 sums, each of 2 products of a uint8 activation (the same 2 for
    all 8) by int16 weights ``B[8, 2]``, with one ``vpmaddwd``: the 2 activations become a pair of
    int16 (zero-extended) broadcast to the 8 lanes. Exact, unlike ``vpmaddubsw``."""
    # pylint: disable=import-outside-toplevel,no-member,invalid-name
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def desc(A: T.Buffer((2,), "uint8", offset_factor=1),
             B: T.Buffer((8, 2), "int16", offset_factor=1),
             C: T.Buffer((8,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(C[0:8], A[0:2], B[0:8, 0:2])
            T.writes(C[0:8])
            for i in T.serial(0, 8):
                for k in T.serial(0, 2):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")

    @T.prim_func(s_tir=True)
    def impl(A: T.Buffer((2,), "uint8", offset_factor=1),
             B: T.Buffer((8, 2), "int16", offset_factor=1),
             C: T.Buffer((8,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(C[0:8], A[0:2], B[0:8, 0:2])
            T.writes(C[0:8])
            pair = T.cast(A[0], "int32") | T.shift_left(T.cast(A[1], "int32"), 16)
            C[T.ramp(T.int32(0), 1, 8)] = C.vload([0], dtype="int32x8") + T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.wd"),
                T.reinterpret(T.broadcast(pair, 8), dtype="int16x16"),
                B.vload([0, 0], dtype="int16x16"), dtype="int32x8")

    TensorIntrin.register(AVX2_PAIR_DOT, desc, impl, override=True)


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


@dataclass(frozen=True)
class DotProduct:
    """An int8 dot-product instruction whose sums are exact (int32 sums of 8-bit products), as
    the integer convolutions use it: ``tile`` output channels at a time, each the sum of ``depth``
    products of an ``activation`` by a ``weight`` value; the weights are packed
    ``[KH, KW, O/tile, C/depth, tile, depth]`` so that one instruction reads one contiguous tile.
    ``intrinsic``: a tensor intrinsic of ours that MetaSchedule's rules for the target do not
    know (None: the target's own rules tensorize)."""

    activation: str
    weight: str
    tile: int
    depth: int
    intrinsic: str | None = None


# The exact int8 dot products, by the name MetaSchedule's schedule rules give them (ours: avx2).
# Left out on purpose: ``vpmaddubsw`` (its int16 pair sums saturate) and AVX-VNNI (MetaSchedule's
# VNNI intrinsic is 512 bits wide).
DOT_PRODUCTS = {
    "vnni": DotProduct("uint8", "int8", 16, 4),          # x86 AVX-512 VNNI vpdpbusd, u8 x s8
    "dotprod": DotProduct("int8", "int8", 4, 4),         # ARM sdot, s8 x s8
    # x86 AVX2 vpmaddwd on u8 activations widened in registers and s16 weights: pairs of exact
    # products (|255 x 32768| x 2 < 2^31), summed into 8 int32 lanes
    "avx2": DotProduct("uint8", "int16", 8, 2, intrinsic=AVX2_PAIR_DOT),
}


def int8_dot_product(target) -> str | None:
    """The exact int8 dot product ``target`` has (a key of ``DOT_PRODUCTS``), or None: ``vnni``
    (x86 AVX-512 VNNI), ``avx2`` (x86 AVX2 without it) or ``dotprod`` (ARM ``sdot``)."""
    from tvm.target import codegen  # pylint: disable=import-outside-toplevel

    if target.kind.name != "llvm":
        return None
    if "aarch64" in str(target.attrs.get("mtriple", "")):
        return "dotprod" if bool(target.features.has_dotprod) else None
    for name, feature in (("vnni", "avx512vnni"), ("avx2", "avx2")):
        if codegen.target_has_features(feature, target):
            return name
    return None


def dot_product(target) -> DotProduct | None:
    return DOT_PRODUCTS.get(int8_dot_product(target))


def search_rules(target) -> tuple[list, list] | None:
    """(schedule rules, postprocessors) for MetaSchedule's search on ``target`` where its own
    defaults do not tensorize the target's dot product: MetaSchedule's x86 rules (its generic CPU
    rules with ``MultiLevelTilingWithIntrin`` for the intrinsic before ``MultiLevelTiling``, and
    ``RewriteTensorize`` among the postprocessors) for our intrinsic. None: the target's own."""
    # pylint: disable=import-outside-toplevel
    from tvm.s_tir import meta_schedule as ms

    dot = dot_product(target)
    if dot is None or dot.intrinsic is None:
        return None
    rules = list(ms.schedule_rule.ScheduleRule.create("llvm"))
    at = next(i for i, r in enumerate(rules) if type(r).__name__ == "MultiLevelTiling")
    rules.insert(at, ms.schedule_rule.MultiLevelTilingWithIntrin(
        dot.intrinsic, structure="SSRSRS", tile_binds=None, max_innermost_factor=64,
        vector_load_lens=None, reuse_read=None,
        reuse_write=ms.schedule_rule.ReuseType(req="may", levels=[1, 2], scope="global")))
    postprocs = list(ms.postproc.Postproc.create("llvm"))
    at = next(i for i, p in enumerate(postprocs) if type(p).__name__ == "RewriteLayout")
    postprocs.insert(at, ms.postproc.RewriteTensorize(vectorize_init_loop=True))
    return rules, postprocs
