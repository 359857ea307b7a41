"""test_hold.py - the hold (prism_deliver.c): LOW TCP segments toward a packet socket wait across deliver calls and leave as one GSO packet; when they go (a packet's worth, PSH, a frame that cannot wait, idle, age, the hold turned off), in order, and that HIGH and anything else never wait. A socketpair stands in for the packet socket, as in test_gro.py."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from test_gro import (
    C_MAC,
    GSO_NONE,
    GSO_TCPV4,
    MSS,
    REMOTE_MAC,
    Port,
    accounted_umem,
    payload_of,
    seg,
    stream,
)

from prism_xdp.dataplane import native
from prism_xdp.dataplane.batch import Batch
from prism_xdp.dataplane.errors import PrismError
from prism_xdp.dataplane.umem import Umem


@pytest.fixture
def umem() -> Iterator[Umem]:
    with accounted_umem(512) as u:  # room for PRISM_HOLD_TOTAL held frames and more
        yield u


def held_port(umem: Umem, gro_segments: int = 64, hold: int = 64) -> Port:
    p = Port(umem, gro_segments)
    p.ov.set_hold(hold)
    return p


@pytest.fixture
def port(umem: Umem) -> Iterator[Port]:
    p = held_port(umem)
    yield p
    p.ov.set_hold(0)  # what is still held goes: the umem fixture checks no frame stays out
    p.close()


def deliver_in_cuts(port: Port, frames: list[bytes], cut: int = 4) -> None:
    for i in range(0, len(frames), cut):
        port.deliver(frames[i:i + cut])


def counters(port: Port) -> dict[str, int]:
    return {k: v for k, v in port.ov.counters().items() if k.startswith("hold_")}


def test_cut_batches_wait_and_leave_as_one_packet_at_psh(port: Port) -> None:
    frames = stream(11) + [seg(1000 + 11 * MSS, b"p" * MSS, flags="PA")]
    deliver_in_cuts(port, frames[:8])
    assert port.messages() == [], "8 segments in two cut batches must wait for more"
    deliver_in_cuts(port, frames[8:])
    (m,) = port.messages()
    assert m.gso_type == GSO_TCPV4 and Ether(m.frame)[TCP].flags == "PA"
    assert payload_of(m.frame) == b"".join(payload_of(f) for f in frames)
    c = counters(port)
    assert (c["hold_frames"], c["hold_flush_psh"], c["hold_flush_full"]) == (12, 1, 0)
    assert port.ov.counters()["deliver_out"] == 12


def test_a_gso_packets_worth_leaves_at_once(umem: Umem) -> None:
    p = held_port(umem, gro_segments=8)
    try:
        deliver_in_cuts(p, stream(8))
        (m,) = p.messages()
        assert len(payload_of(m.frame)) == 8 * MSS
        deliver_in_cuts(p, stream(6, start=1000 + 8 * MSS), cut=3)
        assert p.messages() == []
        # 6 held + 3 would pass 8: the 6 leave first, the 3 wait.
        p.deliver(stream(3, start=1000 + 14 * MSS))
        assert [len(payload_of(m.frame)) for m in p.messages()] == [6 * MSS]
        assert counters(p)["hold_flush_full"] == 2
    finally:
        p.ov.set_hold(0)
        assert [len(payload_of(m.frame)) for m in p.messages()] == [3 * MSS]
        p.close()


def test_a_frame_that_cannot_wait_sends_the_held_first_and_order_holds(port: Port) -> None:
    udp = bytes(Ether(src=REMOTE_MAC, dst=C_MAC) / IP(src="10.42.0.9", dst="10.42.0.2") / UDP(sport=1, dport=2)
                / Raw(b"u"))
    deliver_in_cuts(port, stream(8))
    port.deliver([udp])
    msgs = port.messages()
    assert [len(payload_of(m.frame)) for m in msgs[:1]] == [8 * MSS] and msgs[1].frame == udp
    assert counters(port)["hold_flush_other"] == 1


@pytest.mark.parametrize("flags", ["FA", "SA"])
def test_control_segments_do_not_wait(port: Port, flags: str) -> None:
    deliver_in_cuts(port, stream(4))
    port.deliver([seg(1000 + 4 * MSS, b"", flags=flags)])
    msgs = port.messages()
    assert [len(payload_of(m.frame)) for m in msgs] == [4 * MSS, 0]
    assert msgs[1].gso_type == GSO_NONE


def test_high_never_waits_nor_makes_low_go(port: Port) -> None:
    deliver_in_cuts(port, stream(4))
    frames = stream(3, start=900_000, sport=7000)
    b = Batch(len(frames))
    for frame in frames:
        i = b.n
        assert b.alloc(port.umem, 1, len(frame)) == 1
        b.fill_with(port.umem, frame, i, 1)
        b.ptr.port[i] = port.port
    assert port.ov.deliver(native.PRISM_CLASS_HIGH, b) == 3
    (m,) = port.messages()
    assert Ether(m.frame)[TCP].sport == 7000 and len(payload_of(m.frame)) == 3 * MSS
    assert counters(port)["hold_frames"] == 4, "the LOW segments still wait"


def test_idle_and_age_send_what_waits(port: Port) -> None:
    deliver_in_cuts(port, stream(4))
    assert port.ov.flush_held(older_than_ns=10_000_000_000) == 0 and port.messages() == []
    assert port.ov.flush_held() == 4  # the worker found nothing to do
    assert len(port.messages()) == 1
    deliver_in_cuts(port, stream(4, start=1000 + 4 * MSS))
    time.sleep(native.PRISM_HOLD_AGE_NS / 1e9 * 2)
    port.ov.service(0, 0)  # every service sends segments older than PRISM_HOLD_AGE_NS
    assert len(port.messages()) == 1
    c = counters(port)
    assert (c["hold_flush_idle"], c["hold_flush_age"]) == (1, 1)


def test_the_hold_size_caps_a_packet_and_a_smaller_one_sends_what_waits(umem: Umem) -> None:
    p = held_port(umem, gro_segments=64, hold=8)
    try:
        deliver_in_cuts(p, stream(8))
        assert [len(payload_of(m.frame)) for m in p.messages()] == [8 * MSS]
        deliver_in_cuts(p, stream(4, start=1000 + 8 * MSS))
        p.ov.set_hold(16)
        assert p.messages() == [], "a larger size keeps what waits"
        p.ov.set_hold(2)
        assert [len(payload_of(m.frame)) for m in p.messages()] == [4 * MSS]
        with pytest.raises(PrismError, match="hold 65 segments"):
            p.ov.set_hold(65)
    finally:
        p.ov.set_hold(0)
        p.close()


def test_off_sends_what_waits_and_then_nothing_waits(port: Port) -> None:
    deliver_in_cuts(port, stream(4))
    port.ov.set_hold(0)
    assert len(port.messages()) == 1
    port.deliver(stream(2, start=1000 + 4 * MSS))
    assert len(port.messages()) == 1, "with the hold off a batch leaves at once"
    assert counters(port)["hold_frames"] == 4


def test_many_ports_never_hold_more_than_the_total(umem: Umem) -> None:
    p = held_port(umem)
    more = []
    try:
        ports = [p.port]
        for k in range(4):  # 5 ports x 60 segments = 300 > PRISM_HOLD_TOTAL
            tx, rx = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
            more += [tx, rx]
            ports.append(p.ov.add_container([], 42, f"02:00:00:00:c2:0{k}", f"c{k + 2}"))
            p.ov.set_packet_delivery(ports[-1], tx.fileno(), 64)
        flows = [stream(60, sport=s) for s in range(len(ports))]
        for i in range(0, 60, 4):
            for port, f in zip(ports, flows, strict=True):
                b = Batch(4)
                for frame in f[i:i + 4]:
                    j = b.n
                    assert b.alloc(umem, 1, len(frame)) == 1
                    b.fill_with(umem, frame, j, 1)
                    b.ptr.port[j] = port
                p.ov.deliver(native.PRISM_CLASS_LOW, b)
        c = counters(p)
        assert c["hold_flush_other"] >= 1, "past PRISM_HOLD_TOTAL frames, what waits must go"
        assert c["hold_frames"] == 300
        p.ov.set_hold(0)
        assert b"".join(payload_of(m.frame) for m in p.messages()) == b"".join(payload_of(f) for f in flows[0])
    finally:
        p.ov.set_hold(0)
        p.close()
        for s in more:
            s.close()
