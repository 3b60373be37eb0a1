"""Tuning a CPU target registers its own tensor intrinsics only (CUDA's take ~20 s to build)."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_x86_tuning_context_needs_only_the_x86_intrinsics():
    # a fresh process: the test session may already hold the whole package
    script = textwrap.dedent("""
        import sys
        from tvm_pipeline.target import intrinsics
        assert intrinsics.register_for("llvm", "x86_64") == ("x86",)
        import tvm
        from tvm import te
        from tvm.s_tir import meta_schedule as ms
        a = te.placeholder((64, 64), name="A")
        k = te.reduce_axis((0, 64), name="k")
        c = te.compute((64, 64), lambda i, j: te.sum(a[i, k] * a[k, j], axis=k), name="C")
        mod = tvm.IRModule({"main": te.create_prim_func([a, c])})
        target = tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512", "num-cores": 2})
        ctx = ms.TuneContext(mod, target=target, space_generator="post-order-apply",
                             search_strategy="evolutionary")
        spaces = ctx.generate_design_space()
        assert spaces, "no design space"
        assert "tvm.s_tir.tensor_intrin.x86" in sys.modules
        assert "tvm.s_tir.tensor_intrin.cuda" not in sys.modules
        # another target later still gets every intrinsic it may need
        intrinsics.register_for("cuda", "")
        assert "tvm.s_tir.tensor_intrin.cuda" in sys.modules
        print("ok", len(spaces))
    """)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and res.stdout.startswith("ok"), res.stderr[-2000:]
