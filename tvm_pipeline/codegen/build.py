"""Stage 4, build: apply the target's tuning database, compile, and export a library.

Tuned kernels come from the MetaSchedule database of the target (see ``database``). On CPUs, a
kernel with no record borrows the schedule of the most similar tuned kernel (``transfer``), and
the rest stay naive (unscheduled loops); on GPUs they get the target's default schedules
(``backends.schedule_pass``: DLight rules, which need thread bindings to compile at all). The
result reports each group with its share of the model's arithmetic (a proxy for its share of the
time), so that an untuned build is never silent.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import tvm
from tvm import relax

from ..lowering import backends
from ..tuning import borrow as transfer, database as db
from ..errors import ToolchainError
from ..lowering.prepare import PreparedModule, list_kernels
from ..target.toolchains import Toolchain


@dataclass(frozen=True)
class BuildOptions:
    logs: str | None = None          # writable tuning-log root (see database.writable_root)
    use_database: bool = True        # False: build every kernel untuned
    shipped_logs: bool = True        # False: only the writable root's database (benchmarks)
    borrow: bool = True              # CPU kernels without a record: borrow a similar one's schedule


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
    dlight_kernels: list[str] = field(default_factory=list)  # DLight default GPU schedules
    borrowed_kernels: list[str] = field(default_factory=list)  # schedules of similar tuned kernels
    work: dict[str, float] = field(default_factory=dict)   # kernel -> FLOPs x calls in the model

    @property
    def untuned_kernels(self) -> list[str]:
        return sorted(self.dlight_kernels + self.naive_kernels + self.borrowed_kernels)

    @property
    def kernels_total(self) -> int:
        return len(self.tuned_kernels) + len(self.untuned_kernels)

    def work_share(self, kernels: list[str]) -> float:
        """Share of the model's floating-point work done by ``kernels`` (0..1)."""
        total = sum(self.work.values())
        return sum(self.work.get(k, 0.0) for k in kernels) / total if total else 0.0

    def summary(self) -> str:
        total = self.kernels_total
        where = ", ".join(str(d) for d in self.database_dirs) or "no database"
        text = f"{len(self.tuned_kernels)}/{total} kernels tuned from {where}; "
        if self.borrowed_kernels:
            text += (f"{len(self.borrowed_kernels)} borrowed the schedule of a similar tuned kernel "
                     f"({100 * self.work_share(self.borrowed_kernels):.0f}% of the work, not "
                     "measured); ")
        if self.dlight_kernels:
            text += f"{len(self.dlight_kernels)} with DLight default GPU schedules; "
        text += f"{len(self.naive_kernels)} left naive (unscheduled loops)"
        if self.naive_kernels:
            text += f", {100 * self.work_share(self.naive_kernels):.0f}% of the work"
        return text

    def metadata(self) -> dict:
        target = self.prepared.target
        return {
            "target": target.to_dict(),
            "tvm_version": tvm.__version__,
            "database": {"dirs": [str(d) for d in self.database_dirs],
                         "digest": self.database_digest,
                         "kernels_tuned": len(self.tuned_kernels),
                         "kernels_untuned": len(self.untuned_kernels),
                         "kernels_dlight": len(self.dlight_kernels),
                         "kernels_naive": len(self.naive_kernels),
                         "kernels_borrowed": len(self.borrowed_kernels),
                         "untuned_work_share": round(self.work_share(self.untuned_kernels), 4),
                         "untuned": self.untuned_kernels,
                         "borrowed": self.borrowed_kernels,
                         "dlight": self.dlight_kernels,
                         "naive": self.naive_kernels},
            "build_seconds": round(self.seconds, 2),
        }


def _scheduled(mod: tvm.IRModule) -> tuple[set[str], set[str]]:
    """(scheduled, unscheduled) kernel names of a module."""
    done, left = set(), set()
    for gv, func in mod.functions_items():
        if isinstance(func, tvm.tirx.PrimFunc):
            (done if transfer.is_scheduled(func) else left).add(gv.name_hint)
    return done, left


def _with_global_infos(mod: tvm.IRModule, source: tvm.IRModule) -> tvm.IRModule:
    """``mod`` with the global infos of ``source`` that it lost. MetaScheduleApplyDatabase returns
    a module without them; texture modules keep their virtual devices (memory scopes) there."""
    infos = dict(mod.global_infos or {})
    for key, value in (source.global_infos or {}).items():
        if key not in infos:
            mod.update_global_info(key, value)
    return mod


def build(prepared: PreparedModule, options: BuildOptions = BuildOptions()) -> BuildResult:
    """Compile a prepared module for its target with the target's tuning database applied."""
    start = time.perf_counter()
    target = prepared.target.to_tvm()
    dirs = (db.database_dirs(prepared.target.name, options.logs, options.shipped_logs)
            if options.use_database else [])
    members = [db.open_json_database(d) for d in dirs]
    database = db.union(members)
    try:
        with target, database, tvm.transform.PassContext(opt_level=3):
            mod = _with_global_infos(relax.transform.MetaScheduleApplyDatabase()(prepared.mod),
                                     prepared.mod)
            borrowed: list[str] = []
            if options.borrow and dirs and not backends.is_gpu(target):
                mod, borrowed = transfer.borrow_schedules(mod, members, target,
                                                          check=prepared.target.runs_on_host)
            work = _work(mod)
            mod = backends.after_database_pass(target)(mod)
            tuned, _ = _scheduled(mod)
            mod = backends.schedule_pass(target)(mod)
            scheduled, naive = _scheduled(mod)
            work = {_packed_name(k, scheduled | naive): v for k, v in work.items()}
            borrowed = sorted(_packed_name(k, tuned) for k in borrowed)
            tuned -= set(borrowed)
            executable = tvm.compile(mod, target=target, relax_pipeline=backends.relax_pipeline(target),
                                     tir_pipeline=backends.tir_pipeline(target))
    except Exception as err:
        raise ToolchainError(f"TVM failed to compile {prepared.loaded.name} for {prepared.target.name}: "
                             f"{type(err).__name__}: {str(err).strip()[-600:]}",
                             hint="Re-run with TVM_PIPELINE_DEBUG=1 for the full traceback.") from err
    return BuildResult(prepared=prepared, executable=executable, tuned_kernels=sorted(tuned),
                       naive_kernels=sorted(naive),
                       dlight_kernels=sorted(scheduled - tuned - set(borrowed)),
                       database_dirs=dirs, database_digest=db.digest(dirs),
                       seconds=time.perf_counter() - start, ir=mod, borrowed_kernels=borrowed,
                       work=work)


def _packed_name(name: str, names: set[str]) -> str:
    """A kernel's name after weight packing (``SplitLayoutRewritePreproc`` renames the kernels
    whose schedule packs weights: ``X`` -> ``X_prepacked``)."""
    return name if name in names or f"{name}_prepacked" not in names else f"{name}_prepacked"


def _work(mod: tvm.IRModule) -> dict[str, float]:
    """Kernel -> floating-point operations x calls from main (the unscheduled loop nests)."""
    from tvm.s_tir.analysis import estimate_tir_flops  # pylint: disable=import-outside-toplevel

    calls = {k.name: k.calls for k in list_kernels(mod)}
    work = {}
    for gv, func in mod.functions_items():
        if isinstance(func, tvm.tirx.PrimFunc):
            try:
                flops = float(estimate_tir_flops(tvm.IRModule({"main": func})))
            except Exception:  # pylint: disable=broad-except  (no estimate: counts as no work)
                flops = 0.0
            work[gv.name_hint] = flops * calls.get(gv.name_hint, 1)
    return work


def _tail(text: str, limit: int = 800) -> str:
    """The last whole lines of a compiler message that fit in ``limit`` characters."""
    lines, size = [], 0
    for line in reversed(text.strip().splitlines()):
        if size + len(line) > limit and lines:
            break
        lines.insert(0, line)
        size += len(line) + 1
    return "\n".join(lines)


def export_library(result: BuildResult, path: Path, toolchain: "Toolchain | None" = None) -> None:
    """Write the executable as a shared library with the target's toolchain (default: native)."""
    toolchain = toolchain or Toolchain("native", None)
    try:
        result.executable.export_library(str(path), fcompile=toolchain.fcompile())
    except Exception as err:
        compiler = toolchain.compiler or "g++"
        raise ToolchainError(f"Linking the compiled module into {path} with {compiler} failed:\n"
                             f"{_tail(str(err))}",
                             hint=f"Check that {compiler} works (run it by hand on a small file); "
                                  "re-run with TVM_PIPELINE_DEBUG=1 for the full traceback.") from err
