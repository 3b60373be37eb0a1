"""A MetaSchedule builder that keeps its worker processes between batches.

The stock ``LocalBuilder`` starts a fresh process pool for every batch, and every worker runs
``import tvm.s_tir.tensor_intrin`` (which parses every tensor intrinsic of every target: ~28 s on
these machines) before building anything: 8 candidates cost ~45 s. This builder keeps its workers
alive (recycling them every ``recycle_every`` batches, as the stock builder's comment worries about
worker memory growth), and its build function imports only what a build needs. Candidates still
build in separate processes, so a compiler crash or hang costs one candidate (timeout), not the
tuning run. Every candidate's library goes into one temporary folder of the builder's, removed when
it closes (the folders of some candidates outlived their runs, runs that ended normally included:
56 had piled up in /tmp here). A build taking far longer than the others (a reduction whose
unrolled loops LLVM churns on) is cut at 10x the slowest tenth of the builds so far, not at the
full timeout: seven such candidates of one EfficientNet-B0 kernel once cost 105 s of a 10-minute
run.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections import deque
from collections.abc import Sequence

import numpy as np

from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms
from tvm.support.popen_pool import PopenPoolExecutor, StatusKind


def build_candidate(mod, target, compiler: str | None = None, root: str | None = None) -> str:
    """Build one scheduled TIR module (worker side) and link it into a shared library for the
    runner: with the host's compiler for the local runner (linking here, in parallel workers,
    rather than in the runner's single process, which would link a tarball serially between
    timings), or with ``compiler`` for a remote device (its RPC server loads a ``.so`` as is);
    into a new folder under ``root`` (default: the system's temporary folder)."""
    # pylint: disable=import-outside-toplevel
    from tvm.tirx import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock
    from tvm.support import cc

    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    module = tvm_build(mod, target=target)
    folder = tempfile.mkdtemp(prefix="tvm-pipeline-cand-", dir=root)
    path = os.path.join(folder, "tvm_tmp_mod.so")
    module.export_library(path, fcompile=cc.create_shared if compiler is None
                          else cc.cross_compiler(compiler))
    return path


BUILD_LIMIT_FACTOR = 10.0     # x the 90th percentile of the builds so far
BUILD_LIMIT_FLOOR_S = 10.0
BUILD_LIMIT_AFTER = 16        # builds measured before the limit adapts


def build_time_limit(seconds: Sequence[float], ceiling: float) -> float:
    """The timeout of the next batch's builds, given the durations of the builds so far: 10x their
    90th percentile, within [10 s, ``ceiling``]; ``ceiling`` until 16 builds are known."""
    if len(seconds) < BUILD_LIMIT_AFTER:
        return ceiling
    slow = float(np.percentile(np.asarray(seconds, dtype=float), 90))
    return min(ceiling, max(BUILD_LIMIT_FLOOR_S, BUILD_LIMIT_FACTOR * slow))


def _call(args):
    start = time.perf_counter()
    path = build_candidate(*args)
    return path, time.perf_counter() - start


def _set_timeout(pool: PopenPoolExecutor, seconds: float) -> None:
    # TVM's pool reads the timeout of each job when it is submitted
    if hasattr(pool, "_timeout"):
        pool._timeout = seconds  # pylint: disable=protected-access


def _check(args):
    from . import verify  # pylint: disable=import-outside-toplevel

    return verify.check_kernel(*args)


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
        self.sources: dict = {}           # artifact path -> scheduled module, last batch only
        self.build_seconds: deque = deque(maxlen=512)   # of the latest successful builds
        self.root = tempfile.mkdtemp(prefix="tvm-pipeline-cands-")   # removed by close()

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
        self.sources = {}
        jobs = [(inp.mod, inp.target, self.compiler, self.root) for inp in build_inputs]
        pool = self._executor()
        limit = build_time_limit(self.build_seconds, self.timeout_sec)
        _set_timeout(pool, limit)
        for inp, res in zip(build_inputs, pool.map_with_error_catching(_call, jobs)):
            if res.status == StatusKind.COMPLETE:
                path, seconds = res.value
                self.build_seconds.append(seconds)
                results.append(ms.builder.BuilderResult(path, None))
                self.sources[path] = (inp.mod, inp.target)
            elif res.status == StatusKind.TIMEOUT:
                results.append(ms.builder.BuilderResult(
                    None, f"build timed out after {limit:.3g} s"))
            else:
                results.append(ms.builder.BuilderResult(None, f"build failed: {res.value}"))
        return results

    def check(self, artifact_path: str, reference) -> float:
        """Deviation of a built candidate from ``reference`` (``verify.Reference``), computed in a
        worker (a crash or hang there costs this check, reported as infinitely wrong)."""
        mod, target = self.sources[artifact_path]
        pool = self._pool if self._pool is not None else self._executor()
        _set_timeout(pool, self.timeout_sec)    # a check builds and runs: the full timeout
        res = next(iter(pool.map_with_error_catching(_check, [(mod, target, reference)])))
        return float(res.value) if res.status == StatusKind.COMPLETE else float("inf")

    def shutdown(self) -> None:
        """Stop the workers (the next batch starts new ones)."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def close(self) -> None:
        """Stop the workers and remove every candidate's files."""
        self.shutdown()
        shutil.rmtree(self.root, ignore_errors=True)
