"""memcache.py - memcached as the A/B's data-caching HIGH workload: the server's command line, our one-request-in-flight client (tools/memc_rtt.c, built by setup) and its latency file."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from prism_xdp.dataplane.errors import PrismError

CLIENT = "prism-memc-rtt"
VALUE_BYTES = 100
KEYS = 1000
SET_EVERY = 10  # 1 set in 10 requests, the rest gets


def client_path() -> str:
    """The client setup builds next to the venv's python (or one on PATH)."""
    beside = Path(sys.executable).parent / CLIENT
    if beside.is_file():
        return str(beside)
    found = shutil.which(CLIENT)
    if found is None:
        raise PrismError(2, "memcached workload", CLIENT, "not built: run tools/setup.sh (it compiles tools/memc_rtt.c)")
    return found


def server_argv(ip: str, port: int) -> list[str]:
    return ["memcached", "-u", "nobody", "-l", ip, "-p", str(port)]


def client_argv(binary: str, ip: str, port: int, seconds: float, out: str, preloaded: bool = True) -> list[str]:
    """preloaded: the keys were stored when the server started (preload_argv), so that a
    measurement under load does not first spend its time storing them."""
    return [binary, "-s", ip, "-p", str(port), "-t", str(seconds), "-o", out, "-k", str(KEYS),
            "-v", str(VALUE_BYTES), "-r", str(SET_EVERY), *(["-P"] if preloaded else [])]


def preload_argv(binary: str, ip: str, port: int, out: str) -> list[str]:
    """Stores every key (and measures for a moment, which is thrown away)."""
    return client_argv(binary, ip, port, 0.01, out, preloaded=False)


def parse(text: str) -> tuple[dict[str, float], list[float]]:
    """(the summary line's fields, every request's latency in µs)."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith("# "):
        raise ValueError("not a prism-memc-rtt latency file (no '# requests ...' line)")
    words = lines[0][2:].split()
    head = {k: float(v) for k, v in zip(words[::2], words[1::2], strict=True)}
    return head, [int(x) / 1000 for x in lines[1:] if x]
