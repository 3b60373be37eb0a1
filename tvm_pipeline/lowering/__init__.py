"""Lowering: ONNX to fused Relax for a target (layout, texture fixes) and the per-target TIR/Relax
pipelines; `schedules` holds the default schedules for kernels nobody tuned."""
