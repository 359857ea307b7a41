"""inject.py - `prism-xdp inject`: VXLAN-encapsulated HIGH and LOW UDP flows built with scapy, sent from a topology's remote namespace at a bounded rate and count, or written to a pcap file."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import wrpcap

from prism_xdp.dataplane.errors import ConfigError
from prism_xdp.lab.packets import Outer, encapsulate
from prism_xdp.lab.testhost import OverlayHost, link_mac, send_frame, socket_in

MAX_RATE = 2_000_000  # pps: scapy-built frames sent from Python do not go faster anyway


@dataclass(frozen=True)
class Flow:
    label: str  # "high" or "low"
    dport: int
    sport: int = 40000
    container: int = 0


def build(host: OverlayHost, flow: Flow, size: int) -> bytes:
    """One VXLAN packet from the remote VTEP carrying UDP to a container; size = inner frame bytes."""
    if not 0 <= flow.container < len(host.containers):
        raise ConfigError(f"container: {flow.container} is not one of 0..{len(host.containers) - 1}")
    c, up = host.containers[flow.container], host.uplink
    inner = (Ether(src=link_mac(host.vxlan_if, host.remote_ns), dst=c.mac)
             / IP(src=host.remote_overlay_ip, dst=c.ip) / UDP(sport=flow.sport, dport=flow.dport))
    pad = max(0, size - len(inner))
    frame = inner / Raw(bytes(pad))
    return encapsulate(Outer(up.remote_mac, up.host_mac, up.remote_ip, up.host_ip, host.vxlan_port), frame, host.vni)


def check(count: int, rate: float, size: int) -> None:
    if not 1 <= count <= 100_000_000:
        raise ConfigError(f"count: must be in 1..100000000, not {count}")
    if not 0 < rate <= MAX_RATE:
        raise ConfigError(f"rate: must be in (0, {MAX_RATE}] packets per second, not {rate}")
    if not 60 <= size <= 1450:
        raise ConfigError(f"size: inner frame bytes must be in 60..1450 (it must fit the uplink after encapsulation), not {size}")


def send(host: OverlayHost, flows: list[Flow], count: int, rate: float, size: int) -> dict[str, object]:
    """count packets per flow, flows interleaved, at most rate packets per second in total."""
    check(count, rate, size)
    frames = [build(host, f, size) for f in flows]
    sock = socket_in(host.remote_ns, socket.AF_PACKET, socket.SOCK_RAW)
    sock.bind((host.uplink.remote_if, 0))
    sent = dict.fromkeys((f.label + ":" + str(f.dport) for f in flows), 0)
    interval = 1.0 / rate
    start = time.monotonic()
    total = 0
    try:
        for _ in range(count):
            for f, frame in zip(flows, frames, strict=True):
                if not send_frame(sock, frame, timeout=5.0):
                    raise OSError(105, f"{host.uplink.remote_if} refused frames for 5 s")
                sent[f.label + ":" + str(f.dport)] += 1
                total += 1
                ahead = start + total * interval - time.monotonic()
                if ahead > 0.001:
                    time.sleep(ahead)
    finally:
        sock.close()
    seconds = time.monotonic() - start
    return {"flows": sent, "packets": total, "bytes_per_packet": len(frames[0]), "seconds": round(seconds, 3),
            "rate_pps": round(total / seconds) if seconds else None}


def write_pcap(path: str, host: OverlayHost, flows: list[Flow], count: int, size: int) -> dict[str, object]:
    check(count, 1, size)
    frames = [build(host, f, size) for f in flows]
    packets = [Ether(frames[i % len(frames)]) for i in range(count * len(frames))]
    wrpcap(path, packets)
    return {"pcap": path, "packets": len(packets), "flows": [f"{f.label}:{f.dport}" for f in flows]}
