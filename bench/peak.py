"""Machine peak FP32 throughput: an SGEMM through numpy's OpenBLAS, in a child process.

The environment here pins ``OPENBLAS_CORETYPE=Haswell`` (AVX2 kernels) and ``OPENBLAS_L2_SIZE``;
the child runs without both so that OpenBLAS picks this CPU's best kernels (AVX-512 on these
machines). Threads = the cores TVM and ONNX Runtime use in the same benchmark.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

_CHILD = r"""
import json, sys, time
import numpy as np
n = int(sys.argv[1])
a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
a @ b
best = float("inf")
for _ in range(int(sys.argv[2])):
    t = time.perf_counter(); a @ b; best = min(best, time.perf_counter() - t)
print(json.dumps({"gflops": 2 * n ** 3 / best / 1e9, "n": n}))
"""


def peak_gflops(threads: int, n: int = 2048, repeats: int = 10) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    env["OPENBLAS_NUM_THREADS"] = str(threads)
    out = subprocess.run([sys.executable, "-c", _CHILD, str(n), str(repeats)], env=env, check=True,
                         capture_output=True, text=True).stdout
    return float(json.loads(out)["gflops"])


if __name__ == "__main__":
    print(f"{peak_gflops(os.cpu_count() or 1):.1f} GFLOP/s")
