#!/usr/bin/env bash
# run-tests.sh - set up (once), lint, then run every test: unit (no privileges) and integration (root, netns, XDP).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh >&2
.venv/bin/ruff check prism_xdp tests tools ffi setup.py
.venv/bin/mypy prism_xdp
clang-format --dry-run --Werror ffi/*.c ffi/*.h xdp_progs/*.c xdp_progs/*.h  # .clang-format: kernel style
exec .venv/bin/python -m pytest "$@"
