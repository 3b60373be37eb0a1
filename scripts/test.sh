#!/usr/bin/env bash
# Quick start, tests: set up .venv with the test extras, then run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
exec .venv/bin/python -m pytest "$@"
