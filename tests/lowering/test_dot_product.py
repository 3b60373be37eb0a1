"""int8 dot products: x86 VNNI (``vpdpbusd``) and ARM ``sdot`` in the default schedules of quantized
convolutions, from weights packed for the instruction; an operand the instruction would read as
contiguous when it is not stops the tensorization."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from tvm import te, topi

from tvm_pipeline.api import CompileOptions, compile as compile_model, prepare
from tvm_pipeline.lowering.schedules import cpu_params, default_schedule
from tvm_pipeline.target import intrinsics
from tvm_pipeline.target.spec import resolve_target


@pytest.mark.parametrize("name, dot", [("x86-avx512", "vnni"), ("x86-avx2", None),
                                       ("rpi5", "dotprod"), ("android-arm64", "dotprod"),
                                       ("rpi4", None), ("aarch64", None), ("cuda-sm80", None)])
def test_targets_say_which_exact_dot_product_they_have(name, dot):
    assert intrinsics.int8_dot_product(resolve_target(name).to_tvm()) == dot


def _disassembly(library, objdump: str) -> str:
    tool = shutil.which(objdump)
    if tool is None:
        pytest.skip(f"{objdump} is not installed (scripts/setup.sh test installs it)")
    return subprocess.run([tool, "-d", "--no-show-raw-insn", str(library)], capture_output=True,
                          text=True, check=True).stdout


@pytest.mark.parametrize("name, objdump, instruction", [
    ("x86-avx512", "objdump", "vpdpbusd"), ("rpi5", "aarch64-linux-gnu-objdump", "sdot")])
def test_quantized_convolutions_compute_with_the_dot_product(small_v2_int8, tmp_path, name,
                                                            objdump, instruction):
    """Every kernel gets a checked default schedule (the tensorized ones through their
    untensorized twin where this machine lacks the instruction), and the library's machine code
    multiplies with the target's dot product."""
    result = compile_model(prepare(small_v2_int8, name), tmp_path / f"v2-{name}.tvm",
                           CompileOptions(use_database=False))
    assert result.build.naive_kernels == []
    assert result.artifact.metadata["integer"]["float_layers"] == 0
    code = _disassembly(result.artifact.path / "model.so", objdump)
    assert sum(1 for line in code.splitlines() if f"\t{instruction}" in line) >= 10


def _conv(kernel_layout: str, tile: int = 4):
    """An s8 NHWC 3x3 convolution (32 -> 16 channels) with its weight in ``kernel_layout`` or,
    for "packed", in the ``[KH, KW, O/tile, C/4, tile, 4]`` layout the dot product reads."""
    x = te.placeholder((1, 6, 6, 32), "int8", name="x")
    if kernel_layout == "packed":
        w = te.placeholder((3, 3, 16 // tile, 8, tile, 4), "int8", name="w")
        xp = topi.nn.pad(x, [0, 1, 1, 0], [0, 1, 1, 0])
        ry, rx, rc = (te.reduce_axis((0, e), n) for e, n in ((3, "ry"), (3, "rx"), (32, "rc")))
        y = te.compute((1, 6, 6, 16), lambda n, i, j, f: te.sum(
            xp[n, i + ry, j + rx, rc].astype("int32")
            * w[ry, rx, f // tile, rc // 4, f % tile, rc % 4].astype("int32"), axis=[ry, rx, rc]))
    else:
        w = te.placeholder((3, 3, 16, 32), "int8", name="w")     # HWOI
        y = topi.nn.conv(x, w, 1, 1, 1, 1, "NHWC", kernel_layout, out_dtype="int32")
    return te.create_prim_func([x, w, y]).with_attr("layout_free_buffers", [1])


def test_a_strided_weight_tile_is_not_tensorized():
    """With HWOI weights the 4x4 tile sdot multiplies is rows of 32 bytes apart; MetaSchedule
    tensorizes it anyway and the instruction would read 16 contiguous bytes (measured on the
    emulated rpi5: wrong by 1e5). The default schedule must keep such a kernel in plain loops;
    with packed weights it is tensorized, and carries its twin for the check."""
    spec = resolve_target("rpi5")
    target = spec.to_tvm()
    intrinsics.register_for(target.kind.name, spec.arch)
    with target:
        strided = default_schedule(_conv("HWOI"), target, cpu_params(spec, target))
        packed = default_schedule(_conv("packed"), target, cpu_params(spec, target))
    sdot = "llvm.aarch64.neon.sdot"
    assert strided.untensorized is None and sdot not in strided.func.script()
    assert packed.untensorized is not None and sdot in packed.func.script()
    assert sdot not in packed.untensorized.script()
