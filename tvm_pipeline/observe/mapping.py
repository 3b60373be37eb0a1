"""Which ONNX nodes each compiled kernel computes, found by value rather than by name.

Fusion, layout rewrites and weight packing leave no trace of the ONNX nodes in the compiled
kernels. But a module that passed validation computes the same tensors as ONNX Runtime: run it
once on a seeded input with a VM instrument that copies every kernel's arguments, and match each
kernel's output to the ONNX tensor holding the same values (up to a permutation of its axes, as
NHWC kernels hold NCHW tensors, or a reshape, or with its channels padded to whole vectors). A
kernel whose output matches tensor ``t`` and whose inputs hold tensors ``a, b`` computes the nodes
that ``t`` depends on and ``a, b`` do not. Kernels whose output is no ONNX tensor (a layout
change, half of a split fusion) pass their inputs' origins on, and the kernel that finishes the job
is credited with the nodes.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from ..numbers import compare_arrays, finite_scale
from .graph import Graph

MATCH_RTOL = 1e-3       # max |kernel - onnx| relative to max |onnx|: still "the same tensor"
# integer (quantized) tensors: 1 - the correlation of kernel and onnx values. A quantized model's
# tensors drift from ONNX Runtime's by rounding ties amplified layer after layer (one step at the
# first layers, several at the last), which no elementwise tolerance tells from another tensor
MATCH_INTEGER = 0.02
SAME_RTOL = 1e-7        # equal values in two tensors (a Reshape chain): take the later one


@dataclass
class KernelCall:
    """One call of a compiled kernel: its input buffers and its outputs' buffers and values."""

    kernel: str
    inputs: list[int]                                  # data pointers
    outputs: list[tuple[int, np.ndarray]]              # (data pointer, value after the call)


@dataclass
class KernelNodes:
    """What a kernel computes: ONNX tensors it produces and the node indices it covers."""

    tensors: list[str] = field(default_factory=list)
    nodes: set[int] = field(default_factory=set)


def capture(vm, args: list, kernels: set[str]) -> tuple[list[KernelCall], object]:
    """Run ``vm['main'](*args)`` once, recording each call of a function in ``kernels``;
    returns the calls and what ``main`` returned."""
    from tvm.runtime import Tensor  # pylint: disable=import-outside-toplevel

    calls: list[KernelCall] = []
    pending: list[list[np.ndarray]] = []

    def instrument(func, name, before_run, ret, *call_args):  # pylint: disable=unused-argument
        if name not in kernels:
            return 0
        tensors = [a for a in call_args if isinstance(a, Tensor)]
        if before_run:
            pending.append([t.numpy() for t in tensors])
            return 0
        before = pending.pop()
        after = [t.numpy() for t in tensors]
        changed = [i for i, (b, a) in enumerate(zip(before, after))
                   if not np.array_equal(b, a, equal_nan=True)] or [len(tensors) - 1]
        calls.append(KernelCall(name, [t.data_ptr() for i, t in enumerate(tensors) if i not in changed],
                                [(tensors[i].data_ptr(), after[i]) for i in changed]))
        return 0

    vm.set_instrument(instrument)
    try:
        result = vm["main"](*args)
    finally:
        vm.set_instrument(lambda *a: 0)
    return calls, result


def _views(ref: np.ndarray, shape: tuple[int, ...]):
    """``ref`` laid out as ``shape``: as is, reshaped (same non-unit dims) or axes permuted."""
    if ref.size != int(np.prod(shape)):
        return
    if ref.shape == shape:
        yield ref
    elif [d for d in ref.shape if d != 1] == [d for d in shape if d != 1]:
        yield ref.reshape(shape)
    if ref.ndim == len(shape) and ref.ndim <= 5:
        for perm in itertools.permutations(range(ref.ndim)):
            if perm != tuple(range(ref.ndim)) and tuple(ref.shape[p] for p in perm) == shape:
                yield ref.transpose(perm)


def _pairs(value: np.ndarray, ref: np.ndarray):
    """(kernel output, ONNX tensor) pairs to compare: ``ref`` laid out as the output (``_views``),
    or the output cropped to ``ref`` where the kernel holds it with one axis longer, the extra at
    its end: channels padded to whole vectors (``lowering.channels``)."""
    for view in _views(ref, value.shape):
        yield value, view
    if ref.ndim != value.ndim or ref.size >= value.size or ref.ndim > 5:
        return
    for perm in itertools.permutations(range(ref.ndim)):
        shape = tuple(ref.shape[p] for p in perm)
        longer = [a < b for a, b in zip(shape, value.shape) if a != b]
        if longer == [True]:
            yield value[tuple(slice(0, d) for d in shape)], ref.transpose(perm)


def relative_error(got: np.ndarray, ref: np.ndarray) -> float:
    """The worst error of ``got`` against ``ref`` relative to ``ref``'s largest magnitude (the
    kernel checks' rule, see ``numbers``); inf for another shape or a non-finite mismatch."""
    if got.shape != ref.shape:
        return float("inf")
    comparison = compare_arrays(got, ref, 0.0, 1.0, scale=max(finite_scale(ref), 1e-12))
    return comparison.deviation


def _integer(value: np.ndarray) -> bool:
    return np.issubdtype(value.dtype, np.integer)


def uncorrelated(got: np.ndarray, ref: np.ndarray) -> float:
    """1 - the correlation of two integer tensors of one shape (0: equal up to an offset); 0 for
    equal constant tensors, 1 for a constant against a varying one."""
    a, b = got.astype(np.float64).ravel(), ref.astype(np.float64).ravel()
    a, b = a - a.mean(), b - b.mean()
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    if norm == 0.0:
        return 0.0 if np.array_equal(got, ref) else 1.0
    return 1.0 - float(a @ b) / norm


def best_match(value: np.ndarray, values: dict[str, np.ndarray], graph: Graph) -> str | None:
    """The ONNX tensor ``value`` holds, if any (ties of identical values: the latest in order)."""
    integer = _integer(value)
    best, best_err = None, MATCH_INTEGER if integer else MATCH_RTOL
    for name, ref in values.items():
        if _integer(ref) != integer:
            continue
        for got, view in _pairs(value, ref):
            err = uncorrelated(got, view) if integer else relative_error(got, view)
            later = best is not None and graph.order(name) > graph.order(best)
            if err < best_err - SAME_RTOL or (err <= best_err + SAME_RTOL and later):
                best, best_err = name, min(err, best_err)
    return best


def map_calls(calls: list[KernelCall], graph: Graph, values: dict[str, np.ndarray],
              input_ptrs: dict[int, str]) -> list[KernelNodes]:
    """For each call, in order, the ONNX tensors it produces and the nodes it covers."""
    origins: dict[int, frozenset[str]] = {p: frozenset([t]) for p, t in input_ptrs.items()}
    result, assigned = [], set()
    for call in calls:
        held = frozenset().union(*(origins.get(p, frozenset()) for p in call.inputs))
        found = KernelNodes()
        for ptr, value in call.outputs:
            tensor = best_match(value, values, graph)
            origins[ptr] = frozenset([tensor]) if tensor else held
            if tensor:
                found.tensors.append(tensor)
        before = frozenset().union(*(graph.ancestors(t) for t in held))
        for tensor in found.tensors:
            found.nodes |= set(graph.ancestors(tensor) - before) - assigned
        assigned |= found.nodes
        result.append(found)
    return result
