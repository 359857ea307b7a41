"""workloads.py - the A/B's named HIGH workloads and LOW loads (--high, --low): what each runs, on which port, what its latency figures come from, and how the lists are read and checked."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace

from prism_xdp.dataplane.errors import ConfigError
from prism_xdp.lab.bench import memcache, webserve

SOCKPERF_MSG = 64
UDP_PAYLOAD_MAX = 1450 - 28  # the containers' MTU less the inner IPv4 and UDP headers
LOW_PORT_BASE = 5201  # iperf3 flow i listens on LOW_PORT_BASE + i
GEN_PORT = 9  # prism_gen's frames: UDP to the discard port
GEN_FRAME = 64


@dataclass(frozen=True)
class High:
    """A request/response application: server in container c0, client on the remote host."""

    name: str
    proto: str
    port: int  # also the priority rule (prism_xdp's rule, the kernel patch's /proc/port)
    what: str
    latency_from: str  # "samples": raw per-request samples; "histogram": the tool's histogram
    startup_s: float  # what the client takes on top of its duration (sockperf pauses 2 s after warm-up)
    mps: int | None = None  # sockperf at a fixed request rate (sockperf-udp@N); None: as fast as replies come


@dataclass(frozen=True)
class Low:
    """A bulk load from the remote host to container c1, or back (reverse), or none."""

    name: str
    kind: str  # idle | tcp | udp | prism-gen
    flows: int = 0
    payload: int | None = None  # UDP payload bytes
    reverse: bool = False  # container c1 sends to the remote host (iperf3 -R)


HIGH = {h.name: h for h in (
    High("sockperf-udp", "udp", 7000, f"sockperf ping-pong, UDP, {SOCKPERF_MSG} B, one message in flight; "
         "round trip = rxTime - txTime of every --full-log row", "samples", 2.5),
    High("sockperf-tcp", "tcp", 7001, f"sockperf ping-pong --tcp, {SOCKPERF_MSG} B, one message in flight; "
         "round trip = rxTime - txTime of every --full-log row", "samples", 2.5),
    High("memcached", "tcp", 11211, f"memcached (Debian defaults, 4 threads); prism-memc-rtt: one request in "
         f"flight, 1 set in {memcache.SET_EVERY}, {memcache.KEYS} keys, {memcache.VALUE_BYTES} B values; "
         "every request's time", "samples", 0.3),
    High("nginx", "tcp", 80, f"nginx (worker_processes auto), a {webserve.PAGE_BYTES} B static page; wrk -t1 -c1 "
         "(one request in flight); percentiles from wrk's own 1 µs latency histogram, printed whole by a Lua "
         "done(), not from raw samples", "histogram", 0.3),
)}
LOW_DEFAULT = "idle,tcp1,tcp2,udp64x2,udp1400"
HIGH_DEFAULT = ",".join(HIGH)


def parse_low(name: str) -> Low:
    """idle | prism-gen | tcp<N>[r] | udp<payload>[x<N>] (N iperf3 processes, each one flow;
    r: from the container to the remote host)."""
    if name in ("idle", "prism-gen"):
        return Low(name, name, 0 if name == "idle" else 1, GEN_FRAME if name == "prism-gen" else None)
    m = re.fullmatch(r"tcp(\d+)(r?)", name)
    if m:
        flows = int(m.group(1))
        if not 1 <= flows <= 16:
            raise ConfigError(f"--low: {name!r}: 1 to 16 TCP flows")
        return Low(name, "tcp", flows, reverse=bool(m.group(2)))
    m = re.fullmatch(r"udp(\d+)(?:x(\d+))?", name)
    if m:
        payload, flows = int(m.group(1)), int(m.group(2) or 1)
        if not 16 <= payload <= UDP_PAYLOAD_MAX:
            raise ConfigError(f"--low: {name!r}: UDP payload must be 16..{UDP_PAYLOAD_MAX} bytes "
                              "(the containers' MTU)")
        if not 1 <= flows <= 16:
            raise ConfigError(f"--low: {name!r}: 1 to 16 UDP flows")
        return Low(name, "udp", flows, payload)
    raise ConfigError(f"--low: {name!r} is not a LOW load; use idle, prism-gen, tcp<N>[r] (e.g. tcp2, or tcp1r "
                      "from the container) or udp<payload>[x<N>] (e.g. udp64x2)")


def _names(text: str, option: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ConfigError(f"{option}: empty list")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"{option}: {dup[0]!r} is listed twice")
    return names


RATE_PORT_OFFSET = 10  # sockperf-udp@N listens on 7010: its own server and priority rule beside sockperf-udp's


def parse_high(name: str) -> High:
    """A HIGH workload by name; sockperf-udp@N / sockperf-tcp@N: the same ping-pong at N requests/s
    (sockperf --mps), so that configurations that serve HIGH at different speeds carry the same
    HIGH load while their LOW throughput is compared."""
    m = re.fullmatch(r"(sockperf-(?:udp|tcp))@(\d+)", name)
    if m:
        base, mps = HIGH[m.group(1)], int(m.group(2))
        if not 1 <= mps <= 100_000:
            raise ConfigError(f"--high: {name!r}: the rate must be 1..100000 requests/s")
        return replace(base, name=name, port=base.port + RATE_PORT_OFFSET, mps=mps,
                       what=base.what.replace("one message in flight", f"one message in flight at {mps}/s"))
    if name not in HIGH:
        raise ConfigError(f"--high: {name!r} is not a HIGH workload; choose from {', '.join(HIGH)}, "
                          "or sockperf-udp@N / sockperf-tcp@N (N requests/s)")
    return HIGH[name]


def parse_high_list(text: str) -> list[High]:
    out = [parse_high(n) for n in _names(text, "--high")]
    rated = [h.name.split("@")[0] for h in out if h.mps]
    dup = sorted({n for n in rated if rated.count(n) > 1})
    if dup:
        raise ConfigError(f"--high: one fixed rate of {dup[0]} per bench (they share a port)")
    return out


def parse_low_list(text: str) -> list[Low]:
    return [parse_low(n) for n in _names(text, "--low")]


def record(highs: list[High], lows: list[Low], duration: int) -> dict[str, object]:
    """What was measured, as a merge compares it: two results are comparable only if equal."""
    return {"high": [asdict(h) for h in highs], "low": [asdict(lo) for lo in lows], "duration_s": duration}
