#!/usr/bin/env bash
# Create (or update) .venv with tvm-pipeline and its pinned TVM. Idempotent.
# Usage: bash scripts/setup.sh [EXTRAS]   e.g. bash scripts/setup.sh test
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || { echo "setup: $PY not found; install Python 3.11 (Debian: apt-get install python3.11 python3.11-venv)" >&2; exit 1; }
apt_install() {  # Debian packages, only when missing; as root (CI, containers) or with sudo
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  command -v apt-get >/dev/null || { echo "setup: please install: $*" >&2; exit 1; }
  echo "setup: installing Debian packages: $*" >&2
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}
# export_library links the compiled module with the system C++ compiler.
command -v g++ >/dev/null || apt_install g++
# The tests cross-compile for ARM (Debian's cross g++) and run the result on an emulated aarch64
# device (QEMU user mode, see scripts/arm-device). Users of cross targets are told what to install.
if [[ "$extras" == *test* ]]; then
  missing=()
  command -v aarch64-linux-gnu-g++ >/dev/null || missing+=(g++-aarch64-linux-gnu)
  command -v arm-linux-gnueabihf-g++ >/dev/null || missing+=(g++-arm-linux-gnueabihf)
  command -v qemu-aarch64-static >/dev/null || missing+=(qemu-user-static)
  [ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"
fi
# GPU kernel checks: clang compiles OpenCL C to SPIR; PoCL runs OpenCL kernels on this CPU (pyopencl).
{ command -v clang >/dev/null && [ -e /etc/OpenCL/vendors/pocl.icd ]; } || apt_install clang pocl-opencl-icd
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv 2>/dev/null || { rm -rf .venv; apt_install python3.11-venv; "$PY" -m venv .venv; }
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true   # optional; the index warnings are noise
spec="."
[ -n "$extras" ] && spec=".[$extras]"
# pip's own exit status decides: its chatter (this machine's index warnings) is shown only on failure.
log="$(mktemp)"
if ! .venv/bin/python -m pip install -q -e "$spec" >"$log" 2>&1; then
  cat "$log" >&2; rm -f "$log"
  echo "setup: pip install -e '$spec' failed (its output above)" >&2; exit 1
fi
rm -f "$log"
.venv/bin/python -c "import tvm, tvm_pipeline; print('setup: tvm', tvm.__version__, 'ready in .venv')"
