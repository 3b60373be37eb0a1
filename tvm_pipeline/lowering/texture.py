"""Two fixes that make TVM 0.27's Adreno texture path (targets with the ``texture`` key, the tag
``qcom/adreno-opencl-texture``) compile MobileNet. Both live here, not in site-packages.

1. Depthwise convolutions. The texture legalization (``relax.backend.adreno.legalize_passes``)
   converts every conv2d to NCHW4c/OIHW4o and legalizes it with ``topi.nn.conv2d_NCHWc_OIHWo``. That
   compute infers ``groups = in_channel // kernel_ic``; for a depthwise conv (kernel_ic == 1) groups is
   the channel count C, larger than the number of 4-channel chunks C/4, so its index expression
   ``occ // (oc_chunk // groups)`` divides by ``C/4 // C == 0`` ("Divide by zero" in const_fold.h).
   :func:`conv2d_nchwc` legalizes depthwise convs (channel multiplier 1) with a compute of their own
   (a unit input-channel axis keeps the shape ``dlight.adreno.Conv2d`` schedules) and leaves every
   other conv to TVM's.

2. The TIR pipeline. ``tvm.s_tir.backend.adreno.pipeline`` registers ``PIPELINE_MAP["adreno"]`` as a
   factory returning one Pass, while ``tvm.tirx.build`` unpacks three (pipeline, host finalizer,
   device finalizer): asking for it (``tir_pipeline=None`` picks it for adreno targets) raises
   ``TypeError: cannot unpack non-iterable ModulePass``. The name ``tvm.compile`` uses by default
   ("default" = s_tir) lacks ``TextureFlatten``/``InjectTextureAlloc``, so texture buffers come out
   as ``vload4(0, image + i)`` on ``image2d_array_t`` (invalid OpenCL C). :func:`tir_pipeline_name`
   registers the Adreno passes with the s_tir finalizers under a name of ours.

Not fixed here (found by the PoCL numerical check, ``stages/numerics``): kernels that *write* a
texture are wrong. The 4-lane channel loop DLight vectorizes reaches codegen as a serial loop, and
each ``write_imagef`` then stores a broadcast scalar to the whole texel (the last lane wins). Moving
``VectorizeLoop`` before ``TextureFlatten`` does not work either (it cannot vectorize multi-dim
buffer accesses), so the check refuses such builds instead.
"""

from __future__ import annotations

import tvm
from tvm import relax, te, topi

TIR_PIPELINE = "tvm_pipeline.adreno_texture"


def _adreno_tir_pipeline():
    from tvm.s_tir import pipeline as s_tir_pipeline  # pylint: disable=import-outside-toplevel
    from tvm.s_tir.backend.adreno import pipeline as adreno  # pylint: disable=import-outside-toplevel

    return (adreno.default_tir_pipeline(), s_tir_pipeline.finalize_host_passes,
            s_tir_pipeline.finalize_device_passes)


def tir_pipeline_name() -> str:
    """The name of the corrected Adreno texture TIR pipeline (registered on first use)."""
    from tvm.tirx import compilation_pipeline  # pylint: disable=import-outside-toplevel

    if TIR_PIPELINE not in compilation_pipeline.PIPELINE_MAP:
        compilation_pipeline.register_tir_pipeline(TIR_PIPELINE, _adreno_tir_pipeline)
    return TIR_PIPELINE


def _ints(values) -> list[int]:
    return [int(v) for v in values]


def depthwise_conv2d_nchwc(data: te.Tensor, kernel: te.Tensor, strides, padding, dilation) -> te.Tensor:
    """Depthwise conv, data NCHW4c ``(n, C/4, h, w, 4)``, kernel OIHW4o ``(C/4, 1, kh, kw, 4)``."""
    n, chunks, height, width, block = _ints(data.shape)
    _, _, kh, kw, _ = _ints(kernel.shape)
    (sh, sw), (dh, dw) = _ints(strides), _ints(dilation)
    top, left, bottom, right = _ints(padding)
    out_h = (height + top + bottom - (kh - 1) * dh - 1) // sh + 1
    out_w = (width + left + right - (kw - 1) * dw - 1) // sw + 1
    padded = topi.nn.pad(data, (0, 0, top, left, 0), (0, 0, bottom, right, 0), name="conv2d_data_pad")
    ric = te.reduce_axis((0, 1), name="ic")
    rkh = te.reduce_axis((0, kh), name="kh")
    rkw = te.reduce_axis((0, kw), name="kw")
    return te.compute(
        (n, chunks, out_h, out_w, block),
        lambda b, c, y, x, k: te.sum(
            padded[b, c + ric, y * sh + rkh * dh, x * sw + rkw * dw, k] * kernel[c, ric, rkh, rkw, k],
            axis=[ric, rkh, rkw]),
        name="depthwise_conv2d_NCHWc_OIHWo", tag="depthwise_conv2d_NCHWc_OIHWo")


def _is_depthwise(call: relax.Call) -> bool:
    data, kernel = _ints(call.args[0].ty.shape), _ints(call.args[1].ty.shape)
    channels = data[1] * data[4]
    return (len(data) == 5 and len(kernel) == 5 and int(call.attrs.groups) == channels > 1
            and kernel[1] == 1 and kernel[0] * kernel[4] == channels)


def conv2d_nchwc(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
    """Legalize an NCHW4c conv2d: depthwise ones here, the rest with TVM's Adreno legalization."""
    from tvm.relax.transform.legalize_ops import adreno  # pylint: disable=import-outside-toplevel

    if not _is_depthwise(call):
        return adreno.conv2d_NCHWc_OIHWo(bb, call)
    return bb.call_te(depthwise_conv2d_nchwc, call.args[0], call.args[1], call.attrs.strides,
                      call.attrs.padding, call.attrs.dilation,
                      primfunc_name_hint="depthwise_conv2d_NCHWc_OIHWo")


def legalize_passes(target: tvm.target.Target) -> list:
    """TVM's Adreno legalization for ``target`` with the depthwise fix and without DLight (the build
    applies the tuning database first, then DLight to what is left)."""
    with target:
        passes = relax.backend.adreno.legalize_passes(target)
    fixed = []
    for index, item in enumerate(passes):
        name = item.info.name
        if name == "ApplyDefaultSchedule":
            continue
        if name == "LegalizeOps" and index and passes[index - 1].info.name == "LegalizeOps":
            item = relax.transform.LegalizeOps({"relax.nn.conv2d": conv2d_nchwc})
        fixed.append(item)
    return fixed
