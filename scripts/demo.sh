#!/usr/bin/env bash
# Quick start, main job: set up .venv, then export MobileNet V2 1.0-224, compile it for this machine
# with the shipped tuning logs, validate against ONNX Runtime, and benchmark against ONNX Runtime.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/tvm-pipeline demo "$@"
