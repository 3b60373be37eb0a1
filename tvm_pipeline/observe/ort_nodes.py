"""ONNX Runtime's own profile of a model, and its node times laid against our kernels.

ONNX Runtime rewrites the graph before it runs it (fusions, the NCHWc layout), and names the nodes
it creates after what they compute: a fused convolution on x86 is ``<output tensor>_nchwc``, where
the output is that of the last op it absorbed (the Relu, the BatchNormalization, the Add). Each
node of its profile is traced back to tensors of the ONNX graph it ran: its name as a node (that
node's outputs), else its name without ONNX Runtime's suffixes as a tensor, else the outputs of the
longest node name it starts with. Tensors, not node names, tie it to our kernels: our frontend may
rename or fold nodes (a BatchNormalization into its convolution) but keeps the tensors it computes.
The kernel that computes one of those tensors (the kernel -> node mapping by value, ``mapping``)
gets the time; a tensor no kernel computes is walked up through its producers' inputs, a few
steps at most. What stays unclaimed is reported as such, never spread over kernels.
"""

from __future__ import annotations

import collections
import json
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from .graph import Graph

_SUFFIXES = re.compile(r"(_nchwc)?(_token_\d+)?$")
WALK_UP = 3          # producers tried above a node no kernel claims


@dataclass(frozen=True)
class OrtProfile:
    """ONNX Runtime on one model and feeds: milliseconds per run."""

    model_ms: float                                             # whole model, median
    by_op: dict[str, float] = field(default_factory=dict)       # op type -> ms per run
    by_node: dict[str, float] = field(default_factory=dict)     # its node name -> ms per run


@dataclass(frozen=True)
class Attribution:
    by_kernel: dict[str, float]       # kernel -> ONNX Runtime ms per run for the same nodes
    unclaimed: dict[str, float]       # ONNX Runtime node -> ms per run, no kernel computes it


def profile_ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray], runs: int, warmup: int,
                threads: int | None) -> OrtProfile:
    """ONNX Runtime on ``feeds``: the whole-model median, then a separate profiling session (so
    profiling does not slow the whole-model timing), summed by op type and by node."""
    from ..run.bench import BenchOptions, time_runner  # pylint: disable=import-outside-toplevel
    from ..run.validate import ort_runner, ort_session  # pylint: disable=import-outside-toplevel

    whole = time_runner(ort_runner(model, threads), feeds,
                        BenchOptions(warmup=warmup, runs=runs, threads=threads))
    with tempfile.TemporaryDirectory(prefix="tvm-pipeline-ort-profile-") as folder:
        profiled = ort_session(model, threads, profile_prefix=str(Path(folder) / "ort"))
        for _ in range(warmup + runs):
            profiled.run(None, feeds)
        events = json.loads(Path(profiled.end_profiling()).read_text())
    by_op: dict[str, float] = collections.Counter()
    by_node: dict[str, float] = collections.Counter()
    for event in events:
        name = event.get("name", "")
        if event.get("cat") == "Node" and name.endswith("_kernel_time"):
            ms = event.get("dur", 0) / 1e3 / (warmup + runs)
            by_op[event.get("args", {}).get("op_name", "?")] += ms
            by_node[name.removesuffix("_kernel_time")] += ms
    return OrtProfile(whole.median_ms, dict(by_op), dict(by_node))


def attribute(by_node: dict[str, float], graph: Graph,
              kernel_tensors: dict[str, set[str]]) -> Attribution:
    """ONNX Runtime's node times (``by_node``) summed per kernel; ``kernel_tensors``: kernel ->
    the ONNX tensors its nodes compute; ``graph``: the model ONNX Runtime ran."""
    owner = {tensor: kernel for kernel, tensors in kernel_tensors.items() for tensor in tensors}
    by_name = {node.name: node for node in graph.nodes}
    by_kernel: dict[str, float] = collections.Counter()
    unclaimed: dict[str, float] = {}
    for name, ms in by_node.items():
        kernel = _claimant(_tensors(name, graph, by_name), graph, owner)
        if kernel is None:
            unclaimed[name] = ms
        else:
            by_kernel[kernel] += ms
    return Attribution(dict(by_kernel), unclaimed)


def _tensors(name: str, graph: Graph, by_name: dict) -> list[str]:
    """The ONNX tensors an ONNX Runtime node is named after (none when it matches nothing)."""
    if name in by_name:
        return list(by_name[name].outputs)
    tensor = _SUFFIXES.sub("", name)
    if tensor in graph.producer:
        return [tensor]
    prefixes = [n for n in by_name if name.startswith(n)]
    return list(by_name[max(prefixes, key=len)].outputs) if prefixes else []


def _claimant(tensors: list[str], graph: Graph, owner: dict[str, str]) -> str | None:
    """The kernel computing one of ``tensors``, or one of their producers' inputs (``WALK_UP``
    levels up)."""
    level = tensors
    for _ in range(WALK_UP + 1):
        for tensor in level:
            if tensor in owner:
                return owner[tensor]
        level = [t for tensor in level if tensor in graph.producer
                 for t in graph.producer[tensor].inputs if t and t not in graph.constants]
    return None
