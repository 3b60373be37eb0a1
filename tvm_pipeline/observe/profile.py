"""``profile``: where an artifact's time goes, kernel by kernel, beside ONNX Runtime's own profile.

Kernels are timed where they run:

* on this machine, inside the model: a VM instrument stamps the clock before and after every call
  during ``runs`` whole-model runs; a kernel's time is the median over runs of its calls' sum;
* on a remote device (RPC), one kernel at a time with TVM's time evaluator on the device, on
  seeded arguments of the shapes recorded at compile time (median of ``runs``, times its calls).

The whole model is timed without instrument (median of ``runs``); what the kernels do not account
for is the VM's own work (dispatch, allocation and shape checks, reported as builtins when timed
in-model). Each kernel is mapped to the ONNX nodes it computes by value (see ``mapping``) and
carries its schedule source from the compile report. ONNX Runtime's profile of the same model
(``enable_profiling``) is laid beside it twice: node by node, each kernel next to ONNX Runtime's
time for the nodes it computes (``ort_nodes``), and aggregated by op type, where each kernel
counts for the main op it computes (a convolution, a matrix product, a pooling... else its first
node's op).
"""

from __future__ import annotations

import collections
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx

from ..errors import InputFileError, UsageError
from ..frontend.load import load_proto
from ..numbers import seeded_array
from .graph import Graph, intermediate_values
from .mapping import capture, map_calls
from .ort_nodes import OrtProfile, attribute, profile_ort

MAIN_OPS = ("Conv", "ConvTranspose", "QLinearConv", "ConvInteger", "Gemm", "MatMul",
            "MatMulInteger", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool",
            "Softmax", "Resize")
LAYOUT = "(layout/copy)"


@dataclass(frozen=True)
class ProfileOptions:
    runs: int = 30
    warmup: int = 5
    seed: int = 0
    threads: int | None = None       # ONNX Runtime threads (None: physical cores, like TVM)
    with_ort: bool = True

    def __post_init__(self) -> None:
        if self.runs < 1 or self.warmup < 0:
            raise UsageError(f"Bad profile options: runs={self.runs}, warmup={self.warmup}.",
                             hint="Use --runs >= 1 and --warmup >= 0.")


@dataclass
class KernelProfile:
    name: str
    source: str                      # tuned / borrowed / default / naive
    calls: int
    ms: float                        # per model run, all calls together (median over runs)
    flops: float                     # per call
    nodes: list[tuple[str, str]] = field(default_factory=list)   # (ONNX node, op type)
    ort_ms: float | None = None      # ONNX Runtime's time for the same nodes, per model run

    @property
    def gflops(self) -> float | None:
        return self.flops * self.calls / (self.ms * 1e6) if self.ms > 0 and self.flops else None

    @property
    def op_type(self) -> str:
        ops = [op for _, op in self.nodes]
        return next((op for op in MAIN_OPS if op in ops), ops[0] if ops else LAYOUT)


@dataclass
class ProfileResult:
    artifact: str
    target: str
    where: str                       # "this machine" or the RPC device
    method: str
    runs: int
    model_ms: float                  # whole model, no instrument, median
    kernels: list[KernelProfile]
    builtin_ms: float | None = None  # VM builtins (timed in-model only)
    ort_ms: float | None = None
    ort_ops: dict[str, float] = field(default_factory=dict)     # op type -> ms per run
    ort_unclaimed: dict[str, float] = field(default_factory=dict)   # ORT node no kernel computes

    @property
    def kernel_ms(self) -> float:
        return sum(k.ms for k in self.kernels)

    def tvm_ops(self) -> dict[str, float]:
        ops: dict[str, float] = collections.Counter()
        for kernel in self.kernels:
            ops[kernel.op_type] += kernel.ms
        return dict(ops)

    def to_dict(self) -> dict:
        data = asdict(self)
        for entry, kernel in zip(data["kernels"], self.kernels):
            entry.update(gflops=kernel.gflops, op_type=kernel.op_type,
                         share=kernel.ms / self.kernel_ms if self.kernel_ms else 0.0,
                         nodes=[{"name": n, "op_type": op} for n, op in kernel.nodes])
        data.update(kernel_ms=self.kernel_ms, tvm_ops=self.tvm_ops(),
                    kernel_share_of_model=self.kernel_ms / self.model_ms if self.model_ms else None)
        return data

    def format(self, top: int = 20) -> str:
        lines = [f"Profile of {self.artifact} ({self.target}) on {self.where}: {self.method}; "
                 f"medians of {self.runs} runs", self._reconcile(), ""]
        ort = f" {'ORT ms':>8} {'vs ORT':>7}" if self.ort_ops else ""
        lines.append(f"{'#':>3}  {'kernel':44} {'source':8} {'calls':>5} {'ms':>8}{ort} {'%':>6} "
                     f"{'GFLOP/s':>8}  ONNX nodes")
        ranked = sorted(self.kernels, key=lambda k: -k.ms)
        for i, k in enumerate(ranked[:top], 1):
            gflops = f"{k.gflops:8.1f}" if k.gflops else f"{'-':>8}"
            lines.append(f"{i:3}  {_cut(k.name, 44):44} {k.source:8} {k.calls:5} {k.ms:8.3f}"
                         f"{_against(k) if self.ort_ops else ''} "
                         f"{100 * k.ms / self.kernel_ms:6.1f} {gflops}  {_nodes(k.nodes)}")
        if len(ranked) > top:
            rest = sum(k.ms for k in ranked[top:])
            lines.append(f"     ... {len(ranked) - top} more kernels, {rest:.3f} ms together")
        if self.ort_ops:
            lines.append(self._gaps())
        lines += ["", self._by_op()]
        return "\n".join(lines)

    def _gaps(self, count: int = 5) -> str:
        """The kernels furthest behind ONNX Runtime on the same nodes, and its unclaimed time."""
        behind = sorted((k for k in self.kernels if k.ort_ms and k.ms > k.ort_ms),
                        key=lambda k: k.ort_ms - k.ms)[:count]
        text = ("Furthest behind ONNX Runtime on the same nodes: "
                + ", ".join(f"{k.name} +{k.ms - k.ort_ms:.3f} ms" for k in behind)
                if behind else "No kernel is behind ONNX Runtime on the same nodes")
        if self.ort_unclaimed:
            text += (f"; ONNX Runtime time no kernel claims: {sum(self.ort_unclaimed.values()):.3f}"
                     f" ms ({', '.join(sorted(self.ort_unclaimed)[:3])})")
        return text

    def _reconcile(self) -> str:
        share = 100 * self.kernel_ms / self.model_ms if self.model_ms else float("nan")
        text = (f"model {self.model_ms:.3f} ms (median, no instrument); kernels {self.kernel_ms:.3f} "
                f"ms ({share:.1f}% of it)")
        if self.builtin_ms is not None:
            rest = self.model_ms - self.kernel_ms - self.builtin_ms
            text += f"; VM builtins (allocation, shape checks) {self.builtin_ms:.3f} ms; "
            text += (f"the rest, {rest:.3f} ms, is VM dispatch between calls" if rest >= 0 else
                     f"kernels and builtins exceed the run without instrument by {-rest:.3f} ms: "
                     "the instrument's own cost around each call")
        else:
            text += ("; the rest is VM dispatch, allocation and the difference between kernels "
                     "timed alone and inside the model")
        return text

    def _by_op(self) -> str:
        tvm_ops = self.tvm_ops()
        ops = sorted(set(tvm_ops) | set(self.ort_ops), key=lambda o: -max(tvm_ops.get(o, 0.0),
                                                                           self.ort_ops.get(o, 0.0)))
        head = "By ONNX op type (TVM: each kernel counted for its main op"
        head += "; ONNX Runtime: its own profile, its fused nodes under their names)" \
            if self.ort_ops else ")"
        lines = [head, f"{'op type':20} {'TVM ms':>9}" + (f" {'ORT ms':>9}" if self.ort_ops else "")]
        for op in ops:
            row = f"{op:20} {_ms(tvm_ops.get(op))}"
            lines.append(row + (f" {_ms(self.ort_ops.get(op))}" if self.ort_ops else ""))
        if self.ort_ms is not None:
            lines.append(f"{'whole model':20} {self.model_ms:9.3f} {self.ort_ms:9.3f}")
        return "\n".join(lines)


def _against(kernel: KernelProfile) -> str:
    """ORT's ms for the kernel's nodes, and the kernel's time as a multiple of it."""
    if not kernel.ort_ms:
        return f" {'-':>8} {'-':>7}"
    return f" {kernel.ort_ms:8.3f} {kernel.ms / kernel.ort_ms:6.2f}x"


def _ms(value: float | None) -> str:
    return f"{value:9.3f}" if value is not None else f"{'-':>9}"


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 3] + "..."


def _nodes(nodes: list[tuple[str, str]], limit: int = 4) -> str:
    if not nodes:
        return LAYOUT
    text = ", ".join(f"{name} ({op})" for name, op in nodes[:limit])
    return text + (f" +{len(nodes) - limit} more" if len(nodes) > limit else "")


def _time_in_model(runner, args: list, kernels: set[str], options: ProfileOptions
                   ) -> tuple[dict[str, float], float]:
    """Per-kernel ms per run (median over runs) and the VM builtins' ms, from instrumented runs."""
    per_run: list[collections.Counter] = []
    started: dict[str, float] = {}

    def instrument(func, name, before_run, ret, *call_args):  # pylint: disable=unused-argument
        now = time.perf_counter()
        if before_run:
            started[name] = now
        else:
            per_run[-1][name] += now - started.pop(name, now)
        return 0

    runner.vm.set_instrument(instrument)
    try:
        for i in range(options.warmup + options.runs):
            per_run.append(collections.Counter())
            runner.vm["main"](*args)
    finally:
        runner.vm.set_instrument(lambda *a: 0)
    timed = per_run[options.warmup:]
    names = set().union(*timed)
    median = {n: 1e3 * float(np.median([run[n] for run in timed])) for n in names}
    builtins = 1e3 * float(np.median([sum(v for n, v in run.items() if n not in kernels)
                                      for run in timed]))
    return {n: ms for n, ms in median.items() if n in kernels}, builtins


def _time_on_device(runner, artifact, table: dict[str, dict], options: ProfileOptions
                    ) -> dict[str, float]:
    """Per-kernel ms per run, each kernel alone on the device on seeded arguments, from the
    artifact's kernel library (compile writes it for targets that do not run here)."""
    import tvm  # pylint: disable=import-outside-toplevel

    from ..codegen.build import KERNELS_LIBRARY  # pylint: disable=import-outside-toplevel

    from ..run.artifact import library_record  # pylint: disable=import-outside-toplevel

    path = artifact.path / KERNELS_LIBRARY
    recorded = artifact.metadata.get("files", {}).get(KERNELS_LIBRARY, {})
    if not path.is_file() or not recorded:
        raise UsageError(f"Artifact {artifact.path} has no {KERNELS_LIBRARY}, which profiling on a "
                         "device needs (compile writes it for targets that do not run on the "
                         "compiling machine).", hint="Recompile it with `tvm-pipeline compile "
                         "--target TARGET`, or profile a host artifact without --rpc.")
    found = library_record(path)
    if (found["library_bytes"], found["library_sha256"]) != (recorded.get("bytes"),
                                                             recorded.get("sha256")):
        raise InputFileError(f"{path} is not the kernel library compile wrote (its size or "
                             "sha256 differs from the artifact's metadata).",
                             hint="Recompile the artifact; never edit its files.")
    module = runner.load_library(path)
    rng = np.random.default_rng(options.seed)
    result = {}
    for name, info in table.items():
        args = [tvm.runtime.tensor(seeded_array(rng, shape, dtype), runner.device)
                for shape, dtype in info["args"]]
        evaluator = module.time_evaluator(name, runner.device, number=1,
                                          repeat=options.warmup + options.runs)
        with runner.step(f"timing kernel {name} on the device"):
            seconds = evaluator(*args).results[options.warmup:]
        result[name] = 1e3 * float(np.median(seconds)) * info["calls"]
    return result


def _model_ms(runner, args: list, options: ProfileOptions) -> float:
    evaluator = runner.vm.time_evaluator("main", runner.device, number=1,
                                         repeat=options.warmup + options.runs)
    with runner.step("timing the whole model"):
        return 1e3 * float(np.median(evaluator(*args).results[options.warmup:]))


def _node_names(vm, args: list, kernels: set[str], graph: Graph,
                feeds: dict[str, np.ndarray], threads: int | None) -> dict[str, list[tuple[str, str]]]:
    """Kernel -> the ONNX nodes (name, op type) of ``graph`` its calls compute, in graph order,
    from one run of ``vm`` on ``args`` (``feeds`` on the device)."""
    values = intermediate_values(graph.model, feeds, graph.computed(), threads)
    values.update(feeds)
    calls, _ = capture(vm, args, kernels)
    found = map_calls(calls, graph, values, {a.data_ptr(): name for a, name in zip(args, feeds)})
    nodes: dict[str, set[int]] = collections.defaultdict(set)
    for call, mapped in zip(calls, found):
        nodes[call.kernel] |= mapped.nodes
    return {k: [(graph.nodes[i].name, graph.nodes[i].op_type) for i in sorted(v)]
            for k, v in nodes.items()}


def _twin_node_names(loaded, graph: Graph, feeds: dict[str, np.ndarray], table: dict[str, dict],
                     threads: int | None) -> dict[str, list[tuple[str, str]]]:
    """Node names for an artifact that cannot run here: the same model prepared for this machine
    fuses into the same kernels (the CPU preparation does not depend on the target); a build
    without schedules runs here and is mapped, and its kernels are matched to the artifact's by
    name (weight packing adds ``_prepacked``)."""
    import tvm  # pylint: disable=import-outside-toplevel
    from tvm import relax  # pylint: disable=import-outside-toplevel

    from ..codegen.build import BuildOptions, build  # pylint: disable=import-outside-toplevel
    from ..lowering.prepare import prepare  # pylint: disable=import-outside-toplevel
    from ..target.spec import resolve_target  # pylint: disable=import-outside-toplevel

    twin = build(prepare(loaded, resolve_target(None)), BuildOptions(use_database=False,
                                                                      defaults=False))
    device = tvm.cpu()
    vm = relax.VirtualMachine(twin.executable, device)
    args = [tvm.runtime.tensor(feeds[t.name], device) for t in loaded.inputs]
    names = _node_names(vm, args, set(twin.signatures), graph, feeds, threads)
    plain = {name.removesuffix("_prepacked"): name for name in table}
    return {plain[k.removesuffix("_prepacked")]: v for k, v in names.items()
            if k.removesuffix("_prepacked") in plain}


def profile(artifact, model: onnx.ModelProto, runner, options: ProfileOptions = ProfileOptions(),
            remote: bool = False) -> ProfileResult:
    """Profile ``artifact`` with ``runner`` (local, or on a remote device when ``remote``);
    ``model`` is its ONNX reference."""
    from ..run.validate import ValidateOptions, make_feeds  # pylint: disable=import-outside-toplevel

    table = artifact.metadata.get("kernels", {}).get("table")
    if not table:
        raise UsageError(f"Artifact {artifact.path} does not record its kernels' signatures "
                         "(it was compiled by an older tvm-pipeline).",
                         hint="Recompile it with `tvm-pipeline compile`, then profile it.")
    loaded = load_proto(model, {t["name"]: tuple(t["shape"]) for t in artifact.inputs})
    feeds = make_feeds(loaded.inputs, ValidateOptions(samples=1, seed=options.seed))[0]
    args = runner.to_device(feeds)
    model_ms = _model_ms(runner, args, options)
    mapped = Graph(loaded.model)
    if remote:
        times, builtins = _time_on_device(runner, artifact, table, options), None
        method = "kernels timed one by one on the device (time evaluator)"
        names = _twin_node_names(loaded, mapped, feeds, table, options.threads)
    else:
        times, builtins = _time_in_model(runner, args, set(table), options)
        method = "kernels timed inside the model (VM instrument)"
        names = _node_names(runner.vm, args, set(table), mapped, feeds, options.threads)
    kernels = [KernelProfile(n, info["source"], info["calls"], times.get(n, 0.0), info["flops"],
                             names.get(n, [])) for n, info in table.items()]
    result = ProfileResult(str(artifact.path), artifact.target_name,
                           getattr(runner, "where", "this machine"), method, options.runs,
                           model_ms, kernels, builtins)
    if options.with_ort:
        _beside_ort(result, profile_ort(model, feeds, options.runs, options.warmup,
                                        options.threads), Graph(model), mapped)
    return result


def _beside_ort(result: ProfileResult, ort: OrtProfile, ran: Graph, mapped: Graph) -> None:
    """ONNX Runtime's profile into ``result``: whole model, by op type, and per kernel (``ran``:
    the graph ONNX Runtime ran; ``mapped``: the one the kernels' nodes were named from)."""
    outputs = {node.name: node.outputs for node in mapped.nodes}
    found = attribute(ort.by_node, ran, {k.name: {t for n, _ in k.nodes for t in outputs[n]}
                                         for k in result.kernels})
    for kernel in result.kernels:
        kernel.ort_ms = found.by_kernel.get(kernel.name, 0.0)
    result.ort_ms, result.ort_ops, result.ort_unclaimed = ort.model_ms, ort.by_op, found.unclaimed
