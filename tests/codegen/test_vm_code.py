"""The VM code of a compiled CNN: kernel calls with their constants, no leftover tuple handling."""

from __future__ import annotations

import tvm
from tvm import relax


def test_kernels_get_their_packed_weights_without_tuple_builtins(small_v2_artifact):
    """Weight packing folds each kernel's packed weights into a tuple of constants; the VM passes
    them to the kernel directly instead of building and indexing that tuple before every call."""
    text = relax.VMExecutable(tvm.runtime.load_module(str(small_v2_artifact.path / "model.so"))
                              ).as_text()
    calls = [line for line in text.splitlines() if line.strip().startswith("call")]
    assert sum("_prepacked" in line for line in calls) >= 10
    assert not [line for line in calls if "make_tuple" in line or "tuple_getitem" in line]
