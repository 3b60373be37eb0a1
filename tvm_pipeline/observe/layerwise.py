"""Layer by layer check of a quantized artifact: every quantized tensor TVM computes, against what
ONNX Runtime computes **from the same inputs** (TVM's own values of the layer's inputs).

Why: a quantized layer rounds to whole steps, and a float rounding difference right at a half
step (TVM accumulates in exact integers, ONNX Runtime's op-by-op reference in float) moves one
element by one step. In a trained network that stays one step; in a network with seeded weights
(ours: random, scaled to keep activations informative) such a difference can grow layer after
layer until the logits differ by many steps, although every layer computes what the model says.
Comparing each layer from TVM's own inputs separates the two: an integer kernel that is wrong
fails here, rounding differences that the network amplifies do not.

Each quantized tensor (a QuantizeLinear output) is the output of a segment: the nodes between it
and the quantized tensors or model inputs it reads (DequantizeLinear, Conv, Add, ...,
QuantizeLinear). The model is compiled once with every quantized tensor as an output (as
``bisect`` does), run on the feeds, and each segment is run in ONNX Runtime op by op on TVM's
values of its inputs. Criterion: the validation's, in steps of 1 (the tensors are integers).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

from ..frontend.load import LoadedModel, load_proto
from ..run.validate import Tolerances, ort_runner
from .graph import with_all_outputs


@dataclass(frozen=True)
class LayerCheck:
    tensor: str
    node: str              # the QuantizeLinear node that writes it
    max_steps: float       # largest difference from ONNX Runtime on the same inputs
    within: float          # fraction of elements within the allowed steps
    passed: bool


@dataclass
class LayerwiseReport:
    layers: list[LayerCheck] = field(default_factory=list)
    first_divergence: str | None = None     # the first tensor that differs at all

    @property
    def passed(self) -> bool:
        """Every quantized tensor within tolerance (a model without any decides nothing)."""
        return bool(self.layers) and all(c.passed for c in self.layers)

    def summary(self) -> str:
        bad = [c for c in self.layers if not c.passed]
        worst = max(self.layers, key=lambda c: c.max_steps, default=None)
        text = (f"layer by layer (each quantized tensor from TVM's own inputs): "
                f"{len(self.layers) - len(bad)} of {len(self.layers)} within tolerance")
        if worst is not None:
            text += f", largest difference {worst.max_steps:g} step(s) ({worst.tensor})"
        if self.first_divergence:
            text += f"; first difference at {self.first_divergence}"
        return text + "".join(f"\n  FAILED {c.tensor} ({c.node}): {100 * c.within:.2f}% within "
                              f"tolerance, up to {c.max_steps:g} steps" for c in bad)

    def to_dict(self) -> dict:
        return {"passed": self.passed, "first_divergence": self.first_divergence,
                "layers": [c.__dict__ for c in self.layers]}


def quantized_tensors(model: onnx.ModelProto) -> list[tuple[str, str]]:
    """(tensor, node name) of every QuantizeLinear output, in graph order."""
    return [(n.output[0], n.name or n.output[0]) for n in model.graph.node
            if n.op_type == "QuantizeLinear"]


def _segment_inputs(producers: dict, constants: set[str], tensor: str,
                    boundary: set[str]) -> list[str]:
    """The boundary tensors (quantized tensors, model inputs) that ``tensor`` is computed from
    without passing through another boundary tensor (``producers``: tensor -> node)."""
    found, seen, stack = [], set(), list(producers[tensor].input)
    while stack:
        name = stack.pop()
        if not name or name in seen or name in constants:
            continue
        seen.add(name)
        if name in boundary:
            found.append(name)
        elif name in producers:
            stack.extend(producers[name].input)
    return sorted(found)


def check_layers(loaded: LoadedModel, target, compile_model: Callable, feeds: list[dict],
                 tolerances: Tolerances = Tolerances(), remote=None) -> LayerwiseReport:
    """Compile ``loaded`` with its quantized tensors exposed (``compile_model(prepared, path)``,
    ``api.compile`` without validation), run it on ``feeds`` and check every layer locally."""
    from ..lowering.prepare import prepare  # pylint: disable=import-outside-toplevel

    model = loaded.model
    tensors = quantized_tensors(model)
    exposed = load_proto(with_all_outputs(model, [t for t, _ in tensors]), loaded.input_shapes,
                         loaded.path)
    names = [o.name for o in exposed.outputs]
    with tempfile.TemporaryDirectory(prefix="tvm-pipeline-layers-") as folder:
        compiled = compile_model(prepare(exposed, target), Path(folder) / "layers.tvm")
        runner = compiled.artifact.runner(remote)
        values = [dict(zip(names, runner(feed))) for feed in feeds]
    boundary = {t for t, _ in tensors} | {i.name for i in loaded.inputs}
    extractor = onnx.utils.Extractor(onnx.shape_inference.infer_shapes(model))
    producers = {out: node for node in model.graph.node for out in node.output}
    constants = {t.name for t in model.graph.initializer}
    report = LayerwiseReport()
    for tensor, node in tensors:
        inputs = _segment_inputs(producers, constants, tensor, boundary)
        segment = ort_runner(extractor.extract_model(inputs, [tensor]), optimize=False)
        diffs = []
        for feed, got in zip(feeds, values):
            known = {**feed, **got}
            ref = segment({name: known[name] for name in inputs})[0]
            diffs.append(np.abs(got[tensor].astype(np.int64) - ref.astype(np.int64)).ravel())
        report.layers.append(_judge(tensor, node, np.concatenate(diffs), tolerances))
        if report.first_divergence is None and report.layers[-1].max_steps > 0:
            report.first_divergence = tensor
    return report


def _judge(tensor: str, node: str, steps: np.ndarray, tolerances: Tolerances) -> LayerCheck:
    within = float((steps <= tolerances.steps).mean()) if steps.size else 1.0
    return LayerCheck(tensor, node, float(steps.max(initial=0)), within,
                      within >= tolerances.step_fraction)
