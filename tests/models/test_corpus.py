"""Tests for tvm_pipeline.models.corpus: published sizes, conventions, determinism, ORT, CLI."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tvm_pipeline.errors import UsageError
from tvm_pipeline.frontend.analysis import ModelCost, analyze
from tvm_pipeline.models import (ARCHITECTURES, CorpusSpec, MobileNetSpec, build_mobilenet,
                                 build_model, build_spec, export_model, get_architecture,
                                 list_models)

NAMES = list(ARCHITECTURES)
SMALL = 96  # resolution of the ONNX Runtime runs (every model reaches a >= 3x3 last map)
# ops torch.onnx.export writes for these models at opset 13 (Dropout omitted)
EXPORTER_OPS = {"Conv", "BatchNormalization", "Relu", "Clip", "HardSigmoid", "Mul", "Add",
                "GlobalAveragePool", "Flatten", "Gemm", "MaxPool", "Concat", "Split", "Reshape",
                "Transpose"}
BIASED_CONVS = (".se.fc1", ".se.fc2", "conv_head")  # squeeze-excite and GhostNet's head


@functools.lru_cache(maxsize=None)
def _model_224(name: str) -> onnx.ModelProto:
    return build_model(name)


@functools.lru_cache(maxsize=None)
def _cost_224(name: str) -> ModelCost:
    return analyze(_model_224(name))


@functools.lru_cache(maxsize=None)
def _small(name: str) -> bytes:
    return build_model(name, SMALL, batch=2).SerializeToString()


def _run(model: bytes, x: np.ndarray) -> np.ndarray:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


@pytest.mark.parametrize("name", NAMES)
def test_published_params_and_macs(name):
    """analyze() counts Conv/Gemm weights, biases and MACs (BatchNorm folded, activations, adds,
    pools and SE multiplies excluded): within 2% / 8% of the published figures at 224."""
    arch, cost = ARCHITECTURES[name], _cost_224(name)
    assert cost.params == pytest.approx(arch.params, rel=0.02), cost.params
    assert cost.macs == pytest.approx(arch.macs, rel=0.08), cost.macs


@pytest.mark.parametrize("name", [n for n in NAMES if ARCHITECTURES[n].reference_params])
def test_exact_reference_parameter_count(name):
    """With BatchNorm gamma and beta added back, the count is the reference implementation's,
    to the parameter: the layer widths, kernels and groups are the same."""
    bn_affine = 2 * sum(t.dims[0] for t in _model_224(name).graph.initializer
                        if t.name.endswith(".bn.scale"))
    assert _cost_224(name).params + bn_affine == ARCHITECTURES[name].reference_params


@pytest.mark.parametrize("name", NAMES)
def test_graph_conventions(name):
    model = _model_224(name)
    onnx.checker.check_model(model, full_check=True)
    graph = model.graph
    assert model.ir_version == 8 and [o.version for o in model.opset_import] == [13]
    (inp,), (out,) = graph.input, graph.output
    dims = lambda v: [d.dim_value for d in v.type.tensor_type.shape.dim]  # noqa: E731
    assert (inp.name, dims(inp), out.name, dims(out)) == ("input", [1, 3, 224, 224],
                                                          "logits", [1, 1000])
    assert {n.op_type for n in graph.node} <= EXPORTER_OPS
    consumers = {i: node for node in graph.node for i in node.input}
    for conv in (n for n in graph.node if n.op_type == "Conv"):
        if name == "squeezenet1_1" or any(k in conv.name for k in BIASED_CONVS):
            assert len(conv.input) == 3  # conv with bias, no BN
        else:
            assert len(conv.input) == 2 and consumers[conv.output[0]].op_type == \
                "BatchNormalization"
    for gate in (n for n in graph.node if n.op_type == "HardSigmoid"):
        attrs = {a.name: a.f for a in gate.attribute}
        assert attrs == pytest.approx({"alpha": 1 / 6, "beta": 0.5})


def test_architecture_specific_structure():
    ops = lambda name: [n.op_type for n in _model_224(name).graph.node]  # noqa: E731
    assert ops("shufflenet_v2_x1_0").count("Split") == 13  # 16 units, 3 of them strided
    assert ops("shufflenet_v2_x1_0").count("Transpose") == 16
    assert ops("resnet18").count("Add") == 8 and ops("resnet18").count("MaxPool") == 1
    assert ops("squeezenet1_1").count("MaxPool") == 3 and "BatchNormalization" not in ops(
        "squeezenet1_1")
    assert ops("mobilenet_v3_large").count("GlobalAveragePool") == 1 + 8  # head + 8 SE
    assert ops("mobilenet_v3_small").count("GlobalAveragePool") == 1 + 9
    assert ops("ghostnet_100").count("GlobalAveragePool") == 1 + 7
    assert "HardSigmoid" not in ops("efficientnet_lite0") + ops("mnasnet1_0")
    lite_pads = [list(a.ints) for n in _model_224("efficientnet_lite0").graph.node
                 if n.name == "features.0.conv" for a in n.attribute if a.name == "pads"]
    assert lite_pads == [[0, 0, 1, 1]]  # TensorFlow 'SAME' for a 3x3/2 conv on 224


@pytest.mark.parametrize("name", NAMES)
def test_onnxruntime_gives_finite_informative_logits(name):
    x = np.random.default_rng(7).uniform(-1, 1, (2, 3, SMALL, SMALL)).astype(np.float32)
    logits = _run(_small(name), x)
    assert logits.shape == (2, 1000) and np.isfinite(logits).all()
    stds = logits.std(axis=1)
    assert ((stds > 0.05) & (stds < 10)).all(), stds  # not constant, not exploding
    assert np.abs(logits[0] - logits[1]).max() > 0.05  # the two images are told apart


@pytest.mark.parametrize("name", NAMES)
def test_same_arguments_give_identical_bytes(name):
    assert build_model(name, SMALL, batch=2).SerializeToString() == _small(name)


def test_seed_changes_weights_only():
    first = build_model("ghostnet_100", 64).SerializeToString()
    other = build_model("ghostnet_100", 64, seed=1).SerializeToString()
    assert other != first and len(other) == len(first)


def test_mobilenets_are_delegated():
    assert build_model("mobilenet_v2", 64, seed=3).SerializeToString() == \
        build_mobilenet(MobileNetSpec("v2", 1.0, 64, seed=3)).SerializeToString()
    spec = CorpusSpec("mobilenet_v1", 128, alpha=0.5)
    assert spec.label == "mobilenet_v1_0.5_128" and CorpusSpec("resnet18").label == "resnet18_224"
    assert build_spec(spec).graph.name == "mobilenet_v1_0.5_128"


@pytest.mark.parametrize("name, opset", [("mobilenet_v3_small", 14), ("ghostnet_100", 18),
                                         ("shufflenet_v2_x1_0", 18)])
def test_newer_opsets_check_and_run(name, opset):
    model = build_model(name, 64, opset=opset)
    ops = {n.op_type for n in model.graph.node}
    assert ("HardSwish" in ops) == (name == "mobilenet_v3_small")  # one op from opset 14
    x = np.zeros((1, 3, 64, 64), np.float32)
    assert np.isfinite(_run(model.SerializeToString(), x)).all()


def test_export_writes_atomically_and_returns_cost(tmp_path):
    target = tmp_path / "squeeze.onnx"
    target.write_bytes(b"old")
    cost = export_model("squeezenet1_1", target, 64, num_classes=10)
    assert cost == analyze(onnx.load(target)) and cost.outputs[0].shape == (1, 10)
    assert os.listdir(tmp_path) == ["squeeze.onnx"]
    with pytest.raises(UsageError, match="file path"):
        export_model("squeezenet1_1", 42)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["resnet19", "ResNet18", "", None])
def test_unknown_name_lists_valid_names(bad):
    with pytest.raises(UsageError) as info:
        build_model(bad)  # type: ignore[arg-type]
    message = str(info.value)
    assert repr(bad) in message and "resnet18" in message and "ghostnet_100" in message
    assert info.value.exit_code == 2
    with pytest.raises(UsageError):
        get_architecture(bad)


@pytest.mark.parametrize("field, value, needle", [
    ("resolution", 31, ">= 32"), ("resolution", 224.0, ">= 32"), ("resolution", True, ">= 32"),
    ("batch", 0, ">= 1"), ("seed", -1, ">= 0"), ("num_classes", 0, ">= 1"),
    ("opset", 12, "13..18"), ("opset", 19, "13..18"), ("alpha", 0.5, "mobilenet_v1"),
])
def test_bad_arguments_raise_usage_error(field, value, needle):
    spec = CorpusSpec("mnasnet1_0", **{field: value})
    with pytest.raises(UsageError) as info:
        build_spec(spec)
    message = str(info.value)
    assert f"CorpusSpec.{field} = {value!r}" in message and needle in message
    assert "mnasnet1_0" in message


def test_list_models_is_the_registry():
    assert [a.name for a in list_models()] == NAMES and len(NAMES) == 10
    assert all(a.source and a.description for a in list_models())


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tvm_pipeline", *args], capture_output=True,
                          text=True, timeout=120, check=False)


def test_cli_models_list():
    res = _cli("models", "list", "--json")
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    assert [r["name"] for r in rows] == NAMES
    assert rows[NAMES.index("resnet18")]["params"] == pytest.approx(11.69e6)
    table = _cli("models", "list").stdout
    assert "resnet18" in table and "11.69 M" in table and "1814 M" in table


def test_cli_models_export_any_arch(cli, tmp_path):
    out = tmp_path / "g.onnx"
    res = cli("models", "export", "--arch", "ghostnet_100", "--resolution", "64", "-o", out,
              "--json")
    data = json.loads(res.out)
    assert res.code == 0 and out.exists() and data["name"] == "ghostnet_100_64"
    assert data["params"] == _cost_224("ghostnet_100").params
    res = cli("models", "export", "--arch", "resnet18", "--alpha", "0.5", "-o", tmp_path / "r")
    assert res.code == UsageError.exit_code and "alpha" in res.err and "mobilenet_v1" in res.err
    assert not (tmp_path / "r").exists()
