"""``quantize``: post-training static INT8 quantization with ONNX Runtime's quantizer (QDQ format),
then the quantized model measured against the float one on inputs the calibration never saw.

The report evaluates the quantized model op by op (ONNX Runtime with graph optimizations off:
the model as the standard defines it), and says when ONNX Runtime's own fused integer kernels on
this CPU compute something else (u8 x s8 saturation on x86 without VNNI; ``reduce_range`` avoids
it). The float model's path and sha256 go into the quantized model's ``metadata_props``, so that
validating a compiled quantized model can report the accuracy drift against it.

Calibration inputs are images (MobileNet preprocessing, the pipeline's) or seeded random inputs;
with images, every fifth one (at least one) is held back for the report, the rest calibrate; with
``samples``, the held-back inputs come from another seed. Weights are quantized per output channel
(signed int8), activations as unsigned int8 (u8 x s8 is what x86 VNNI multiplies), in the QDQ form
that ONNX Runtime runs with integer kernels and that ``compile`` reads.
"""

from __future__ import annotations

import contextlib
import logging
import platform
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import onnx

from ..errors import InputFileError, ModelError, UsageError
from ..target.spec import host_cpu_flags
from .load import LoadedModel

METHODS = ("minmax", "entropy", "percentile")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
HOLD_BACK_EVERY = 5
SATURATION_COSINE = 0.999   # below: ONNX Runtime's integer kernels do not compute the definition
FLOAT_MODEL_KEY = "tvm_pipeline.float_model"          # metadata_props of a quantized model
FLOAT_SHA_KEY = "tvm_pipeline.float_model_sha256"


@dataclass(frozen=True)
class QuantizeOptions:
    calibration: Path | None = None    # folder of images; None: seeded inputs
    samples: int = 32                  # seeded calibration inputs (without ``calibration``)
    held_back: int = 16                # seeded inputs for the report (without ``calibration``)
    method: str = "minmax"
    per_channel: bool = True
    seed: int = 0
    reduce_range: bool = False         # 7-bit weights: no u8 x s8 saturation without VNNI

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise UsageError(f"Unknown calibration method '{self.method}'.",
                             hint=f"Use one of: {', '.join(METHODS)}.")
        if self.calibration is None and (self.samples < 1 or self.held_back < 1):
            raise UsageError(f"Quantizing needs at least one calibration and one held-back input "
                             f"(samples={self.samples}, held back={self.held_back}).",
                             hint="Use --samples 1 or more, or --calibration DIR with images.")


@dataclass
class QuantizeReport:
    output: Path
    method: str
    per_channel: bool
    calibration: str                   # what calibrated: "N images from DIR" / "N seeded inputs"
    held_back: int
    quantized_ops: dict[str, int]      # op type -> how many of its nodes take quantized inputs
    float_ops: dict[str, int]          # compute ops left in float
    float_bytes: int
    int8_bytes: int
    outputs: list = field(default_factory=list)   # run.validate.OutputReport per output
    reduce_range: bool = False
    # min cosine of ONNX Runtime's fused integer kernels against the model evaluated op by op
    integer_kernels_cosine: float = 1.0
    # whether this machine is x86 without VNNI, where ONNX Runtime's u8 x s8 pair sums saturate
    saturating_host: bool = False

    def to_dict(self) -> dict:
        from dataclasses import asdict  # pylint: disable=import-outside-toplevel

        data = asdict(self)
        data["output"] = str(self.output)
        return data

    def format(self) -> str:
        lines = [f"Quantized to {self.output} (QDQ, {self.method} calibration on {self.calibration}, "
                 f"{'per-channel' if self.per_channel else 'per-tensor'} "
                 f"{'7-bit' if self.reduce_range else 'int8'} weights, uint8 "
                 f"activations): {self.float_bytes / 1e6:.2f} MB -> {self.int8_bytes / 1e6:.2f} MB",
                 "integer inputs: " + (", ".join(f"{n} {op}" for op, n in
                                                 sorted(self.quantized_ops.items())) or "none"),
                 "left in float: " + (", ".join(f"{n} {op}" for op, n in
                                                sorted(self.float_ops.items())) or "none"),
                 f"Quantized (evaluated op by op) vs float model, ONNX Runtime, on {self.held_back} "
                 "held-back input(s):",
                 f"{'output':16} {'cosine':>9} {'max abs':>9} {'top-1':>6} {'top-5':>6}"]
        for o in self.outputs:
            top1 = f"{o.top1_agreement:6.1%}" if o.top1_agreement is not None else f"{'-':>6}"
            top5 = f"{o.top5_agreement:6.1%}" if o.top5_agreement is not None else f"{'-':>6}"
            lines.append(f"{o.name[:16]:16} {o.cosine:9.5f} {o.max_abs:9.3g} {top1} {top5}")
        if self.integer_kernels_cosine < SATURATION_COSINE:
            lines.append(
                f"note: ONNX Runtime's fused integer kernels on this CPU differ from the model "
                f"evaluated op by op (cosine {self.integer_kernels_cosine:.4f}): "
                + ("on x86 without VNNI they multiply u8 x s8 with int16 pair sums that "
                   "saturate; `--reduce-range` (7-bit weights) avoids that"
                   if self.saturating_host and not self.reduce_range else
                   "single-step rounding differences that this network amplifies layer by layer")
                + ". TVM's integer kernels accumulate in int32 and are validated against the "
                  "model's definition.")
        return "\n".join(lines)


def _images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise InputFileError(f"Calibration folder {folder} does not exist or is not a folder.",
                             hint="Give --calibration a folder of JPEG or PNG images.")
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if len(images) < 2:
        raise InputFileError(f"Calibration folder {folder} holds {len(images)} image(s); "
                             "quantizing needs at least 2 (one is held back for the report).",
                             hint="Add images that look like what the model will see (a few "
                                  "hundred is typical), or use --samples N.")
    return images


def _feeds(loaded: LoadedModel, options: QuantizeOptions
           ) -> tuple[list[dict[str, np.ndarray]], list[dict[str, np.ndarray]], str]:
    """(calibration feeds, held-back feeds, what calibrated)."""
    from ..run.feeds import preprocess  # pylint: disable=import-outside-toplevel
    from ..run.validate import ValidateOptions, make_feeds  # pylint: disable=import-outside-toplevel

    if options.calibration is None:
        calibrate = make_feeds(loaded.inputs, ValidateOptions(samples=options.samples,
                                                              seed=options.seed))
        held = make_feeds(loaded.inputs, ValidateOptions(samples=options.held_back,
                                                         seed=options.seed + 1_000_003))
        return calibrate, held, f"{options.samples} seeded inputs"
    if len(loaded.inputs) != 1:
        raise UsageError("Calibration on images needs a model with a single image input; this "
                         f"one has {len(loaded.inputs)} inputs.", hint="Use --samples N instead.")
    info = loaded.inputs[0]
    images = _images(options.calibration)
    feeds = [{info.name: preprocess(p, info.shape, info.dtype)} for p in images]
    held = feeds[HOLD_BACK_EVERY - 1::HOLD_BACK_EVERY] or feeds[-1:]
    calibrate = [f for f in feeds if not any(f is h for h in held)]
    return calibrate, held, f"{len(calibrate)} images from {options.calibration}"


class _Reader:
    """ONNX Runtime's calibration data reader over a list of feeds."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]):
        self._iter: Iterator[dict[str, np.ndarray]] = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._iter, None)


def _op_counts(model: onnx.ModelProto) -> tuple[dict[str, int], dict[str, int]]:
    """Compute ops fed by a DequantizeLinear (integer-capable) and the others."""
    dequantized = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    ignore = {"QuantizeLinear", "DequantizeLinear", "Constant", "Shape", "Reshape", "Flatten",
              "Squeeze", "Unsqueeze", "Transpose", "Identity"}
    quantized: dict[str, int] = {}
    left: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type in ignore:
            continue
        bucket = quantized if any(i in dequantized for i in node.input) else left
        bucket[node.op_type] = bucket.get(node.op_type, 0) + 1
    return quantized, left


@contextlib.contextmanager
def _quiet_root_log():
    """ONNX Runtime's quantizer logs advice on the root logger; our report says what matters."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def quantize(loaded: LoadedModel, output: Path, options: QuantizeOptions) -> QuantizeReport:
    """Quantize ``loaded`` (its static-shape form) to ``output`` and report it against the float
    model on held-back inputs."""
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,  # pylint: disable=import-outside-toplevel
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process  # pylint: disable=import-outside-toplevel

    from ..paths import atomic_write  # pylint: disable=import-outside-toplevel
    from ..run.validate import REPORT_ONLY, compare, ort_runner, run_all  # pylint: disable=import-outside-toplevel

    calibrate, held, described = _feeds(loaded, options)
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[options.method]
    with tempfile.TemporaryDirectory(prefix="tvm-pipeline-quantize-") as folder, _quiet_root_log():
        source, prepared, staged = (Path(folder) / n for n in ("float.onnx", "prep.onnx",
                                                              "model.int8.onnx"))
        onnx.save(loaded.model, source)        # the quantizer rewrites a ModelProto it is given
        try:
            with contextlib.redirect_stdout(sys.stderr):   # its calibrators print progress
                quant_pre_process(str(source), str(prepared))
                quantize_static(prepared, staged, _Reader(calibrate), quant_format=QuantFormat.QDQ,
                                per_channel=options.per_channel, activation_type=QuantType.QUInt8,
                                weight_type=QuantType.QInt8, calibrate_method=method,
                                reduce_range=options.reduce_range)
        except (ValueError, RuntimeError, onnx.checker.ValidationError) as err:
            raise ModelError(f"ONNX Runtime's quantizer failed on {loaded.name}: "
                             f"{str(err).strip()[-400:]}") from err
        quantized = onnx.load(staged)
    _record_float_model(quantized, loaded)
    data = quantized.SerializeToString()
    names = [o.name for o in loaded.outputs]
    defined = run_all(ort_runner(quantized, optimize=False), held)
    report = compare(defined, run_all(ort_runner(loaded.model), held), names, REPORT_ONLY)
    kernels = compare(run_all(ort_runner(quantized), held), defined, names, REPORT_ONLY)
    atomic_write(output, data)
    ops, left = _op_counts(quantized)
    return QuantizeReport(output, options.method, options.per_channel, described, len(held),
                          ops, left, loaded.model.ByteSize(), len(data), report.outputs,
                          options.reduce_range,
                          min((o.cosine for o in kernels.outputs), default=1.0),
                          _saturating_host())


def _saturating_host() -> bool:
    """Whether ONNX Runtime's u8 x s8 kernels on this machine sum pairs in saturating int16
    (x86 without an AVX-512 or AVX VNNI dot product)."""
    return (platform.machine() in ("x86_64", "AMD64")
            and not {"avx512_vnni", "avx_vnni"} & host_cpu_flags())


def recorded_float_model(quantized: onnx.ModelProto) -> onnx.ModelProto | None:
    """The float model ``quantize`` recorded in ``quantized``'s metadata, if it is still there
    unchanged (same sha256); None otherwise."""
    import hashlib  # pylint: disable=import-outside-toplevel

    props = {p.key: p.value for p in quantized.metadata_props}
    path = props.get(FLOAT_MODEL_KEY)
    if not path or not Path(path).is_file():
        return None
    try:
        model = onnx.load(path)
    except (OSError, onnx.onnx_cpp2py_export.checker.ValidationError, ValueError):
        return None        # moved, unreadable or replaced: there is no drift to report
    if hashlib.sha256(model.SerializeToString()).hexdigest() != props.get(FLOAT_SHA_KEY):
        return None
    return model


def _record_float_model(quantized: onnx.ModelProto, loaded: LoadedModel) -> None:
    """The float model's path and sha256 in the quantized model's metadata, so that validation
    can report the accuracy drift against it."""
    if loaded.path is None:
        return
    values = {FLOAT_MODEL_KEY: str(Path(loaded.path).resolve()), FLOAT_SHA_KEY: loaded.sha256}
    kept = [p for p in quantized.metadata_props if p.key not in values]
    del quantized.metadata_props[:]
    quantized.metadata_props.extend(kept)
    for key, value in values.items():
        quantized.metadata_props.add(key=key, value=value)
