"""Default CPU schedules: the policy's tiles fit every CPU target's registers, every kernel of a
MobileNet gets a checked default schedule, and a wrong default is caught and left naive."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import tvm

from tvm_pipeline.api import CompileOptions, compile as compile_model, prepare
from tvm_pipeline.codegen import defaults
from tvm_pipeline.lowering.schedules import CpuParams, Sketched, default_schedule, policy
from tvm_pipeline.target.spec import list_targets
from tvm_pipeline.tuning import borrow

CPU_TARGETS = [t for t in list_targets() if t.device == "cpu"]
# (columns, channels) of real CNN layers: MobileNet 112..7, SqueezeNet's 13x13x1000, odd widths
LAYERS = [(112, 32), (56, 144), (28, 192), (14, 576), (7, 960), (13, 1000), (55, 64), (1, 1000),
          (27, 128), (3, 3), (10, 20), (17, 72)]


@pytest.mark.parametrize("spec", CPU_TARGETS, ids=lambda t: t.name)
def test_register_tiles_fit_the_register_file_and_divide_the_loops(spec):
    params = CpuParams(spec.vector_bits, spec.vector_registers, 4)
    for columns, channels in LAYERS:
        cols, inner = policy.register_tile(columns, channels, params)
        vectors = -(-inner // params.lanes)
        assert columns % cols == 0 and channels % inner == 0, (columns, channels, cols, inner)
        assert cols * vectors + vectors + 1 <= spec.vector_registers
        if channels % params.lanes == 0:
            assert inner % params.lanes == 0        # whole vectors whenever they divide


def test_tiles_prefer_enough_accumulators_to_hide_fma_latency():
    avx2 = CpuParams(256, 16, 2)
    assert policy.register_tile(7, 960, avx2) == (7, 8)       # 7 accumulators, not 1 x 16
    assert policy.register_tile(13, 1000, avx2) == (13, 8)    # prime width: the whole row
    assert policy.register_tile(56, 144, avx2) == (4, 16)
    tiles = policy.spatial_tiles([1, 56, 56, 144], True, avx2)
    assert tiles == [[1, 1, 1, 1], [56, 1, 1, 1], [14, 1, 1, 4], [9, 1, 1, 16]]
    assert policy.spatial_tiles([1, 56, 56, 144], False, avx2)[-1] == [9, 1, 1, 16]


@pytest.fixture(scope="module")
def prepared_host(small_v2):
    return prepare(small_v2)


def test_every_kernel_gets_a_checked_default_schedule(prepared_host):
    target = prepared_host.target.to_tvm()
    mod, result = defaults.apply_defaults(prepared_host.mod.clone(), prepared_host.target, target)
    assert result.naive == {}
    assert sorted(result.scheduled) == sorted(k.name for k in prepared_host.kernels)
    for name in result.scheduled:
        assert mod[name].attrs["tirx.is_scheduled"]


def _zero_to_half(func):
    """A wrong kernel: every float 0.0 (accumulator init, ReLU floor) becomes 0.5 (edited in its
    TVMScript and parsed back)."""
    text = func.script()
    assert "T.float32(0.0)" in text
    return tvm.script.from_source(text.replace("T.float32(0.0)", "T.float32(0.5)"))


def test_a_wrong_default_schedule_is_dropped_with_the_reason(prepared_host, monkeypatch):
    target = prepared_host.target.to_tvm()
    conv = next(k.name for k in prepared_host.kernels if "conv2d" in k.name)

    def faulty(func, tgt, params):
        sketched = default_schedule(func, tgt, params)
        is_conv = func.same_as(prepared_host.mod[conv])
        return Sketched(_zero_to_half(sketched.func), sketched.sketch) if is_conv else sketched

    monkeypatch.setattr(defaults, "default_schedule", faulty)
    mod, result = defaults.apply_defaults(prepared_host.mod.clone(), prepared_host.target, target)
    assert list(result.naive) == [conv]
    assert "wrong results" in result.naive[conv]
    assert not borrow.is_scheduled(mod[conv])
    assert conv not in result.scheduled and len(result.scheduled) == len(prepared_host.kernels) - 1


def test_cross_target_defaults_have_neon_fmas(small_v2, tmp_path):
    """rpi4 (cross-compiled, checked on this CPU): 0 naive kernels, NEON vector FMAs in the code."""
    objdump = shutil.which("aarch64-linux-gnu-objdump")
    if objdump is None or shutil.which("aarch64-linux-gnu-g++") is None:
        pytest.skip("the aarch64 cross toolchain is not installed (scripts/setup.sh test does it)")
    result = compile_model(prepare(small_v2, "rpi4"), tmp_path / "v2-rpi4.tvm",
                           CompileOptions(use_database=False))
    assert result.build.naive_kernels == [] and result.build.default_kernels
    text = subprocess.run([objdump, "-d", str(result.artifact.path / "model.so")],
                          capture_output=True, text=True, check=True).stdout
    assert "fmla\tv" in text            # fmla v0.4s, v1.4s, v2.4s: a 4-lane vector FMA


def test_a_slower_tuned_schedule_loses_the_race_to_the_default(prepared_host):
    """A 'tuned' schedule that is really the naive loop nest (correct, slow) is replaced by the
    kernel's default when the target runs here; a kernel nobody asked about is left alone."""
    target = prepared_host.target.to_tvm()
    convs = [k.name for k in prepared_host.kernels if "conv2d" in k.name]
    slow, untouched = convs[0], convs[1]
    mod = prepared_host.mod.clone()
    mod[slow] = mod[slow].with_attr("tirx.is_scheduled", True)
    result = defaults.DefaultsResult()
    with target:
        mod = defaults.race(mod, prepared_host.mod, [slow], prepared_host.target, target, result)
    mine, default = result.replaced[slow]
    assert default * (1 + defaults.RACE_MARGIN) < mine
    assert not mod[slow].same_as(prepared_host.mod[slow]) and untouched not in result.replaced


def test_a_convolution_pads_its_input_inside_its_tiles_and_a_depthwise_one_inline(prepared_host):
    """A standard convolution's zero-padded input (a block of its own) is computed inside the
    convolution's outer (parallel) loop, one tile's window at a time, not in a pass over the
    whole image first; a float depthwise convolution, a channel-wise window of a few taps, reads
    its padding inline and has no such block (``policy.compute_location``)."""
    target = prepared_host.target.to_tvm()
    params = defaults.cpu_params(prepared_host.target, target)
    checked = {"standard": 0, "depthwise": 0}
    for kernel in (k for k in prepared_host.kernels if "conv2d" in k.name):
        func = default_schedule(prepared_host.mod[kernel.name], target, params).func
        if 'sblock("group_conv2d_nhwc")' in prepared_host.mod[kernel.name].script():
            assert 'sblock("pad_temp")' not in func.script(), kernel.name
            checked["depthwise"] += 1
            continue
        if 'sblock("pad_temp")' not in func.script():
            continue                                   # a 1x1 convolution: nothing to pad
        sch = tvm.s_tir.Schedule(func)
        pad = sch.get_sblock("pad_temp")
        pad_loops, conv_loops = sch.get_loops(pad), sch.get_loops(sch.get_consumers(pad)[0])
        assert sch.get_sref(pad_loops[0]).same_as(sch.get_sref(conv_loops[0])), kernel.name
        checked["standard"] += 1
    assert checked["standard"] >= 1 and checked["depthwise"] >= 3, checked


def test_vector_lengths_divide_the_innermost_loop():
    assert [policy.whole_vector(e, 64) for e in (3, 24, 96, 1000, 1280, 226, 1)] == \
        [3, 24, 32, 8, 64, 2, 1]


def test_a_layout_kernel_vectorizes_whole_rows_without_gathers():
    """An INT8 model's first kernel quantizes the NCHW float image, pads it and transposes it to
    NHWC (3 channels innermost). Its default vectorizes the 3 channels of each pixel and runs the
    rows in parallel, instead of MetaSchedule's fused loop split into predicated 64-lane vectors
    (indices by division in every lane; measured 652 us against 23 us at 224 px); it computes
    what the unscheduled kernel computes."""
    from tvm import te, topi

    from tvm_pipeline.lowering.schedules import cpu_params
    from tvm_pipeline.target import intrinsics
    from tvm_pipeline.target.spec import resolve_target
    from tvm_pipeline.tuning import verify

    x = te.placeholder((1, 3, 20, 20), "float32", name="x")
    q = te.compute(x.shape, lambda *i: te.min(te.max(te.round(x(*i) / 0.0078) + 127.0, 0.0),
                                                 255.0).astype("uint8"), name="q")
    padded = topi.nn.pad(q, [0, 0, 1, 1], [0, 0, 1, 1], pad_value=127)
    func = te.create_prim_func([x, topi.transpose(padded, [0, 2, 3, 1])])
    spec = resolve_target("x86-avx2")
    target = spec.to_tvm()
    intrinsics.register_for(target.kind.name, spec.arch)
    with target:
        scheduled = default_schedule(func, target, cpu_params(spec, target)).func
    script = scheduled.script()
    assert "T.vectorized(3)" in script and "T.parallel(484)" in script   # 22 x 22 pixels
    assert "T.where" not in script
    assert verify.schedule_deviation(tvm.IRModule({"main": func}),
                                     tvm.IRModule({"main": scheduled}), target) <= 1.0


def test_a_grouped_convolution_keeps_each_vector_inside_one_group():
    """A grouped convolution reads the input channels of its output channel's group
    (``ff // 16 * 16 + rc``): its default vectorizes 16 output channels on AVX-512, one group,
    not the 32 a dense convolution gets (two groups' inputs in one vector: a gather per FMA),
    and computes what the unscheduled kernel computes."""
    from tvm import te, topi

    from tvm_pipeline.lowering.schedules import cpu_params
    from tvm_pipeline.target.spec import resolve_target
    from tvm_pipeline.tuning import verify

    x = te.placeholder((1, 16, 16, 64), "float32", name="x")
    w = te.placeholder((3, 3, 16, 64), "float32", name="w")
    func = te.create_prim_func([x, w, topi.nn.group_conv2d_nhwc(x, w, 1, 1, 1, 4)])
    spec = resolve_target("x86-avx512")
    target = spec.to_tvm()
    params = cpu_params(spec, target)
    assert policy.spatial_tiles([1, 16, 16, 64], True, params)[-1][-1] == 32   # dense: 2 vectors
    assert policy.spatial_tiles([1, 16, 16, 64], True, params, 16)[-1][-1] == 16
    with target:
        scheduled = default_schedule(func, target, params).func
    script = scheduled.script()
    assert "T.vectorized(16)" in script and "T.vectorized(32)" not in script
    assert verify.schedule_deviation(tvm.IRModule({"main": func}),
                                     tvm.IRModule({"main": scheduled}), target) <= 1.0


def test_a_parameter_read_by_several_blocks_keeps_its_layout():
    """A per-channel parameter read by four blocks at four offsets (MixNet's batch norm fused
    with a split into four): MetaSchedule's layout rewrite packed it for the first block's
    indices and the others read wrong elements; the default schedule now computes what the
    unscheduled kernel computes."""
    from tvm import te, topi

    from tvm_pipeline.lowering.schedules import cpu_params, sketch
    from tvm_pipeline.target.spec import resolve_target
    from tvm_pipeline.tuning import verify

    x = te.placeholder((1, 2, 2, 360), "float32", name="x")
    scale = te.placeholder((1, 1, 1, 360), "float32", name="scale")

    def part(k):
        return te.compute((1, 2, 2, 90), lambda n, h, w, c:
                          x[n, h, w, c + 90 * k] * scale[0, 0, 0, c + 90 * k], name=f"part{k}")

    parts = [part(k) for k in range(4)]
    func = te.create_prim_func([x, scale, *parts]).with_attr("layout_free_buffers", [1])
    # the tuning search checks only the kernels that can end so (a convolution cannot)
    weight = te.placeholder((1, 1, 360, 8), "float32", name="weight")
    conv = te.create_prim_func([x, weight, topi.nn.conv2d_nhwc(x, weight, 1, 0, 1)])
    assert sketch._may_share(tvm.IRModule({"main": func}))
    assert not sketch._may_share(tvm.IRModule({"main": conv.with_attr("layout_free_buffers", [1])}))
    spec = resolve_target("x86-avx2")
    target = spec.to_tvm()
    with target:
        scheduled = default_schedule(func, target, cpu_params(spec, target)).func
    assert verify.schedule_deviation(tvm.IRModule({"main": func}),
                                     tvm.IRModule({"main": scheduled}), target) <= 1.0
