"""The ONNX side of profiling and bisecting: every intermediate tensor from ONNX Runtime, the
graph's order and ancestry, and a node cut out as a stand-alone model."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, shape_inference

from ..errors import ModelError


@dataclass(frozen=True)
class Node:
    index: int               # position in the graph's (topological) node order
    name: str                # the node's name, or "<op>#<index>" when the export left it empty
    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


class Graph:
    """Nodes in order, the producer of each tensor, and which nodes each tensor depends on."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.nodes = [Node(i, n.name or f"{n.op_type}#{i}", n.op_type, tuple(n.input),
                           tuple(n.output)) for i, n in enumerate(model.graph.node)]
        self.producer = {out: node for node in self.nodes for out in node.outputs if out}
        self.inputs = [i.name for i in model.graph.input]
        self.constants = {t.name for t in model.graph.initializer} | {
            out for node in self.nodes if node.op_type == "Constant" for out in node.outputs}

    @functools.cache  # noqa: B019 (one Graph per command; the cache dies with it)
    def ancestors(self, tensor: str) -> frozenset[int]:
        """Indices of the nodes ``tensor`` is computed from, its producer included."""
        node = self.producer.get(tensor)
        if node is None:
            return frozenset()
        found = {node.index}
        for name in node.inputs:
            if name:
                found |= self.ancestors(name)
        return frozenset(found)

    def order(self, tensor: str) -> int:
        """Position of the tensor's producer (-1 for graph inputs and initializers)."""
        node = self.producer.get(tensor)
        return node.index if node else -1

    def computed(self) -> list[str]:
        """Every tensor a node computes from the inputs (constants left out), in graph order."""
        return [out for node in self.nodes for out in node.outputs
                if out and out not in self.constants and self.ancestors_reach_input(out)]

    @functools.cache  # noqa: B019
    def ancestors_reach_input(self, tensor: str) -> bool:
        if tensor in self.inputs:
            return True
        node = self.producer.get(tensor)
        return node is not None and any(self.ancestors_reach_input(t) for t in node.inputs if t)


def with_all_outputs(model: onnx.ModelProto, tensors: list[str]) -> onnx.ModelProto:
    """A copy of ``model`` that also outputs ``tensors`` (types from ONNX shape inference)."""
    try:
        inferred = shape_inference.infer_shapes(model)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        raise ModelError(f"ONNX shape inference fails on the model: {err}") from err
    types = {v.name: v.type.tensor_type.elem_type for v in
             list(inferred.graph.value_info) + list(inferred.graph.output)}
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    present = {o.name for o in exposed.graph.output}
    exposed.graph.output.extend(
        helper.make_tensor_value_info(t, types.get(t) or onnx.TensorProto.FLOAT, None)
        for t in tensors if t not in present)
    return exposed


def intermediate_values(model: onnx.ModelProto, feeds: dict[str, np.ndarray],
                        tensors: list[str], threads: int | None = None) -> dict[str, np.ndarray]:
    """ONNX Runtime's value of each tensor in ``tensors`` (and of the graph outputs) on ``feeds``;
    a quantized model evaluated op by op (as validation's reference is)."""
    from ..run.validate import is_quantized, ort_runner  # pylint: disable=import-outside-toplevel

    exposed = with_all_outputs(model, tensors)
    values = ort_runner(exposed, threads, optimize=not is_quantized(model))(feeds)
    return dict(zip([o.name for o in exposed.graph.output], values))


def _info(name: str, value: np.ndarray) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(value.dtype),
                                         value.shape)


def node_model(graph: Graph, node: Node, values: dict[str, np.ndarray]) -> tuple[onnx.ModelProto,
                                                                                 dict[str, np.ndarray]]:
    """``node`` alone as a model: its computed inputs become graph inputs (with ``values``, which
    must hold them and its outputs), its constant inputs stay initializers or Constant nodes.
    Returns the model and its feeds."""
    model = graph.model
    inits = {t.name: t for t in model.graph.initializer}
    constants = {out: n for n in model.graph.node if n.op_type == "Constant" for out in n.output}
    feeds = {t: values[t] for t in node.inputs if t and t not in inits and t not in constants}
    sub = helper.make_graph([constants[t] for t in node.inputs if t in constants]
                            + [model.graph.node[node.index]], f"{node.name}_alone",
                            [_info(t, v) for t, v in feeds.items()],
                            [_info(t, values[t]) for t in node.outputs if t],
                            [inits[t] for t in dict.fromkeys(node.inputs) if t in inits])
    return helper.make_model(sub, opset_imports=model.opset_import,
                             ir_version=model.ir_version), feeds
