"""stages.py - a HIGH round trip as a chain of tracepoint events that only its packets produce: the chain's points per path, perf script's text parsed into events, events paired into round trips, and each stage's time."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from prism_xdp.lab.bench.samples import summarize

OPTIONAL_WAKEUP = ("server_wakeup", "client_wakeup")

# Sizes of one 64 B sockperf message on this overlay: the tracepoints' skb->len is the
# frame with its Ethernet header on transmit and without it on receive.
INNER_RX, INNER_TX = 20 + 8 + 64, 14 + 20 + 8 + 64  # 92, 106
OUTER_RX, OUTER_TX = INNER_TX + 20 + 8 + 8, INNER_TX + 50  # 142, 156


@dataclass(frozen=True)
class Point:
    """One place a HIGH packet passes, as a tracepoint event that only it produces."""

    name: str
    event: str  # perf event name, e.g. net:netif_rx
    what: str
    match: tuple[tuple[str, str], ...] = ()  # (field, value) the event's fields must have
    pid_role: str = ""  # "client" / "server": the event's own pid must be that process's
    same_skb_as: str = ""  # the point whose event carried the same skb (skbaddr)


@dataclass(frozen=True)
class Names:
    """The test host's interfaces and the HIGH workload's processes, as the trace names them."""

    remote_if: str
    vxlan_if: str
    uplink_if: str
    host_if: str  # container c0's host-side veth
    cont_if: str  # container c0's interface
    uplink_index: int = 0
    host_index: int = 0
    client_pid: int = 0
    server_pid: int = 0


def chain(path: str, n: Names, high_slot: int | None) -> list[Point]:
    """The points of one round trip in the order a HIGH request and its reply pass them.

    path "kernel": the VXLAN device + bridge; "prism": the daemon, whose XDP redirects to the
    HIGH socket (high_slot) are the host's receive points - except in vanilla (high_slot None),
    where the uplink's single socket takes LOW too and only the container's egress (c0's
    traffic only) can be told apart; "kernel-high": the daemon's kernel HIGH path, whose TC
    programs take the frame from the uplink's receive (as the kernel path's) and move it into
    the container with bpf_redirect_peer, where no further receive tracepoint fires, and send
    the reply from the host-side veth's receive (as the kernel path's).
    """
    d = str
    head = [
        Point("send", "syscalls:sys_enter_sendto", "client sendto()", pid_role="client"),
        Point("remote_vxlan_xmit", "net:net_dev_start_xmit", "remote VXLAN device transmits",
              (("name", n.vxlan_if), ("len", d(INNER_TX)))),
        Point("remote_uplink_xmit", "net:net_dev_start_xmit", "remote uplink transmits (encapsulated)",
              (("name", n.remote_if), ("len", d(OUTER_TX))), same_skb_as="remote_vxlan_xmit"),
    ]
    # With XDP on the host's veths (kernel-high) their NAPI builds a new skb: no same-skb link there.
    if path == "kernel":
        host_in = [Point("host_rx", "net:netif_receive_skb", "host uplink: backlog hands it to the stack",
                         (("name", n.uplink_if), ("len", d(OUTER_RX))), same_skb_as="remote_uplink_xmit")]
    elif path == "kernel-high":
        host_in = [Point("host_rx", "net:netif_receive_skb", "host uplink: XDP passed it, NAPI hands it to TC",
                         (("name", n.uplink_if), ("len", d(OUTER_RX))))]
    elif high_slot is not None:
        host_in = [Point("host_rx", "xdp:xdp_redirect", "host uplink: XDP redirects to the HIGH socket",
                         (("ifindex", d(n.uplink_index)), ("map_index", d(high_slot))))]
    else:
        host_in = []
    cont = [] if path == "kernel-high" else [
        Point("cont_in", "net:netif_rx", "container veth gets it (bridge / daemon's TX kick)",
              (("name", n.cont_if), ("len", d(INNER_RX)))),
        Point("cont_rx", "net:netif_receive_skb", "container: backlog hands it to the stack",
              (("name", n.cont_if), ("len", d(INNER_RX))), same_skb_as="cont_in"),
    ]
    mid = cont + [
        Point("server_recv", "syscalls:sys_exit_recvfrom", "server's recvfrom() returns", pid_role="server"),
        Point("server_send", "syscalls:sys_enter_sendto", "server sendto()", pid_role="server"),
        Point("cont_xmit", "net:net_dev_start_xmit", "container interface transmits the reply",
              (("name", n.cont_if), ("len", d(INNER_TX)))),
    ]
    if path == "kernel":
        host_back = [Point("host_back", "net:netif_receive_skb", "host-side veth: backlog hands it to the bridge",
                           (("name", n.host_if), ("len", d(INNER_RX))), same_skb_as="cont_xmit")]
    elif path == "kernel-high":
        host_back = [Point("host_back", "net:netif_receive_skb", "host-side veth: XDP passed it, NAPI hands it to TC",
                           (("name", n.host_if), ("len", d(INNER_RX))))]
    else:
        host_back = [Point("host_back", "xdp:xdp_redirect", "host-side veth: egress XDP redirects to its socket",
                           (("ifindex", d(n.host_index)), ("map_index", d(high_slot or 0))))]
    tail = [
        Point("remote_in", "net:netif_rx", "remote uplink gets it (bridge+VXLAN / daemon's TX kick)",
              (("name", n.remote_if), ("len", d(OUTER_RX)))),
        Point("remote_rx", "net:netif_receive_skb", "remote VXLAN device hands the decapsulated reply up",
              (("name", n.vxlan_if), ("len", d(INNER_RX))), same_skb_as="remote_in"),
        Point("client_recv", "syscalls:sys_exit_recvfrom", "client's recvfrom() returns", pid_role="client"),
    ]
    return head + host_in + mid + host_back + tail


ALL_POINTS = ("send", "remote_vxlan_xmit", "remote_uplink_xmit", "host_rx", "cont_in", "cont_rx", "server_recv",
              "server_send", "cont_xmit", "host_back", "remote_in", "remote_rx", "client_recv")
SEGMENT_WHAT = {
    "remote_vxlan_xmit": "client's send path to the remote VXLAN device",
    "remote_uplink_xmit": "remote VXLAN encapsulation",
    "host_rx": "uplink veth to the host's first receive (XDP redirect / backlog)",
    "cont_in": "host: decap and delivery to the container's veth (daemon / VXLAN + bridge)",
    "cont_rx": "container's backlog (softirq) until its stack takes the request",
    "server_recv": "socket to the server's recvfrom() return (wakeup, run queue; kernel HIGH path: from the "
                   "uplink's receive, with decap and the container's stack)",
    "server_send": "server application",
    "cont_xmit": "container's send path",
    "host_back": "container veth to the host's first receive (egress XDP / backlog)",
    "remote_in": "host: encap and uplink TX (daemon / bridge + VXLAN) to the remote",
    "remote_rx": "remote's backlog and VXLAN decapsulation",
    "client_recv": "socket to the client's recvfrom() return (wakeup, run queue)",
}



# ---- perf script's text ------------------------------------------------------------

_LINE = re.compile(r"^\s*(?P<tid>\d+)\s+\[(?P<cpu>\d+)\]\s+(?P<s>\d+)\.(?P<ns>\d{9}):\s+(?P<event>[\w:]+):\s?(?P<rest>.*)$")
_FIELD = re.compile(r"(\w+)=(\S+)")
SCRIPT_FIELDS = "tid,cpu,time,event,trace"


@dataclass(frozen=True)
class Event:
    t_ns: int
    cpu: int
    tid: int
    event: str
    fields: dict[str, str] = field(default_factory=dict, compare=False)


def parse_script(text: str) -> list[Event]:
    """Events from `perf script -F tid,cpu,time,event,trace --ns`, in time order."""
    out = []
    for line in text.splitlines():
        m = _LINE.match(line)
        if m:
            out.append(Event(int(m["s"]) * 1_000_000_000 + int(m["ns"]), int(m["cpu"]), int(m["tid"]), m["event"],
                             dict(_FIELD.findall(m["rest"]))))
    out.sort(key=lambda e: e.t_ns)
    return out


def _matches(p: Point, e: Event, n: Names) -> bool:
    if e.event != p.event:
        return False
    if p.pid_role:
        return e.tid == (n.client_pid if p.pid_role == "client" else n.server_pid)
    return all(e.fields.get("dev" if k == "name" else k) == v for k, v in p.match)


@dataclass
class Pairing:
    trips: list[dict[str, int]]  # point name -> time (ns); wakeups when they happened
    started: int = 0  # client sends seen
    incomplete: int = 0  # sends whose chain did not reach the client's receive


def pair(events: Sequence[Event], points: Sequence[Point], n: Names) -> Pairing:
    """Round trips, in time order: each client send opens one, and the next event of each point
    in turn (the same skb where a point says so) fills it; one message is in flight, so a send
    before the chain's end means a point was missed (that round trip is counted incomplete).
    A wakeup of the server (client) between the container's (remote's) receive and its
    recvfrom() return is kept beside the chain: a process that did not sleep has none."""
    res = Pairing([])
    names = [p.name for p in points]
    # A wakeup counts once the packet reached the process's own stack: the point before its recvfrom().
    server_ready, client_ready = names[names.index("server_recv") - 1], names[names.index("client_recv") - 1]
    cur: dict[str, int] | None = None
    skb: dict[str, str] = {}
    k = 0
    for e in events:
        if _matches(points[0], e, n):
            if cur is not None:
                res.incomplete += 1
            res.started += 1
            cur, skb, k = {points[0].name: e.t_ns}, {}, 1
            continue
        if cur is None:
            continue
        if e.event == "sched:sched_wakeup":
            woken = int(e.fields.get("pid", "0"))
            if woken == n.server_pid and server_ready in cur and "server_recv" not in cur:
                cur.setdefault("server_wakeup", e.t_ns)
            elif woken == n.client_pid and client_ready in cur and "client_recv" not in cur:
                cur.setdefault("client_wakeup", e.t_ns)
            continue
        p = points[k]
        if not _matches(p, e, n):
            continue
        if p.same_skb_as and e.fields.get("skbaddr") != skb.get(p.same_skb_as):
            continue
        cur[p.name] = e.t_ns
        skb[p.name] = e.fields.get("skbaddr", "")
        k += 1
        if k == len(points):
            res.trips.append(cur)
            cur = None
    if cur is not None:
        res.incomplete += 1
    return res


def segments(trips: Sequence[dict[str, int]], points: Sequence[Point]) -> dict[str, list[float]]:
    """µs from the previous point of the chain to each point, per round trip; 'span': first to
    last; wakeup->recvfrom() return where the process slept."""
    out: dict[str, list[float]] = {p.name: [] for p in points[1:]}
    out["span"] = []
    for w in OPTIONAL_WAKEUP:
        out[f"{w}_to_run"] = []
    for t in trips:
        for a, b in zip(points, points[1:], strict=False):
            out[b.name].append((t[b.name] - t[a.name]) / 1000)
        out["span"].append((t[points[-1].name] - t[points[0].name]) / 1000)
        for w, done in (("server_wakeup", "server_recv"), ("client_wakeup", "client_recv")):
            if w in t:
                out[f"{w}_to_run"].append((t[done] - t[w]) / 1000)
    return out


def analyse(text: str, points: Sequence[Point], n: Names) -> dict[str, Any]:
    """One capture: per segment count/p50/p99 (µs), the span, and how many round trips paired."""
    events = parse_script(text)
    pairing = pair(events, points, n)
    segs = segments(pairing.trips, points)
    stats = {k: summarize(sorted(v)) if v else None for k, v in segs.items()}
    woke = {w: len(segs[f"{w}_to_run"]) for w in OPTIONAL_WAKEUP}
    meds = [s["p50"] for p in points[1:] if (s := stats[p.name])]
    return {"events": len(events), "sends": pairing.started, "round_trips": len(pairing.trips),
            "incomplete": pairing.incomplete, "chain": [p.name for p in points],
            "points": {p.name: f"{p.event} ({p.what})" for p in points},
            "segments_us": stats, "woke": woke,
            "sum_of_medians_us": round(sum(meds), 2) if pairing.trips else None,
            "sum_of_means_us": round(sum(sum(segs[p.name]) / len(segs[p.name]) for p in points[1:]), 2)
            if pairing.trips else None}
