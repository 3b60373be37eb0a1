"""Targets: target files (a `tvm.target.Target` dict plus our keys), host detection, toolchains and
what this TVM build and machine can do for a target."""
