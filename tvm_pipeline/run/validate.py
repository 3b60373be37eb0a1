"""The correctness gate: the compiled module and ONNX Runtime on the same inputs, outputs compared.

Inputs are ``samples`` seeded feeds (:func:`tvm_pipeline.numbers.seeded_array`) plus one feed per
image given (MobileNet preprocessing, :func:`tvm_pipeline.run.feeds.preprocess`). Every output of
every feed must satisfy:

* same shape and dtype as the reference (a mismatch is a failure with a message, not an exception);
* element-wise ``|got - ref| <= atol + rtol*|ref|`` under the one rule of
  :mod:`tvm_pipeline.numbers` (NaN/Inf must match the reference's, so a NaN where the reference is
  finite fails; and a reference with any NaN/Inf fails unless ``allow_nonfinite``: matching
  non-finite outputs prove nothing);
* cosine similarity (flattened, float64; two all-zero tensors have cosine 1.0) ``>= min_cosine``;
* for ``[N, C]`` outputs with ``C >= 5`` (class scores): the same argmax per row, unless the flip is
  a numerical tie: the reference's top-1/top-2 gap is ``<= 2 * e`` where ``e`` is the row's max abs
  error capped at the allowed error ``atol + rtol*|ref top-1|``. (Uncapped, the rule would excuse
  every flip: a flip implies ``gap <= 2 * max abs error``.) Ties are counted, not failed.
  ``top5_agreement`` (mean ``|top5(ref) & top5(got)| / 5``) is reported, never gating.

``max_rel`` is ``|got - ref| / max(|ref|, atol)`` (the floor keeps exact zeros of the reference
from making it infinite). A report aggregates over samples: max of the errors, min of the
cosines, mean of the agreements.
Non-finite numbers (an error of ``inf``, a ``nan`` cosine) become ``null`` in :meth:`to_dict`.

**Quantized models** (QDQ: QuantizeLinear/DequantizeLinear) are compared in quantization steps. An
output that a DequantizeLinear with one scale produces can only take values ``scale * (q - zero)``,
so its error is counted in steps of ``scale`` (an integer output's step is 1): the criterion is
``|got - ref| <= steps * scale`` (``steps`` 1 by default) on at least ``step_fraction`` (99.9%) of
the elements, and the same top-1 class unless the reference's top-1/top-2 gap is within
``2 * steps * scale`` (a tie). ``atol``/``rtol`` and the cosine do not gate such outputs (one step
is far above any float tolerance); the cosine is still reported. The reference is ONNX Runtime
evaluating the quantized model **op by op** (graph optimizations off: each DequantizeLinear, Conv,
QuantizeLinear as the ONNX standard defines it), not its fused integer kernels: on x86 CPUs without
VNNI those multiply u8 x s8 with ``vpmaddubsw``, whose int16 pair sums saturate (ONNX Runtime's
documented limitation, avoided by quantizing with ``reduce_range``), so they can differ from the
model's definition by dozens of steps. How far ONNX Runtime's integer kernels are from the artifact
is reported beside the result (``integer_kernels``), not gated.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx

from ..frontend.analysis import TensorInfo
from ..frontend.qdq import MS_QOPERATORS, QOPERATORS
from ..errors import ModelError, UsageError, ValidationError
from ..target.spec import physical_cores
from ..numbers import compare_arrays, seeded_array
from .feeds import Runner, preprocess

_KINDS = ("count", "shape", "dtype", "nonfinite", "tolerance", "steps", "cosine", "top1")
QUANTIZE_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"}) | QOPERATORS | MS_QOPERATORS
SPIN_ENTRY = "session.intra_op.allow_spinning"    # ONNX Runtime's session config key


@dataclass(frozen=True)
class Tolerances:
    atol: float = 1e-4
    rtol: float = 1e-3
    min_cosine: float = 0.9999
    allow_nonfinite: bool = False     # accept NaN/Inf outputs that match the reference's
    steps: float = 1.0                # quantized outputs: allowed error in quantization steps
    step_fraction: float = 0.999      # ... on at least this fraction of the elements

    def __post_init__(self) -> None:
        if not (self.atol >= 0 and self.rtol >= 0 and -1 <= self.min_cosine <= 1
                and self.steps >= 0 and 0 <= self.step_fraction <= 1):
            raise UsageError(f"Bad tolerances atol={self.atol}, rtol={self.rtol}, min_cosine="
                             f"{self.min_cosine}.", hint="Use --atol >= 0, --rtol >= 0 and "
                             "--min-cosine between -1 and 1.")


REPORT_ONLY = Tolerances(atol=0.0, rtol=0.0, min_cosine=-1.0)   # numbers reported, nothing gated


@dataclass(frozen=True)
class ValidateOptions:
    samples: int = 3
    seed: int = 0
    images: tuple[Path, ...] = ()
    tolerances: Tolerances = Tolerances()


@dataclass
class OutputReport:
    name: str
    shape: tuple[int, ...]
    max_abs: float
    max_rel: float
    cosine: float
    top1_agreement: float | None
    top5_agreement: float | None
    passed: bool
    failure: str | None
    top1_ties: int = 0        # top-1 flips accepted as numerical ties (over all rows and samples)
    step: float | None = None          # quantized output: the size of one quantization step
    max_steps: float | None = None     # ... the largest error in steps
    within_steps: float | None = None  # ... the fraction of elements within ``steps``
    failed: tuple[str, ...] = ()       # the criteria it failed (count, shape, ..., steps, top1)


@dataclass
class ValidationReport:
    samples: int
    outputs: list[OutputReport]
    tolerances: Tolerances
    passed: bool
    reference: str = "ONNX Runtime"
    # quantized models: the same comparison against ONNX Runtime's fused integer kernels (not gating)
    integer_kernels: "ValidationReport | None" = None
    # quantized models whose outputs missed the step criterion: the layer by layer check that
    # then decides (``observe.layerwise``), as its dict and its summary
    layerwise: dict | None = None
    layerwise_summary: str = ""
    # quantized models whose float original is known: the artifact against it (not gating)
    float_drift: list[OutputReport] | None = None

    @property
    def needs_layerwise(self) -> bool:
        """Failed only on quantized outputs' step criteria (the layer by layer check decides)."""
        failing = [o for o in self.outputs if not o.passed]
        return bool(failing) and all(o.step is not None and set(o.failed) <= {"steps", "top1"}
                                     for o in failing)

    def decide_by_layers(self, layerwise: dict, summary: str) -> None:
        self.layerwise, self.layerwise_summary = layerwise, summary
        self.passed = bool(layerwise["passed"])

    def to_dict(self) -> dict:
        """JSON-able: ``passed``, ``samples``, ``tolerances``, ``outputs`` (one dict per output),
        ``reference``, and ``integer_kernels`` (the same for ONNX Runtime's integer kernels)."""
        def clean(v):
            return None if isinstance(v, float) and not math.isfinite(v) else v
        outs = [{k: (list(v) if k == "shape" else clean(v)) for k, v in asdict(o).items()}
                for o in self.outputs]
        return {"passed": self.passed, "samples": self.samples, "reference": self.reference,
                "tolerances": asdict(self.tolerances), "outputs": outs,
                "integer_kernels": self.integer_kernels.to_dict() if self.integer_kernels else None,
                "layerwise": self.layerwise,
                "float_drift": None if self.float_drift is None else [
                    {"name": o.name, "cosine": o.cosine, "max_abs": o.max_abs,
                     "top1_agreement": o.top1_agreement, "top5_agreement": o.top5_agreement}
                    for o in self.float_drift]}

    def format(self) -> str:
        """A table with one row per output, then one line per failure or tie."""
        t = self.tolerances
        pct = lambda v: "-" if v is None else f"{100 * v:.0f}%"  # noqa: E731
        rows = [("output", "shape", "max abs", "max rel", "cosine", "top-1", "top-5", "result")]
        for o in self.outputs:
            rows.append((o.name, "x".join(map(str, o.shape)) or "scalar", f"{o.max_abs:.2e}",
                         f"{o.max_rel:.2e}", f"{o.cosine:.6f}", pct(o.top1_agreement),
                         pct(o.top5_agreement), "ok" if o.passed else "FAILED"))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = [f"Validation against {self.reference}: {self.samples} sample(s), atol {t.atol:g}, "
                 f"rtol {t.rtol:g}, min cosine {t.min_cosine:g}: "
                 + ("PASSED" if self.passed else "FAILED")
                 + (" (decided layer by layer, see below)" if self.layerwise else "")]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        lines += [self._steps_line(o) for o in self.outputs if o.step is not None]
        if self.integer_kernels is not None:
            lines += ["ONNX Runtime's fused integer kernels (not gating): " + "; ".join(
                self._steps_line(o) for o in self.integer_kernels.outputs if o.step is not None)]
        for o in self.float_drift or []:
            lines.append(f"accuracy drift against the float model (not gating): {o.name} cosine "
                         f"{o.cosine:.4f}, max abs {o.max_abs:.3g}"
                         + (f", top-1 {o.top1_agreement:.1%}, top-5 {o.top5_agreement:.1%}"
                            if o.top1_agreement is not None else ""))
        if self.layerwise_summary:
            lines.append("end to end the outputs missed the step criterion; " + self.layerwise_summary)
        for o in self.outputs:
            if o.top1_ties:
                lines.append(f"{o.name}: {o.top1_ties} top-1 flip(s) accepted as numerical ties")
            if o.failure:
                lines.append(f"{o.name}: {o.failure}")
        return "\n".join(lines)


    def _steps_line(self, o: OutputReport) -> str:
        t = self.tolerances
        return (f"{o.name}: {100 * (o.within_steps or 0):.2f}% of elements within {t.steps:g} "
                f"step(s) of {o.step:.4g} (needed {100 * t.step_fraction:g}%), at most "
                f"{o.max_steps:.2f} step(s)")


def is_quantized(model: onnx.ModelProto) -> bool:
    """Whether the model computes with quantized tensors (QDQ or QOperator form)."""
    return any(node.op_type in QUANTIZE_OPS for node in model.graph.node)


def quantization_steps(model: onnx.ModelProto) -> dict[str, float]:
    """Output name -> the size of one quantization step, for the outputs that a DequantizeLinear
    with a single constant scale produces (the step is the scale) or that are 8-bit integers."""
    from onnx import numpy_helper  # pylint: disable=import-outside-toplevel

    constants = {t.name: t for t in model.graph.initializer}
    constants.update({n.output[0]: n.attribute[0].t for n in model.graph.node
                      if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"})
    producers = {out: node for node in model.graph.node for out in node.output}
    steps = {}
    for output in model.graph.output:
        node = producers.get(output.name)
        if output.type.tensor_type.elem_type in (onnx.TensorProto.UINT8, onnx.TensorProto.INT8):
            steps[output.name] = 1.0
        elif node is not None and node.op_type == "DequantizeLinear" and node.input[1] in constants:
            scale = numpy_helper.to_array(constants[node.input[1]])
            if scale.size == 1:
                steps[output.name] = float(scale.ravel()[0])
    return steps


def make_feeds(inputs: Sequence[TensorInfo],
               options: ValidateOptions) -> list[dict[str, np.ndarray]]:
    """``options.samples`` seeded random feeds, then one feed per image in ``options.images``."""
    if options.samples < 0 or not (options.samples or options.images):
        raise UsageError(f"Validation needs at least one input feed (samples={options.samples}, "
                         f"{len(options.images)} image(s)).", hint="Use --samples 1 or more, "
                         "or pass --image FILE.")
    rng = np.random.default_rng(options.seed)
    specs = [_spec(info) for info in inputs]
    if any(dtype.kind not in "fbiu" for _, dtype in specs):
        raise UsageError(f"Validation can only generate float, integer and bool inputs; this model "
                         f"takes {', '.join(f'{i.name} {i.dtype}' for i in inputs)}.")
    feeds = [{info.name: seeded_array(rng, shape, dtype) for info, (shape, dtype)
              in zip(inputs, specs)} for _ in range(options.samples)]
    if options.images:
        if len(inputs) != 1 or len(inputs[0].shape) != 4 or specs[0][1].kind != "f":
            have = ", ".join(f"{i.name} {tuple(i.shape)} {i.dtype}" for i in inputs)
            raise UsageError("Validation on images needs a model with a single 4-D float input; "
                             f"this one has {have}.",
                             hint="Drop --image and validate on seeded random inputs.")
        info = inputs[0]
        feeds += [{info.name: preprocess(p, specs[0][0], info.dtype)} for p in options.images]
    return feeds


def seeded_feed(inputs: Sequence[dict], seed: int) -> dict[str, np.ndarray]:
    """The one feed the benchmarks time, in process and isolated alike: the first of
    :func:`make_feeds` for the inputs an artifact's metadata records."""
    infos = [TensorInfo.from_dict(t) for t in inputs]
    return make_feeds(infos, ValidateOptions(samples=1, seed=seed))[0]


def _spec(info: TensorInfo) -> tuple[tuple[int, ...], np.dtype]:
    """Static shape and numpy dtype of an input, or a UsageError saying why there is none."""
    if not all(isinstance(d, (int, np.integer)) and d >= 0 for d in info.shape):
        raise UsageError(f"Input '{info.name}' has a symbolic shape {tuple(info.shape)}; "
                         "validation needs static shapes.", hint="Fix it when compiling, e.g. "
                         f"--input-shape {info.name}:1,3,224,224.")
    try:
        return tuple(int(d) for d in info.shape), np.dtype(info.dtype)
    except TypeError as err:
        raise UsageError(f"Input '{info.name}' has dtype {info.dtype}, which numpy cannot "
                         "represent; validation cannot generate data for it.") from err


def ort_session(model: onnx.ModelProto | bytes, threads: int | None = None,
                profile_prefix: str | None = None, optimize: bool = True):
    """An ONNX Runtime CPU session, all graph optimizations (none with ``optimize=False``: every
    node runs as the standard defines it), ``threads`` (default: physical cores), intra-op
    workers that spin between calls like TVM's pool does (see :mod:`tvm_pipeline.run.bench`);
    with ``profile_prefix``, ONNX Runtime's own per-node profiling on."""
    import onnxruntime as ort  # pylint: disable=import-outside-toplevel
    if threads is not None and threads < 0:
        raise UsageError(f"The thread count must be >= 1 (or omitted for one per physical "
                         f"core), got {threads}.")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                     else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    opts.intra_op_num_threads = threads or physical_cores()
    opts.log_severity_level = 3
    opts.add_session_config_entry(SPIN_ENTRY, "1")
    if profile_prefix:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile_prefix
    data = bytes(model) if isinstance(model, (bytes, bytearray)) else model.SerializeToString()
    try:
        return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    except Exception as err:
        raise ModelError(f"ONNX Runtime cannot load the reference model: {str(err).strip()[-500:]}",
                         hint=f"The reference must load in ONNX Runtime {ort.__version__} on the "
                              "CPU; check the model's opset and IR version.") from err


def ort_runner(model: onnx.ModelProto | bytes, threads: int | None = None,
               optimize: bool = True) -> Runner:
    """A runner for ONNX Runtime (see :func:`ort_session`)."""
    session = ort_session(model, threads, optimize=optimize)
    names = [o.name for o in session.get_outputs()]

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return [np.asarray(o) for o in session.run(names, feeds)]
    return run


@dataclass
class _Sample:
    max_abs: float = 0.0
    max_rel: float = 0.0
    cosine: float = 1.0
    top1: list[bool] | None = None
    top5: list[float] | None = None
    ties: int = 0
    fails: dict[str, tuple[float, str]] = field(default_factory=dict)
    max_steps: float = 0.0
    within: tuple[int, int] = (0, 0)     # elements within the allowed steps, elements


def _idx(flat: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(int(i) for i in np.unravel_index(flat, shape)) if shape else ()


def _compare_one(got: np.ndarray, ref: np.ndarray, tol: Tolerances,
                 step: float | None = None) -> _Sample:
    s = _Sample()
    if got.shape != ref.shape:
        s.max_abs = s.max_rel = math.inf
        s.cosine = math.nan
        s.fails["shape"] = (math.inf, f"shape {got.shape} != reference {ref.shape}")
        return s
    if got.dtype != ref.dtype:
        s.fails["dtype"] = (1.0, f"dtype {got.dtype} != reference {ref.dtype}")
    a, r = got.astype(np.float64), ref.astype(np.float64)
    fin_r = np.isfinite(r)
    comparison = compare_arrays(a, r, tol.atol, tol.rtol)
    both, bad, diff, allowed = (comparison.finite, comparison.mismatched, comparison.diff,
                                comparison.allowed)
    r0 = np.where(fin_r, r, 0.0)
    if diff.size:
        s.max_abs = float(diff.max())
        with np.errstate(over="ignore"):    # an error of 1e13 over atol 0: infinitely off
            s.max_rel = float((diff / np.maximum(np.abs(r0), tol.atol or np.finfo(float).tiny)).max())
    if not tol.allow_nonfinite and not fin_r.all():
        i = int(np.argmax(~fin_r.ravel()))
        s.fails["nonfinite"] = (float((~fin_r).sum()), (
            f"ONNX Runtime itself produced {int((~fin_r).sum())} NaN/Inf value(s), first at index "
            f"{_idx(i, r.shape)} ({r.flat[i]:.4g}): the model's outputs are not finite (Inf or NaN "
            "weights, or an overflow), so agreement proves nothing; fix the model, or pass "
            "--allow-nonfinite to accept matching NaN/Inf"))
    if bad.any():
        i = int(np.argmax(bad.ravel()))
        s.max_abs = s.max_rel = math.inf
        s.cosine = math.nan
        s.fails["nonfinite"] = (float(bad.sum()), f"{int(bad.sum())} NaN/Inf value(s) where the "
                                f"reference differs, first at index {_idx(i, a.shape)} "
                                f"(ref {r.flat[i]:.4g}, got {a.flat[i]:.4g})")
    else:
        av, rv = a[both], r[both]
        na, nr = float(np.linalg.norm(av)), float(np.linalg.norm(rv))
        s.cosine = (1.0 if na == nr == 0 else 0.0 if na == 0 or nr == 0
                    else float(np.clip(np.dot(av, rv) / (na * nr), -1.0, 1.0)))
        if s.cosine < tol.min_cosine and step is None:
            s.fails["cosine"] = (-s.cosine, f"cosine similarity {s.cosine:.6f} < min_cosine "
                                 f"{tol.min_cosine:g}")
    if step is not None:
        _steps(diff, both, step, tol, s)
        allowed = np.full_like(diff, step * tol.steps)
    excess = np.where(both, diff - allowed, -np.inf)
    if step is None and excess.size and excess.max() > 0:
        i, n = int(np.argmax(excess)), int((excess > 0).sum())
        s.fails["tolerance"] = (s.max_abs, (
            f"max abs error {diff.flat[i]:.1e} > atol {tol.atol:g} + rtol {tol.rtol:g}*|ref| "
            f"at index {_idx(i, a.shape)} (ref {r.flat[i]:.4g}, got {a.flat[i]:.4g}); {n} of "
            f"{a.size} element(s) out of tolerance"))
    if r.ndim == 2 and r.shape[1] >= 5:
        _top_k(np.where(np.isnan(a), -np.inf, a), r, diff,
               tol.atol if step is None else step * tol.steps, tol.rtol if step is None else 0.0, s)
    return s


def _steps(diff: np.ndarray, finite: np.ndarray, step: float, tol: Tolerances, s: _Sample) -> None:
    """The error in quantization steps (a tiny slack absorbs float rounding of whole steps)."""
    steps = np.where(finite, diff, np.inf) / step
    within = int((steps <= tol.steps + 1e-3).sum())
    s.max_steps, s.within = (float(steps.max()) if steps.size else 0.0), (within, steps.size)
    if steps.size and within < tol.step_fraction * steps.size:
        i = int(np.argmax(steps))
        s.fails["steps"] = (s.max_steps, (
            f"{100 * within / steps.size:.2f}% of elements within {tol.steps:g} quantization "
            f"step(s) of {step:.4g} (needed {100 * tol.step_fraction:g}%); the largest error is "
            f"{s.max_steps:.1f} steps at index {_idx(i, diff.shape)}"))


def _top_k(a: np.ndarray, r: np.ndarray, diff: np.ndarray, atol: float, rtol: float,
           s: _Sample) -> None:
    s.top1, s.top5 = [], []
    for row in range(r.shape[0]):
        order_r = np.argsort(-r[row], kind="stable")
        order_a = np.argsort(-a[row], kind="stable")
        i, j = int(order_r[0]), int(order_a[0])
        s.top5.append(len(set(order_r[:5].tolist()) & set(order_a[:5].tolist())) / 5)
        s.top1.append(i == j)
        if i == j:
            continue
        gap = float(r[row, i] - r[row, order_r[1]])
        budget = min(float(diff[row].max()), atol + rtol * abs(float(r[row, i])))
        if gap <= 2 * budget:
            s.ties += 1
        elif gap > s.fails.get("top1", (-1.0, ""))[0]:
            s.fails["top1"] = (gap, (
                f"top-1 class differs in row {row}: reference {i} ({r[row, i]:.4g}), got {j} "
                f"({a[row, j]:.4g}); the reference top-1/top-2 gap {gap:.2e} is not a numerical "
                f"tie (> 2 x {budget:.1e})"))


def compare(actual: list[list[np.ndarray]], expected: list[list[np.ndarray]],
            names: Sequence[str], tolerances: Tolerances,
            steps: dict[str, float] | None = None) -> ValidationReport:
    """Compare ``actual[sample][output]`` with ``expected[sample][output]`` output by output;
    outputs named in ``steps`` in quantization steps of that size (see the module docstring)."""
    steps = steps or {}
    if len(actual) != len(expected):
        raise UsageError(f"compare() got {len(actual)} result set(s) for {len(expected)} "
                         "reference set(s); give one per input feed.")
    if any(len(e) != len(names) for e in expected):
        raise UsageError(f"The reference returned {sorted({len(e) for e in expected})} output(s) "
                         f"for {len(names)} output name(s) {list(names)}.")
    outputs = []
    extra = [f"<extra output {j}>" for j in range(len(names), max(map(len, actual), default=0))]
    for k, name in enumerate(list(names) + extra):
        per: list[_Sample] = []
        for a_set, e_set in zip(actual, expected):
            if k < min(len(a_set), len(e_set)):
                per.append(_compare_one(np.asarray(a_set[k]), np.asarray(e_set[k]), tolerances,
                                        steps.get(name)))
            else:
                per.append(_Sample(math.inf, math.inf, math.nan, fails={"count": (1.0, (
                    f"the module returned {len(a_set)} output(s), the model has {len(names)}"))}))
        outputs.append(_aggregate(name, per, expected, k, steps.get(name)))
    return ValidationReport(len(actual), outputs, tolerances, all(o.passed for o in outputs))


def _aggregate(name: str, per: list[_Sample], expected: list[list[np.ndarray]],
               k: int, step: float | None = None) -> OutputReport:
    worst: dict[str, tuple[float, str]] = {}
    for n, s in enumerate(per):
        for kind, (badness, msg) in s.fails.items():
            if kind not in worst or badness > worst[kind][0]:
                worst[kind] = (badness, msg + (f" (sample {n})" if len(per) > 1 else ""))
    cosines = [s.cosine for s in per]
    top1 = [v for s in per if s.top1 is not None for v in s.top1]
    top5 = [v for s in per if s.top5 is not None for v in s.top5]
    shape = tuple(np.shape(expected[0][k])) if expected and k < len(expected[0]) else ()
    failure = "; ".join(worst[kind][1] for kind in _KINDS if kind in worst) or None
    within = [sum(s.within[i] for s in per) for i in (0, 1)]
    return OutputReport(
        name, shape, max((s.max_abs for s in per), default=0.0),
        max((s.max_rel for s in per), default=0.0),
        math.nan if any(math.isnan(c) for c in cosines) else min(cosines, default=1.0),
        float(np.mean(top1)) if top1 else None, float(np.mean(top5)) if top5 else None,
        failure is None, failure, sum(s.ties for s in per), step,
        None if step is None else max((s.max_steps for s in per), default=0.0),
        None if step is None else within[0] / max(within[1], 1),
        tuple(kind for kind in _KINDS if kind in worst))


def run_all(runner: Runner, feeds: list[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
    """Each feed on its own copy (a runner may write into its inputs)."""
    return [[np.asarray(o) for o in runner({k: v.copy() for k, v in f.items()})] for f in feeds]


def validate(runner: Runner, reference: Runner, inputs: Sequence[TensorInfo],
             output_names: Sequence[str], options: ValidateOptions = ValidateOptions()
             ) -> ValidationReport:
    """Run both on :func:`make_feeds` (reference first) and compare."""
    feeds = make_feeds(inputs, options)
    expected = run_all(reference, feeds)
    return compare(run_all(runner, feeds), expected, output_names, options.tolerances)


def validate_model(runner: Runner, model: onnx.ModelProto, inputs: Sequence[TensorInfo],
                   output_names: Sequence[str], options: ValidateOptions = ValidateOptions(),
                   float_model: onnx.ModelProto | None = None) -> ValidationReport:
    """:func:`validate` against ONNX Runtime running ``model``; a quantized model is compared in
    quantization steps with ONNX Runtime evaluating it op by op, and its fused integer kernels
    (and the ``float_model`` it was quantized from, when given) are compared too, for the record
    (see the module docstring)."""
    if not is_quantized(model):
        return validate(runner, ort_runner(model), inputs, output_names, options)
    feeds, steps = make_feeds(inputs, options), quantization_steps(model)
    actual = run_all(runner, feeds)
    report = compare(actual, run_all(ort_runner(model, optimize=False), feeds), output_names,
                     options.tolerances, steps)
    report.reference = "ONNX Runtime (quantized model, op by op)"
    if steps:
        report.integer_kernels = compare(actual, run_all(ort_runner(model), feeds),
                                         output_names, options.tolerances, steps)
        report.integer_kernels.reference = "ONNX Runtime (fused integer kernels)"
    if float_model is not None:
        report.float_drift = compare(actual, run_all(ort_runner(float_model), feeds), output_names,
                                     REPORT_ONLY).outputs
    return report


def check(report: ValidationReport) -> None:
    """Raise :class:`ValidationError` (carrying ``report``) naming every failing output."""
    if report.passed:
        return
    failing = [o for o in report.outputs if not o.passed]
    raise ValidationError(
        f"The compiled module disagrees with ONNX Runtime on {len(failing)} of "
        f"{len(report.outputs)} output(s) over {report.samples} input feed(s): "
        + "; ".join(f"'{o.name}': {o.failure}" for o in failing) + ".",
        report=report,
        hint="If the difference is expected (reduced precision, fast-math), loosen --atol, "
             "--rtol or --min-cosine; otherwise the compiled module is wrong for this target: "
             "`tvm-pipeline bisect MODEL --target TARGET` finds the first ONNX node that "
             "diverges and writes a reproducer.")
