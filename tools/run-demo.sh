#!/usr/bin/env bash
# run-demo.sh - the main demo: set up (once), then run prism-xdp's end-to-end self-check on a throwaway test host.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh >&2
exec .venv/bin/prism-xdp selfcheck "$@"
