"""tvm-pipeline: take an ONNX vision model to a tuned, validated, benchmarked TVM module.

The lifecycle, one verb per stage (the CLI ``tvm-pipeline`` mirrors it command for command)::

    import tvm_pipeline as tp

    # 0. a model: bring your own ONNX file, or build one with seeded weights (MobileNet V1/V2 at
    #    any width, or a corpus architecture: tvm_pipeline.models.list_models())
    tp.export_mobilenet(tp.MobileNetSpec("v2", alpha=1.0, resolution=224), "v2.onnx")

    # 1. load: ONNX checker, static input shapes (from the model or given), shape subgraphs folded
    model = tp.load("v2.onnx", input_shapes={"input": (1, 3, 224, 224)})

    # 2. prepare: Relax import, weights as constants, BatchNorm folded, conv+bias+activation fused,
    #    for a target file from targets/ (None: detected for this machine)
    prepared = tp.prepare(model, target="x86-avx512")

    # 3. tune (optional, resumable): MetaSchedule + XGBoost into tuned_logs/<target>/
    tp.tune(prepared, tp.TuneOptions(time_budget_s=1800))  # the time binds, not a trial count
    #    every candidate that would become a task's best is first checked against the unscheduled
    #    kernel; tp.distill("x86-avx512") then keeps only the best verified record per kernel

    # 4. compile: apply the target's database (on CPUs, a kernel without a record borrows the
    #    schedule of the most similar tuned kernel, or gets its default schedule; every such
    #    schedule is checked against the unscheduled kernel, and on this machine's targets a
    #    faster default replaces a slower tuned one), pack weights, build, validate against ONNX
    #    Runtime, and only then write the artifact folder (model.so + metadata.json)
    result = tp.compile(prepared, "v2.tvm")

    #    GPU targets: compile also runs the device checks (nvcc; clang, PoCL build, PoCL numerics);
    #    tp.check(prepared) runs them alone, with no host linking (no Android NDK needed)

    # 5. validate / bench / classify an artifact, any time later
    tp.validate("v2.tvm")                    # ValidationReport (max abs/rel error, cosine, top-1/5)
    tp.bench("v2.tvm").to_dict()            # {"tvm_median_ms": ..., "ort_median_ms": ..., ...}
    tp.bench("v2.tvm", options=tp.BenchOptions(isolate=True)).reason   # also each engine alone
    tp.classify("v2.tvm", "cat.jpg")         # top-5 ImageNet labels

    # Boards and phones: cross-compile, then validate, time and tune on the device over TVM RPC
    # (a server, or any device registered under a key at a tracker; every step has a deadline)
    device = tp.RemoteOptions(tracker="10.0.0.5:9190", key="rpi4")
    arm = tp.compile(tp.prepare("v2.onnx", target="rpi4"), "v2-rpi4.tvm",
                     tp.CompileOptions(remote=device))   # validated on the device before written
    tp.bench(arm.artifact, remote=device, with_reference=False)   # device-side latency
    tp.tune(tp.prepare("v2.onnx", target="rpi4"), tp.TuneOptions(remote=device))

Every user-caused failure raises a :class:`PipelineError` subclass carrying a one-paragraph message;
the CLI maps them to exit codes in one place (``tvm_pipeline.errors``).
"""

from .api import (CompileOptions, CompileResult, bench, bisect, check, classify, compile, distill,
                  prepare, profile, report, sweep, tune, validate)
from .errors import PipelineError
from .run.remote import RemoteOptions
from .target.spec import TargetSpec, list_targets, resolve_target


def __getattr__(name: str):
    """Names from modules that import TVM or ONNX, resolved on first use (so that the CLI and
    ``import tvm_pipeline`` start fast and Ctrl-C at start-up lands in our handler)."""
    lazy = {"TuneOptions": "tuning.tune", "BenchOptions": "run.bench", "ValidateOptions": "run.validate",
            "Tolerances": "run.validate", "LoadedModel": "frontend.load", "load": "frontend.load",
            "MobileNetSpec": "models", "build_mobilenet": "models", "export_mobilenet": "models",
            "ProfileOptions": "observe.profile", "BisectOptions": "observe.bisect",
            "SweepOptions": "observe.sweep"}
    if name in lazy:
        import importlib  # pylint: disable=import-outside-toplevel

        return getattr(importlib.import_module(f".{lazy[name]}", __name__), name)
    raise AttributeError(name)


__all__ = ["load", "prepare", "tune", "distill", "compile", "check", "validate", "bench", "classify",
           "profile", "bisect", "sweep", "report", "ProfileOptions", "BisectOptions", "SweepOptions",
           "CompileOptions", "CompileResult", "LoadedModel", "MobileNetSpec", "TargetSpec",
           "PipelineError", "build_mobilenet", "export_mobilenet", "list_targets",
           "resolve_target", "RemoteOptions", "TuneOptions", "BenchOptions", "ValidateOptions", "Tolerances"]
