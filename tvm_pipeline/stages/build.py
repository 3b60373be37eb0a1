"""Stage 4, build: apply the target's tuning database, compile, and export a library.

Tuned kernels come from the MetaSchedule database of the target (see ``database``). Kernels with no
record get the target's default schedules (``backends.schedule_pass``: DLight rules on GPUs, which
need thread bindings to compile at all) or, on CPUs, stay naive (unscheduled loops). The result
reports the three groups so that an untuned build is never silent.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import tvm
from tvm import relax

from .. import backends, database as db
from ..errors import ToolchainError
from ..toolchains import Toolchain
from .prepare import PreparedModule


@dataclass(frozen=True)
class BuildOptions:
    logs: str | None = None          # writable tuning-log root (see database.writable_root)
    use_database: bool = True        # False: build every kernel untuned


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

    @property
    def untuned_kernels(self) -> list[str]:
        return sorted(self.dlight_kernels + self.naive_kernels)

    @property
    def kernels_total(self) -> int:
        return len(self.tuned_kernels) + len(self.untuned_kernels)

    def summary(self) -> str:
        total = self.kernels_total
        where = ", ".join(str(d) for d in self.database_dirs) or "no database"
        text = f"{len(self.tuned_kernels)}/{total} kernels tuned from {where}; "
        if self.dlight_kernels:
            text += f"{len(self.dlight_kernels)} with DLight default GPU schedules; "
        return text + f"{len(self.naive_kernels)} left naive (unscheduled loops)"

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
                         "untuned": self.untuned_kernels,
                         "dlight": self.dlight_kernels,
                         "naive": self.naive_kernels},
            "build_seconds": round(self.seconds, 2),
        }


def _is_scheduled(func) -> bool:
    attrs = func.attrs
    return attrs is not None and any(str(k).endswith("is_scheduled") and bool(v)
                                     for k, v in attrs.items())


def _scheduled(mod: tvm.IRModule) -> tuple[set[str], set[str]]:
    """(scheduled, unscheduled) kernel names of a module."""
    done, left = set(), set()
    for gv, func in mod.functions_items():
        if isinstance(func, tvm.tirx.PrimFunc):
            (done if _is_scheduled(func) else left).add(gv.name_hint)
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
    dirs = db.database_dirs(prepared.target.name, options.logs) if options.use_database else []
    database = db.open_for_apply(dirs)
    try:
        with target, database, tvm.transform.PassContext(opt_level=3):
            mod = _with_global_infos(relax.transform.MetaScheduleApplyDatabase()(prepared.mod),
                                     prepared.mod)
            tuned, _ = _scheduled(mod)
            mod = backends.schedule_pass(target)(mod)
            scheduled, naive = _scheduled(mod)
            executable = tvm.compile(mod, target=target, relax_pipeline=backends.relax_pipeline(target),
                                     tir_pipeline=backends.tir_pipeline(target))
    except Exception as err:
        raise ToolchainError(f"TVM failed to compile {prepared.loaded.name} for {prepared.target.name}: "
                             f"{type(err).__name__}: {str(err).strip()[-600:]}",
                             hint="Re-run with TVM_PIPELINE_DEBUG=1 for the full traceback.") from err
    return BuildResult(prepared=prepared, executable=executable, tuned_kernels=sorted(tuned),
                       naive_kernels=sorted(naive), dlight_kernels=sorted(scheduled - tuned),
                       database_dirs=dirs, database_digest=db.digest(dirs),
                       seconds=time.perf_counter() - start, ir=mod)


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
