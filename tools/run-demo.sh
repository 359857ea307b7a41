#!/usr/bin/env bash
# run-demo.sh - the main demo: set up (once), bring up a test host, run a short A/B of the kernel path against prism_xdp's three modes, print the table, write the plots, remove the test host.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh >&2
exec .venv/bin/prism-xdp bench --quick "$@"
