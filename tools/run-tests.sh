#!/usr/bin/env bash
# run-tests.sh - set up (once), lint, then run every test: unit (no privileges) and integration (root, netns, XDP).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh >&2
.venv/bin/ruff check prism_xdp tests tools ffi setup.py
.venv/bin/mypy prism_xdp
exec .venv/bin/python -m pytest "$@"
