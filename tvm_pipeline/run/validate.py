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
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx

from ..frontend.analysis import TensorInfo
from ..errors import ModelError, UsageError, ValidationError
from ..target.spec import physical_cores
from ..numbers import compare_arrays, seeded_array
from .feeds import Runner, preprocess

_KINDS = ("count", "shape", "dtype", "nonfinite", "tolerance", "cosine", "top1")
SPIN_ENTRY = "session.intra_op.allow_spinning"    # ONNX Runtime's session config key


@dataclass(frozen=True)
class Tolerances:
    atol: float = 1e-4
    rtol: float = 1e-3
    min_cosine: float = 0.9999
    allow_nonfinite: bool = False     # accept NaN/Inf outputs that match the reference's

    def __post_init__(self) -> None:
        if not (self.atol >= 0 and self.rtol >= 0 and -1 <= self.min_cosine <= 1):
            raise UsageError(f"Bad tolerances atol={self.atol}, rtol={self.rtol}, min_cosine="
                             f"{self.min_cosine}.", hint="Use --atol >= 0, --rtol >= 0 and "
                             "--min-cosine between -1 and 1.")


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


@dataclass
class ValidationReport:
    samples: int
    outputs: list[OutputReport]
    tolerances: Tolerances
    passed: bool

    def to_dict(self) -> dict:
        """JSON-able: ``passed``, ``samples``, ``tolerances``, ``outputs`` (one dict per output)."""
        def clean(v):
            return None if isinstance(v, float) and not math.isfinite(v) else v
        outs = [{k: (list(v) if k == "shape" else clean(v)) for k, v in asdict(o).items()}
                for o in self.outputs]
        return {"passed": self.passed, "samples": self.samples,
                "tolerances": asdict(self.tolerances), "outputs": outs}

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
        lines = [f"Validation against ONNX Runtime: {self.samples} sample(s), atol {t.atol:g}, "
                 f"rtol {t.rtol:g}, min cosine {t.min_cosine:g}: "
                 + ("PASSED" if self.passed else "FAILED")]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        for o in self.outputs:
            if o.top1_ties:
                lines.append(f"{o.name}: {o.top1_ties} top-1 flip(s) accepted as numerical ties")
            if o.failure:
                lines.append(f"{o.name}: {o.failure}")
        return "\n".join(lines)


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
                profile_prefix: str | None = None):
    """An ONNX Runtime CPU session, all graph optimizations, ``threads`` (default: physical
    cores), intra-op workers that spin between calls like TVM's pool does (see
    :mod:`tvm_pipeline.run.bench`); with ``profile_prefix``, ONNX Runtime's own per-node
    profiling on."""
    import onnxruntime as ort  # pylint: disable=import-outside-toplevel
    if threads is not None and threads < 0:
        raise UsageError(f"The thread count must be >= 1 (or omitted for one per physical "
                         f"core), got {threads}.")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
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


def ort_runner(model: onnx.ModelProto | bytes, threads: int | None = None) -> Runner:
    """A runner for ONNX Runtime (see :func:`ort_session`)."""
    session = ort_session(model, threads)
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


def _idx(flat: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(int(i) for i in np.unravel_index(flat, shape)) if shape else ()


def _compare_one(got: np.ndarray, ref: np.ndarray, tol: Tolerances) -> _Sample:
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
        if s.cosine < tol.min_cosine:
            s.fails["cosine"] = (-s.cosine, f"cosine similarity {s.cosine:.6f} < min_cosine "
                                 f"{tol.min_cosine:g}")
    excess = np.where(both, diff - allowed, -np.inf)
    if excess.size and excess.max() > 0:
        i, n = int(np.argmax(excess)), int((excess > 0).sum())
        s.fails["tolerance"] = (s.max_abs, (
            f"max abs error {diff.flat[i]:.1e} > atol {tol.atol:g} + rtol {tol.rtol:g}*|ref| "
            f"at index {_idx(i, a.shape)} (ref {r.flat[i]:.4g}, got {a.flat[i]:.4g}); {n} of "
            f"{a.size} element(s) out of tolerance"))
    if r.ndim == 2 and r.shape[1] >= 5:
        _top_k(np.where(np.isnan(a), -np.inf, a), r, diff, tol, s)
    return s


def _top_k(a: np.ndarray, r: np.ndarray, diff: np.ndarray, tol: Tolerances, s: _Sample) -> None:
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
        budget = min(float(diff[row].max()), tol.atol + tol.rtol * abs(float(r[row, i])))
        if gap <= 2 * budget:
            s.ties += 1
        elif gap > s.fails.get("top1", (-1.0, ""))[0]:
            s.fails["top1"] = (gap, (
                f"top-1 class differs in row {row}: reference {i} ({r[row, i]:.4g}), got {j} "
                f"({a[row, j]:.4g}); the reference top-1/top-2 gap {gap:.2e} is not a numerical "
                f"tie (> 2 x {budget:.1e})"))


def compare(actual: list[list[np.ndarray]], expected: list[list[np.ndarray]],
            names: Sequence[str], tolerances: Tolerances) -> ValidationReport:
    """Compare ``actual[sample][output]`` with ``expected[sample][output]`` output by output."""
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
                per.append(_compare_one(np.asarray(a_set[k]), np.asarray(e_set[k]), tolerances))
            else:
                per.append(_Sample(math.inf, math.inf, math.nan, fails={"count": (1.0, (
                    f"the module returned {len(a_set)} output(s), the model has {len(names)}"))}))
        outputs.append(_aggregate(name, per, expected, k))
    return ValidationReport(len(actual), outputs, tolerances, all(o.passed for o in outputs))


def _aggregate(name: str, per: list[_Sample], expected: list[list[np.ndarray]],
               k: int) -> OutputReport:
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
    return OutputReport(
        name, shape, max((s.max_abs for s in per), default=0.0),
        max((s.max_rel for s in per), default=0.0),
        math.nan if any(math.isnan(c) for c in cosines) else min(cosines, default=1.0),
        float(np.mean(top1)) if top1 else None, float(np.mean(top5)) if top5 else None,
        failure is None, failure, sum(s.ties for s in per))


def validate(runner: Runner, reference: Runner, inputs: Sequence[TensorInfo],
             output_names: Sequence[str], options: ValidateOptions = ValidateOptions()
             ) -> ValidationReport:
    """Run both on :func:`make_feeds` (reference first, each on its own copy) and compare."""
    feeds = make_feeds(inputs, options)
    expected = [[np.asarray(o) for o in reference({k: v.copy() for k, v in f.items()})]
                for f in feeds]
    actual = [[np.asarray(o) for o in runner({k: v.copy() for k, v in f.items()})] for f in feeds]
    return compare(actual, expected, output_names, options.tolerances)


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
