#!/usr/bin/env bash
# Create (or update) .venv with tvm-pipeline and its pinned TVM. Idempotent.
# Usage: bash scripts/setup.sh [EXTRAS]   e.g. bash scripts/setup.sh test
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || { echo "setup: $PY not found; install Python 3.11 (Debian: apt-get install python3.11 python3.11-venv)" >&2; exit 1; }
# export_library links the compiled module with the system C++ compiler.
if ! command -v g++ >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing g++ (Debian package) for exporting compiled modules" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ >/dev/null
  else
    echo "setup: g++ is missing; install it (Debian: sudo apt-get install g++)" >&2; exit 1
  fi
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
spec="."
[ -n "$extras" ] && spec=".[$extras]"
.venv/bin/python -m pip install -q -e "$spec" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import tvm, tvm_pipeline; print('setup: tvm', tvm.__version__, 'ready in .venv')"
