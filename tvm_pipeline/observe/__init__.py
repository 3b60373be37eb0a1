"""Observability: per-kernel profile, divergence bisect, the alpha x rho sweep, shareable reports."""
