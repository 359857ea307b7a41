"""sockperf.py - sockperf as the A/B's request/response HIGH workload: the server and ping-pong command lines, and each round trip from its --full-log."""

from __future__ import annotations

import re

_ROW = re.compile(r"^\s*\d+,\s*(\d+)\.(\d+),\s*(\d+)\.(\d+),")
_DROPPED = re.compile(r"# dropped messages = (\d+)")
_TOTAL = re.compile(r"\[Total Run\].*SentMessages=(\d+); ReceivedMessages=(\d+)")
_ERROR = re.compile(r"(ERROR: .*|No messages were received.*)$", re.M)


def server_argv(ip: str, port: int, tcp: bool) -> list[str]:
    return ["sockperf", "server", "-i", ip, "-p", str(port), *(["--tcp"] if tcp else [])]


def client_argv(ip: str, port: int, tcp: bool, seconds: int, msg_size: int, log: str,
                mps: int | None = None) -> list[str]:
    """One message in flight (ping-pong), as fast as the replies come or at mps messages/s;
    every valid round trip in the full log (sockperf leaves out its warm-up and cool-down)."""
    return ["sockperf", "ping-pong", "-i", ip, "-p", str(port), "-t", str(seconds), "-m", str(msg_size),
            "--full-log", log, *(["--tcp"] if tcp else []), *([f"--mps={mps}"] if mps else [])]


def _ns(sec: str, frac: str) -> int:
    return int(sec) * 1_000_000_000 + int(frac.ljust(9, "0")[:9])


def parse_full_log(text: str) -> list[float]:
    """Round trips in µs: rxTime - txTime of each row of the full log. (sockperf's own
    latency column is half of this, its one-way estimate; memcached and wrk report whole
    request times, so the A/B reports round trips for all.)"""
    out = []
    for line in text.splitlines():
        m = _ROW.match(line)
        if m:
            out.append((_ns(m.group(3), m.group(4)) - _ns(m.group(1), m.group(2))) / 1000)
    return out


def parse_summary(text: str) -> dict[str, object]:
    """What the client's own report says besides the samples: messages it counted as
    dropped, and its error line if it failed (it exits 0 even then)."""
    dropped, error, total = _DROPPED.search(text), _ERROR.search(text), _TOTAL.search(text)
    out: dict[str, object] = {"dropped": int(dropped.group(1)) if dropped else None,
                              "error": error.group(1).strip() if error else None}
    if total:  # the whole run, warm-up included: a reply that never came stalls a ping-pong
        out.update(sent=int(total.group(1)), received=int(total.group(2)))
    return out
