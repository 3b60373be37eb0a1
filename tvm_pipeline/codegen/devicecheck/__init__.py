"""Device checks of generated GPU code: nvcc, clang SPIR, PoCL builds and kernel-level numerics."""
