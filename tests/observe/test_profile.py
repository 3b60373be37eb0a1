"""``profile``: every kernel timed and mapped to the ONNX nodes it computes; ORT beside it."""

from __future__ import annotations

import json

from tvm_pipeline.frontend.load import load

HEAVY = {"Conv", "Gemm", "MatMul"}


def test_profile_maps_every_heavy_node_to_exactly_one_kernel(cli, small_v2, small_v2_artifact):
    result = cli("profile", small_v2_artifact.path, "--runs", "3", "--warmup", "1", "--json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    table = small_v2_artifact.metadata["kernels"]["table"]
    assert {k["name"] for k in data["kernels"]} == set(table)
    owners: dict[str, list[str]] = {}
    for kernel in data["kernels"]:
        assert kernel["ms"] > 0, kernel["name"]
        assert kernel["source"] in ("tuned", "borrowed", "default", "naive")
        for node in kernel["nodes"]:
            owners.setdefault(node["name"], []).append(kernel["name"])
    model = load(small_v2).model
    heavy = [n.name for n in model.graph.node if n.op_type in HEAVY]
    assert heavy and all(len(owners.get(name, [])) == 1 for name in heavy), \
        {name: owners.get(name) for name in heavy if len(owners.get(name, [])) != 1}
    # kernels that do arithmetic compute some ONNX node, and report their speed
    for kernel in data["kernels"]:
        if kernel["flops"] > 0 and kernel["op_type"] in HEAVY:
            assert kernel["gflops"] > 0
    assert data["model_ms"] > 0 and 0 < data["kernel_ms"]
    assert data["ort_ms"] > 0 and "Conv" in data["ort_ops"] or "FusedConv" in data["ort_ops"]
    assert "Conv" in data["tvm_ops"]
    # ONNX Runtime's node times, each given to the kernel computing its nodes or left unclaimed
    claimed = sum(k["ort_ms"] for k in data["kernels"])
    assert abs(claimed + sum(data["ort_unclaimed"].values()) - sum(data["ort_ops"].values())) < 1e-6
    assert all(k["ort_ms"] > 0 for k in data["kernels"] if k["op_type"] in HEAVY)


def test_profile_text_names_kernels_nodes_and_reconciles(cli, small_v2_artifact):
    result = cli("profile", small_v2_artifact.path, "--runs", "2", "--warmup", "0", "--top", "5")
    assert result.code == 0, result.err
    assert "model" in result.out and "kernels" in result.out and "VM builtins" in result.out
    assert "(Conv)" in result.out and "By ONNX op type" in result.out
    assert "more kernels" in result.out


def test_profile_of_an_artifact_without_kernel_table_says_recompile(cli, small_v2_artifact,
                                                                   tmp_path):
    import shutil

    from tvm_pipeline.run.artifact import METADATA

    copy = tmp_path / "old.tvm"
    shutil.copytree(small_v2_artifact.path, copy)
    meta = json.loads((copy / METADATA).read_text())
    del meta["kernels"]["table"]
    (copy / METADATA).write_text(json.dumps(meta))
    result = cli("profile", copy, "--runs", "1")
    assert result.code == 2
    assert "Recompile" in result.err and "Traceback" not in result.err


def test_a_quantized_kernel_output_is_matched_despite_amplified_rounding():
    """A quantized model's tensors drift from ONNX Runtime's by a few steps deep in the network;
    the kernel's output still names its tensor (by correlation), and not an unrelated one."""
    import numpy as np
    from onnx import TensorProto, helper

    from tvm_pipeline.observe.graph import Graph
    from tvm_pipeline.observe.mapping import best_match

    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Neg", ["a"], ["b"])]
    info = [helper.make_tensor_value_info(n, TensorProto.UINT8, [1, 8, 6, 6]) for n in "xab"]
    graph = Graph(helper.make_model(helper.make_graph(nodes, "g", info[:1], info[2:])))
    rng = np.random.default_rng(0)
    a, b = (rng.integers(0, 256, (1, 8, 6, 6)).astype(np.uint8) for _ in range(2))
    drifted = np.clip(a.astype(int) + rng.integers(-3, 4, a.shape), 0, 255).astype(np.uint8)
    nhwc = drifted.transpose(0, 2, 3, 1)
    assert best_match(nhwc, {"a": a, "b": b}, graph) == "a"
    assert best_match(nhwc, {"b": b}, graph) is None
    assert best_match(nhwc.astype(np.float32), {"a": a}, graph) is None   # a float is no match


def test_a_kernel_output_with_padded_channels_is_matched_to_its_tensor():
    """Channels padded to whole vectors (``lowering.channels``: 24 -> 32) leave the kernel's output
    one axis longer than its ONNX tensor; the real channels still name it, and not another."""
    import numpy as np
    from onnx import TensorProto, helper

    from tvm_pipeline.observe.graph import Graph
    from tvm_pipeline.observe.mapping import best_match

    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Neg", ["a"], ["b"])]
    info = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 24, 5, 5]) for n in "xab"]
    graph = Graph(helper.make_model(helper.make_graph(nodes, "g", info[:1], info[2:])))
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((1, 24, 5, 5)).astype(np.float32) for _ in range(2))
    padded = np.pad(a.transpose(0, 2, 3, 1), ((0, 0), (0, 0), (0, 0), (0, 8)))
    assert best_match(padded, {"a": a, "b": b}, graph) == "a"
    assert best_match(padded, {"b": b}, graph) is None
    assert best_match(padded[..., 8:], {"a": a}, graph) is None     # the padding is at the end


def test_onnx_runtime_node_times_go_to_the_kernel_computing_those_nodes():
    """ONNX Runtime names a fused node after its last op's output (``<tensor>_nchwc``), or keeps a
    node's name; a BatchNormalization our frontend folded (its output computed by no kernel) is
    walked up to its convolution's kernel; a node nobody computes stays unclaimed."""
    from onnx import TensorProto, helper

    from tvm_pipeline.observe.graph import Graph
    from tvm_pipeline.observe.ort_nodes import attribute

    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["bn_out"],
                              name="bn"),
             helper.make_node("Relu", ["bn_out"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "w2"], ["d"], name="dw"),
             helper.make_node("Relu", ["d"], ["y"], name="relu2")]
    info = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4, 8, 8]) for n in "xy"]
    weights = [helper.make_tensor(n, TensorProto.FLOAT, [4], [1.0] * 4)
               for n in ("w", "s", "b", "m", "v", "w2")]
    graph = Graph(helper.make_model(helper.make_graph(nodes, "g", info[:1], info[1:], weights)))
    kernels = {"k_conv_relu": {"c", "r"}, "k_dw": {"d", "y"}, "k_copy": set()}
    found = attribute({"bn_out_nchwc": 0.5, "r_nchwc_token_3": 0.25, "y_nchwc": 0.75,
                       "dw": 0.125, "ReorderOutput": 0.0625}, graph, kernels)
    assert found.by_kernel == {"k_conv_relu": 0.75, "k_dw": 0.875}
    assert found.unclaimed == {"ReorderOutput": 0.0625}
