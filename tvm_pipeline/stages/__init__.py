"""One module per stage of the lifecycle: load, prepare, tune, build, validate, bench, classify.

They live in this subpackage so that the package-level verbs (``tvm_pipeline.tune`` and friends,
re-exported from :mod:`tvm_pipeline.api`) are never shadowed by a submodule of the same name.
"""
