"""``bisect``: the first ONNX tensor whose TVM value leaves ONNX Runtime's, and a reproducer.

Both sides expose every intermediate tensor: the model is rewritten to output all tensors its nodes
compute from the inputs, ONNX Runtime runs it, and TVM compiles and runs it for the target (with
the same tuning database and default schedules as ``compile``; on the device with ``--rpc``). The
tensors are compared in graph order with validation's comparator and tolerances; the first that
fails names the culprit node (later tensors inherit its error). The fused kernel that produced it
is found by the buffer the VM returned. The node alone, with the inputs it received from ONNX
Runtime as ``.npy``, is written as a stand-alone model with the command that replays it.

Exposing a tensor keeps it out of the middle of a fused kernel, so the kernels differ from those
of the plain build; a divergence that only a specific fusion shows is then reported as "no
divergence" with the outputs still failing; the summary says so.
"""

from __future__ import annotations

import os
import re
import shlex
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

from ..errors import UsageError
from ..paths import atomic_folder
from ..frontend.load import LoadedModel, load_proto
from ..run.feeds import flatten_outputs, flatten_tensors
from ..run.validate import OutputReport, Tolerances, compare
from .graph import Graph, intermediate_values, node_model, with_all_outputs
from .mapping import capture


LAYOUT_KERNELS = ("transpose", "layout_transform", "reshape", "copy")


@dataclass(frozen=True)
class BisectOptions:
    tolerances: Tolerances = Tolerances()
    seed: int = 0
    feeds: dict[str, np.ndarray] | None = None     # inputs to use instead of seeded ones
    repro_dir: Path | None = None                   # where the reproducer goes (None: none)


@dataclass
class Divergence:
    tensor: str
    node: str
    op_type: str
    kernel: str | None
    report: OutputReport
    inputs_ok: list[str] = field(default_factory=list)   # the node's computed inputs (all agree)


@dataclass
class BisectResult:
    model: str
    target: str
    compared: int
    first: Divergence | None
    outputs_fail: list[str]
    repro: Path | None = None
    command: str | None = None

    def to_dict(self) -> dict:
        first = None
        if self.first:
            r = self.first.report
            first = {"tensor": self.first.tensor, "node": self.first.node,
                     "op_type": self.first.op_type, "kernel": self.first.kernel,
                     "max_abs": r.max_abs, "max_rel": r.max_rel, "cosine": r.cosine,
                     "failure": r.failure, "inputs_ok": self.first.inputs_ok}
        return {"model": self.model, "target": self.target, "compared": self.compared,
                "first_divergence": first, "outputs_fail": self.outputs_fail,
                "repro": str(self.repro) if self.repro else None, "command": self.command}

    def format(self) -> str:
        if self.first is None:
            text = (f"No divergence: all {self.compared} intermediate tensors of {self.model} agree "
                    f"with ONNX Runtime on {self.target}.")
            if self.outputs_fail:
                text += (" Yet the outputs " + ", ".join(self.outputs_fail) + " fail: the error "
                         "appears only with the plain build's fusion; compile with --no-defaults "
                         "or --untuned to isolate a schedule.")
            return text
        d, r = self.first, self.first.report
        lines = [f"First divergence of {self.model} on {self.target} ({self.compared} tensors "
                 "compared in graph order):",
                 f"  node     {d.node} ({d.op_type})",
                 f"  tensor   {d.tensor} {tuple(r.shape)}",
                 f"  kernel   {d.kernel or '(not found)'}",
                 f"  error    max abs {r.max_abs:.3g}, max rel {r.max_rel:.3g}, cosine "
                 f"{r.cosine:.6f}: {r.failure}",
                 f"  inputs   {', '.join(d.inputs_ok) or '(graph inputs and constants only)'}: "
                 "all agree with ONNX Runtime"]
        if self.repro:
            lines += [f"Reproducer: {self.repro} (the node alone, its inputs as .npy)",
                      f"  replay: {self.command}"]
        return "\n".join(lines)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "tensor"


def read_feeds(folder: str | os.PathLike, loaded: LoadedModel) -> dict[str, np.ndarray]:
    """Inputs saved by a reproducer: ``<input name>.npy`` for each of the model's inputs."""
    from ..errors import InputFileError  # pylint: disable=import-outside-toplevel

    feeds = {}
    for info in loaded.inputs:
        path = Path(folder) / f"{_safe(info.name)}.npy"
        try:
            feeds[info.name] = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise InputFileError(f"Cannot read input '{info.name}' from {path}: {err}.",
                                 hint="--feeds takes a folder with one NAME.npy per model input, "
                                      "as `bisect` writes in its reproducer.") from err
    return feeds


def _tvm_values(compiled, remote, feeds, names) -> tuple[list[np.ndarray], dict[str, str]]:
    """Run the ``compiled`` model (an ``api.CompileResult``) on ``feeds``: its outputs, and for
    local runs the kernel that wrote each output."""
    runner = compiled.artifact.runner(remote)
    args = runner.to_device(feeds)
    if remote is not None:
        return flatten_outputs(runner.run_device(args)), {}
    calls, returned = capture(runner.vm, args, set(compiled.build.signatures))
    flat = flatten_tensors(returned)
    return [o.numpy() for o in flat], _computing_kernels(calls, dict(zip(names, flat)))


def _computing_kernels(calls: list, outputs: dict[str, object]) -> dict[str, str]:
    """Output name -> the kernel that computed it, looking through the layout changes (the
    transposes back to the model's layout that write the exposed outputs). Buffers are reused
    along the run, so each input is traced to the call that wrote it last before."""
    last: dict[int, int] = {}
    sources: list[list[int]] = []
    for i, call in enumerate(calls):
        sources.append([last[p] for p in call.inputs if p in last])
        last.update((ptr, i) for ptr, _ in call.outputs)
    found = {}
    for name, tensor in outputs.items():
        i = last.get(tensor.data_ptr())
        while i is not None and calls[i].kernel.startswith(LAYOUT_KERNELS) and \
                len(sources[i]) == 1:
            i = sources[i][0]
        if i is not None:
            found[name] = calls[i].kernel
    return found


def bisect(loaded: LoadedModel, target, compile_model: Callable, options: BisectOptions = BisectOptions(),
           remote=None) -> BisectResult:
    """Find the first tensor of ``loaded`` that TVM computes differently from ONNX Runtime on
    ``target``; ``compile_model(prepared, output)`` is ``api.compile`` without validation."""
    from ..lowering.prepare import prepare  # pylint: disable=import-outside-toplevel
    from ..run.validate import ValidateOptions, make_feeds  # pylint: disable=import-outside-toplevel

    graph = Graph(loaded.model)
    tensors = [t for t in graph.computed() if t not in {o.name for o in loaded.outputs}]
    tensors += [o.name for o in loaded.outputs]
    if not tensors:
        raise UsageError(f"{loaded.name} computes nothing from its inputs; nothing to bisect.")
    feeds = options.feeds or make_feeds(loaded.inputs, ValidateOptions(samples=1,
                                                                       seed=options.seed))[0]
    exposed = load_proto(with_all_outputs(loaded.model, tensors), loaded.input_shapes, loaded.path)
    names = [o.name for o in exposed.outputs]
    reference = intermediate_values(loaded.model, feeds, tensors)
    with tempfile.TemporaryDirectory(prefix="tvm-pipeline-bisect-") as folder:
        compiled = compile_model(prepare(exposed, target), Path(folder) / "bisect.tvm")
        got, kernels = _tvm_values(compiled, remote, feeds, names)
    report = compare([got], [[reference[n] for n in names]], names, options.tolerances)
    by_name = {o.name: o for o in report.outputs}
    ordered = sorted(tensors, key=graph.order)
    first = next((t for t in ordered if not by_name[t].passed), None)
    outputs_fail = [o.name for o in loaded.outputs if not by_name[o.name].passed]
    result = BisectResult(loaded.name, target.name, len(ordered), None, outputs_fail)
    if first is None:
        return result
    node = graph.producer[first]
    result.first = Divergence(first, node.name, node.op_type, kernels.get(first), by_name[first],
                              [t for t in node.inputs if t in by_name])
    if options.repro_dir is not None:
        result.repro, result.command = write_repro(graph, node, {**reference, **feeds},
                                                   options.repro_dir, target.name)
    return result


def write_repro(graph: Graph, node, values: dict[str, np.ndarray], folder: Path,
                target: str) -> tuple[Path, str]:
    """The node alone as ``node.onnx``, its inputs as ``<name>.npy``, ONNX Runtime's outputs as
    ``expected/<name>.npy``, and ``replay.sh``; written into a fresh ``folder``."""
    model, feeds = node_model(graph, node, values)
    with atomic_folder(folder, "replay.sh") as staging:
        onnx.save(model, staging / "node.onnx")
        for name, value in feeds.items():
            np.save(staging / f"{_safe(name)}.npy", value)
        (staging / "expected").mkdir()
        for name in node.outputs:
            if name:
                np.save(staging / "expected" / f"{_safe(name)}.npy", values[name])
        command = (f"tvm-pipeline bisect {shlex.quote(str(folder / 'node.onnx'))} --target "
                   f"{shlex.quote(target)} --feeds {shlex.quote(str(folder))}")
        (staging / "replay.sh").write_text(f"#!/bin/sh\n# {node.name} ({node.op_type}) alone\n"
                                           f"{command}\n")
    return folder, command
