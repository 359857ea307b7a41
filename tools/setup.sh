#!/usr/bin/env bash
# setup.sh - install what prism_xdp needs on Debian 12 (as root): Debian packages, a Python venv with the package built in it, bpffs. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${PRISM_VENV:-$ROOT/.venv}

DEB_PACKAGES=(
  clang clang-format llvm libxdp-dev xdp-tools libbpf-dev bpftool libelf-dev zlib1g-dev pkg-config
  gcc python3 python3-dev python3-venv
  iproute2 ethtool iperf3 sockperf tcpdump iputils-ping linux-perf
  memcached libmemcached-tools nginx-light wrk
)
PY_PACKAGES=(
  "setuptools>=70" wheel "cffi>=1.16" "prometheus_client>=0.16" "pyroute2>=0.9,<0.10" "scapy>=2.6" "matplotlib>=3.7"
  "pytest>=8" "pytest-timeout>=2.3" "ruff>=0.6" "mypy>=1.10"
)

say() { printf 'setup: %s\n' "$*"; }

if [ "$(id -u)" != 0 ]; then
  echo "setup: run as root (it installs Debian packages and mounts bpffs)" >&2
  exit 1
fi

missing=()
for p in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# bpffs: libxdp and pinned maps look for it; `ip netns exec` hides it, so
# the daemon runs in the root namespace.
if ! mount | grep -q ' /sys/fs/bpf type bpf'; then
  say "mounting bpffs on /sys/fs/bpf"
  mount -t bpf bpf /sys/fs/bpf
fi

PY=${PYTHON:-python3}
stamp_of() { cat pyproject.toml setup.py ffi/* xdp_progs/* 2>/dev/null | sha256sum | cut -c1-16; }
if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV"
  "$PY" -m venv "$VENV"
fi
if [ ! -f "$VENV/.deps-$(printf '%s ' "${PY_PACKAGES[@]}" | sha256sum | cut -c1-16)" ]; then
  say "installing Python packages"
  "$VENV/bin/pip" install -q --disable-pip-version-check "${PY_PACKAGES[@]}"
  rm -f "$VENV"/.deps-*
  touch "$VENV/.deps-$(printf '%s ' "${PY_PACKAGES[@]}" | sha256sum | cut -c1-16)"
fi
if [ ! -f "$VENV/.build-$(stamp_of)" ] || [ ! -f prism_xdp/bpf/prism_steer.bpf.o ] \
   || ! ls prism_xdp/_prism_ffi.*.so >/dev/null 2>&1; then
  say "building prism_xdp (BPF programs and C helpers)"
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-build-isolation --no-deps -e .
  rm -f "$VENV"/.build-*
  touch "$VENV/.build-$(stamp_of)"
fi
# The bench's memcached client (per-request latencies, which no packaged client reports).
MEMC=$VENV/bin/prism-memc-rtt
if [ ! -x "$MEMC" ] || [ tools/memc_rtt.c -nt "$MEMC" ]; then
  say "building $MEMC"
  gcc -O2 -Wall -Wextra -Werror -o "$MEMC" tools/memc_rtt.c
fi
say "ready: $VENV/bin/prism-xdp"
