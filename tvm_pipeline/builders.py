"""A MetaSchedule builder that keeps its worker processes between batches.

The stock ``LocalBuilder`` starts a fresh process pool for every batch, and every worker runs
``import tvm.s_tir.tensor_intrin`` (which parses every tensor intrinsic of every target: ~28 s on
these machines) before building anything: 8 candidates cost ~45 s. This builder keeps its workers
alive (recycling them every ``recycle_every`` batches, as the stock builder's comment worries about
worker memory growth), and its build function imports only what a build needs. Candidates still
build in separate processes, so a compiler crash or hang costs one candidate (timeout), not the
tuning run.
"""

from __future__ import annotations

import os
import tempfile

from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms
from tvm.support.popen_pool import PopenPoolExecutor, StatusKind


def build_candidate(mod, target, compiler: str | None = None) -> str:
    """Build one scheduled TIR module (worker side) and export it for the runner: a tarball of
    objects for the local runner, or a shared library linked by ``compiler`` for a remote device
    (its RPC server loads a ``.so`` as is; a tarball would need a compiler on the device)."""
    # pylint: disable=import-outside-toplevel
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock
    from tvm.support import cc
    from tvm.support.tar import tar

    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    module = tvm_build(mod, target=target)
    folder = tempfile.mkdtemp(prefix="tvm-pipeline-cand-")
    if compiler is None:
        path = os.path.join(folder, "tvm_tmp_mod." + tar.output_format)
        module.export_library(path, fcompile=tar)
    else:
        path = os.path.join(folder, "tvm_tmp_mod.so")
        module.export_library(path, fcompile=cc.cross_compiler(compiler))
    return path


def _call(args):
    return build_candidate(*args)


@derived_object
class PersistentLocalBuilder(ms.builder.PyBuilder):
    """Builds candidates in a long-lived process pool."""

    def __init__(self, max_workers: int, timeout_sec: float = 30.0, recycle_every: int = 50,
                 compiler: str | None = None):
        super().__init__()
        self.compiler = compiler
        self.max_workers = max_workers
        self.timeout_sec = timeout_sec
        self.recycle_every = recycle_every
        self._pool: PopenPoolExecutor | None = None
        self._batches = 0

    def _executor(self) -> PopenPoolExecutor:
        if self._pool is not None and self._batches >= self.recycle_every:
            self.shutdown()
        if self._pool is None:
            self._pool = PopenPoolExecutor(max_workers=self.max_workers, timeout=self.timeout_sec)
            self._batches = 0
        self._batches += 1
        return self._pool

    def build(self, build_inputs):
        results = []
        jobs = [(inp.mod, inp.target, self.compiler) for inp in build_inputs]
        for res in self._executor().map_with_error_catching(_call, jobs):
            if res.status == StatusKind.COMPLETE:
                results.append(ms.builder.BuilderResult(res.value, None))
            elif res.status == StatusKind.TIMEOUT:
                results.append(ms.builder.BuilderResult(
                    None, f"build timed out after {self.timeout_sec} s"))
            else:
                results.append(ms.builder.BuilderResult(None, f"build failed: {res.value}"))
        return results

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
