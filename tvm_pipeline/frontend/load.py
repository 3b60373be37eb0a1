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
from ..errors import InputFileError, ModelError, UsageError

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


def _resolve_shapes(inputs: list[TensorInfo], given: dict[str, tuple[int, ...]],
                    where: str) -> dict[str, tuple[int, ...]]:
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
    resolved: dict[str, tuple[int, ...]] = {}
    missing = []
    for info in inputs:
        dims = given.get(info.name)
        if dims is not None:
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
            resolved[info.name] = dims
        elif all(isinstance(d, int) and d > 0 for d in info.shape):
            resolved[info.name] = tuple(int(d) for d in info.shape)
        else:
            missing.append(info)
    if missing:
        listing = "; ".join(f"'{t.name}' {_fmt(t.shape)}" for t in missing)
        example = missing[0]
        sample = ",".join(str(d) if isinstance(d, int) and d > 0 else "1" for d in example.shape)
        raise UsageError(f"{where} has dynamic input dimensions: {listing}.",
                         hint=f"Fix them with --input-shape, e.g. --input-shape {example.name}:{sample} "
                              "(replace the 1s by the sizes you deploy with).")
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
                         f"{shapes} ({type(err).__name__}: {err}).",
                         hint="Check that --input-shape matches what the model was exported for.") from err
    if folded is None:
        raise ModelError(f"onnxslim returned no model for {where}.")
    return folded


def load(path: str | Path, input_shapes: dict[str, tuple[int, ...]] | None = None) -> LoadedModel:
    """Read, check, pin input shapes, and fold shape subgraphs of an ONNX model."""
    path = Path(path)
    original = read_onnx(path)
    return load_proto(original, input_shapes, path=path)


def load_proto(original: onnx.ModelProto, input_shapes: dict[str, tuple[int, ...]] | None = None,
               path: Path | None = None) -> LoadedModel:
    where = str(path) if path else "the model"
    inputs, outputs = model_io(original)
    if not inputs:
        raise ModelError(f"{where} has no graph inputs (all inputs are initializers).")
    shapes = _resolve_shapes(inputs, dict(input_shapes or {}), where)
    pinned = _pin(original, shapes)
    folded = _fold(pinned, shapes, where)
    static_inputs, static_outputs = model_io(folded)
    return LoadedModel(path=path, original=original, pinned=pinned, model=folded,
                       inputs=tuple(static_inputs),
                       outputs=tuple(static_outputs),
                       sha256=hashlib.sha256(original.SerializeToString()).hexdigest())
