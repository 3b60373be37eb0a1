"""Quantized operators (ONNX's QOperator form) rewritten to the QDQ form that ``compile`` reads.

TVM's Relax importer reads QuantizeLinear/DequantizeLinear but not QLinearConv, QLinearMatMul,
ConvInteger or MatMulInteger. Each is the same computation spelled with QDQ nodes around the float
operator, which the integer-kernel rewrite (``lowering.integer``) turns back into integer products:

- ``QLinearConv(x, xs, xz, w, ws, wz, ys, yz[, B])`` -> DequantizeLinear(x), DequantizeLinear(w,
  axis 0), DequantizeLinear(B, scale xs * ws, axis 0), Conv, QuantizeLinear(ys, yz)
- ``QLinearMatMul(a, as, az, b, bs, bz, ys, yz)`` -> DequantizeLinear(a), DequantizeLinear(b, per
  column when bs is), MatMul, QuantizeLinear
- ONNX Runtime's ``com.microsoft`` ``QLinearAdd``, ``QLinearMul``, ``QLinearConcat``, ``QGemm``,
  ``QLinearGlobalAveragePool`` and ``QLinearAveragePool`` (channels first), ``QLinearSigmoid``,
  ``QLinearLeakyRelu`` (what its quantizer writes in the QOperator form: EfficientNet's
  squeeze-excite multiplies, DenseNet's and GoogLeNet's concatenations) -> DequantizeLinear, the
  float operator, QuantizeLinear
- ``ConvInteger(x, w[, xz, wz])`` / ``MatMulInteger(a, b[, az, bz])`` -> DequantizeLinear with
  scale 1, Conv/MatMul, Cast to int32 (the int32 result travels as float32, exact up to 2^24)

Outputs keep their names; new tensors are named after the node they replace. Per-channel scales
need DequantizeLinear's ``axis`` (opset 13 and later). Models without such nodes are returned
unchanged.

``fold_static_operands``: ONNX Runtime's quantizer also quantizes constant operands that TVM's
importer reads as values, not tensors (a Pad's ``constant_value``: EfficientViT-B0 quantized with
``quantize_static``'s defaults failed to import). Such an operand, a DequantizeLinear of
initializers, becomes the float initializer it computes.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

QOPERATORS = frozenset({"QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"})
_UNARY = {"QLinearGlobalAveragePool": "GlobalAveragePool", "QLinearSigmoid": "Sigmoid",
          "QLinearLeakyRelu": "LeakyRelu", "QLinearAveragePool": "AveragePool"}
                                                # (x, xs, xz, ys, yz) -> the float operator
_BINARY = {"QLinearAdd": "Add", "QLinearMul": "Mul"}    # (a, as, az, b, bs, bz, ys, yz)
MS_QOPERATORS = frozenset({"QGemm", "QLinearConcat", *_UNARY, *_BINARY})   # com.microsoft
MS_DOMAIN = "com.microsoft"
# operands TVM's ONNX importer needs as constants (it reads their values while importing)
STATIC_OPERANDS = {"Pad": {1, 2, 3}, "Clip": {1, 2}, "Resize": {1, 2, 3}, "Upsample": {1},
                   "Reshape": {1}, "Slice": {1, 2, 3, 4}, "Expand": {1}, "Tile": {1},
                   "Squeeze": {1}, "Unsqueeze": {1}, "ReduceMean": {1}, "ReduceSum": {1}}


class _Rewriter:
    def __init__(self):
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def name(self, node: onnx.NodeProto, what: str) -> str:
        self._count += 1
        return f"{node.name or node.op_type}_{what}_qdq{self._count}"

    def constant(self, node, what: str, value: np.ndarray) -> str:
        name = self.name(node, what)
        self.initializers.append(numpy_helper.from_array(value, name))
        return name

    def emit(self, op: str, inputs: list[str], node, what: str, output: str | None = None,
             **attrs) -> str:
        out = output or self.name(node, what)
        self.nodes.append(helper.make_node(op, inputs, [out], name=self.name(node, op), **attrs))
        return out

    def dequantize(self, node, data: str, scale: str, zero: str, axis: int = 1) -> str:
        inputs = [data, scale] + ([zero] if zero else [])
        return self.emit("DequantizeLinear", inputs, node, "dq", axis=axis)

    # -- one method per QOperator ------------------------------------------------------
    def qlinearconv(self, node) -> None:
        x, xs, xz, w, ws, wz, ys, yz, *rest = list(node.input) + [""]
        xf = self.dequantize(node, x, xs, xz)
        wf = self.dequantize(node, w, ws, wz, axis=0)
        inputs = [xf, wf]
        if rest and rest[0]:
            bias_scale = self.emit("Mul", [xs, ws], node, "bias_scale")
            inputs.append(self.dequantize(node, rest[0], bias_scale, "", axis=0))
        yf = self.emit("Conv", inputs, node, "conv", **_attrs(node))
        self.emit("QuantizeLinear", [yf, ys, yz], node, "q", output=node.output[0])

    def qlinearmatmul(self, node) -> None:
        a, as_, az, b, bs, bz, ys, yz = node.input
        af = self.dequantize(node, a, as_, az)
        bf = self.dequantize(node, b, bs, bz, axis=1)
        yf = self.emit("MatMul", [af, bf], node, "matmul")
        self.emit("QuantizeLinear", [yf, ys, yz], node, "q", output=node.output[0])

    def binary(self, node) -> None:
        a, as_, az, b, bs, bz, cs, cz = (list(node.input) + [""] * 8)[:8]
        result = self.emit(_BINARY[node.op_type], [self.dequantize(node, a, as_, az),
                                                   self.dequantize(node, b, bs, bz)], node, "op")
        self.emit("QuantizeLinear", [result, cs] + ([cz] if cz else []), node, "q",
                  output=node.output[0])

    def qlinearconcat(self, node) -> None:
        ys, yz, *parts = node.input       # then (x, scale, zero point) for each input
        inputs = [self.dequantize(node, *(parts[i:i + 3] + [""])[:3])
                  for i in range(0, len(parts), 3)]
        yf = self.emit("Concat", inputs, node, "concat", axis=_attrs(node)["axis"])
        self.emit("QuantizeLinear", [yf, ys] + ([yz] if yz else []), node, "q",
                  output=node.output[0])

    def qgemm(self, node) -> None:
        a, as_, az, b, bs, bz, c, ys, yz = (list(node.input) + [""] * 9)[:9]
        attrs = _attrs(node)
        inputs = [self.dequantize(node, a, as_, az),
                  self.dequantize(node, b, bs, bz, axis=0 if attrs.get("transB") else 1)]
        if c:
            bias_scale = self.emit("Mul", [as_, bs], node, "bias_scale")
            inputs.append(self.dequantize(node, c, bias_scale, "", axis=0))
        if not ys:
            self.emit("Gemm", inputs, node, "gemm", output=node.output[0], **attrs)
            return
        yf = self.emit("Gemm", inputs, node, "gemm", **attrs)
        self.emit("QuantizeLinear", [yf, ys] + ([yz] if yz else []), node, "q",
                  output=node.output[0])

    def unary(self, node) -> None:
        x, xs, xz, ys, yz = (list(node.input) + [""] * 5)[:5]
        attrs = {k: v for k, v in _attrs(node).items() if k != "channels_last"}
        yf = self.emit(_UNARY[node.op_type], [self.dequantize(node, x, xs, xz)], node, "op",
                       **attrs)
        self.emit("QuantizeLinear", [yf, ys] + ([yz] if yz else []), node, "q",
                  output=node.output[0])

    def integer(self, node, op: str) -> None:
        a, b, *zeros = list(node.input) + ["", ""]
        one = self.constant(node, "one", np.array(1.0, np.float32))
        af = self.dequantize(node, a, one, zeros[0])
        bf = self.dequantize(node, b, one, zeros[1], axis=0 if op == "Conv" else 1)
        yf = self.emit(op, [af, bf], node, op.lower(), **_attrs(node))
        self.emit("Cast", [yf], node, "cast", output=node.output[0], to=onnx.TensorProto.INT32)


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _kind(node: onnx.NodeProto) -> str | None:
    if node.domain in ("", "ai.onnx") and node.op_type in QOPERATORS:
        return node.op_type
    if node.domain == MS_DOMAIN and node.op_type in MS_QOPERATORS:
        channels_last = any(a.name == "channels_last" and a.i for a in node.attribute)
        return None if channels_last else node.op_type     # NHWC pooling: left for the error
    return None


def has_qoperators(model: onnx.ModelProto) -> bool:
    return any(_kind(n) for n in model.graph.node)


def to_qdq(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with every QLinearConv/QLinearMatMul/ConvInteger/MatMulInteger in QDQ form."""
    if not has_qoperators(model):
        return model
    rewriter = _Rewriter()
    methods = {"QLinearConv": rewriter.qlinearconv, "QLinearMatMul": rewriter.qlinearmatmul,
               "QLinearConcat": rewriter.qlinearconcat, "QGemm": rewriter.qgemm,
               "ConvInteger": lambda n: rewriter.integer(n, "Conv"),
               "MatMulInteger": lambda n: rewriter.integer(n, "MatMul"),
               **{op: rewriter.unary for op in _UNARY},
               **{op: rewriter.binary for op in _BINARY}}
    for node in model.graph.node:
        kind = _kind(node)
        if kind is None:
            rewriter.nodes.append(node)
        else:
            methods[kind](node)
    converted = onnx.ModelProto()
    converted.CopyFrom(model)
    del converted.graph.node[:]
    converted.graph.node.extend(rewriter.nodes)
    converted.graph.initializer.extend(rewriter.initializers)
    return converted


def fold_static_operands(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with each ``STATIC_OPERANDS`` input that a DequantizeLinear of initializers
    computes replaced by that value as a float initializer (the DequantizeLinear dropped where
    nothing else reads it)."""
    initializers = {t.name: t for t in model.graph.initializer}
    constant = {n.output[0]: n for n in model.graph.node if n.op_type == "DequantizeLinear"
                and all(i in initializers for i in n.input if i)}
    if not any(_static_uses(model.graph, constant)):
        return model
    folded = onnx.ModelProto()
    folded.CopyFrom(model)
    names: dict[str, str] = {}
    for node, k in _static_uses(folded.graph, constant):
        source = node.input[k]
        if source not in names:
            names[source] = f"{source}_folded"
            folded.graph.initializer.append(numpy_helper.from_array(
                _dequantized(constant[source], initializers), names[source]))
        node.input[k] = names[source]
    read = {i for n in folded.graph.node for i in n.input} | {o.name for o in folded.graph.output}
    kept = [n for n in folded.graph.node
            if not (n.op_type == "DequantizeLinear" and n.output[0] in names
                    and n.output[0] not in read)]
    del folded.graph.node[:]
    folded.graph.node.extend(kept)
    return folded


def _static_uses(graph: onnx.GraphProto, tensors) -> list[tuple[onnx.NodeProto, int]]:
    """(node, input index) of every ``STATIC_OPERANDS`` input that reads one of ``tensors``."""
    return [(node, k) for node in graph.node if node.domain in ("", "ai.onnx")
            for k in sorted(STATIC_OPERANDS.get(node.op_type, ()))
            if k < len(node.input) and node.input[k] in tensors]


def _dequantized(node: onnx.NodeProto, initializers: dict) -> np.ndarray:
    """What a DequantizeLinear of initializers computes (ONNX's rule, in float32)."""
    data, scale = (numpy_helper.to_array(initializers[i]) for i in node.input[:2])
    zero = (numpy_helper.to_array(initializers[node.input[2]])
            if len(node.input) > 2 and node.input[2] else np.zeros_like(scale))
    axis = _attrs(node).get("axis", 1)
    if scale.ndim == 1 and scale.size > 1:       # per-axis parameters
        shape = [1] * data.ndim
        shape[axis] = -1
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return ((data.astype(np.int32) - zero.astype(np.int32)).astype(np.float32)
            * scale.astype(np.float32))
