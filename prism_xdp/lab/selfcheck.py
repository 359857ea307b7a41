"""selfcheck.py - the end-to-end self-check: classifier on a throwaway veth, HIGH/LOW sockets on one queue, traffic from scapy and a kernel VXLAN device, a report."""

from __future__ import annotations

import socket
import sys
import time
from dataclasses import dataclass, field
from typing import TextIO

from prism_xdp.dataplane import xdp
from prism_xdp.dataplane.native import PRISM_CLASS_HIGH, PRISM_CLASS_LOW
from prism_xdp.dataplane.steer import Steering
from prism_xdp.dataplane.umem import Umem
from prism_xdp.dataplane.xsk import XskSocket
from prism_xdp.lab.packets import Inner, malformed_packets, vxlan_packet
from prism_xdp.lab.rx import drain
from prism_xdp.lab.testhost import Testbed, Uplink, socket_in

PREFIX = "pxs"  # what the self-check creates starts with this
HIGH_PORT = 11211  # memcached: the paper's latency-sensitive example


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)

    def add(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append(Check(name, ok, detail))

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def print(self, out: TextIO) -> None:
        width = max(len(c.name) for c in self.checks)
        for c in self.checks:
            print(f"  [{'ok' if c.ok else 'FAIL':>4}] {c.name:<{width}}  {c.detail}", file=out)


def _ours(frames: list[bytes], marker: bytes) -> int:
    return sum(1 for f in frames if f.endswith(marker))


def run(count: int = 200, out: TextIO = sys.stdout) -> bool:
    """Build, exercise and remove a small test host; print what was seen."""
    report = Report()
    with Testbed() as tb:
        up = Uplink.create(tb, PREFIX)
        print(f"test host: {up.host_if} (root ns) <-> {up.remote_if} in netns {up.remote_ns}",
              file=out)
        with Umem() as umem, Steering() as steer:
            steer.attach(up.host_if)
            att = xdp.attached(up.host_if)
            report.add("attach", att is not None and att.ours,
                       f"{att.name} id {att.prog_id} on {up.host_if}" if att else "nothing")
            low = XskSocket(umem, up.host_if, 0)
            high = XskSocket(umem, up.host_if, 0)
            tb.defer(low.close)
            tb.defer(high.close)
            steer.add_socket(low, PRISM_CLASS_LOW)
            steer.add_socket(high, PRISM_CLASS_HIGH)
            steer.set_port(HIGH_PORT)
            low.fill(2048)
            mode = "zero-copy" if low.zerocopy else "copy"

            # 1. scapy-built VXLAN, every third packet to the priority port
            frames = [vxlan_packet(up.outer, 42, 40000 + i % 1000,
                                   HIGH_PORT if i % 3 == 0 else 8080, payload=b"scapy")
                      for i in range(count)]
            want_high = sum(1 for i in range(count) if i % 3 == 0)
            t0 = time.monotonic()
            up.send(*frames)
            got_high = _ours(drain(high, want_high), b"scapy")
            got_low = _ours(drain(low, count - want_high), b"scapy")
            report.add("scapy VXLAN", (got_high, got_low) == (want_high, count - want_high),
                       f"HIGH {got_high}/{want_high}, LOW {got_low}/{count - want_high} "
                       f"({mode} mode, {time.monotonic() - t0:.2f} s)")

            # 2. a real kernel VXLAN device on the remote side
            vx = tb.name(PREFIX, "v")
            tb.add_vxlan(vx, 42, up.remote_ip, up.host_ip, up.remote_if, up.remote_ns)
            inner = Inner()
            tb.add_addr(vx, inner.src_ip, 24, up.remote_ns)
            tb.add_neigh(vx, inner.dst_ip, inner.dst_mac, up.remote_ns)
            s = socket_in(up.remote_ns, socket.AF_INET, socket.SOCK_DGRAM)
            for port in (HIGH_PORT, 9000, 9001, HIGH_PORT):
                s.sendto(b"kernel", (inner.dst_ip, port))
            s.close()
            kh, kl = _ours(drain(high, 2), b"kernel"), _ours(drain(low, 2), b"kernel")
            report.add("kernel VXLAN", (kh, kl) == (2, 2), f"HIGH {kh}/2, LOW {kl}/2")

            # 3. malformed frames: counted, dropped, never on a socket
            bad = malformed_packets(up.outer)
            before = steer.counters().malformed_total
            up.send(*bad.values())
            leaked = len(drain(high, 0, 0.2)) + _ours(drain(low, 0, 0.2), b"x" * 16)
            counted = steer.counters().malformed_total - before
            report.add("malformed", counted == len(bad) and leaked == 0,
                       f"{counted}/{len(bad)} counted and dropped, {leaked} reached a socket")

            c = steer.counters()
            stats = low.statistics()
            acct = umem.account()
            report.add("counters", c.steered[PRISM_CLASS_HIGH] >= want_high + 2,
                       f"steered HIGH {c.steered[PRISM_CLASS_HIGH]}, LOW {c.steered[0]}, "
                       f"passed {c.passed}, malformed {c.malformed_total}")
            report.add("XDP_STATISTICS", stats["rx_dropped"] == 0,
                       ", ".join(f"{k} {v}" for k, v in stats.items() if v) or "all zero")
            report.add("frame accounting", acct.balanced,
                       f"{acct.frames} frames: pool {acct.pool}, kernel {acct.kernel_rx}, "
                       f"in flight {acct.user + acct.kernel_tx}")
            high.close()
            low.close()
        left = xdp.attached(up.host_if)
        report.add("detach", left is None, "nothing attached after close" if left is None
                   else f"{left.name} still attached")
    report.print(out)
    print("self-check " + ("passed" if report.ok else "FAILED"), file=out)
    return report.ok
