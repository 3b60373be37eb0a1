"""The verbs of the lifecycle, as typed library calls (the CLI is a thin layer over these).

Heavy modules (TVM, ONNX Runtime) are imported inside the verbs, so ``import tvm_pipeline`` and
``tvm-pipeline --help`` stay fast.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from .errors import InputFileError, UsageError
from .target.spec import TargetSpec, resolve_target

if TYPE_CHECKING:  # pragma: no cover
    from .frontend.load import LoadedModel
    from .run.artifact import Artifact
    from .run.remote import RemoteOptions
    from .run.bench import BenchOptions, BenchResult
    from .codegen.build import BuildResult
    from .codegen.devicecheck.check import CheckOptions, CheckReport
    from .tuning.distill import DistillResult
    from .lowering.prepare import PreparedModule
    from .tuning.tune import TuneOptions, TuneProgress, TuneResult
    from .observe.bisect import BisectOptions, BisectResult
    from .frontend.quantize import QuantizeOptions, QuantizeReport
    from .observe.profile import ProfileOptions, ProfileResult
    from .run.validate import ValidateOptions, ValidationReport
    from .observe.sweep import SweepOptions, SweepProgress, SweepResult


def _loaded(model: "LoadedModel | str | os.PathLike",
            input_shapes: dict[str, tuple[int, ...]] | None) -> "LoadedModel":
    from .frontend.load import LoadedModel, load  # pylint: disable=import-outside-toplevel

    return model if isinstance(model, LoadedModel) else load(model, input_shapes)


def prepare(model: "LoadedModel | str | os.PathLike", target: TargetSpec | str | None = None,
            input_shapes: dict[str, tuple[int, ...]] | None = None) -> "PreparedModule":
    """Load (if given a path) and import a model into fused Relax for ``target`` (default: host)."""
    from .lowering.prepare import prepare as _prepare  # pylint: disable=import-outside-toplevel

    loaded = _loaded(model, input_shapes)
    spec = target if isinstance(target, TargetSpec) else resolve_target(target)
    return _prepare(loaded, spec)


def tune(prepared: "PreparedModule", options: "TuneOptions | None" = None,
         report: "Callable[[TuneProgress], None] | None" = None) -> "TuneResult":
    """Tune the prepared module's kernels into the target's database (resumable)."""
    from .tuning.tune import TuneOptions, tune as _tune  # pylint: disable=import-outside-toplevel

    return _tune(prepared, options or TuneOptions(), report)


def distill(target: TargetSpec | str | None = None, logs: str | None = None, keep: int = 1,
            check: bool = True, merge: Sequence[str] = (), replace: bool = False, *,
            prune_to: Sequence["str | os.PathLike"] = ()) -> "DistillResult":
    """Shrink the target's writable tuning database to its best verified records per workload,
    after merging in the target's databases under the tuning-log roots ``merge`` (``replace``:
    their records replace the database's own for the kernels they cover); with ``prune_to`` (ONNX
    models), only the kernels those models compile to on the target are kept."""
    from .tuning import database as db  # pylint: disable=import-outside-toplevel
    from .tuning.distill import distill as _distill  # pylint: disable=import-outside-toplevel

    spec = target if isinstance(target, TargetSpec) else resolve_target(target)
    live = None
    if prune_to:
        live = frozenset().union(*(db.workload_hashes(prepare(model, spec), spec.to_tvm())
                                   for model in prune_to))
    return _distill(db.writable_root(logs) / spec.name, spec, keep, check,
                    [Path(root) / spec.name for root in merge], replace, live)


@dataclass(frozen=True)
class CompileOptions:
    logs: str | None = None               # tuning-log root (see database.writable_root)
    use_database: bool = True
    shipped_logs: bool = True             # False: ignore tuned_logs/ (only the ``logs`` root)
    borrow: bool = True                   # untuned CPU kernels borrow similar tuned schedules
    defaults: bool = True                 # still unscheduled: default schedules (False: naive)
    race: bool = True                     # here: a faster default replaces a tuned/borrowed one
    validate: bool = True                 # refuse to write an artifact that disagrees with ORT
    validate_options: "ValidateOptions | None" = None
    ndk: str | None = None                # Android NDK root or clang++ (targets with export "ndk")
    remote: "RemoteOptions | None" = None  # validate on this device before writing the artifact
    checks: "CheckOptions | None" = None  # device checks of GPU kernels (None: defaults)


@dataclass
class CompileResult:
    artifact: "Artifact"
    build: "BuildResult"
    validation: "ValidationReport | None"
    validation_skipped: str | None = None   # why validation did not run, when it did not
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)
    checks: "CheckReport | None" = None     # device checks (GPU targets)


FATBIN_NOTE = ("precompiled by nvcc at compile time (SASS + PTX for the target arch). model.so still "
               "embeds the CUDA source, which TVM's runtime compiles with NVRTC when it loads the "
               "module: TVM 0.27 only builds a binary CUDA module when a CUDA driver is present at "
               "build time. Use this file to load the kernels without NVRTC (cuModuleLoadData) or to "
               "compare against the device's JIT output.")


def _device_files(report: "CheckReport | None") -> dict[str, dict]:
    if report is None:
        return {}
    return {name: {"bytes": len(data), "note": FATBIN_NOTE if name.endswith(".fatbin") else ""}
            for name, data in report.files().items()}


@dataclass
class CheckRun:
    build: "BuildResult"
    report: "CheckReport"
    seconds: float = 0.0


def require_device_code(spec: TargetSpec) -> None:
    """``check`` verifies GPU kernels: refuse targets it cannot build or CPU targets, before any work."""
    from .target.capabilities import check_target  # pylint: disable=import-outside-toplevel

    check_target(spec)
    if spec.device == "cpu":
        raise UsageError(f"Target {spec.name} generates no GPU kernels; `check` verifies device code.",
                         hint="For CPU targets, `tvm-pipeline compile` validates the whole module "
                              "against ONNX Runtime.")


def check(prepared: "PreparedModule", options: CompileOptions = CompileOptions()) -> CheckRun:
    """Build and run the device checks of a GPU target, without linking or writing an artifact
    (so that targets whose host code needs an Android NDK can be verified anywhere)."""
    from .codegen.build import BuildOptions, build  # pylint: disable=import-outside-toplevel
    from .codegen.devicecheck.check import CheckOptions, check_build  # pylint: disable=import-outside-toplevel

    require_device_code(prepared.target)
    start = time.perf_counter()
    result = build(prepared, BuildOptions(options.logs, options.use_database, options.shipped_logs,
                                          options.borrow, options.defaults, options.race))
    report = check_build(result, options.checks or CheckOptions())
    if report is None:
        raise UsageError(f"Target {prepared.target.name} (device {prepared.target.device}) produced "
                         "no device code to check.")
    return CheckRun(result, report, time.perf_counter() - start)


def compile(prepared: "PreparedModule", output: str | os.PathLike,  # pylint: disable=redefined-builtin
            options: CompileOptions = CompileOptions()) -> CompileResult:
    """Build, export, validate against ONNX Runtime, then (and only then) write the artifact."""
    from .run.artifact import StagedArtifact, check_destination, library_record  # pylint: disable=import-outside-toplevel
    from .codegen.build import (BuildOptions, KERNELS_LIBRARY, KERNELS_NOTE, build,  # pylint: disable=import-outside-toplevel
                                export_library)
    from .codegen.devicecheck.check import CheckOptions, check_build  # pylint: disable=import-outside-toplevel
    from .run import validate as val  # pylint: disable=import-outside-toplevel
    from .frontend.quantize import recorded_float_model  # pylint: disable=import-outside-toplevel

    from .target.toolchains import toolchain_for  # pylint: disable=import-outside-toplevel

    start = time.perf_counter()
    check_destination(output)                                 # before the build: fail fast
    toolchain = toolchain_for(prepared.target, options.ndk)
    result = build(prepared, BuildOptions(options.logs, options.use_database, options.shipped_logs,
                                          options.borrow, options.defaults, options.race))
    checks = check_build(result, options.checks or CheckOptions())
    if checks is not None:
        checks.raise_for_failures()          # no artifact for kernels that fail a device check
    loaded = prepared.loaded
    report, skipped = None, None
    with StagedArtifact(output) as staged:
        export_library(result, staged.path / "model.so", toolchain)
        files = _device_files(checks)
        if not prepared.target.runs_on_host and prepared.target.device == "cpu":
            export_library(result, staged.path / KERNELS_LIBRARY, toolchain, kernels_only=True)
            record = library_record(staged.path / KERNELS_LIBRARY)
            files[KERNELS_LIBRARY] = {"bytes": record["library_bytes"],
                                      "sha256": record["library_sha256"], "note": KERNELS_NOTE}
        for name, data in (checks.files() if checks else {}).items():
            (staged.path / name).write_bytes(data)
        metadata = {
            "model": {"name": loaded.name, "path": str(loaded.path.resolve()) if loaded.path else None,
                      "sha256": loaded.sha256},
            "inputs": [t.to_dict() for t in loaded.inputs],
            "outputs": [t.to_dict() for t in loaded.outputs],
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "built_on": platform.node(),
            "toolchain": toolchain.to_dict(),
            **result.metadata(),
            "device_checks": checks.to_dict() if checks else None,
            "integer": prepared.integer.to_dict() if prepared.integer.quantized else None,
            "files": files,
        }
        staged.write_metadata({**metadata, "validation": None})
        remote = options.remote if options.remote is not None and options.remote.enabled else None
        if not options.validate:
            skipped = "disabled (--no-validate)"
        elif remote is None and not prepared.target.runs_on_host:
            skipped = (f"target {prepared.target.name} does not run on this machine; validate on "
                       "the device with `tvm-pipeline validate ARTIFACT --rpc HOST:PORT`, or pass "
                       "--rpc to compile")
        else:
            vopts = options.validate_options or val.ValidateOptions()
            report = val.validate_model(staged.artifact().runner(remote), loaded.original,
                                        loaded.inputs, [t.name for t in loaded.outputs], vopts,
                                        recorded_float_model(loaded.original))
            _decide_by_layers(report, loaded, prepared.target, vopts, remote, options)
            val.check(report)   # raises ValidationError; the staged folder is discarded
        staged.write_metadata({**metadata, "validation": report.to_dict() if report else
                               {"skipped": skipped}})
        artifact = staged.commit()
    return CompileResult(artifact, result, report, skipped, time.perf_counter() - start,
                         checks=checks)


def _decide_by_layers(report: "ValidationReport", loaded: "LoadedModel", target: TargetSpec,
                      options: "ValidateOptions", remote, compile_options: CompileOptions) -> None:
    """A quantized model whose outputs missed the step criterion: the layer by layer check
    (``observe.layerwise``) decides whether TVM computes what the model says."""
    import dataclasses  # pylint: disable=import-outside-toplevel

    from .observe import layerwise  # pylint: disable=import-outside-toplevel
    from .run.validate import make_feeds  # pylint: disable=import-outside-toplevel

    if not report.needs_layerwise:
        return
    # a build only for the check: its speed does not matter, so no schedule races
    unchecked = dataclasses.replace(compile_options, validate=False, remote=None, race=False)
    layers = layerwise.check_layers(loaded, target,
                                    lambda prepared, out: compile(prepared, out, unchecked),
                                    make_feeds(loaded.inputs, options), options.tolerances, remote)
    report.decide_by_layers(layers.to_dict(), layers.summary())


def _reference_path(artifact: "Artifact", model: str | os.PathLike | None) -> Path:
    """The reference ONNX model: ``model``, else the one the artifact records (it must exist)."""
    path = model or artifact.metadata.get("model", {}).get("path")
    if not path:
        raise UsageError(f"Artifact {artifact.path} does not record its ONNX model.",
                         hint="Pass the reference model with --model MODEL.onnx.")
    if not Path(path).exists():
        raise InputFileError(f"The reference model {path} recorded in {artifact.path} is gone.",
                             hint="Pass the ONNX model the artifact was compiled from with --model.")
    return Path(path)


def _reference_model(artifact: "Artifact", model: str | os.PathLike | None):
    import hashlib  # pylint: disable=import-outside-toplevel
    from .frontend.load import read_onnx  # pylint: disable=import-outside-toplevel

    path = _reference_path(artifact, model)
    proto = read_onnx(path)
    artifact.check_model(proto, path)
    recorded = artifact.metadata.get("model", {}).get("sha256")
    if recorded and hashlib.sha256(proto.SerializeToString()).hexdigest() != recorded:
        raise UsageError(f"{path} is not the model {artifact.path} was compiled from "
                         "(its sha256 differs from the one in the artifact metadata).",
                         hint="Pass the original model with --model, or recompile.")
    return proto


def validate(artifact: "Artifact | str | os.PathLike", model: str | os.PathLike | None = None,
             options: "ValidateOptions | None" = None, runner=None,
             remote: "RemoteOptions | None" = None) -> "ValidationReport":
    """Run the artifact (here, or on the ``remote`` device) and ONNX Runtime (here) on the same
    inputs and compare every output."""
    from .frontend.analysis import TensorInfo  # pylint: disable=import-outside-toplevel
    from .run.artifact import Artifact, load_artifact  # pylint: disable=import-outside-toplevel
    from .run import validate as val  # pylint: disable=import-outside-toplevel
    from .frontend.quantize import recorded_float_model  # pylint: disable=import-outside-toplevel

    art = artifact if isinstance(artifact, Artifact) else load_artifact(artifact)
    reference = _reference_model(art, model)
    inputs = [TensorInfo.from_dict(t) for t in art.inputs]
    options = options or val.ValidateOptions()
    report = val.validate_model(runner or art.runner(remote), reference, inputs,
                                [t["name"] for t in art.outputs], options,
                                recorded_float_model(reference))
    if report.needs_layerwise:
        from .frontend.load import load_proto  # pylint: disable=import-outside-toplevel

        loaded = load_proto(reference, {t.name: tuple(t.shape) for t in inputs},
                            _reference_path(art, model))
        _decide_by_layers(report, loaded, resolve_target(art.target_name), options, remote,
                          CompileOptions())
    return report


def bench(artifact: "Artifact | str | os.PathLike", model: str | os.PathLike | None = None,
          options: "BenchOptions | None" = None, runner=None,
          with_reference: bool = True, remote: "RemoteOptions | None" = None) -> "BenchResult":
    """Latency of the artifact and of ONNX Runtime, measured in this process run. On a ``remote``
    device the module is timed there; ONNX Runtime (this host) is then left out unless asked.
    With ``options.isolate``, each engine is first timed alone in a fresh process of its own
    (:mod:`tvm_pipeline.run.isolated`), before the in-process timing; the result holds both."""
    import dataclasses  # pylint: disable=import-outside-toplevel

    from .run.artifact import Artifact, load_artifact  # pylint: disable=import-outside-toplevel
    from .run import bench as bn, isolated as iso, validate as val  # pylint: disable=import-outside-toplevel

    art = artifact if isinstance(artifact, Artifact) else load_artifact(artifact)
    opts = options or bn.BenchOptions()
    if opts.isolate and remote is not None and remote.enabled:
        raise UsageError("--isolate times each engine in a process of its own on this machine; "
                         "it cannot time a remote device.", hint="Drop --isolate or --rpc/--tracker.")
    proto = _reference_model(art, model) if with_reference else None
    isolated = None
    if opts.isolate:
        art.check_runs_here()
        isolated = iso.time_isolated(art.path, _reference_path(art, model) if with_reference
                                     else None, opts)
    reference = val.ort_runner(proto, opts.threads) if proto is not None else None
    result = bn.bench(runner or art.runner(remote), reference, val.seeded_feed(art.inputs, opts.seed),
                      opts)
    return dataclasses.replace(result, isolated=isolated)


def classify(artifact: "Artifact | str | os.PathLike", image: str | os.PathLike, k: int = 5):
    """Top-k ImageNet labels of an image with the compiled module (MobileNet preprocessing)."""
    from .run.artifact import Artifact, load_artifact  # pylint: disable=import-outside-toplevel
    from .run import classify as cls  # pylint: disable=import-outside-toplevel

    art = artifact if isinstance(artifact, Artifact) else load_artifact(artifact)
    if len(art.inputs) != 1:
        raise UsageError(f"classify needs a single-input model; {art.path} has {len(art.inputs)}.")
    inp = art.inputs[0]
    return cls.classify(art.runner(), inp["name"], inp["shape"], image, k)


def quantize(model: "LoadedModel | str | os.PathLike", output: str | os.PathLike,
             options: "QuantizeOptions | None" = None,
             input_shapes: dict[str, tuple[int, ...]] | None = None) -> "QuantizeReport":
    """INT8 (QDQ) with ONNX Runtime's static quantizer, written to ``output`` (checked first), and
    the quantized model compared with the float one on held-back inputs."""
    from .frontend import quantize as qnt  # pylint: disable=import-outside-toplevel
    from .paths import check_new_file  # pylint: disable=import-outside-toplevel

    path = check_new_file(output, "the quantized model", "-o")
    return qnt.quantize(_loaded(model, input_shapes), path, options or qnt.QuantizeOptions())


def profile(artifact: "Artifact | str | os.PathLike", model: str | os.PathLike | None = None,
            options: "ProfileOptions | None" = None, runner=None,
            remote: "RemoteOptions | None" = None) -> "ProfileResult":
    """Time per kernel (here: inside the model; on a ``remote`` device: kernel by kernel), each
    kernel mapped to the ONNX nodes it computes, beside ONNX Runtime's own per-node profile."""
    from .observe import profile as prof  # pylint: disable=import-outside-toplevel
    from .run.artifact import Artifact, load_artifact  # pylint: disable=import-outside-toplevel

    art = artifact if isinstance(artifact, Artifact) else load_artifact(artifact)
    on_device = remote is not None and remote.enabled
    return prof.profile(art, _reference_model(art, model), runner or art.runner(remote),
                        options or prof.ProfileOptions(), remote=on_device)


def bisect(model: "LoadedModel | str | os.PathLike", target: TargetSpec | str | None = None,
           input_shapes: dict[str, tuple[int, ...]] | None = None,
           options: "BisectOptions | None" = None, compile_options: CompileOptions = CompileOptions(),
           remote: "RemoteOptions | None" = None) -> "BisectResult":
    """The first ONNX tensor whose TVM value (on ``target``, here or on the ``remote`` device)
    diverges from ONNX Runtime's, with the node, its fused kernel and a reproducer. The model is
    compiled as ``compile`` would with ``compile_options`` (without validation)."""
    import dataclasses  # pylint: disable=import-outside-toplevel

    from .observe import bisect as bis  # pylint: disable=import-outside-toplevel

    loaded = _loaded(model, input_shapes)
    spec = target if isinstance(target, TargetSpec) else resolve_target(target)
    on_device = remote if remote is not None and remote.enabled else None
    # a build only for the check: its speed does not matter, so no schedule races
    unchecked = dataclasses.replace(compile_options, validate=False, remote=None, race=False)
    return bis.bisect(loaded, spec, lambda prepared, out: compile(prepared, out, unchecked),
                      options or bis.BisectOptions(), on_device)


def report(artifact: "Artifact | str | os.PathLike", output: str | os.PathLike,
           model: str | os.PathLike | None = None, runs: int = 30,
           remote: "RemoteOptions | None" = None) -> Path:
    """One self-contained HTML or Markdown file (by ``output``'s suffix): the compile report, a
    fresh validation, a benchmark against ONNX Runtime and the top kernels of a profile."""
    from .observe import report as rep  # pylint: disable=import-outside-toplevel
    from .observe.profile import ProfileOptions  # pylint: disable=import-outside-toplevel
    from .run.artifact import Artifact, load_artifact  # pylint: disable=import-outside-toplevel
    from .run.bench import BenchOptions  # pylint: disable=import-outside-toplevel

    path = rep.check_output(output)
    art = artifact if isinstance(artifact, Artifact) else load_artifact(artifact)
    on_device = remote is not None and remote.enabled
    runner = art.runner(remote)
    data = rep.ReportData(art, validate(art, model, runner=runner),
                          bench(art, model, BenchOptions(runs=runs), runner=runner,
                                with_reference=not on_device),
                          profile(art, model, ProfileOptions(runs=runs, with_ort=not on_device),
                                  runner, remote))
    return rep.write_report(path, data)


def sweep(options: "SweepOptions",
          progress: "Callable[[SweepProgress], None] | None" = None) -> "SweepResult":
    """Every MobileNet (alpha, resolution) variant of ``options``: built with seeded weights,
    compiled and validated with :func:`compile` (shipped logs, default schedules), timed with
    :func:`bench`; then report.md, sweep.json and PNG plots written into the output folder
    (created and checked writable before any work). A variant that fails is recorded, not raised."""
    from .observe import sweep as sw  # pylint: disable=import-outside-toplevel
    from .run.bench import BenchOptions  # pylint: disable=import-outside-toplevel

    def compile_variant(model_path, spec: TargetSpec, output) -> CompileResult:
        return compile(prepare(model_path, spec), output, CompileOptions(
            logs=options.logs, validate=True, validate_options=options.validate_options,
            ndk=options.ndk, remote=options.remote))

    def bench_variant(artifact, model_path) -> "BenchResult":
        return bench(artifact, model_path, BenchOptions(warmup=options.warmup, runs=options.runs,
                                                        threads=options.threads),
                     with_reference=options.with_ort, remote=options.remote)

    return sw.sweep(options, sw.Verbs(compile_variant, bench_variant), progress)
