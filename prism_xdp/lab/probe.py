"""probe.py - a HIGH-flow round-trip probe over the overlay with kernel receive timestamps, and PM QoS for fair latency runs."""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from prism_xdp.lab.packets import Inner, Outer, encapsulate, inner_packet
from prism_xdp.lab.testhost import OverlayHost, link_mac, send_frame, socket_in

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
SEQ = struct.Struct("!Q")


@contextlib.contextmanager
def pm_qos_low_latency() -> Iterator[bool]:
    """Hold /dev/cpu_dma_latency at 0 while inside: idle CPUs stay out of deep sleep.

    On VMs whose idle vCPUs halt, wake-up latency otherwise dominates round
    trips (77 µs vs 13 µs measured here); every configuration of an A/B must
    run with the same setting. Yields whether it could be held.
    """
    try:
        fd = os.open("/dev/cpu_dma_latency", os.O_WRONLY)
    except OSError:
        yield False
        return
    try:
        os.write(fd, struct.pack("i", 0))
        yield True
    finally:
        os.close(fd)


@dataclass
class ProbeResult:
    rtt_us: list[float] = field(default_factory=list)
    sent: int = 0
    lost: int = 0


class RttProbe:
    """Request/response on one HIGH port, from the remote namespace to a container.

    Requests leave the remote side as ready-made VXLAN frames on its uplink
    veth — the path bulk LOW traffic takes too, so they queue with it where
    a scheduler lets them. The container echoes them (sockperf sr, or any
    UDP echo on dport); replies come back through prism_xdp (or the kernel
    path) and the remote's own VXLAN device to a UDP socket. RTT runs from
    just before the send to the kernel's receive timestamp.
    """

    def __init__(self, host: OverlayHost, dport: int, sport: int = 40001, payload: int = 32) -> None:
        up, c = host.uplink, host.containers[0]
        self._tx = socket_in(host.remote_ns, socket.AF_PACKET, socket.SOCK_RAW)
        self._tx.bind((up.remote_if, 0))
        self._rx = socket_in(host.remote_ns, socket.AF_INET, socket.SOCK_DGRAM)
        self._rx.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self._rx.bind((host.remote_overlay_ip, sport))
        inner = Inner(src_mac=link_mac(host.vxlan_if, host.remote_ns), dst_mac=c.mac,
                      src_ip=host.remote_overlay_ip, dst_ip=c.ip)
        outer = Outer(up.remote_mac, up.host_mac, up.remote_ip, up.host_ip, host.vxlan_port)
        self._make = lambda seq: encapsulate(
            outer, inner_packet(inner, sport, dport, payload=SEQ.pack(seq) + bytes(max(0, payload - 8))), host.vni)
        self._seq = 0

    def run(self, count: int, interval: float = 0.001, timeout: float = 0.05) -> ProbeResult:
        """count ping-pongs, one at a time, at most one per interval; a reply later than timeout is lost."""
        out = ProbeResult()
        frames = [self._make(self._seq + i) for i in range(count)]  # built before timing starts
        for frame in frames:
            seq = self._seq
            self._seq += 1
            start = time.clock_gettime_ns(time.CLOCK_REALTIME)
            out.sent += 1
            # A veth whose peer's ring is full pushes back (ENOBUFS): the
            # request waits to get on the wire, and that wait is part of its RTT.
            if not send_frame(self._tx, frame, timeout):
                out.lost += 1
                continue
            rtt = self._await(seq, start, timeout)
            if rtt is None:
                out.lost += 1
            else:
                out.rtt_us.append(rtt / 1e3)
            spent = (time.clock_gettime_ns(time.CLOCK_REALTIME) - start) / 1e9
            if spent < interval:
                time.sleep(interval - spent)
        return out

    def _await(self, seq: int, start: int, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self._rx.settimeout(left)
            try:
                data, anc, _, _ = self._rx.recvmsg(2048, 64)
            except TimeoutError:
                return None
            if len(data) < SEQ.size or SEQ.unpack_from(data)[0] != seq:
                continue  # a late reply to an earlier request
            for level, kind, value in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    sec, nsec = struct.unpack("qq", value[:16])
                    return sec * 1_000_000_000 + nsec - start
            return time.clock_gettime_ns(time.CLOCK_REALTIME) - start

    def close(self) -> None:
        self._tx.close()
        self._rx.close()
