"""The alpha x rho sweep: MobileNet's cost formulas against latency measured on this hardware.

MobileNet (Howard et al. 2017) prices a depthwise-separable layer with ``M`` input channels, ``N``
output channels, a ``D_K x D_K`` kernel and a ``D_F x D_F`` feature map as a depthwise conv,
``D_K^2 * M * D_F^2`` multiply-adds, plus a pointwise (1x1) conv, ``M * N * D_F^2``. The width
multiplier ``alpha`` thins every layer (``M -> alpha*M``, ``N -> alpha*N``) and the resolution
multiplier ``rho`` shrinks every feature map (``D_F -> rho*D_F``, ``rho = resolution / 224``),
so the pointwise term, which holds ~95% of the work, scales as ``alpha^2 * rho^2``; the
depthwise term, the stem conv (3 input channels) and V2's fixed 1280-wide last conv scale as
``alpha * rho^2`` and the classifier as ``alpha``, which is why the exact multiply-add ratio
drifts from ``alpha^2 * rho^2`` at small ``alpha``.

:func:`sweep` builds every ``(alpha, resolution)`` variant with :mod:`tvm_pipeline.models` (seeded
weights), compiles it through :func:`tvm_pipeline.api.compile` (shipped tuning logs, borrowed and
default schedules; validation against ONNX Runtime on), benchmarks it with
:func:`tvm_pipeline.api.bench` (TVM and ONNX Runtime in the same process run, alternating blocks;
on an RPC device the module is timed there and ONNX Runtime is left out unless asked), then writes
into the output folder ``report.md``, ``sweep.json`` and PNG plots (matplotlib, Agg). A variant
that fails to compile, validate or run is recorded with the error's message; the sweep goes on.

Files under the output folder: ``models/`` (the ONNX variants, the reference each artifact
records), ``artifacts/`` (the validated TVM artifacts, kept so that any variant can be re-run with
``tvm-pipeline bench``/``validate``/``profile``), the report files, and a marker file that lets a
later sweep reuse the folder while any other non-empty folder is refused.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from ..errors import PipelineError, UsageError, ValidationError
from ..run.remote import RemoteOptions
from ..paths import atomic_write

if TYPE_CHECKING:  # pragma: no cover
    from ..run.validate import ValidateOptions, ValidationReport
    from ..target.spec import TargetSpec

ARCHS = {"v1": "v1", "v2": "v2", "mobilenet_v1": "v1", "mobilenet_v2": "v2"}
REFERENCE_RESOLUTION = 224          # rho = resolution / 224 (the papers' rho = 1)
MIN_RESOLUTION = 32
KIND = "tvm-pipeline sweep"
MARKER = ".tvm-pipeline-sweep"      # written first: this folder belongs to a sweep
MODELS, ARTIFACTS = "models", "artifacts"
REPORT, JSON_FILE = "report.md", "sweep.json"
PLOT_MACS, PLOT_PARAMS = "latency_vs_macs.png", "latency_vs_params.png"
PLOT_SCALING, PLOT_RATIO = "scaling.png", "ratio.png"
ENGINES = (("tvm", "TVM"), ("ort", "ONNX Runtime"))


# --- input --------------------------------------------------------------------------------------

def _bad(flag: str, text: str, what: str) -> UsageError:
    example = "0.25,0.5,0.75,1.0" if flag == "--alpha" else "128,160,192,224"
    return UsageError(f"{flag} {text!r} is not valid: {what}.",
                      hint=f"Give a comma-separated list, e.g. {flag} {example}.")


def _items(text: str, flag: str) -> list[str]:
    items = [item.strip() for item in str(text).split(",")]
    if not any(items):
        raise _bad(flag, text, "the list is empty")
    if not all(items):
        raise _bad(flag, text, "it has an empty item")
    return items


def parse_alphas(text: str, flag: str = "--alpha") -> tuple[float, ...]:
    """``"0.25,0.5"`` -> ``(0.25, 0.5)``; :class:`UsageError` for anything that is not a list of
    finite numbers (the range is checked by :class:`SweepOptions`)."""
    values = []
    for item in _items(text, flag):
        try:
            value = float(item)
        except ValueError:
            raise _bad(flag, text, f"{item!r} is not a number") from None
        if not math.isfinite(value):
            raise _bad(flag, text, f"{item!r} is not a finite number")
        values.append(value)
    return tuple(values)


def parse_resolutions(text: str, flag: str = "--resolution") -> tuple[int, ...]:
    """``"128,160"`` -> ``(128, 160)``; :class:`UsageError` unless every item is an integer."""
    values = []
    for item in _items(text, flag):
        try:
            values.append(int(item))
        except ValueError:
            raise _bad(flag, text, f"{item!r} is not an integer number of pixels") from None
    return tuple(values)


@dataclass(frozen=True)
class SweepOptions:
    """What to sweep and how. ``ort`` None: time ONNX Runtime here, leave it out on a remote
    device (it would run on this host, not the device); True/False forces it."""

    arch: str
    alphas: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
    resolutions: tuple[int, ...] = (128, 160, 192, 224)
    target: str | None = None            # target name or JSON path (None: this host's)
    output: str | None = None            # folder (None: sweep-<arch>-<target>)
    logs: str | None = None              # tuning-log root (see database.writable_root)
    runs: int = 50
    warmup: int = 10
    threads: int | None = None           # ONNX Runtime threads (None: physical cores)
    ort: bool | None = None
    remote: RemoteOptions | None = None
    validate_options: "ValidateOptions | None" = None
    ndk: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        arch = ARCHS.get(str(self.arch).lower())
        if arch is None:
            raise UsageError(f"Unknown --arch {self.arch!r}: the sweep varies MobileNet's width "
                             "and resolution multipliers, so it takes v1 (MobileNet V1) or v2 "
                             "(MobileNet V2).", hint="Use --arch v1 or --arch v2.")
        object.__setattr__(self, "arch", arch)
        try:
            alphas = tuple(sorted(set(float(a) for a in self.alphas)))
            resolutions = tuple(sorted(set(self.resolutions)))
        except (TypeError, ValueError):
            raise UsageError(f"alphas {self.alphas!r} and resolutions {self.resolutions!r} must be "
                             "lists of numbers.", hint="E.g. alphas=(0.25, 0.5), "
                             "resolutions=(128, 160).") from None
        if not alphas or not resolutions:
            raise UsageError("The sweep needs at least one --alpha and one --resolution.",
                             hint="E.g. --alpha 0.25,0.5,0.75,1.0 --resolution 128,160,192,224.")
        low = 1 / 32 if arch == "v1" else 0.0   # V1's stem has int(32 * alpha) channels
        bad = [a for a in alphas if not math.isfinite(a) or a <= low]
        if bad:
            raise UsageError(f"--alpha {bad[0]:g} is not valid: the width multiplier must be > "
                             + ("1/32 for v1 (its first conv has int(32*alpha) channels)"
                                if arch == "v1" else "0") + ".",
                             hint="The papers use 1.0, 0.75, 0.5 and 0.25.")
        bad_res = [r for r in resolutions if isinstance(r, bool) or not isinstance(r, int)
                   or r < MIN_RESOLUTION]
        if bad_res:
            raise UsageError(f"--resolution {bad_res[0]} is not valid: it must be an integer >= "
                             f"{MIN_RESOLUTION} (five stride-2 stages halve it to 1/32).",
                             hint="The papers use 224, 192, 160 and 128.")
        if self.runs < 1 or self.warmup < 0 or (self.threads is not None and self.threads < 1):
            raise UsageError(f"Bad benchmark options: --runs {self.runs}, --warmup {self.warmup}, "
                             f"--threads {self.threads}.",
                             hint="Use --runs >= 1, --warmup >= 0 and --threads >= 1.")
        object.__setattr__(self, "alphas", alphas)
        object.__setattr__(self, "resolutions", resolutions)

    @property
    def remote_enabled(self) -> bool:
        return self.remote is not None and self.remote.enabled

    @property
    def with_ort(self) -> bool:
        return (not self.remote_enabled) if self.ort is None else bool(self.ort)


# --- results ------------------------------------------------------------------------------------

@dataclass
class Variant:
    """One ``(alpha, resolution)`` point: its cost (from the ONNX graph) and what was measured."""

    arch: str
    alpha: float
    resolution: int
    name: str
    params: int = 0
    macs: int = 0
    macs_by_kind: dict[str, int] = field(default_factory=dict)
    status: str = "pending"              # "ok" | "failed" | "pending" (not reached)
    stage: str | None = None             # where it failed: export, compile, validate, bench
    error: str | None = None
    validation: dict | None = None       # passed/max_abs/cosine..., or {"skipped": why}
    bench: dict | None = None            # BenchResult.to_dict()
    kernels: dict[str, int] = field(default_factory=dict)
    compile_s: float | None = None
    artifact: str | None = None

    @property
    def rho(self) -> float:
        return self.resolution / REFERENCE_RESOLUTION

    @property
    def cost_factor(self) -> float:
        """alpha^2 * rho^2: the papers' cost relative to the 1.0-224 model."""
        return self.alpha ** 2 * self.rho ** 2

    @property
    def depthwise_macs(self) -> int:
        return self.macs_by_kind.get("depthwise", 0)

    @property
    def pointwise_macs(self) -> int:
        return self.macs_by_kind.get("pointwise", 0)

    def ms(self, engine: str) -> float | None:
        """Median latency of ``tvm`` or ``ort`` in ms (None: not measured)."""
        return (self.bench or {}).get(f"{engine}_median_ms")

    @property
    def ratio(self) -> float | None:
        return (self.bench or {}).get("ratio")

    @property
    def label(self) -> str:
        return f"{self.alpha:g}-{self.resolution}"

    def fail(self, stage: str, err: PipelineError) -> None:
        self.status, self.stage = "failed", stage
        self.error = " ".join(str(err).split())   # one paragraph

    def validation_text(self) -> str:
        if self.status == "failed" and self.stage in ("export", "compile", "validate"):
            return f"FAILED ({self.stage})"
        if not self.validation:
            return "-"
        if "skipped" in self.validation:
            return "skipped"
        result = "PASSED" if self.validation.get("passed") else "FAILED"
        return f"{result} (max abs err {self.validation['max_abs']:.1e})"

    def to_dict(self) -> dict:
        data = asdict(self)
        data.update(rho=self.rho, cost_factor=self.cost_factor,
                    depthwise_macs=self.depthwise_macs, pointwise_macs=self.pointwise_macs,
                    tvm_median_ms=self.ms("tvm"), ort_median_ms=self.ms("ort"), ratio=self.ratio)
        return data


@dataclass
class SweepProgress:
    """One step of the sweep: variant ``index`` (0-based) of ``total`` enters ``stage``
    (export, compile, bench) or is ``done`` (then ``variant`` holds its result)."""

    index: int
    total: int
    variant: Variant
    stage: str
    done: bool = False


def _fit_exponent(points: Sequence[tuple[float, float]]) -> float | None:
    """k of latency ~ c * MACs^k by least squares in log-log (None: fewer than 2 distinct x)."""
    import numpy as np  # pylint: disable=import-outside-toplevel

    xs = np.log([p[0] for p in points])
    if len(points) < 2 or np.ptp(xs) == 0:
        return None
    return float(np.polyfit(xs, np.log([p[1] for p in points]), 1)[0])


@dataclass
class SweepResult:
    arch: str
    target: dict
    machine: dict
    measurement: dict                    # runs, warmup, threads, where, ort, validation...
    variants: list[Variant]
    folder: str
    seconds: float = 0.0
    complete: bool = True
    files: list[str] = field(default_factory=list)

    @property
    def succeeded(self) -> list[Variant]:
        return [v for v in self.variants if v.status == "ok" and v.ms("tvm")]

    @property
    def failed(self) -> list[Variant]:
        return [v for v in self.variants if v.status == "failed"]

    @property
    def reference(self) -> Variant | None:
        """The measured variant with the most multiply-adds: scaling is relative to it."""
        return max(self.succeeded, key=lambda v: (v.macs, v.alpha, v.resolution), default=None)

    def scaling(self) -> list[dict]:
        """Per measured variant: the papers' predicted ratio (alpha^2 rho^2), the exact MAC ratio
        and the measured latency ratios, all relative to :attr:`reference`."""
        ref = self.reference
        if ref is None:
            return []
        rows = []
        for v in self.succeeded:
            row = {"name": v.name, "alpha": v.alpha, "resolution": v.resolution,
                   "cost_ratio": v.cost_factor / ref.cost_factor, "mac_ratio": v.macs / ref.macs}
            for engine, _ in ENGINES:
                row[f"{engine}_ratio"] = (v.ms(engine) / ref.ms(engine)
                                          if v.ms(engine) and ref.ms(engine) else None)
            rows.append(row)
        return rows

    def exponents(self) -> dict[str, float | None]:
        """Fitted k of latency ~ MACs^k per engine (1: latency proportional to the work)."""
        return {engine: _fit_exponent([(v.macs, v.ms(engine)) for v in self.succeeded
                                       if v.ms(engine)]) for engine, _ in ENGINES}

    def to_dict(self) -> dict:
        ref = self.reference
        return {"kind": KIND, "version": 1, "arch": self.arch, "complete": self.complete,
                "target": self.target, "machine": self.machine, "measurement": self.measurement,
                "seconds": round(self.seconds, 1), "folder": self.folder,
                "variants": [v.to_dict() for v in self.variants],
                "reference_variant": ref.name if ref else None,
                "scaling": self.scaling(), "fitted_exponent": self.exponents(),
                "files": self.files}

    def format(self) -> str:
        """The variant table for a terminal, then the fitted exponents and the files written."""
        head = (f"{'alpha':>5} {'res':>4} {'params':>8} {'MACs':>9} {'TVM ms':>8} {'ORT ms':>8} "
                f"{'TVM/ORT':>8}  validation")
        lines = [f"MobileNet {self.arch} sweep on {self.target['name']}: {len(self.variants)} "
                 f"variants, {len(self.succeeded)} measured, {len(self.failed)} failed "
                 f"({self.seconds:.0f} s)", head]
        for v in self.variants:
            lines.append(f"{v.alpha:>5g} {v.resolution:>4} {_mega(v.params, 2):>8} "
                         f"{_mega(v.macs, 1):>9} {_num(v.ms('tvm')):>8} {_num(v.ms('ort')):>8} "
                         f"{_num(v.ratio, 'x'):>8}  {v.validation_text()}")
        for v in self.failed:
            lines.append(f"FAILED {v.name} ({v.stage}): {v.error}")
        exps = {k: e for k, e in self.exponents().items() if e is not None}
        if exps:
            lines.append("latency ~ MACs^k: " + ", ".join(
                f"{dict(ENGINES)[k]} k = {e:.2f}" for k, e in exps.items())
                + " (k = 1: latency proportional to multiply-adds)")
        unreliable = [v.name for v in self.succeeded if not v.bench.get("reliable", True)]
        if unreliable:
            lines.append(f"UNRELIABLE timings (other processes used the CPU): "
                         f"{', '.join(unreliable)}; re-run on a quiet machine")
        if self.files:
            lines.append(f"wrote {', '.join(self.files)} in {self.folder}")
        return "\n".join(lines)


def _mega(n: float | None, digits: int) -> str:
    return "-" if not n else f"{n / 1e6:.{digits}f} M"


def _num(x: float | None, unit: str = "", digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}{unit}"


# --- the output folder --------------------------------------------------------------------------

def _is_sweep_folder(folder: Path) -> bool:
    if (folder / MARKER).exists():
        return True
    try:
        return json.loads((folder / JSON_FILE).read_text()).get("kind") == KIND
    except (OSError, ValueError, AttributeError):
        return False


def prepare_folder(folder: Path) -> None:
    """Create ``folder`` (or reuse a previous sweep's) and prove it is writable, before any long
    work; :class:`UsageError` for a file, a non-empty folder that is not a sweep's, or a folder
    that cannot be written."""
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"The sweep output {folder} exists and is not a folder.",
                         hint="Choose another -o DIR.")
    if folder.is_dir() and any(folder.iterdir()) and not _is_sweep_folder(folder):
        raise UsageError(f"Refusing to write the sweep into {folder}: it is a non-empty folder "
                         "that no earlier sweep wrote (no sweep.json), and the sweep replaces "
                         "files in it.", hint="Choose a new or empty -o DIR.")
    try:
        for sub in (folder / MODELS, folder / ARTIFACTS):
            sub.mkdir(parents=True, exist_ok=True)
        atomic_write(folder / MARKER, f"{KIND}: report.md and sweep.json describe this "
                                           "folder\n")
    except OSError as err:
        raise UsageError(f"Cannot write the sweep output into {folder}: "
                         f"{err.strerror or err}.",
                         hint="Choose a writable -o DIR.") from None


def _write_json(result: SweepResult) -> None:
    atomic_write(Path(result.folder) / JSON_FILE,
                      json.dumps(result.to_dict(), indent=2, default=str) + "\n")


# --- machine description ------------------------------------------------------------------------

def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _machine() -> dict:
    # pylint: disable=import-outside-toplevel
    from importlib.metadata import PackageNotFoundError, version
    from ..target.spec import physical_cores  # pylint: disable=import-outside-toplevel

    def ver(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    return {"host": platform.node(), "arch": platform.machine(), "cpu": _cpu_model(),
            "physical_cores": physical_cores(), "logical_cpus": os.cpu_count(),
            "os": platform.platform(), "python": platform.python_version(),
            "tvm": ver("apache-tvm"), "onnxruntime": ver("onnxruntime"),
            "tvm_pipeline": ver("tvm-pipeline")}


# --- the sweep ----------------------------------------------------------------------------------

def _validation_summary(report: "ValidationReport") -> dict:
    outs = report.outputs
    return {"passed": report.passed, "samples": report.samples,
            "max_abs": max((o.max_abs for o in outs), default=0.0),
            "min_cosine": min((o.cosine for o in outs), default=1.0),
            "top1_agreement": min((o.top1_agreement for o in outs
                                   if o.top1_agreement is not None), default=None)}


@dataclass(frozen=True)
class Verbs:
    """How a variant is compiled and timed: :func:`tvm_pipeline.api.sweep` passes closures over
    its own ``prepare``/``compile``/``bench`` verbs (so this module needs no import of the API).
    ``compile(model_path, target, output) -> CompileResult`` validates against ONNX Runtime;
    ``bench(artifact, model_path) -> BenchResult``."""

    compile: Callable
    bench: Callable


def _run_variant(v: Variant, spec: "TargetSpec", options: SweepOptions, verbs: Verbs,
                 folder: Path, step: Callable[[str], None]) -> None:
    from ..models import MobileNetSpec, export_mobilenet  # pylint: disable=import-outside-toplevel

    stage = "export"
    try:
        step(stage)
        model = MobileNetSpec(options.arch, v.alpha, v.resolution, seed=options.seed)
        onnx_path = folder / MODELS / f"{model.name}.onnx"
        cost = export_mobilenet(model, onnx_path)
        v.params, v.macs, v.macs_by_kind = cost.params, cost.macs, dict(cost.macs_by_kind)
        stage = "compile"
        step(stage)
        compiled = verbs.compile(onnx_path, spec,
                                 folder / ARTIFACTS / f"{model.name}-{spec.name}.tvm")
        v.compile_s = round(compiled.seconds, 2)
        v.artifact = str(compiled.artifact.path)
        v.kernels = {k: len(names) for k, names in compiled.build.by_source().items()}
        v.kernels["total"] = compiled.build.kernels_total
        v.validation = (_validation_summary(compiled.validation) if compiled.validation
                        else {"skipped": compiled.validation_skipped})
        stage = "bench"
        step(stage)
        v.bench = verbs.bench(compiled.artifact, onnx_path).to_dict()
        v.status = "ok"
    except ValidationError as err:
        if err.report is not None:
            v.validation = _validation_summary(err.report)
        v.fail("validate", err)
    except PipelineError as err:
        v.fail(stage, err)


def _check_runnable(spec: "TargetSpec", options: SweepOptions) -> None:
    from ..target.toolchains import toolchain_for  # pylint: disable=import-outside-toplevel

    toolchain_for(spec, options.ndk)      # a missing cross compiler fails now, not per variant
    if not options.remote_enabled and not spec.runs_on_host:
        raise UsageError(f"Target {spec.name} does not run on this machine, and the sweep times "
                         "every variant.", hint="Sweep a board or phone with --rpc HOST:PORT or "
                         "--tracker HOST:PORT --key KEY, or pick a target of this machine "
                         "(`tvm-pipeline targets` marks it with *).")


def _measurement(options: SweepOptions, spec: "TargetSpec") -> dict:
    from ..run import bench as bn  # pylint: disable=import-outside-toplevel
    from ..run.validate import ValidateOptions  # pylint: disable=import-outside-toplevel
    from ..target.spec import physical_cores  # pylint: disable=import-outside-toplevel

    val = options.validate_options or ValidateOptions()
    remote = options.remote.describe(spec.rpc_key) if options.remote_enabled else None
    return {"runs": options.runs, "warmup": options.warmup,
            "ort_threads": options.threads or physical_cores(),
            "tvm_threads": os.environ.get("TVM_NUM_THREADS") or physical_cores(),
            "remote": remote, "ort": options.with_ort, "seed": options.seed,
            "blocks": bn.BLOCKS, "cool_down_s": bn.COOL_DOWN_S, "busy_cores": bn.BUSY_CORES,
            "validation": {"samples": val.samples, "seed": val.seed,
                           "images": [str(p) for p in val.images], **asdict(val.tolerances)},
            "logs": options.logs}


def sweep(options: SweepOptions, verbs: Verbs,
          progress: Callable[[SweepProgress], None] | None = None) -> SweepResult:
    """Build, compile, validate and benchmark every variant, then write the report files
    (the folder is created and proved writable first)."""
    from ..target.spec import resolve_target  # pylint: disable=import-outside-toplevel
    from ..models import MobileNetSpec  # pylint: disable=import-outside-toplevel

    spec = resolve_target(options.target)
    _check_runnable(spec, options)
    folder = Path(options.output or f"sweep-{options.arch}-{spec.name}")
    prepare_folder(folder)
    start = time.perf_counter()
    variants = [Variant(options.arch, a, r, MobileNetSpec(options.arch, a, r).name)
                for a in options.alphas for r in options.resolutions]
    result = SweepResult(options.arch, {**spec.to_dict(), "path": str(spec.path)}, _machine(),
                         _measurement(options, spec), variants, str(folder), complete=False)
    for index, v in enumerate(variants):
        def step(stage: str, index: int = index, v: Variant = v) -> None:
            if progress:
                progress(SweepProgress(index, len(variants), v, stage))
        _run_variant(v, spec, options, verbs, folder, step)
        result.seconds = time.perf_counter() - start
        _write_json(result)                      # a killed sweep keeps what it measured
        if progress:
            progress(SweepProgress(index, len(variants), v, "done", done=True))
    result.complete = True
    result.measurement["tvm_threads"] = os.environ.get("TVM_NUM_THREADS",
                                                       result.measurement["tvm_threads"])
    result.files = write_plots(result) + [REPORT, JSON_FILE]
    atomic_write(folder / REPORT, to_markdown(result))
    result.seconds = time.perf_counter() - start
    _write_json(result)
    return result


class ProgressBar:
    """A :func:`sweep` reporter drawing a tqdm bar on stderr (one tick per variant) and one line
    per finished variant."""

    def __init__(self):
        self.bar = None

    def __call__(self, event: SweepProgress) -> None:
        import sys  # pylint: disable=import-outside-toplevel
        from tqdm import tqdm  # pylint: disable=import-outside-toplevel

        if self.bar is None:
            self.bar = tqdm(total=event.total, unit="variant", file=sys.stderr, dynamic_ncols=True,
                            desc="sweep")
        v = event.variant
        if not event.done:
            self.bar.set_postfix_str(f"{v.name}: {event.stage}")
            return
        if v.status == "ok":
            line = (f"{v.name}: TVM {_num(v.ms('tvm'))} ms, ORT {_num(v.ms('ort'))} ms, "
                    f"validation {v.validation_text()}")
        else:
            line = f"{v.name}: FAILED at {v.stage}: {v.error}"
        self.bar.write(line, file=sys.stderr)
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# --- plots --------------------------------------------------------------------------------------

def _save(fig, path: Path) -> None:
    """Render the PNG next to ``path`` under a temporary name, then rename it into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _log_axes(ax) -> None:
    """Log-log axes with plain numbers (0.5, 2, 10) on the ticks instead of powers of ten."""
    from matplotlib.ticker import FuncFormatter  # pylint: disable=import-outside-toplevel

    plain = FuncFormatter(lambda value, _: f"{value:g}")
    for axis, scale in ((ax.xaxis, ax.set_xscale), (ax.yaxis, ax.set_yscale)):
        scale("log")
        axis.set_major_formatter(plain)
        axis.set_minor_formatter(FuncFormatter(
            lambda value, _: f"{value:g}" if f"{value:.0e}"[0] in "25" else ""))


def _latency_plot(result: SweepResult, plt, x_of, xlabel: str, group_of, group_label: str,
                  title: str):
    """Latency (log) against a cost (log), one line per group (same alpha or same resolution)
    and engine, the TVM points labelled alpha-resolution, a slope-1 guide through the largest."""
    fig, ax = plt.subplots(figsize=(7, 5))
    groups = sorted({group_of(v) for v in result.succeeded})
    colors = plt.get_cmap("viridis")([i / max(1, len(groups) - 1) * 0.85 for i in
                                      range(len(groups))])
    for color, group in zip(colors, groups):
        members = sorted((v for v in result.succeeded if group_of(v) == group), key=x_of)
        for (engine, name), style in zip(ENGINES, ("-o", "--s")):
            pts = [(x_of(v), v.ms(engine)) for v in members if v.ms(engine)]
            if pts:
                ax.plot(*zip(*pts), style, color=color, markersize=5, alpha=0.9,
                        label=f"{name}, {group_label} {group:g}")
    for v in result.succeeded:
        ax.annotate(v.label, (x_of(v), v.ms("tvm")), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
    ref = result.reference
    if ref is not None:
        xs = sorted({x_of(v) for v in result.succeeded})
        ax.plot(xs, [ref.ms("tvm") * x / x_of(ref) for x in xs], ":", color="grey",
                label="slope 1: latency proportional to x (through the largest)")
    _log_axes(ax)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("median latency (ms), log")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def _scaling_plot(result: SweepResult, plt):
    rows = result.scaling()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8), sharey=True)
    for ax, key, xlabel in ((axes[0], "cost_ratio", "alpha^2 rho^2 (relative to the largest)"),
                            (axes[1], "mac_ratio", "exact multiply-adds (relative)")):
        for (engine, name), marker in zip(ENGINES, ("o", "s")):
            pts = [(r[key], r[f"{engine}_ratio"], f"{r['alpha']:g}-{r['resolution']}")
                   for r in rows if r[f"{engine}_ratio"]]
            if pts:
                style = ({"color": "tab:blue"} if engine == "tvm" else
                         {"facecolors": "none", "edgecolors": "tab:orange"})
                ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker=marker, label=name,
                           s=40, **style)
                if engine == "tvm":
                    for x, y, label in pts:
                        ax.annotate(label, (x, y), fontsize=7, xytext=(3, 3),
                                    textcoords="offset points")
        values = [r[k] for r in rows for k in (key, "tvm_ratio", "ort_ratio") if r[k]]
        span = [min(values) * 0.8, 1.25]
        ax.plot(span, span, ":", color="grey", label="measured = predicted")
        _log_axes(ax)
        ax.set_xlabel(xlabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("measured latency (relative to the largest)")
    fig.suptitle(f"MobileNet {result.arch}: measured scaling vs the cost formulas "
                 f"(reference {result.reference.name})", fontsize=10)
    return fig


def _ratio_plot(result: SweepResult, plt):
    measured = [v for v in result.succeeded if v.ratio]
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * len(measured) + 2), 4))
    colors = ["tab:green" if v.ratio < 1 else "tab:red" for v in measured]
    bars = ax.bar([v.label for v in measured], [v.ratio for v in measured], color=colors)
    ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_ylabel("TVM / ONNX Runtime median latency (< 1: TVM faster)")
    ax.set_xlabel("variant (alpha-resolution)")
    ax.set_title(f"MobileNet {result.arch} on {result.target['name']}: TVM vs ONNX Runtime",
                 fontsize=10)
    ax.tick_params(axis="x", rotation=45, labelsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    return fig


def write_plots(result: SweepResult) -> list[str]:
    """The PNG plots (Agg backend) into the result's folder; returns the file names written."""
    if not result.succeeded:
        return []
    import matplotlib  # pylint: disable=import-outside-toplevel

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

    where = result.target["name"]
    plots = [
        (PLOT_MACS, lambda: _latency_plot(
            result, plt, lambda v: v.macs / 1e6, "multiply-adds per image (M), log",
            lambda v: v.alpha, "alpha",
            f"MobileNet {result.arch} on {where}: latency vs multiply-adds")),
        (PLOT_PARAMS, lambda: _latency_plot(
            result, plt, lambda v: v.params / 1e6, "parameters (M), log",
            lambda v: v.resolution, "resolution",
            f"MobileNet {result.arch} on {where}: latency vs parameters")),
        (PLOT_SCALING, lambda: _scaling_plot(result, plt)),
    ]
    if any(v.ratio for v in result.succeeded):
        plots.append((PLOT_RATIO, lambda: _ratio_plot(result, plt)))
    written = []
    for name, make in plots:
        fig = make()
        try:
            _save(fig, Path(result.folder) / name)
        finally:
            plt.close(fig)
        written.append(name)
    return written


# --- the Markdown report ------------------------------------------------------------------------

def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |"
                    for row in rows]


FORMULAS = """\
MobileNet's cost model (Howard et al. 2017, section 3; Sandler et al. 2018 for V2's inverted
residuals), for a layer with `M` input and `N` output channels, a `D_K x D_K` kernel and a
`D_F x D_F` output feature map, in multiply-adds per image:

- standard convolution: `D_K^2 * M * N * D_F^2`
- depthwise convolution: `D_K^2 * M * D_F^2`
- pointwise (1x1) convolution: `M * N * D_F^2`
- depthwise separable = depthwise + pointwise; with the width multiplier `alpha` and the
  resolution multiplier `rho`: `D_K^2 * alpha*M * (rho*D_F)^2 + alpha*M * alpha*N * (rho*D_F)^2`

The pointwise term dominates, so the cost scales roughly as **`alpha^2 * rho^2`** (`rho` =
resolution / 224). The depthwise term, the first conv (3 input channels) and, in V2, the last
1x1 conv (1280 outputs for every `alpha <= 1`) scale as `alpha * rho^2`, the classifier as
`alpha`: the exact multiply-add count (from the ONNX graph, column *MACs*) therefore falls
slower than `alpha^2 * rho^2` at small `alpha`. Both predictions are compared with the measured
latency below."""


def _measurement_text(result: SweepResult) -> list[str]:
    m = result.measurement
    val = m["validation"]
    lines = [
        f"- Every variant was built with seeded random weights (seed {m['seed']}; the MobileNet "
        "builders of `tvm_pipeline.models`), compiled with the shipped tuning logs"
        + (f" and the log root `{m['logs']}`" if m["logs"] else "")
        + " (kernels without a record borrow a similar tuned schedule or get the default "
        "schedules), and validated against ONNX Runtime before it was timed "
        f"({val['samples']} seeded random input(s), atol {val['atol']:g}, rtol {val['rtol']:g}, "
        f"min cosine {val['min_cosine']:g}); a variant that fails is reported, not timed.",
    ]
    if m["remote"]:
        lines.append(f"- TVM was timed on the device ({m['remote']}) with TVM's time evaluator, "
                     "one run per call, so the network is not in the numbers.")
    lines.append(f"- {m['warmup']} warm-up call(s), then {m['runs']} timed calls per engine; the "
                 "median is reported. "
                 + ("TVM and ONNX Runtime were timed in the same process run, in "
                    f"{m['blocks']} alternating blocks (ABBA: TVM first, then ONNX Runtime "
                    f"first...) with a {m['cool_down_s']} s rest between blocks, so a drift of "
                    "the machine hits both alike; each call is the full run including the copies "
                    "of inputs and outputs." if m["ort"] else
                    "ONNX Runtime was not timed"
                    + (" (it would run on this host, not on the device; `--ort` times it here "
                       "anyway)." if m["remote"] else ".")))
    lines.append(f"- Threads: TVM {m['tvm_threads']} (TVM_NUM_THREADS), ONNX Runtime "
                 f"{m['ort_threads']} (intra-op).")
    unreliable = [v.name for v in result.succeeded if not v.bench.get("reliable", True)]
    lines.append(f"- Quiet machine: the CPU time other processes used while timing is measured; "
                 f"above {m['busy_cores']} cores a result is flagged unreliable (column "
                 "*reliable*). "
                 + (f"**{len(unreliable)} of {len(result.succeeded)} variants were flagged "
                    f"({', '.join(unreliable)}): re-run on a quiet machine before trusting "
                    "them.**" if unreliable else
                    "No variant was flagged; small differences (a few %) are still noise."))
    return lines


def to_markdown(result: SweepResult) -> str:
    """The report: machine and target, method, formulas, the variant table, measured scaling
    against the formulas, the plots, the failures."""
    t, mach = result.target, result.machine
    alphas = ", ".join(f"{a:g}" for a in sorted({v.alpha for v in result.variants}))
    resolutions = ", ".join(str(r) for r in sorted({v.resolution for v in result.variants}))
    lines = [f"# MobileNet {result.arch} width x resolution sweep on {t['name']}", "",
             f"{len(result.variants)} variants (alpha {alphas}; resolution {resolutions}): "
             f"{len(result.succeeded)} measured, {len(result.failed)} failed; written "
             f"{time.strftime('%Y-%m-%d %H:%M:%S %z')} in {result.seconds:.0f} s by "
             f"`tvm-pipeline sweep`.", "",
             "## Machine and target", "",
             f"- Target: `{t['name']}` ({t.get('description') or 'no description'}); TVM target "
             f"`{json.dumps(t.get('tvm', {}))}`.",
             f"- Timed on: {result.measurement['remote'] or 'this machine'}.",
             f"- This machine: `{mach['host']}`, {mach['arch']}, {mach['cpu']}, "
             f"{mach['physical_cores']} physical core(s) / {mach['logical_cpus']} logical CPU(s), "
             f"{mach['os']}.",
             f"- Software: apache-tvm {mach['tvm']}, onnxruntime {mach['onnxruntime']}, "
             f"tvm-pipeline {mach['tvm_pipeline']}, Python {mach['python']}.", "",
             "## How it was measured", "", *_measurement_text(result), "",
             "## Cost formulas", "", FORMULAS, "", "## Variants", ""]
    rows = []
    for v in result.variants:
        rows.append([f"{v.alpha:g}", str(v.resolution), f"{v.rho:.3f}", _mega(v.params, 3),
                     _mega(v.macs, 2), _mega(v.depthwise_macs, 2), _mega(v.pointwise_macs, 2),
                     f"{v.cost_factor:.4f}", _num(v.ms("tvm")), _num(v.ms("ort")),
                     _num(v.ratio, "x", 2), v.validation_text(),
                     "-" if not v.bench else ("yes" if v.bench.get("reliable", True) else
                                              f"NO ({v.bench.get('other_load_cores')} cores)")])
    lines += _table(["alpha", "resolution", "rho", "params", "MACs", "depthwise MACs",
                     "pointwise MACs", "alpha^2 rho^2", "TVM ms", "ORT ms", "TVM/ORT",
                     "validation", "reliable"], rows)
    lines += ["", "Latencies are medians; TVM/ORT < 1 means TVM is faster. MACs are per image, "
              "counted on the ONNX graph (convolutions and the classifier; BatchNorm folds into "
              "the convs).", ""]
    ref = result.reference
    lines += ["## Measured scaling vs the formulas", ""]
    if ref is None:
        lines += ["No variant was measured.", ""]
    else:
        lines += [f"Everything relative to the largest measured variant, `{ref.name}` "
                  f"(alpha {ref.alpha:g}, resolution {ref.resolution}, {_mega(ref.macs, 1)} "
                  "MACs). Predicted: `alpha^2 rho^2` and the exact multiply-add ratio; "
                  "measured: the latency ratio.", ""]
        lines += _table(["alpha", "resolution", "alpha^2 rho^2 ratio", "MAC ratio",
                         "TVM latency ratio", "ORT latency ratio"],
                        [[f"{r['alpha']:g}", str(r["resolution"]), f"{r['cost_ratio']:.4f}",
                          f"{r['mac_ratio']:.4f}", _num(r["tvm_ratio"], digits=4),
                          _num(r["ort_ratio"], digits=4)] for r in result.scaling()])
        exps = result.exponents()
        fitted = [f"{name} k = {exps[engine]:.2f}" for engine, name in ENGINES
                  if exps[engine] is not None]
        if fitted:
            lines += ["", "Least-squares fit of `latency = c * MACs^k` over the measured "
                      f"variants: {', '.join(fitted)}. `k = 1` is the papers' model (latency "
                      "proportional to the multiply-adds). `k < 1`: per-run costs that do not "
                      "shrink with the model (runtime and thread-pool overhead, copies, small "
                      "layers that cannot fill the cores or the vector units) weigh more in the "
                      "small variants. `k > 1`: the large variants run below the small ones' "
                      "efficiency, typically when their feature maps and weights outgrow the "
                      "caches (or when the timings are noisy: see *reliable*)."]
        lines.append("")
    plots = [f for f in result.files if f.endswith(".png")]
    if plots:
        captions = {PLOT_MACS: "Latency vs multiply-adds (log-log; lines join variants of the "
                               "same alpha; dotted: proportional to the MACs)",
                    PLOT_PARAMS: "Latency vs parameters (log-log; lines join variants of the "
                                 "same resolution; the parameters depend on alpha only)",
                    PLOT_SCALING: "Measured latency ratio vs alpha^2 rho^2 (left) and vs the "
                                  "exact MAC ratio (right); dotted: measured = predicted",
                    PLOT_RATIO: "TVM / ONNX Runtime median latency per variant"}
        lines += ["## Plots", ""]
        for name in plots:
            lines += [f"{captions[name]}:", "", f"![{name}]({name})", ""]
    if result.failed:
        lines += ["## Failed variants", ""]
        lines += [f"- `{v.name}` failed at {v.stage}: {v.error}" for v in result.failed]
        lines.append("")
    lines += ["## Files", "",
              f"- `{JSON_FILE}`: everything above as JSON (per variant: cost by layer kind, "
              "validation, every latency statistic, reliability).",
              f"- `{MODELS}/`: the ONNX variants; `{ARTIFACTS}/`: their validated TVM artifacts "
              "(re-run one with `tvm-pipeline bench ARTIFACT`).", ""]
    return "\n".join(lines)
