"""load: checker, input shapes from the model or the user, folding of exported shape subgraphs."""

from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto, helper

from conftest import exported_style_model, make_model
from tvm_pipeline.errors import InputFileError, ModelError, UsageError
from tvm_pipeline.frontend.load import load, load_proto, parse_input_shapes


def test_parse_input_shapes():
    assert parse_input_shapes(["input:1,3,224,224"]) == {"input": (1, 3, 224, 224)}
    assert parse_input_shapes(["1,3,96,96"]) == {"": (1, 3, 96, 96)}
    assert parse_input_shapes(["a:1x3x8x8", "b:2,4"]) == {"a": (1, 3, 8, 8), "b": (2, 4)}
    # TensorFlow-style names carry a colon: the dims follow the last one
    assert parse_input_shapes(["input:0:1,224,224,3"]) == {"input:0": (1, 224, 224, 3)}
    for bad in ["input:", "input:1,a,3", "input:1,0,3", ":::", f"input:1,{2**63},3"]:
        with pytest.raises(UsageError, match="input-shape"):
            parse_input_shapes([bad])


def test_static_model_needs_no_shape(small_v2):
    loaded = load(small_v2)
    assert loaded.input_shapes == {"input": (1, 3, 96, 96)}
    assert [o.name for o in loaded.outputs] == ["logits"]
    assert len(loaded.sha256) == 64


def test_exported_model_folds_shape_subgraph():
    model = exported_style_model()
    loaded = load_proto(model, {"x": (1, 3, 32, 32)})
    ops = {n.op_type for n in loaded.model.graph.node}
    assert not ops & {"Shape", "Gather", "Concat"}, ops
    assert loaded.input_shapes == {"x": (1, 3, 32, 32)}
    assert loaded.outputs[0].shape == (1, 10)
    # the user's model is kept unchanged as the reference
    assert "Shape" in {n.op_type for n in loaded.original.graph.node}


def test_dynamic_dims_without_shape_is_a_clear_error():
    with pytest.raises(UsageError) as err:
        load_proto(exported_style_model())
    text = str(err.value)
    # batch 1, the model's own 3 channels, and the stated default image size (never 1x1 pixels)
    assert "dynamic" in text and "'x'" in text and "--input-shape x:1,3,224,224" in text
    assert "224 is the usual image height and width" in text


def _with_input_shape(dims) -> onnx.ModelProto:
    model = exported_style_model()
    shape = model.graph.input[0].type.tensor_type.shape
    for dim, value in zip(shape.dim, dims):
        dim.Clear()
        if isinstance(value, int):
            dim.dim_value = value
        else:
            dim.dim_param = value
    return model


def test_only_dynamic_batch_takes_batch_one_with_a_notice(capsys):
    loaded = load_proto(_with_input_shape(["batch", 3, 32, 32]))
    assert loaded.input_shapes == {"x": (1, 3, 32, 32)}
    err = capsys.readouterr().err
    assert err.startswith("notice: ") and "'x'" in err and "batch 1" in err


def _interface_case(case: str) -> tuple[onnx.ModelProto, str]:
    """A model whose interface the pipeline refuses, and what the message must name."""
    if case == "no-outputs":
        model = exported_style_model()
        del model.graph.output[:]
        return model, "no graph outputs"
    if case == "scalar-input":
        node = helper.make_node("Relu", ["x"], ["y"])
        return make_model([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])]), "scalar"
    if case == "zero-dim":
        return _with_input_shape([1, 3, 0, 32]), "0 at axis 2"
    return _with_input_shape([1, 3, -5, 32]), "-5 at axis 2"


@pytest.mark.parametrize("case", ["no-outputs", "scalar-input", "zero-dim", "negative-dim"])
def test_model_interface_the_pipeline_cannot_compile(cli, tmp_path, case):
    model, culprit = _interface_case(case)
    path = tmp_path / "model.onnx"
    onnx.save(model, path)
    res = cli("compile", path, "-o", tmp_path / "out.tvm")
    assert res.code == ModelError.exit_code, res.err
    assert culprit in res.err and str(path) in res.err and "dynamic" not in res.err
    assert "Error" not in res.err and {p.name for p in tmp_path.iterdir()} == {"model.onnx"}
    with pytest.raises(ModelError, match=culprit):
        load_proto(model)


@pytest.mark.parametrize("shape, message", [
    ({"y": (1, 3, 32, 32)}, "has inputs \\['x'\\]"),
    ({"x": (1, 3, 32)}, "rank 3"),
])
def test_wrong_input_shape(shape, message):
    with pytest.raises(UsageError, match=message):
        load_proto(exported_style_model(), shape)


def test_shape_conflicting_with_static_dim(small_v2):
    with pytest.raises(UsageError, match="fixes that axis to 3"):
        load(small_v2, {"input": (1, 4, 96, 96)})


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(InputFileError, match="does not exist"):
        load(tmp_path / "nope.onnx")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\x01this is not a protobuf\xff" * 10)
    with pytest.raises(InputFileError, match="not a readable ONNX model|empty graph"):
        load(garbage)
    with pytest.raises(InputFileError, match="directory"):
        load(tmp_path)


def test_checker_failure_is_model_error(tmp_path):
    node = helper.make_node("Relu", ["x"], ["y"])
    bad = make_model([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                     [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 4])])  # z undefined
    path = tmp_path / "bad.onnx"
    onnx.save(bad, path)
    with pytest.raises(ModelError, match="ONNX checker"):
        load(path)
