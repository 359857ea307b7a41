#!/usr/bin/env bash
# run-demo.sh - the main demo: set up (once), bring up a test host, run a short real-tool A/B (sockperf + iperf3) of the kernel path against prism_xdp's three modes, print the tables, write the plots, remove the test host.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh >&2
exec .venv/bin/prism-xdp bench --quick "$@"
