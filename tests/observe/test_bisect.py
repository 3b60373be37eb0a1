"""``bisect``: a deliberately wrong kernel is found, named, and cut out as a reproducer."""

from __future__ import annotations

import json

import pytest
import tvm
from tvm import relax

import tvm_pipeline.lowering.prepare as prepare_module
from tvm_pipeline.api import CompileOptions, bisect
from tvm_pipeline.frontend.load import load
from tvm_pipeline.observe.bisect import BisectOptions


def _scale_nth_conv(n: int, factor: float):
    """An importer that computes the n-th convolution wrong (its output times ``factor``)."""
    original = prepare_module._relax_import
    seen = []

    @relax.expr_functor.mutator
    class Fault(relax.PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            if isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.nn.conv2d":
                seen.append(call)
                if len(seen) == n:
                    return relax.op.multiply(call, relax.const(factor, "float32"))
            return call

    def faulty(loaded):
        seen.clear()
        mod = original(loaded)
        mod["main"] = Fault().visit_expr(mod["main"])
        return mod

    return faulty


@pytest.mark.parametrize("n", [3])
def test_bisect_names_the_wrong_layer_and_writes_a_reproducer(small_v2, tmp_path, monkeypatch, n):
    monkeypatch.setattr(prepare_module, "_relax_import", _scale_nth_conv(n, 1.25))
    loaded = load(small_v2)
    convs = [node.name for node in loaded.model.graph.node if node.op_type == "Conv"]
    result = bisect(loaded, None, options=BisectOptions(repro_dir=tmp_path / "repro"),
                    compile_options=CompileOptions(use_database=False))
    assert result.first is not None
    assert result.first.node == convs[n - 1] and result.first.op_type == "Conv"
    assert result.first.kernel and "conv2d" in result.first.kernel and "multiply" in \
        result.first.kernel      # the fused kernel that holds the injected fault
    assert result.first.report.max_abs > 1e-2
    assert result.outputs_fail          # the error reached the outputs
    repro = tmp_path / "repro"
    assert (repro / "node.onnx").is_file() and (repro / "replay.sh").is_file()
    assert list((repro / "expected").glob("*.npy")) and list(repro.glob("*.npy"))
    assert "--feeds" in result.command and "node.onnx" in result.command


def test_bisect_without_fault_reports_no_divergence_and_the_reproducer_replays(cli, small_v2,
                                                                               tmp_path):
    result = cli("bisect", small_v2, "--untuned", "--json", "--repro", tmp_path / "r")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert data["first_divergence"] is None and data["compared"] > 20
    assert not (tmp_path / "r").exists()       # nothing to reproduce


def test_a_reproducer_replays_with_its_feeds(cli, small_v2, tmp_path, recwarn):
    """A node cut out by ``write_repro`` compiles and is compared on the inputs it was given,
    without TVM's warning about the '.' in its input's name (the tensor name it was cut at)."""
    import numpy as np

    from tvm_pipeline.observe.bisect import write_repro
    from tvm_pipeline.observe.graph import Graph, intermediate_values

    loaded = load(small_v2)
    graph = Graph(loaded.model)
    feeds = {i.name: np.random.default_rng(1).uniform(-1, 1, i.shape).astype("float32")
             for i in loaded.inputs}
    values = {**intermediate_values(loaded.model, feeds, graph.computed()), **feeds}
    node = [n for n in graph.nodes if n.op_type == "Conv"][4]
    folder, command = write_repro(graph, node, values, tmp_path / "repro", "x86-avx2")
    args = command.split()[1:]
    result = cli(*args, "--untuned", "--json", "--no-repro")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert data["first_divergence"] is None and data["compared"] == 1
    assert not [w for w in recwarn if "Renaming name" in str(w.message)]


def test_bisect_bad_feeds_folder_is_a_clear_error(cli, small_v2, tmp_path):
    result = cli("bisect", small_v2, "--feeds", tmp_path / "nothing")
    assert result.code == 3
    assert "--feeds" in result.err and "Traceback" not in result.err
