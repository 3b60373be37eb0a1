"""int8 dot products: x86 VNNI (``vpdpbusd``) and ARM ``sdot`` in the default schedules of quantized
convolutions, from weights packed for the instruction; an operand the instruction would read as
contiguous when it is not stops the tensorization."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from tvm import te, topi

from tvm_pipeline.api import CompileOptions, compile as compile_model, prepare
from tvm_pipeline.lowering.schedules import cpu_params, default_schedule
from tvm_pipeline.target import intrinsics
from tvm_pipeline.target.spec import resolve_target


@pytest.mark.parametrize("name, dot", [("x86-avx512", "vnni"), ("x86-avx2", "avx2"),
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
    ("x86-avx512", "objdump", "vpdpbusd"), ("x86-avx2", "objdump", "vpmaddwd"),
    ("rpi5", "aarch64-linux-gnu-objdump", "sdot")])
def test_quantized_convolutions_compute_with_the_dot_product(small_v2_int8, tmp_path, name,
                                                            objdump, instruction):
    """Every kernel gets a checked default schedule (the tensorized ones through their
    untensorized twin where this machine lacks the instruction), and the library's machine code
    multiplies with the target's dot product."""
    prepared = prepare(small_v2_int8, name)
    image = re.compile(r'\(T\.int64\(1\), T\.int64\(\d+\), T\.int64\(\d+\), T\.int64\(4\)\), "u?int8"')
    # the first layer too, its 3 image channels padded to the 4 the instruction multiplies (2 x 2
    # for AVX2), where its 8 outputs fill the instruction's tiles (sdot's 4, AVX2's 8, not
    # VNNI's 16)
    assert any(image.search(func.script()) for gv, func in prepared.mod.functions_items()
               if "conv2d_nhwc_int8" in gv.name_hint) == (name != "x86-avx512")
    result = compile_model(prepared, tmp_path / f"v2-{name}.tvm", CompileOptions(use_database=False))
    assert result.build.naive_kernels == []
    assert result.artifact.metadata["integer"]["float_layers"] == 0
    code = _disassembly(result.artifact.path / "model.so", objdump)
    assert sum(1 for line in code.splitlines() if f"\t{instruction}" in line) >= 10


def _conv(kernel_layout: str, tile: int = 4, data: str = "int8", out: int = 16):
    """An NHWC 3x3 convolution (32 -> ``out`` channels) of ``data`` by s8 with its weight in
    ``kernel_layout`` or, for "packed", in the ``[KH, KW, O/tile, C/4, tile, 4]`` layout the dot
    product reads."""
    x = te.placeholder((1, 6, 6, 32), data, name="x")
    if kernel_layout == "packed":
        w = te.placeholder((3, 3, out // tile, 8, tile, 4), "int8", name="w")
        xp = topi.nn.pad(x, [0, 1, 1, 0], [0, 1, 1, 0])
        ry, rx, rc = (te.reduce_axis((0, e), n) for e, n in ((3, "ry"), (3, "rx"), (32, "rc")))
        y = te.compute((1, 6, 6, out), lambda n, i, j, f: te.sum(
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


def test_a_grouped_convolution_the_dot_product_does_not_fit_is_scheduled_quietly(capfd):
    """MetaSchedule marks a grouped INT8 convolution (RegNet, ResNeXt) for VNNI, whose 16 x 4 tile
    spans two groups of 8 channels: its ``RewriteTensorize`` drops the mark, keeps the blockized
    loops and prints the whole kernel to stderr (~60 lines per sketch). The default schedule
    computes the convolution, and the terminal stays clean."""
    import tvm

    from tvm_pipeline.tuning import verify

    x = te.placeholder((1, 10, 10, 32), "uint8", name="x")
    w = te.placeholder((3, 3, 8, 32), "int8", name="w")             # 4 groups of 8 channels
    func = te.create_prim_func([x, w, topi.nn.group_conv2d_nhwc(x, w, 1, 1, 1, 4,
                                                                out_dtype="int32")])
    spec = resolve_target("x86-avx512")
    target = spec.to_tvm()
    intrinsics.register_for(target.kind.name, spec.arch)
    capfd.readouterr()
    with target:
        scheduled = default_schedule(func, target, cpu_params(spec, target))
    assert capfd.readouterr().err == ""
    assert "vpdpbusd" not in scheduled.func.script()
    assert verify.schedule_deviation(tvm.IRModule({"main": func}),
                                     tvm.IRModule({"main": scheduled.func}), target) == 0


def test_the_search_rejects_a_vector_loop_around_the_dot_product_before_building_it():
    """MetaSchedule's search vectorizes innermost spatial loops; one left outside the VNNI tile
    around the tensorized block does not build (TVM's vectorizer cannot widen the instruction).
    The postprocessor the search runs before RewriteTensorize rejects exactly that candidate."""
    import tvm
    from tvm import s_tir
    from tvm.s_tir import meta_schedule as ms

    from tvm_pipeline.errors import TVM_ERRORS
    from tvm_pipeline.lowering.schedules import postprocs, sketch

    spec = resolve_target("x86-avx512")
    target = spec.to_tvm()
    intrinsics.register_for(target.kind.name, spec.arch)
    func = _conv("packed", tile=16, data="uint8", out=32)
    chain = postprocs(func, target)
    guard = next(p for p in chain if isinstance(p, sketch.NoVectorLoopAroundIntrinsic))
    assert chain.index(guard) < next(i for i, p in enumerate(chain)
                                     if isinstance(p, ms.postproc.RewriteTensorize))
    params = cpu_params(spec, target)

    def candidate(trace, channel_tile_inside: int):
        """The sketch with the default's tiles, except that the innermost tile of the output
        channel blocks (outside the intrinsic's 16 channels) is ``channel_tile_inside``, as the
        search samples it; postprocessed as the search does without the guard; and the guard's
        verdict."""
        tiles, _ = sketch.plan(func, trace, params)
        for group in sketch._tile_groups(trace):
            spatial = [inst for inst in group if int(inst.attrs[0]) == 4]
            if spatial and channel_tile_inside > 1:
                a, b, c, _ = tiles[spatial[-1]]
                tiles[spatial[-1]] = [a, b, c // channel_tile_inside, channel_tile_inside]
        sch = s_tir.Schedule(tvm.IRModule({"main": func}))
        trace.apply_to_schedule(sch, remove_postproc=True,
                                decision_provider=lambda inst, _i, _a, d: tiles.get(inst, d))
        sch.enter_postproc()
        verdict = None
        for postproc in chain:
            if postproc is guard:
                verdict = guard.apply(sch)
            else:
                postproc.apply(sch)
        return sch, verdict

    spaces = sketch.design_spaces(func, target)
    verdicts = []
    for index in sketch.preference(spaces):
        plain, plain_ok = candidate(spaces[index].trace, 1)
        if "vpdpbusd" not in plain.mod.script():
            continue                       # this sketch's tiles do not map onto the instruction
        looped, looped_ok = candidate(spaces[index].trace, 2)
        assert "vpdpbusd" in looped.mod.script() and "T.vectorized(2)" in looped.mod.script()
        verdicts.append((plain_ok, looped_ok))
        tvm.tirx.build(plain.mod, target=target)
        with pytest.raises(TVM_ERRORS, match="broadcast"):
            tvm.tirx.build(looped.mod, target=target)
    assert verdicts and all(plain and not looped for plain, looped in verdicts)


def test_a_tensorized_record_lends_its_schedule_to_a_kernel_of_another_size(tmp_path):
    """A tuned VNNI record's trace replays on a kernel without a record (compile's borrowing,
    tune's warm start) only through the search's postprocessors, RewriteTensorize among them."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    from tvm_pipeline.tuning import borrow, database as db

    spec = resolve_target("x86-avx512")
    target = spec.to_tvm()
    intrinsics.register_for(target.kind.name, spec.arch)
    tuned = tvm.IRModule({"main": _conv("packed", tile=16, data="uint8", out=32)})
    with target:
        sketched = default_schedule(tuned["main"], target, cpu_params(spec, target))
    assert "vpdpbusd" in sketched.func.script()
    database = db.open_json_database(tmp_path / "logs", create=True)
    database.commit_tuning_record(ms.database.TuningRecord(
        sketched.trace, database.commit_workload(tuned), [1e-5], target,
        ms.arg_info.ArgInfo.from_prim_func(tuned["main"])))
    mod = tvm.IRModule({"new": _conv("packed", tile=16, data="uint8", out=48)})
    out, borrowed = borrow.borrow_schedules(mod, [database], target, spec=spec)
    assert borrowed == ["new"] and "vpdpbusd" in out["new"].script()


def test_tensorized_defaults_compute_the_requantization_inside_the_tiles(small_v2_int8):
    """MetaSchedule writes a tensorized kernel's unfused sketch last (a plain one's first): the
    default schedule must still pick one that computes the epilogue in the tiles, not one that
    writes the whole int32 accumulator out and reads it back (21 GOP/s at 112x112)."""
    prepared = prepare(small_v2_int8, "x86-avx2")
    spec = prepared.target
    target = spec.to_tvm()
    intrinsics.register_for(target.kind.name, spec.arch)
    convs = [f for gv, f in prepared.mod.functions_items() if "conv2d_nhwc_int8" in gv.name_hint]
    assert len(convs) > 5
    with target:
        traces = [default_schedule(f, target, cpu_params(spec, target)).trace for f in convs]
    for trace in traces:
        kinds = [inst.kind.name for inst in trace.insts]
        assert "ReverseComputeAt" in kinds and "meta_schedule.auto_tensorize" in str(trace)
