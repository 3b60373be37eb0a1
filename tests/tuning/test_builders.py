"""The tuning builder: candidates built in kept worker processes, slow builds cut short."""

from __future__ import annotations

import os

import tvm
from tvm.s_tir import meta_schedule as ms

from conftest import matmul_relu_kernel
from tvm_pipeline.tuning import builders
from tvm_pipeline.tuning.builders import PersistentLocalBuilder, build_time_limit

TARGET = {"kind": "llvm", "num-cores": 2}


def test_the_build_limit_follows_the_slowest_tenth_of_the_builds_so_far():
    assert build_time_limit([0.3] * 15, 30.0) == 30.0           # too few builds to tell
    assert build_time_limit([0.3] * 16, 30.0) == builders.BUILD_LIMIT_FLOOR_S
    times = [0.2] * 80 + [2.0] * 20                              # 90th percentile: 2 s
    assert build_time_limit(times, 30.0) == 20.0
    assert build_time_limit(times, 12.0) == 12.0


def test_a_build_slower_than_the_adapted_limit_times_out_and_the_next_batch_builds(monkeypatch):
    """... and closing the builder removes every candidate's files, run or not."""
    _, good, _ = matmul_relu_kernel()
    target = tvm.target.Target(TARGET)
    builder = PersistentLocalBuilder(1, 60.0)
    batch = [ms.builder.BuilderInput(good.mod, target)]
    try:
        [first] = builder.build(batch)
        assert first.error_msg is None and len(builder.build_seconds) == 1
        assert os.path.isfile(first.artifact_path)
        assert os.path.commonpath([first.artifact_path, builder.root]) == builder.root
        builder.build_seconds.extend([1e-4] * 20)            # builds so far: all instantaneous
        monkeypatch.setattr(builders, "BUILD_LIMIT_FLOOR_S", 1e-3)
        [cut] = builder.build(batch)
        assert cut.artifact_path is None and "build timed out after 0.001 s" in cut.error_msg
        builder.build_seconds.clear()                         # back to the full timeout
        [again] = builder.build(batch)
        assert again.error_msg is None
    finally:
        builder.close()
    assert not os.path.exists(builder.root)
