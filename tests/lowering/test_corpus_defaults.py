"""Every kernel class the corpus produces gets a checked default schedule on this machine: no naive
kernel, and the whole model still agrees with ONNX Runtime (small resolution to keep it quick;
the kernel classes are the same at 224)."""

from __future__ import annotations

import pytest

from tvm_pipeline.api import CompileOptions, compile as compile_model, prepare
from tvm_pipeline.models import export_model

# squeeze-excite + HardSwish, channel shuffle + split/concat, fire modules + max pool,
# ghost modules (cheap depthwise + concat), residual 3x3 blocks
MODELS = ["mobilenet_v3_small", "shufflenet_v2_x1_0", "squeezenet1_1", "ghostnet_100", "resnet18"]


@pytest.mark.parametrize("name", MODELS)
def test_corpus_model_compiles_with_no_naive_kernel(name, tmp_path):
    path = tmp_path / f"{name}.onnx"
    export_model(name, path, resolution=96)
    prepared = prepare(path)
    result = compile_model(prepared, tmp_path / f"{name}.tvm", CompileOptions(use_database=False))
    assert result.build.naive_kernels == [], result.build.naive_reasons
    assert len(result.build.default_kernels) == result.build.kernels_total
    assert result.validation.passed
    # channels-last everywhere: transposes only at the input and before the classifier, except
    # ShuffleNet's channel shuffle, which is itself a transpose
    transposes = [k.name for k in prepared.kernels if "transpose" in k.name]
    assert len(transposes) <= 2 or name == "shufflenet_v2_x1_0", transposes
