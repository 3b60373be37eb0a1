"""Per-layer parameter and multiply-add (MAC) accounting for ONNX CNNs with static shapes.

Works on any ONNX model, not only the ones :mod:`tvm_pipeline.models` builds. Shapes come from
``onnx.shape_inference``; every ``Conv``/``ConvTranspose``/``Gemm``/``MatMul`` node of the main
graph is one :class:`LayerCost` (nodes inside ``If``/``Loop`` bodies are not analysed).

Definitions (those of the MobileNet papers, Howard et al. 2017 and Sandler et al. 2018):

* **MACs are per image** (batch-1 semantics): the leading (batch) dimension of every output is
  ignored, so the numbers do not change with the batch size and a dynamic batch is fine.
  Standard conv: ``K_h*K_w*(C_in/groups)*C_out*H_out*W_out``; depthwise: ``D_K^2*M*D_F^2``
  (times the channel multiplier); pointwise: ``M*N*D_F^2``; fully connected: ``in*out``
  (times the non-batch rows of a ``MatMul`` input, e.g. tokens). ``ConvTranspose``:
  ``K_h*K_w*C_in*(C_out/groups)*H_in*W_in``.
* **Params** are the elements of the weights and biases of ``Conv``, ``ConvTranspose``, ``Gemm``
  and ``MatMul`` (for a ``MatMul`` whose only consumer is an ``Add`` of a constant of ``out``
  elements, that constant counts as its bias). ``BatchNormalization`` is not a layer and its
  statistics are not counted: at inference it folds into the preceding conv.
* **Kinds**: ``depthwise`` (groups == C_in > 1, one input channel per filter); ``pointwise``
  (all kernel dims 1, groups 1); ``conv`` (every other conv, incl. grouped and transposed);
  ``fc`` (``Gemm``/``MatMul`` with one constant operand); ``matmul`` (both operands computed).

The papers count conv and fully-connected weights, FC included in the mult-adds; biases add only
the FC's ``num_classes`` to MobileNets. :mod:`tvm_pipeline.models` gives V1 1.0-224 4.21 M params
/ 568.7 M MACs (paper: 4.2 M / 569 M) and V2 1.0-224 3.47 M / 300.8 M (paper: 3.4 M / 300 M; the
TF-slim table says 3.47 M, so "3.4" is truncated and no definition lands within 2% of it).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass

import numpy as np
import onnx
from onnx import helper, shape_inference

from tvm_pipeline.errors import ModelError, UsageError

KINDS: tuple[str, ...] = ("conv", "depthwise", "pointwise", "fc", "matmul")
Shape = tuple[int | str, ...]


@dataclass(frozen=True)
class TensorInfo:
    """A graph input or output; symbolic dims are kept as strings (``"?"`` when anonymous)."""

    name: str
    shape: Shape
    dtype: str

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_dict(cls, data: dict) -> "TensorInfo":
        return cls(data["name"], tuple(data["shape"]), data["dtype"])


@dataclass(frozen=True)
class LayerCost:
    """Cost of one Conv/ConvTranspose/Gemm/MatMul node; ``macs`` is per image."""

    name: str
    op_type: str
    kind: str
    kernel: tuple[int, int] | None
    in_channels: int
    out_channels: int
    groups: int
    out_hw: tuple[int, int] | None
    params: int
    macs: int


@dataclass(frozen=True)
class ModelCost:
    """Whole-model totals; ``macs`` is per image, ``params`` counts weights and biases."""

    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    op_counts: dict[str, int]
    layers: list[LayerCost]
    params: int
    macs: int
    macs_by_kind: dict[str, int]
    params_by_kind: dict[str, int]

    @property
    def pointwise_mac_share(self) -> float:
        """Fraction (0..1) of all MACs spent in 1x1 group-1 convs."""
        return self.macs_by_kind.get("pointwise", 0) / self.macs if self.macs else 0.0

    def to_dict(self) -> dict:
        """Plain JSON-able dict (tuples become lists)."""
        def listify(obj):
            if isinstance(obj, (list, tuple)):
                return [listify(o) for o in obj]
            if isinstance(obj, dict):
                return {k: listify(v) for k, v in obj.items()}
            return obj
        data = listify(asdict(self))
        data["pointwise_mac_share"] = self.pointwise_mac_share
        return data


def _dtype_name(elem_type: int) -> str:
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).name
    except Exception:  # UNDEFINED or a type numpy cannot represent
        return onnx.TensorProto.DataType.Name(elem_type).lower()


def _type_shape(type_proto: onnx.TypeProto) -> tuple[Shape | None, str]:
    """(shape or None when the rank is unknown, dtype name) of a value's type."""
    kind = type_proto.WhichOneof("value")
    if kind not in ("tensor_type", "sparse_tensor_type"):
        return None, str(kind).replace("_type", "")
    tensor = getattr(type_proto, kind)
    if not tensor.HasField("shape"):
        return None, _dtype_name(tensor.elem_type)
    dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                 for d in tensor.shape.dim)
    return dims, _dtype_name(tensor.elem_type)


def _info(value: onnx.ValueInfoProto) -> TensorInfo:
    shape, dtype = _type_shape(value.type)
    return TensorInfo(value.name, shape if shape is not None else (), dtype)


def model_io(model: onnx.ModelProto) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """Graph inputs (those not backed by an initializer) and graph outputs."""
    initializers = {t.name for t in model.graph.initializer}
    inputs = [_info(v) for v in model.graph.input if v.name not in initializers]
    return inputs, [_info(v) for v in model.graph.output]


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _static(shape: Shape | None) -> tuple[int, ...] | None:
    if shape is None or not all(isinstance(d, int) and d > 0 for d in shape):
        return None
    return tuple(int(d) for d in shape)


class _Analyzer:
    def __init__(self, model: onnx.ModelProto):
        try:
            inferred = shape_inference.infer_shapes(model, data_prop=True)
        except Exception as exc:  # InferenceError, ValidationError, protobuf size errors...
            raise ModelError(
                f"ONNX shape inference failed on graph '{model.graph.name}', so its layers cannot "
                f"be costed: {str(exc).strip()}",
                hint="Check the model with onnx.checker.check_model and re-export it.") from exc
        graph = inferred.graph
        self.inputs, self.outputs = model_io(inferred)  # outputs get inferred shapes too
        self.shapes: dict[str, Shape | None] = {}
        for value in list(graph.input) + list(graph.value_info) + list(graph.output):
            self.shapes[value.name] = _type_shape(value.type)[0]
        self.constants: set[str] = set()
        for tensor in graph.initializer:
            self.shapes[tensor.name] = tuple(tensor.dims)
            self.constants.add(tensor.name)
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
            value = _attr(node, "value", None) if node.op_type == "Constant" else None
            if isinstance(value, onnx.TensorProto):
                self.shapes[node.output[0]] = tuple(value.dims)
                self.constants.add(node.output[0])
        self.nodes = list(graph.node)

    def _dynamic(self, node: onnx.NodeProto, what: str) -> ModelError:
        shapes = {n: self.shapes.get(n) for n in list(node.input[:1]) + list(node.output[:1])}
        examples = [  # unknown rank is stored as (); suggest an NCHW image shape for it
            f"--input-shape {i.name}:" + (",".join(
                str(d) if isinstance(d, int) and d > 0 else ("1" if k == 0 else "224")
                for k, d in enumerate(i.shape)) or "1,3,224,224")
            for i in self.inputs if not i.shape or _static(i.shape) is None]
        hint = ("Fix the input shape to concrete numbers, e.g. " + " ".join(examples) + "."
                if examples else "The inputs are static, so shape inference failed on the way: "
                "run onnx.checker.check_model(model, full_check=True) to see why.")
        return ModelError(
            f"{node.op_type} node '{node.name or node.output[0]}' has a non-static {what} "
            f"(shapes: {shapes}), so its MACs cannot be computed. Model inputs: "
            f"{', '.join(f'{i.name}{list(i.shape)}' for i in self.inputs) or 'none'}.",
            hint=hint)

    def _numel(self, name: str, default: int) -> int:
        shape = _static(self.shapes.get(name)) if name else None
        return math.prod(shape) if shape is not None else (default if name else 0)

    def conv(self, node: onnx.NodeProto) -> LayerCost:
        name = node.name or node.output[0]
        weight = _static(self.shapes.get(node.input[1]))
        if weight is None or len(weight) < 3:
            raise ModelError(
                f"{node.op_type} node '{name}': the shape of its weight '{node.input[1]}' is "
                f"unknown ({self.shapes.get(node.input[1])}), so its cost cannot be computed.",
                hint="Store conv weights as initializers with static shapes and re-export.")
        groups = int(_attr(node, "group", 1))
        kernel = weight[2:]
        out = self.shapes.get(node.output[0])
        out_sp = _static(out[2:]) if out is not None and len(out) == len(weight) else None
        if out_sp is None:
            raise self._dynamic(node, "output spatial shape")
        x = self.shapes.get(node.input[0])
        channels = x[1] if x is not None and len(x) == len(weight) else None
        expected = weight[0] if node.op_type == "ConvTranspose" else weight[1] * groups
        if isinstance(channels, int) and channels != expected:
            raise ModelError(
                f"{node.op_type} node '{name}' gets {channels} input channels but its weight "
                f"'{node.input[1]}' {list(weight)} with group={groups} expects {expected}.",
                hint="The model is inconsistent; re-export it from its framework.")
        if node.op_type == "ConvTranspose":
            c_in, c_out = weight[0], weight[1] * groups
            in_sp = _static(x[2:]) if x is not None and len(x) == len(weight) else None
            if in_sp is None:
                raise self._dynamic(node, "input spatial shape")
            macs, kind = math.prod(kernel) * c_in * weight[1] * math.prod(in_sp), "conv"
        else:
            c_out, c_in = weight[0], weight[1] * groups
            macs = math.prod(kernel) * weight[1] * c_out * math.prod(out_sp)
            if groups > 1 and weight[1] == 1:
                kind = "depthwise"
            else:
                kind = "pointwise" if groups == 1 and all(k == 1 for k in kernel) else "conv"
        bias = self._numel(node.input[2], c_out) if len(node.input) > 2 else 0
        kernel_2d = (kernel[0], kernel[1]) if len(kernel) == 2 else None
        out_hw = (out_sp[0], out_sp[1]) if len(out_sp) == 2 else None
        return LayerCost(name, node.op_type, kind, kernel_2d, c_in, c_out, groups, out_hw,
                         math.prod(weight) + bias, macs)

    def dense(self, node: onnx.NodeProto) -> LayerCost:
        name = node.name or node.output[0]
        a_name, b_name = node.input[0], node.input[1]
        a, b = self.shapes.get(a_name), self.shapes.get(b_name)
        if node.op_type == "Gemm":
            k = (a[0] if _attr(node, "transA", 0) else a[-1]) if a else None
            if not isinstance(k, int) and b:
                k = b[1] if _attr(node, "transB", 0) else b[0]
        else:
            k = a[-1] if a else None
            if not isinstance(k, int) and b:
                k = b[-2] if len(b) >= 2 else b[0]
        out = self.shapes.get(node.output[0])
        per_image = _static(out[1:] if len(out) >= 2 else out) if out else None
        if not isinstance(k, int) or k <= 0 or per_image is None:
            raise self._dynamic(node, "shape")
        weight = next((n for n in (b_name, a_name) if n in self.constants), None)
        kind, params = ("fc", self._numel(weight, 0)) if weight else ("matmul", 0)
        out_ch = per_image[-1] if per_image else 1
        bias = node.input[2] if node.op_type == "Gemm" and len(node.input) > 2 else ""
        if weight and bias in self.constants:
            params += self._numel(bias, 0)
        users = self.consumers.get(node.output[0], [])
        if weight and node.op_type == "MatMul" and len(users) == 1 and users[0].op_type == "Add":
            other = [i for i in users[0].input if i != node.output[0]]
            if other and other[0] in self.constants and self._numel(other[0], 0) == out_ch:
                params += out_ch
        return LayerCost(name, node.op_type, kind, None, k, out_ch, 1, None, params,
                         k * math.prod(per_image))

    def run(self) -> ModelCost:
        counts = Counter(n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}"
                         for n in self.nodes)
        layers = []
        for node in self.nodes:
            if node.domain not in ("", "ai.onnx"):
                continue
            if node.op_type in ("Conv", "ConvTranspose"):
                layers.append(self.conv(node))
            elif node.op_type in ("Gemm", "MatMul"):
                layers.append(self.dense(node))
        macs_by_kind = {k: sum(lc.macs for lc in layers if lc.kind == k) for k in KINDS}
        params_by_kind = {k: sum(lc.params for lc in layers if lc.kind == k) for k in KINDS}
        return ModelCost(self.inputs, self.outputs, dict(sorted(counts.items())), layers,
                         sum(params_by_kind.values()), sum(macs_by_kind.values()),
                         macs_by_kind, params_by_kind)


def analyze(model: onnx.ModelProto) -> ModelCost:
    """Per-layer params and per-image MACs of ``model`` (see the module docstring for definitions).

    Raises :class:`ModelError` when shape inference fails or a layer's shapes are not static.
    """
    if not isinstance(model, onnx.ModelProto):
        raise UsageError(f"analyze() expects an onnx.ModelProto, got {type(model).__name__}.",
                         hint="Load the file first with onnx.load(path).")
    return _Analyzer(model).run()


def _human(n: float) -> str:
    for div, unit in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:g}"


def format_report(cost: ModelCost) -> str:
    """Human-readable report: I/O, op counts, per-layer table, totals and the dw/pw split."""
    lines = ["Inputs:"]
    lines += [f"  {t.name}  {t.dtype}  {list(t.shape)}" for t in cost.inputs] or ["  (none)"]
    lines.append("Outputs:")
    lines += [f"  {t.name}  {t.dtype}  {list(t.shape)}" for t in cost.outputs] or ["  (none)"]
    ops = sorted(cost.op_counts.items(), key=lambda kv: (-kv[1], kv[0]))
    lines.append(f"Operators ({sum(cost.op_counts.values())} nodes): "
                 + (", ".join(f"{op} x{n}" for op, n in ops) or "none"))
    header = ("#", "layer", "kind", "kernel", "in->out ch", "out HxW", "params", "MACs")
    rows = [header] + [
        (str(i), lc.name, lc.kind, f"{lc.kernel[0]}x{lc.kernel[1]}" if lc.kernel else "-",
         f"{lc.in_channels}->{lc.out_channels}" + (f" /g{lc.groups}" if lc.groups > 1 else ""),
         f"{lc.out_hw[0]}x{lc.out_hw[1]}" if lc.out_hw else "-", f"{lc.params:,}", f"{lc.macs:,}")
        for i, lc in enumerate(cost.layers)]
    widths = [max(len(r[c]) for r in rows) for c in range(len(header))]
    right = {0, 6, 7}
    lines.append(f"Layers ({len(cost.layers)}; MACs per image, BatchNorm folded into convs):")
    for r in rows:
        lines.append("  " + "  ".join(v.rjust(w) if c in right else v.ljust(w)
                                      for c, (v, w) in enumerate(zip(r, widths))).rstrip())
    lines.append(f"Total: {cost.params:,} params ({_human(cost.params)}), "
                 f"{cost.macs:,} MACs per image ({_human(cost.macs)})")
    lines.append("By kind:")
    for kind in KINDS:
        macs, params = cost.macs_by_kind.get(kind, 0), cost.params_by_kind.get(kind, 0)
        if macs or params:
            share = macs / cost.macs if cost.macs else 0.0
            lines.append(f"  {kind:<10} {_human(macs):>10} MACs ({share:6.1%})  "
                         f"{_human(params):>9} params")
    dw, pw = cost.macs_by_kind.get("depthwise", 0), cost.macs_by_kind.get("pointwise", 0)
    split = f"{dw / (dw + pw):.1%} / {pw / (dw + pw):.1%}" if dw + pw else "n/a"
    lines.append(f"Depthwise vs pointwise MACs: {_human(dw)} vs {_human(pw)} ({split})")
    lines.append(f"Share of MACs in 1x1 convs: {cost.pointwise_mac_share:.1%}")
    return "\n".join(lines)
