"""tvm-pipeline."""
