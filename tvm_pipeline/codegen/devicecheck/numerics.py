"""Kernel-level numerical verification on PoCL: does each generated OpenCL kernel compute what its
fused TIR function computes?

For every fused TIR function of the build:

1. the reference: the same function *before* scheduling (as ``prepare`` fused it), built for the
   CPU (llvm) and run with TVM on seeded inputs (uniform [-1, 1]);
2. the device side: the scheduled function lowered by the target's TIR pipeline gives the host code
   TVM generated for it: the sequence of ``call_ffi_kernel`` launches, their arguments (parameter
   buffers, intermediate buffers the host allocates) and launch geometry (the blockIdx/threadIdx
   extents bound in the schedule: global size = blocks x threads, local size = threads). Each
   kernel's program is taken from the built module's source (``DeviceCode``), built by PoCL, and
   launched in that order on copies of the same inputs; outputs start as NaN so that an element a
   kernel forgets to write fails too;
3. every output must satisfy ``|got - ref| <= atol + rtol * |ref|``.

Texture parameters (Adreno texture targets: ``image2d_array_t`` kernel arguments) become PoCL RGBA
float images laid out as TVM's OpenCL runtime lays them out (``texture_shape``). Functions that
need what is not reproduced here (textures the host allocates itself, dynamic shapes, dynamic
shared memory) are reported as not run, with the reason, as are functions that exceed the
per-kernel time bound.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax, tirx

from ...lowering import backends
from ...numbers import compare_arrays, seeded_array
from .results import FAILED, PASSED, SKIPPED, CheckInput, CheckResult, KernelFailure
from .pocl import KernelBuildError, PoclDevice, open_pocl

VERIFIED, MISMATCH, NOT_RUN = "verified", "mismatch", "not run"
_AXES = {"x": 0, "y": 1, "z": 2}


@dataclass
class KernelNumerics:
    function: str                   # fused TIR function
    kernels: list[str]              # its device kernels, in launch order
    status: str                     # verified / mismatch / not run
    max_abs_error: float | None = None
    reason: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"function": self.function, "kernels": self.kernels, "status": self.status,
                "max_abs_error": self.max_abs_error, "reason": self.reason,
                "seconds": round(self.seconds, 3)}


@dataclass
class Launch:
    kernel: str
    args: list                      # ("buffer", name) or ("scalar", int)
    global_size: tuple[int, int, int]
    local_size: tuple[int, int, int]


@dataclass
class HostPlan:
    launches: list[Launch] = field(default_factory=list)
    scratch: dict[str, int] = field(default_factory=dict)     # intermediate buffer -> bytes
    problem: str = ""                                          # why it cannot run here


class NotRunnable(Exception):
    pass


def _walk(stmt, visit) -> None:
    """Pre-order walk over the statements (and top-level call expressions) of a lowered host body."""
    visit(stmt)
    if isinstance(stmt, tirx.SeqStmt):
        for child in stmt.seq:
            _walk(child, visit)
    elif isinstance(stmt, (tirx.AttrStmt, tirx.For, tirx.While)):
        _walk(stmt.body, visit)
    elif isinstance(stmt, tirx.IfThenElse):
        _walk(stmt.then_case, visit)
        if stmt.else_case is not None:
            _walk(stmt.else_case, visit)
    elif isinstance(stmt, (tirx.Evaluate, tirx.Bind)):
        visit(stmt.value)


def _int(expr) -> int:
    if not isinstance(expr, tvm.tirx.IntImm):
        raise NotRunnable(f"launch argument {expr} is not a constant (dynamic shape)")
    return int(expr.value)


def _bytes(dtype: str, shape) -> int:
    dt = tvm.DataType(str(dtype))
    return int(np.prod([_int(d) for d in shape])) * dt.bits * dt.lanes // 8


def texture_shape(shape: tuple[int, ...], scope: str) -> tuple[int, int, int]:
    """(width, height, layers) of the image2d array TVM's OpenCL runtime allocates for a tensor of
    ``shape`` (last axis: the 4 RGBA channels) in texture ``scope`` (runtime/opencl/texture.h:
    axes before the separator's previous axis are layers, that axis is the height, the rest width)."""
    rank = len(shape)
    separator = {"global.texture": rank - 2, "global.texture-weight": 1,
                 "global.texture-nhwc": 2}.get(scope)
    if separator is None or shape[-1] != 4:
        raise NotRunnable(f"texture scope {scope} with shape {shape}")
    layers = int(np.prod(shape[:separator - 1])) if separator > 1 else 1
    return int(np.prod(shape[separator:rank - 1])), int(shape[separator - 1]), layers


def _scalar_type(param) -> type:
    text = str(param.ty)
    for name in ("int64", "int32", "float32", "float64", "uint32"):
        if name in text:
            return np.dtype(name).type
    raise NotRunnable(f"scalar kernel parameter {param.name} of type {text}")


def _launch(call, device_params: dict[str, list]) -> Launch:
    kernel = str(call.args[0].value)
    names = [str(p) for p in call.attrs.launch_params]
    if any(not n.startswith(("blockIdx", "threadIdx")) for n in names):
        raise NotRunnable(f"{kernel} needs launch parameters {names} (dynamic shared memory)")
    params = device_params[kernel]
    values = call.args[1:len(call.args) - len(names)]
    extents = dict(zip(names, (_int(v) for v in call.args[len(call.args) - len(names):])))
    args = []
    for param, value in zip(params, values):
        if getattr(value, "op", None) is not None and value.op.name == "tirx.buffer_data":
            args.append(("buffer", value.args[0].name))
        else:
            args.append(("scalar", _int(value), _scalar_type(param)))
    threads, blocks = [1, 1, 1], [1, 1, 1]
    for name, extent in extents.items():
        kind, axis = name.split(".")
        (threads if kind == "threadIdx" else blocks)[_AXES[axis]] = extent
    return Launch(kernel, args, tuple(b * t for b, t in zip(blocks, threads)), tuple(threads))


def host_plans(lowered: tvm.IRModule) -> dict[str, HostPlan]:
    """Per fused function: its kernel launches, read from the host code TVM generated."""
    device_params = {gv.name_hint: list(f.params) for gv, f in lowered.functions_items()
                     if int(f.attrs.get("calling_conv", 0)) == 2}
    plans = {}
    for gv, func in lowered.functions_items():
        if int(func.attrs.get("calling_conv", 0)) == 2:
            continue
        plan = HostPlan()

        def visit(node, plan=plan):
            if plan.problem:
                return
            try:
                if isinstance(node, tirx.AllocBuffer):
                    if "texture" in str(node.buffer.scope()):
                        raise NotRunnable(f"host allocates texture {node.buffer.name}")
                    plan.scratch[node.buffer.name] = _bytes(node.buffer.dtype, node.buffer.shape)
                elif type(node).__name__ == "Call" and node.op.name == "tirx.call_ffi_kernel":
                    plan.launches.append(_launch(node, device_params))
            except NotRunnable as err:
                plan.problem = str(err)

        _walk(func.body, visit)
        plans[gv.name_hint] = plan
    return plans


def _lower(scheduled: tvm.IRModule, target: tvm.target.Target) -> tvm.IRModule:
    funcs = {gv.name_hint: f.with_attr("global_symbol", gv.name_hint)
             for gv, f in scheduled.functions_items() if isinstance(f, tirx.PrimFunc)}
    mod = tirx.transform.BindTarget(target.with_host(target.host))(tvm.IRModule(funcs))
    pipeline, _, _ = tvm.tirx.get_tir_pipeline(backends.tir_pipeline(target))
    with target, tvm.transform.PassContext(opt_level=3):
        return pipeline(mod)


def _input_counts(reference: tvm.IRModule) -> dict[str, int]:
    """How many leading parameters of each kernel are inputs (call_tir: inputs, then outputs)."""
    counts: dict[str, int] = {}
    call_tir = tvm.ir.Op.get("relax.call_tir")

    def visit(expr):
        if isinstance(expr, relax.Call) and expr.op == call_tir:
            counts[expr.args[0].name_hint] = len(expr.args[1].fields)

    relax.analysis.post_order_visit(reference["main"], visit)
    return counts


@dataclass
class _Reference:
    names: list[str]                        # parameter buffer names, in order
    arrays: list[np.ndarray]                # seeded inputs, then the CPU outputs
    inputs: int
    scopes: list[str] = field(default_factory=list)     # memory scope of each parameter


def _reference(lib, func: tirx.PrimFunc, name: str, inputs: int, rng) -> _Reference:
    buffers = list(func.params)     # TVM 0.27: parameters are the buffers themselves
    arrays = []
    for index, buf in enumerate(buffers):
        shape = [_int(d) for d in buf.shape]
        dtype = str(buf.dtype)
        if index < inputs:
            arrays.append(seeded_array(rng, shape, dtype))
        else:
            arrays.append(np.zeros(shape, dtype=dtype))
    tensors = [tvm.runtime.tensor(a, tvm.cpu()) for a in arrays]
    lib[name](*tensors)
    return _Reference([b.name for b in buffers], [t.numpy() for t in tensors], inputs,
                      [str(b.scope()) for b in buffers])


def _wait(event, deadline: float) -> bool:
    import pyopencl as cl  # pylint: disable=import-outside-toplevel

    while event.command_execution_status != cl.command_execution_status.COMPLETE:
        if time.perf_counter() > deadline:
            return False
        time.sleep(0.001)
    return True


def _device_memory(device: PoclDevice, array: np.ndarray, scope: str):
    """A PoCL buffer, or an RGBA float image2d array for texture scopes, holding ``array``."""
    import pyopencl as cl  # pylint: disable=import-outside-toplevel

    flags = cl.mem_flags.READ_WRITE | cl.mem_flags.COPY_HOST_PTR
    if "texture" not in scope:
        return cl.Buffer(device.context, flags, hostbuf=array)
    if array.dtype != np.float32:
        raise NotRunnable(f"texture of {array.dtype}")
    fmt = cl.ImageFormat(cl.channel_order.RGBA, cl.channel_type.FLOAT)
    return cl.create_image(device.context, flags, fmt, shape=texture_shape(array.shape, scope),
                           hostbuf=np.ascontiguousarray(array), is_array=True)


def _read_back(device: PoclDevice, memory, out: np.ndarray, scope: str) -> None:
    import pyopencl as cl  # pylint: disable=import-outside-toplevel

    if "texture" in scope:
        cl.enqueue_copy(device.queue, out, memory, origin=(0, 0, 0),
                        region=texture_shape(out.shape, scope)).wait()
    else:
        cl.enqueue_copy(device.queue, out, memory).wait()


def _run_on_pocl(device: PoclDevice, code, plan: HostPlan, ref: _Reference,
                 timeout_s: float) -> list[np.ndarray]:
    import pyopencl as cl  # pylint: disable=import-outside-toplevel

    host = {}
    for index, (name, ref_array) in enumerate(zip(ref.names, ref.arrays)):
        host[name] = (ref_array.copy() if index < ref.inputs
                      else np.full_like(ref_array, np.nan if ref_array.dtype.kind == "f" else 0))
    scopes = dict(zip(ref.names, ref.scopes))
    memory = {name: _device_memory(device, array, scopes[name]) for name, array in host.items()}
    memory.update({name: cl.Buffer(device.context, cl.mem_flags.READ_WRITE, max(size, 4))
                   for name, size in plan.scratch.items()})
    deadline = time.perf_counter() + timeout_s
    for launch in plan.launches:
        kernel = device.build(code.program(launch.kernel), launch.kernel)
        args = [memory[a[1]] if a[0] == "buffer" else a[2](a[1]) for a in launch.args]
        event = kernel(device.queue, launch.global_size, launch.local_size, *args)
        if not _wait(event, deadline):
            raise TimeoutError(f"{launch.kernel} did not finish within {timeout_s:g} s on PoCL")
    outputs = []
    for name in ref.names[ref.inputs:]:
        _read_back(device, memory[name], host[name], scopes[name])
        outputs.append(host[name])
    return outputs


def _compare(got: list[np.ndarray], want: list[np.ndarray], atol: float, rtol: float):
    """(max abs error over finite elements, passed) under the rule of :mod:`tvm_pipeline.numbers`
    (an unwritten output stays NaN where the CPU's is finite, and fails)."""
    comparisons = [compare_arrays(g, w, atol, rtol) for g, w in zip(got, want)]
    return (max((c.max_abs for c in comparisons), default=0.0),
            all(c.passed for c in comparisons))


def _verify_function(name, device, code, plan, lib, ref_func, inputs, rng, opts) -> KernelNumerics:
    start = time.perf_counter()
    kernels = [launch.kernel for launch in plan.launches]
    result = KernelNumerics(name, kernels, NOT_RUN)
    missing = [k for k in kernels if k not in code.kernels]
    if plan.problem or missing or not kernels:
        result.reason = plan.problem or (f"kernels {missing} are not in the built module" if missing
                                         else "no device kernel")
        return result
    ref = _reference(lib, ref_func, name, inputs, rng)
    try:
        got = _run_on_pocl(device, code, plan, ref, opts.kernel_timeout_s)
    except (TimeoutError, NotRunnable) as err:
        result.reason = str(err)
        return result
    except KernelBuildError as err:
        result.status, result.reason = MISMATCH, f"PoCL cannot build {err.kernel}: {err.log}"
        return result
    result.max_abs_error, ok = _compare(got, ref.arrays[inputs:], opts.atol, opts.rtol)
    result.status = VERIFIED if ok else MISMATCH
    if not ok:
        result.reason = (f"max abs error {result.max_abs_error:.3g} exceeds atol {opts.atol:g} + "
                         f"rtol {opts.rtol:g} x |ref| (outputs start as NaN: NaN = unwritten)")
    result.seconds = time.perf_counter() - start
    return result


def verify(inp: CheckInput) -> CheckResult:
    """Run every fused function's kernels on PoCL and compare with its CPU build."""
    start = time.perf_counter()
    device, reason = open_pocl()
    if device is None:
        return CheckResult("pocl-numerics", SKIPPED, reason, len(inp.code.kernels))
    plans = host_plans(_lower(inp.scheduled, inp.target))
    names = [gv.name_hint for gv, f in inp.reference.functions_items() if isinstance(f, tirx.PrimFunc)]
    funcs = {n: inp.reference[n].with_attr("global_symbol", n) for n in names}
    lib = tvm.tirx.build(tvm.IRModule(funcs), target=tvm.target.Target("llvm"))
    counts = _input_counts(inp.reference)
    rng = np.random.default_rng(inp.options.seed)
    results = [_verify_function(n, device, inp.code, plans.get(n, HostPlan(problem="not lowered")),
                                lib, funcs[n], counts.get(n, len(funcs[n].params) - 1), rng,
                                inp.options) for n in sorted(names)]
    bad = [r for r in results if r.status == MISMATCH]
    ran = [r for r in results if r.status != NOT_RUN]
    errors = [r.max_abs_error for r in ran if r.max_abs_error is not None]
    detail = (f"{len(ran) - len(bad)}/{len(results)} fused functions verified on {device.name} "
              f"against their CPU build")
    if errors:
        detail += f" (max abs error {min(errors):.1e}..{max(errors):.1e})"
    if len(ran) < len(results):
        detail += f"; {len(results) - len(ran)} not run (see per_kernel reasons)"
    failures = [KernelFailure(", ".join(r.kernels) or r.function, f"{r.function}: {r.reason}")
                for r in bad]
    status = FAILED if bad else (PASSED if ran else SKIPPED)
    return CheckResult("pocl-numerics", status, detail, len(inp.code.kernels), failures,
                       time.perf_counter() - start, per_kernel=results)
