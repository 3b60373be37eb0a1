"""Stage 4, build: give every kernel a schedule, compile, and export a library.

Each kernel's schedule comes from the first source that has one:

1. ``tuned``: the target's MetaSchedule database (see ``tuning.database``);
2. ``borrowed`` (CPUs): the schedule of the most similar tuned kernel (``tuning.borrow``), checked;
3. ``default``: on CPUs, the default schedule of ``lowering.schedules`` (checked, see
   ``codegen.defaults``); on GPUs, DLight's rules (``lowering.backends.schedule_pass``: GPU
   kernels must bind threads to compile at all);
4. ``naive``: none of the above (the unscheduled loops), each with the reason.

The result reports each group with its share of the model's arithmetic (a proxy for its share of
the time), so that a slow build is never silent.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import tvm
from tvm import relax

from ..errors import TVM_ERRORS, raise_if_interrupted, ToolchainError
from ..lowering import backends, schedules
from ..lowering.prepare import PreparedModule, kernel_flops, list_kernels
from ..target import intrinsics
from ..target.toolchains import Toolchain
from ..tuning import borrow, database as db
from .defaults import DefaultsResult, apply_defaults, race


@dataclass(frozen=True)
class BuildOptions:
    logs: str | None = None          # writable tuning-log root (see database.writable_root)
    use_database: bool = True        # False: no tuned or borrowed schedules
    shipped_logs: bool = True        # False: only the writable root's database (benchmarks)
    borrow: bool = True              # CPU kernels without a record: borrow a similar one's schedule
    defaults: bool = True            # kernels still unscheduled: default schedules (else naive)
    race: bool = True                # targets that run here: a default faster than a tuned or
                                     # borrowed schedule replaces it (see defaults.race)


@dataclass
class BuildResult:
    prepared: PreparedModule
    executable: object               # relax.VMExecutable
    tuned_kernels: list[str]         # schedules from the tuning database
    naive_kernels: list[str]         # no schedule at all (CPU loops as written)
    database_dirs: list[Path]
    database_digest: str | None
    seconds: float
    ir: tvm.IRModule = field(repr=False, default=None)   # the scheduled module that was compiled
    default_kernels: list[str] = field(default_factory=list)   # CPU rules or DLight (GPU)
    borrowed_kernels: list[str] = field(default_factory=list)  # schedules of similar tuned kernels
    naive_reasons: dict[str, str] = field(default_factory=dict)  # naive kernel -> why
    # kernel -> (ms with its tuned or borrowed schedule, ms with the default that replaced it)
    replaced: dict[str, tuple[float, float]] = field(default_factory=dict)
    work: dict[str, float] = field(default_factory=dict)   # kernel -> FLOPs x calls in the model
    calls: dict[str, int] = field(default_factory=dict)    # kernel -> calls per run of the model
    # kernel -> its arguments as compiled (shape, dtype), outputs last (destination passing)
    signatures: dict[str, list[tuple[tuple[int, ...], str]]] = field(default_factory=dict)

    @property
    def untuned_kernels(self) -> list[str]:
        return sorted(self.default_kernels + self.naive_kernels + self.borrowed_kernels)

    @property
    def kernels_total(self) -> int:
        return len(self.tuned_kernels) + len(self.untuned_kernels)

    def by_source(self) -> dict[str, list[str]]:
        return {"tuned": self.tuned_kernels, "borrowed": self.borrowed_kernels,
                "default": self.default_kernels, "naive": self.naive_kernels}

    def source_of(self, kernel: str) -> str:
        return next((s for s, names in self.by_source().items() if kernel in names), "naive")

    def work_share(self, kernels: list[str]) -> float:
        """Share of the model's floating-point work done by ``kernels`` (0..1)."""
        total = sum(self.work.values())
        return sum(self.work.get(k, 0.0) for k in kernels) / total if total else 0.0

    def heaviest_untuned(self, count: int) -> list[tuple[str, float, str]]:
        """The ``count`` kernels with the largest share of the work that nothing tuned:
        (kernel, share, source), the first candidates for ``tune``."""
        untuned = sorted(self.untuned_kernels, key=lambda k: -self.work.get(k, 0.0))[:count]
        return [(k, self.work_share([k]), self.source_of(k)) for k in untuned
                if self.work.get(k, 0.0) > 0]

    def summary(self) -> str:
        where = ", ".join(str(d) for d in self.database_dirs) or "no database"
        parts = [f"{len(names)} {source} ({100 * self.work_share(names):.0f}% of the work)"
                 for source, names in self.by_source().items()]
        text = f"{self.kernels_total} kernels: {', '.join(parts)}; database: {where}"
        if self.borrowed_kernels or self.default_kernels:
            text += "\n  borrowed and default schedules are checked against the unscheduled kernels"
        if self.replaced:
            # no sum: one borrowed schedule far off the mark (seen: 37x its default) would make the
            # total say nothing about the others
            worst = max(self.replaced, key=lambda k: self.replaced[k][0] / self.replaced[k][1])
            mine, default = self.replaced[worst]
            text += (f"\n  {len(self.replaced)} tuned or borrowed schedules were slower here than the "
                     f"default and were replaced (timed per kernel; furthest off: {worst}, "
                     f"{mine:.3f} ms against {default:.3f} ms per call)")
        for kernel in self.naive_kernels:
            text += f"\n  naive {kernel}: {self.naive_reasons.get(kernel, 'not scheduled')}"
        return text

    def kernel_table(self) -> dict[str, dict]:
        """Every compiled kernel: schedule source, calls and FLOPs per run, arguments as compiled
        (what ``profile`` needs to time kernels on a device and to report GFLOP/s)."""
        return {name: {"source": self.source_of(name), "calls": self.calls.get(name, 1),
                       "flops": self.work.get(name, 0.0) / max(self.calls.get(name, 1), 1),
                       "args": [[list(shape), dtype] for shape, dtype in args]}
                for name, args in sorted(self.signatures.items())}

    def metadata(self) -> dict:
        target = self.prepared.target
        groups = self.by_source()
        return {
            "target": target.to_dict(),
            "tvm_version": tvm.__version__,
            "database": {"dirs": [str(d) for d in self.database_dirs],
                         "digest": self.database_digest},
            "kernels": {"total": self.kernels_total,
                        **{source: {"count": len(names), "work_share": round(self.work_share(names), 4),
                                    "names": sorted(names)} for source, names in groups.items()},
                        "naive_reasons": dict(sorted(self.naive_reasons.items())),
                        "replaced_by_default_ms": {k: [round(a, 4), round(b, 4)]
                                                   for k, (a, b) in sorted(self.replaced.items())},
                        "table": self.kernel_table()},
            "build_seconds": round(self.seconds, 2),
        }


def _unpackable_unscheduled(mod: tvm.IRModule, source: tvm.IRModule,
                            names: set[str]) -> tvm.IRModule:
    """``mod`` with each of the scheduled kernels ``names`` whose weight packing the build could
    not split off (``schedules.packable``; a record tuned before the search refused such
    candidates) put back unscheduled, for the next source of schedules to take."""
    for name in names:
        if not schedules.packable(mod[name]):
            mod[name] = source[name]
    return mod


def _scheduled(mod: tvm.IRModule) -> tuple[set[str], set[str]]:
    """(scheduled, unscheduled) kernel names of a module."""
    done, left = set(), set()
    for gv, func in mod.functions_items():
        if isinstance(func, tvm.tirx.PrimFunc):
            (done if borrow.is_scheduled(func) else left).add(gv.name_hint)
    return done, left


def _with_global_infos(mod: tvm.IRModule, source: tvm.IRModule) -> tvm.IRModule:
    """``mod`` with the global infos of ``source`` that it lost. MetaScheduleApplyDatabase returns
    a module without them; texture modules keep their virtual devices (memory scopes) there."""
    infos = dict(mod.global_infos or {})
    for key, value in (source.global_infos or {}).items():
        if key not in infos:
            mod.update_global_info(key, value)
    return mod


@dataclass
class _Schedules:
    """What each scheduling step gave, by the kernel names before weight packing."""

    tuned: set[str]
    borrowed: list[str]
    defaults: DefaultsResult


def _schedule(prepared: PreparedModule, options: BuildOptions, members: list,
              target: tvm.target.Target) -> tuple[tvm.IRModule, _Schedules]:
    """Tuned, then borrowed, then default schedules (inside the target and database scopes)."""
    mod = _with_global_infos(relax.transform.MetaScheduleApplyDatabase()(prepared.mod),
                             prepared.mod)
    borrowed: list[str] = []
    if not backends.is_gpu(target):
        mod = _unpackable_unscheduled(mod, prepared.mod, _scheduled(mod)[0])
    tuned, _ = _scheduled(mod)
    if options.borrow and members and not backends.is_gpu(target):
        mod, borrowed = borrow.borrow_schedules(mod, members, target, spec=prepared.target)
        mod = _unpackable_unscheduled(mod, prepared.mod, set(borrowed))
        borrowed = [k for k in borrowed if borrow.is_scheduled(mod[k])]
    defaults = DefaultsResult()
    if options.defaults and not backends.is_gpu(target):
        mod, defaults = apply_defaults(mod, prepared.target, target)
        if options.race:
            mod = race(mod, prepared.mod, sorted(tuned | set(borrowed)), prepared.target,
                       target, defaults)
            defaults.scheduled += sorted(defaults.replaced)
            tuned -= set(defaults.replaced)
            borrowed = [k for k in borrowed if k not in defaults.replaced]
    mod = backends.after_database_pass(target)(mod)
    if options.defaults:
        before, _ = _scheduled(mod)
        mod = backends.schedule_pass(target)(mod)       # DLight on GPUs
        after, _ = _scheduled(mod)
        defaults.scheduled += sorted(after - before)
    return mod, _Schedules(tuned - set(borrowed), borrowed, defaults)


def build(prepared: PreparedModule, options: BuildOptions = BuildOptions()) -> BuildResult:
    """Compile a prepared module for its target, every kernel scheduled as well as known."""
    start = time.perf_counter()
    target = prepared.target.to_tvm()
    dirs = (db.database_dirs(prepared.target.name, options.logs, options.shipped_logs)
            if options.use_database else [])
    # records of tensorized kernels name their intrinsic: it must exist before a database loads
    intrinsics.register_for(target.kind.name, prepared.target.arch)
    members = [db.open_json_database(d) for d in dirs]
    work = _work(prepared.mod)
    with target, db.union(members), tvm.transform.PassContext(opt_level=3):
        mod, done = _schedule(prepared, options, members, target)
        try:
            lowered = backends.relax_pipeline(target)(mod)
            executable = tvm.compile(lowered, target=target, relax_pipeline=None,
                                     tir_pipeline=backends.tir_pipeline(target))
        except TVM_ERRORS as err:
            raise_if_interrupted()
            raise ToolchainError(f"TVM failed to compile {prepared.loaded.name} for "
                                 f"{prepared.target.name}: {str(err).strip()[-600:]}",
                                 hint="Re-run with TVM_PIPELINE_DEBUG=1 for the full traceback; "
                                      "--no-defaults or --untuned isolate a bad schedule.") from err
    scheduled, naive = _scheduled(mod)
    names = scheduled | naive
    packed = {k: _packed_name(k, names) for k in work}
    return BuildResult(
        prepared=prepared, executable=executable,
        tuned_kernels=sorted(packed.get(k, k) for k in done.tuned),
        borrowed_kernels=sorted(packed.get(k, k) for k in done.borrowed),
        default_kernels=sorted(packed.get(k, k) for k in done.defaults.scheduled),
        naive_kernels=sorted(naive),
        naive_reasons={packed.get(k, k): r for k, r in done.defaults.naive.items()},
        replaced={packed.get(k, k): (a * 1e3, b * 1e3) for k, (a, b) in done.defaults.replaced.items()},
        database_dirs=dirs, database_digest=db.digest(dirs),
        seconds=time.perf_counter() - start, ir=mod,
        work={packed[k]: v for k, v in work.items()},
        calls={packed[k.name]: k.calls for k in prepared.kernels if k.name in packed},
        signatures=_signatures(lowered))


def _signatures(lowered: tvm.IRModule) -> dict[str, list[tuple[tuple[int, ...], str]]]:
    """Kernel the VM calls -> its parameters' static shapes and dtypes (kernels with a dynamic
    shape, and kernels the lowering left uncalled, are left out)."""
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo  # pylint: disable=import-outside-toplevel

    called = set()
    for _, func in lowered.functions_items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, lambda e: called.add(e.name_hint) if isinstance(
                e, tvm.ir.GlobalVar) else None)
    table = {}
    for gv, func in lowered.functions_items():
        if not isinstance(func, tvm.tirx.PrimFunc) or gv.name_hint not in called:
            continue
        infos = ArgInfo.from_prim_func(func)
        if all(isinstance(d, (int, tvm.tirx.IntImm)) for info in infos for d in info.shape):
            table[gv.name_hint] = [(tuple(int(d) for d in info.shape), str(info.dtype))
                                   for info in infos]
    return table


def _packed_name(name: str, names: set[str]) -> str:
    """A kernel's name after weight packing (``SplitLayoutRewritePreproc`` renames the kernels
    whose schedule packs weights: ``X`` -> ``X_prepacked``)."""
    return name if name in names or f"{name}_prepacked" not in names else f"{name}_prepacked"


def _work(mod: tvm.IRModule) -> dict[str, float]:
    """Kernel -> floating-point operations x calls from main (the unscheduled loop nests)."""
    calls = {k.name: k.calls for k in list_kernels(mod)}
    return {gv.name_hint: kernel_flops(func) * calls.get(gv.name_hint, 1)
            for gv, func in mod.functions_items() if isinstance(func, tvm.tirx.PrimFunc)}


def _tail(text: str, limit: int = 800) -> str:
    """The last whole lines of a compiler message that fit in ``limit`` characters."""
    lines, size = [], 0
    for line in reversed(text.strip().splitlines()):
        if size + len(line) > limit and lines:
            break
        lines.insert(0, line)
        size += len(line) + 1
    return "\n".join(lines)


KERNELS_LIBRARY = "kernels.so"
KERNELS_NOTE = ("the compiled kernels alone (the same code as the model library, without the VM): "
                "`tvm-pipeline profile --rpc` loads it to time each kernel on the device")


def export_library(result: BuildResult, path: Path, toolchain: "Toolchain | None" = None,
                   kernels_only: bool = False) -> None:
    """Write the executable (or, ``kernels_only``, its kernel library without the VM, which a
    remote device can time kernel by kernel) as a shared library with the target's toolchain
    (default: native)."""
    toolchain = toolchain or Toolchain("native", None)
    module = result.executable.mod.imports[0] if kernels_only else result.executable
    try:
        module.export_library(str(path), fcompile=toolchain.fcompile())
    except (*TVM_ERRORS, OSError) as err:      # the compiler's failure, or the file system's
        raise_if_interrupted()
        compiler = toolchain.compiler or "g++"
        raise ToolchainError(f"Linking the compiled module into {path} with {compiler} failed:\n"
                             f"{_tail(str(err))}",
                             hint=f"Check that {compiler} works (run it by hand on a small file); "
                                  "re-run with TVM_PIPELINE_DEBUG=1 for the full traceback.") from err
