"""Stage 1, load: read an ONNX file, check it, fix its input shapes, fold its shape subgraphs.

Exported models (torch.onnx, tf2onnx, paddle2onnx) often carry dynamic batch/spatial dims and
shape-computing subgraphs (Shape -> Gather/Slice -> Concat -> Reshape) that TVM's Relax importer
rejects even with a fixed input shape. ``load`` pins every input to a static shape (from the model
or from ``--input-shape``) and folds those subgraphs away with onnxslim, keeping the user's original
model untouched as the numerical reference for ONNX Runtime.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
import stat
from dataclasses import dataclass
from pathlib import Path

import onnx

from .analysis import TensorInfo, model_io
from .qdq import fold_static_operands, to_qdq
from ..errors import InputFileError, ModelError, UsageError, notice

# the name is everything before the last colon: TensorFlow-style names contain one ("input:0")
_SHAPE_RE = re.compile(r"^\s*(?:(?P<name>.+):)?(?P<dims>\d+(?:\s*[,x]\s*\d+)*)\s*$")
MAX_DIM = 2**31 - 1
MAX_MODEL_BYTES = 2 * 2**30      # protobuf's limit for one ONNX file (external data aside)


@dataclass(frozen=True)
class LoadedModel:
    """A checked model with static input shapes, ready for ``prepare``."""

    path: Path | None
    original: onnx.ModelProto        # the user's model, unchanged: the ONNX Runtime reference
    pinned: onnx.ModelProto          # the user's model with static input shapes, nothing folded
    model: onnx.ModelProto           # static shapes, shape subgraphs folded: what TVM imports
    inputs: tuple[TensorInfo, ...]   # static shapes
    outputs: tuple[TensorInfo, ...]
    sha256: str

    @property
    def name(self) -> str:
        return self.path.stem if self.path else self.model.graph.name or "model"

    @property
    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        return {t.name: tuple(int(d) for d in t.shape) for t in self.inputs}

    def original_bytes(self) -> bytes:
        return self.original.SerializeToString()


def parse_input_shapes(specs: list[str] | None) -> dict[str, tuple[int, ...]]:
    """Parse ``--input-shape`` values: ``name:1,3,224,224`` (or ``1,3,224,224`` for a single input)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for spec in specs or []:
        match = _SHAPE_RE.match(spec)
        if not match:
            raise UsageError(f"Cannot parse --input-shape '{spec}'.",
                             hint="Write it as NAME:D0,D1,... with positive integers, "
                                  "e.g. --input-shape input:1,3,224,224.")
        dims = tuple(int(d) for d in re.split(r"\s*[,x]\s*", match["dims"]))
        if any(d <= 0 for d in dims):
            raise UsageError(f"--input-shape '{spec}' has a zero dimension; every dim must be >= 1.")
        if any(d > MAX_DIM for d in dims):
            raise UsageError(f"--input-shape '{spec}' has a dimension above {MAX_DIM}.",
                             hint="Give the deployment shape, e.g. --input-shape input:1,3,224,224.")
        shapes[(match["name"] or "").strip()] = dims
    return shapes


def read_onnx(path: str | Path) -> onnx.ModelProto:
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"Model file {path} does not exist.",
                             hint="Check the path, or make one with `tvm-pipeline models export`.")
    if path.is_dir():
        raise InputFileError(f"{path} is a directory, not an ONNX model file.")
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):
        raise InputFileError(f"{path} is not a regular file (a pipe, device or socket); a model "
                             "must be an ONNX file on disk.", hint="Pass the path of the .onnx file.")
    if info.st_size > MAX_MODEL_BYTES:
        raise InputFileError(f"{path} is {info.st_size / 2**30:.1f} GiB, above the 2 GiB an ONNX "
                             "file can hold.", hint="Save large weights as ONNX external data.")
    try:
        model = onnx.load(str(path))
    except Exception as err:  # protobuf raises DecodeError/RuntimeWarning variants
        raise InputFileError(f"{path} is not a readable ONNX model ({err}).",
                             hint="Re-export the model; the file may be truncated or not ONNX.") from err
    if not model.graph.node:
        raise InputFileError(f"{path} parsed as ONNX but holds an empty graph (no nodes).",
                             hint="The file is probably not an ONNX model.")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as err:
        first = str(err).strip().splitlines()[0]
        raise ModelError(f"{path} fails the ONNX checker: {first}",
                         hint="Re-export the model with a current exporter.") from err
    return model


DEFAULT_IMAGE_SIZE = 224      # suggested for a dynamic height/width: the usual ImageNet size


def _named_shapes(inputs: list[TensorInfo], given: dict[str, tuple[int, ...]],
                  where: str) -> dict[str, tuple[int, ...]]:
    """``--input-shape`` values by input name (an unnamed one goes to a single input)."""
    names = [t.name for t in inputs]
    if "" in given:
        if len(inputs) != 1:
            raise UsageError(f"--input-shape without a name is ambiguous: {where} has inputs "
                             f"{names}.", hint="Write NAME:D0,D1,... for each input.")
        given = {names[0]: given.pop("")} | given
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise UsageError(f"--input-shape names {unknown}, but {where} has inputs {names}.",
                         hint="Use the input names shown by `tvm-pipeline inspect MODEL`.")
    return given


def _check_given(info: TensorInfo, dims: tuple[int, ...], where: str) -> tuple[int, ...]:
    """A user's shape for ``info``: one dim per axis, equal to the model's where it is fixed."""
    if len(dims) != len(info.shape):
        raise UsageError(
            f"--input-shape {info.name}:{','.join(map(str, dims))} has rank {len(dims)}, "
            f"but input '{info.name}' of {where} has rank {len(info.shape)} "
            f"(shape {_fmt(info.shape)}).", hint="Give one dimension per axis.")
    for axis, (want, have) in enumerate(zip(dims, info.shape)):
        if isinstance(have, int) and have > 0 and have != want:
            raise UsageError(
                f"--input-shape gives {want} for axis {axis} of input '{info.name}', but "
                f"the model fixes that axis to {have} (shape {_fmt(info.shape)}).",
                hint="Only dynamic dimensions can be chosen.")
    return dims


def _static(dim) -> bool:
    return isinstance(dim, int) and dim > 0


def _check_valid_dims(info: TensorInfo, where: str) -> None:
    """A fixed dimension of 0 or below is a broken model, not a dynamic one."""
    bad = [(axis, d) for axis, d in enumerate(info.shape) if isinstance(d, int) and d <= 0]
    if bad:
        listing = ", ".join(f"{d} at axis {axis}" for axis, d in bad)
        raise ModelError(f"Input '{info.name}' of {where} has invalid dimensions ({listing}; "
                         f"shape {_fmt(info.shape)}): every dimension must be >= 1.",
                         hint=f"Give the shape you deploy with, e.g. --input-shape "
                              f"{info.name}:{_suggest(info)}, or re-export the model.")


def _spatial_axes(shape) -> tuple[int, ...]:
    """The height and width axes of a 4-D image input (NHWC when the last axis is 1 or 3)."""
    if len(shape) != 4:
        return ()
    return (1, 2) if shape[3] in (1, 3) and shape[1] not in (1, 3) else (2, 3)


def _suggest(info: TensorInfo) -> str:
    """A shape to suggest: the model's static sizes, batch 1, and 224 for an image's height and
    width; other unknown sizes stay placeholders (no number would be a guess worth copying)."""
    spatial = _spatial_axes(info.shape)

    def dim(axis: int, d) -> str:
        if _static(d):
            return str(d)
        if axis == 0:
            return "1"
        return str(DEFAULT_IMAGE_SIZE) if axis in spatial else f"D{axis}"
    return ",".join(dim(axis, d) for axis, d in enumerate(info.shape))


def _only_batch_dynamic(info: TensorInfo) -> bool:
    return len(info.shape) > 1 and not _static(info.shape[0]) and all(
        _static(d) for d in info.shape[1:])


def _default_shape(info: TensorInfo, where: str) -> tuple[int, ...] | None:
    """The shape of an input the user gave none for: the model's own when static, batch 1 when
    only the batch is dynamic (with a notice), else None."""
    if all(_static(d) for d in info.shape):
        return tuple(int(d) for d in info.shape)
    if _only_batch_dynamic(info):
        notice(f"input '{info.name}' of {where} has a dynamic batch {_fmt(info.shape)}; compiling "
               f"for batch 1 (give another with --input-shape {info.name}:N,"
               f"{','.join(str(d) for d in info.shape[1:])}).")
        return (1, *(int(d) for d in info.shape[1:]))
    return None


def _resolve_shapes(inputs: list[TensorInfo], given: dict[str, tuple[int, ...]],
                    where: str) -> dict[str, tuple[int, ...]]:
    given = _named_shapes(inputs, given, where)
    resolved: dict[str, tuple[int, ...]] = {}
    missing = []
    for info in inputs:
        if info.name in given:
            resolved[info.name] = _check_given(info, given[info.name], where)
            continue
        _check_valid_dims(info, where)
        shape = _default_shape(info, where)
        if shape is None:
            missing.append(info)
        else:
            resolved[info.name] = shape
    if missing:
        listing = "; ".join(f"'{t.name}' {_fmt(t.shape)}" for t in missing)
        example = " ".join(f"--input-shape {t.name}:{_suggest(t)}" for t in missing)
        raise UsageError(f"{where} has dynamic input dimensions: {listing}.",
                         hint=f"Fix them with the sizes you deploy with, e.g. {example} (1 is the "
                              f"batch; {DEFAULT_IMAGE_SIZE} is the usual image height and width, "
                              "and any D must be replaced by the size you deploy with).")
    return resolved


def _fmt(shape) -> str:
    return "[" + ",".join(str(d) if d not in ("", None) else "?" for d in shape) + "]"


def _pin(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]]) -> onnx.ModelProto:
    pinned = onnx.ModelProto()
    pinned.CopyFrom(model)
    for inp in pinned.graph.input:
        if inp.name in shapes:
            dims = inp.type.tensor_type.shape.dim
            for dim, value in zip(dims, shapes[inp.name]):
                dim.Clear()
                dim.dim_value = value
    return pinned


def _fold(pinned: onnx.ModelProto, shapes: dict[str, tuple[int, ...]], where: str) -> onnx.ModelProto:
    import onnxslim  # pylint: disable=import-outside-toplevel

    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            folded = onnxslim.slim(pinned)
    except Exception as err:
        raise ModelError(f"Could not fold the shape computations of {where} with the input shapes "
                         f"{shapes} ({str(err).strip()[-300:] or 'no message'}).",
                         hint="Check that --input-shape matches what the model was exported for.") from err
    if folded is None:
        raise ModelError(f"onnxslim returned no model for {where}.")
    return folded


def load(path: str | Path, input_shapes: dict[str, tuple[int, ...]] | None = None) -> LoadedModel:
    """Read, check, pin input shapes, and fold shape subgraphs of an ONNX model."""
    path = Path(path)
    original = read_onnx(path)
    return load_proto(original, input_shapes, path=path)


def _check_interface(model: onnx.ModelProto, inputs: list[TensorInfo],
                     outputs: list[TensorInfo], where: str) -> None:
    """Inputs and outputs the pipeline can compile: some of each, every input a tensor of known
    rank 1 or more."""
    if not inputs:
        raise ModelError(f"{where} has no graph inputs (all inputs are initializers).")
    if not outputs:
        raise ModelError(f"{where} has no graph outputs: there is nothing to compute.",
                         hint="Re-export the model with its outputs declared.")
    declared = {v.name: v.type for v in model.graph.input}
    for info in inputs:
        kind = declared[info.name].WhichOneof("value")
        tensor = getattr(declared[info.name], kind) if kind else None
        if kind != "tensor_type" or not tensor.HasField("shape"):
            raise ModelError(f"Input '{info.name}' of {where} is not a tensor of known rank.",
                             hint="Re-export the model with the input's shape declared.")
        if not info.shape:
            raise ModelError(f"Input '{info.name}' of {where} is a scalar (rank 0); the pipeline "
                             "compiles models whose inputs are tensors (rank 1 or more).",
                             hint="Re-export the model with the input as a 1-element tensor.")


def load_proto(original: onnx.ModelProto, input_shapes: dict[str, tuple[int, ...]] | None = None,
               path: Path | None = None) -> LoadedModel:
    where = str(path) if path else "the model"
    inputs, outputs = model_io(original)
    _check_interface(original, inputs, outputs, where)
    shapes = _resolve_shapes(inputs, dict(input_shapes or {}), where)
    pinned = _pin(original, shapes)
    folded = fold_static_operands(to_qdq(_fold(pinned, shapes, where)))
    static_inputs, static_outputs = model_io(folded)
    return LoadedModel(path=path, original=original, pinned=pinned, model=folded,
                       inputs=tuple(static_inputs),
                       outputs=tuple(static_outputs),
                       sha256=hashlib.sha256(original.SerializeToString()).hexdigest())
