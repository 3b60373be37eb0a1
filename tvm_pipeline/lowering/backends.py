"""Per-target lowering choices, looked up by the TVM target's keys (never by target file name).

- ``lowering_passes``: Relax -> fused TIR kernels. Shared by tune and build (database keys), so the
  lists must not change without re-tuning. Targets with the ``texture`` key use the Adreno texture
  legalization with our fixes (``texture``); CPU targets convert to channels-last first (``layout``)
  and pad channels to whole vectors of their target file's ``vector_bits`` (``channels``), then
  compute spatial means as one-row matrix products (``means``) and exp, sigmoid, tanh, erf and
  softmax with vectorizable polynomials (``fastmath``).
- ``after_database_pass``: on CPUs, the weight packing that tuned schedules chose is run on the
  constant weights at compile time (``layout``).
- ``schedule_pass``: the default schedules for kernels the tuning database does not cover. GPU
  kernels must bind threads to compile at all, so they get DLight's rules (``tvm.s_tir.dlight``: the
  same rules ``tvm.compile``'s GPU pipelines apply, Adreno's conv/layout/pool rules first on Adreno);
  CPU kernels stay naive loops.
- ``relax_pipeline``/``tir_pipeline``: what ``tvm.compile`` runs on the scheduled module. GPU modules
  are already legalized and scheduled, so only TVM's dataflow-lowering and finalization passes run
  (``tvm.compile``'s own GPU pipeline would legalize again, re-running the texture layout
  conversion).
"""

from __future__ import annotations

import tvm
from tvm import relax

from ..target import intrinsics
from . import fastmath, fold, layout, means, texture


def is_gpu(target: tvm.target.Target) -> bool:
    return "gpu" in target.keys


def _common_lowering(target: tvm.target.Target, before: list = (), after: list = ()) -> list:
    try:
        dispatch = relax.pipeline.library_dispatch_passes(target)
    except (ValueError, AttributeError):
        dispatch = []
    return [
        *dispatch,
        *before,
        relax.transform.LegalizeOps(),
        relax.transform.AnnotateTIROpPattern(),
        *fold.passes(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
        relax.transform.DeadCodeElimination(),
        *after,
    ]


def _cpu_lowering(target: tvm.target.Target, vector_bits: int) -> list:
    """Channels-last kernels with layout-free (packable) weights (see ``layout``), convolutions'
    output channels padded to whole vectors (see ``channels``), transcendental functions as
    polynomials (see ``fastmath``)."""
    return _common_lowering(
        target, [*layout.channels_last_passes(intrinsics.dot_product(target), vector_bits // 32),
                 means.spatial_means(), fastmath.fast_math()],
        layout.mark_weights_passes())


def _texture_lowering(target: tvm.target.Target, _vector_bits: int) -> list:
    return texture.legalize_passes(target)


# target key -> lowering passes; the first key a target has wins, else _common_lowering.
LOWERINGS = {
    "texture": _texture_lowering,
    "cpu": _cpu_lowering,
}


def lowering_passes(target: tvm.target.Target, vector_bits: int = 0) -> list:
    """``vector_bits``: the target's SIMD width (its target file's), 0 where unknown."""
    for key, passes in LOWERINGS.items():
        if key in target.keys:
            return passes(target, vector_bits)
    return _common_lowering(target)


def _dlight_rules(target: tvm.target.Target) -> list:
    from tvm.s_tir import dlight as dl  # pylint: disable=import-outside-toplevel

    generic = [dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(), dl.gpu.GeneralReduction(),
               dl.gpu.Fallback()]
    if "adreno" in target.keys:
        return [dl.ApplyDefaultSchedule(dl.adreno.Conv2d(), dl.adreno.LayoutTransform(),
                                        dl.adreno.Pool2D()),
                dl.ApplyDefaultSchedule(dl.gpu.Reduction(), dl.gpu.GeneralReduction(),
                                        dl.gpu.Fallback())]
    return [dl.ApplyDefaultSchedule(*generic)]


def after_database_pass(target: tvm.target.Target) -> tvm.transform.Pass:
    """Right after the tuning database is applied: CPU weight packing folded into the constants."""
    return tvm.transform.Sequential([] if is_gpu(target) else layout.pack_weights_passes())


def schedule_pass(target: tvm.target.Target) -> tvm.transform.Pass:
    """Default schedules for the kernels that are not scheduled yet (identity on CPUs)."""
    return tvm.transform.Sequential(_dlight_rules(target) if is_gpu(target) else [])


def relax_pipeline(target: tvm.target.Target) -> tvm.transform.Pass:
    """Relax to VM-ready IR (call_tir lowered, weights packed): run before ``tvm.compile`` with
    ``relax_pipeline=None``, so that the kernels that ship are visible to the build."""
    if not is_gpu(target):
        return relax.get_pipeline("default")
    # relax.pipeline.dataflow_lower_passes(cuda target) names backend.cuda.dataflow_lower_passes,
    # which TVM 0.27 does not export (AttributeError); every GPU backend's list is gpu_generic's.
    return tvm.transform.Sequential([*relax.backend.gpu_generic.dataflow_lower_passes(target),
                                     *relax.pipeline.finalize_passes(target)])


def tir_pipeline(target: tvm.target.Target) -> str:
    return texture.tir_pipeline_name() if "texture" in target.keys else "default"
