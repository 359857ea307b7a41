"""test_gro.py - delivery through a packet socket (prism_gro.c) on frames in plain memory: which TCP segments merge into one GSO packet, the headers and virtio-net header it gets, what goes alone and untouched, order within a flow, refused messages and frame accounting. A socketpair stands in for the packet socket."""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from prism_xdp.dataplane.batch import Batch
from prism_xdp.dataplane.errors import ConfigError
from prism_xdp.dataplane.overlay import Overlay
from prism_xdp.dataplane.pktsock import Delivery
from prism_xdp.dataplane.umem import Umem, UmemParams

C_MAC, REMOTE_MAC = "02:00:00:00:c1:01", "02:00:00:00:ee:01"
MSS = 1400
VNET = struct.Struct("<BBHHHH")  # struct virtio_net_hdr
F_NEEDS_CSUM, GSO_NONE, GSO_TCPV4 = 1, 0, 1


@dataclass
class Msg:
    flags: int
    gso_type: int
    hdr_len: int
    gso_size: int
    csum_start: int
    csum_offset: int
    frame: bytes


class Port:
    """An overlay with one container port whose 'packet socket' is one end of a datagram socketpair."""

    def __init__(self, umem: Umem, gro_segments: int = 64) -> None:
        self.umem = umem
        self.ov = Overlay(umem, 4789, "02:00:00:00:00:01", "10.1.0.1", 1500)
        self.ov.set_uplink([])
        self.port = self.ov.add_container([], 42, C_MAC, "c1")
        self.tx, self.rx = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.rx.setblocking(False)
        self.ov.set_packet_delivery(self.port, self.tx.fileno(), gro_segments)

    def deliver(self, frames: list[bytes], partial: bool = False) -> int:
        """Deliver frames (with a checksum request each when partial, as the decap stage makes)."""
        b = Batch(len(frames) or 1)
        for frame in frames:
            i = b.n
            assert b.alloc(self.umem, 1, len(frame)) == 1
            b.fill_with(self.umem, frame, i, 1)
            b.ptr.port[i] = self.port
            b.ptr.csum[i] = (34 << 16 | 16) if partial else 0
        return self.ov.deliver(0, b)

    def messages(self) -> list[Msg]:
        out = []
        while True:
            try:
                data = self.rx.recv(1 << 17)
            except BlockingIOError:
                return out
            out.append(Msg(*VNET.unpack_from(data), frame=data[VNET.size:]))

    def close(self) -> None:
        self.ov.close()
        self.tx.close()
        self.rx.close()


@contextlib.contextmanager
def accounted_umem(frames: int) -> Iterator[Umem]:
    """A UMEM in plain memory that must have every frame back in its pool at the end."""
    with Umem(UmemParams(frame_count=frames, frame_size=2048), register=False) as u:
        yield u
        account = u.account()
        assert account.pool == account.frames and account.user == 0, "delivery leaked frames"


@pytest.fixture
def umem() -> Iterator[Umem]:
    with accounted_umem(256) as u:
        yield u


@pytest.fixture
def port(umem: Umem) -> Iterator[Port]:
    p = Port(umem)
    yield p
    p.close()


def seg(seq: int, payload: bytes, flags: str = "A", sport: int = 40000, ts: int = 7, corrupt: bool = False) -> bytes:
    pkt = (Ether(src=REMOTE_MAC, dst=C_MAC) / IP(src="10.42.0.9", dst="10.42.0.2", flags="DF", id=seq & 0xffff)
           / TCP(sport=sport, dport=5201, seq=seq, ack=99, flags=flags, window=512,
                 options=[("NOP", None), ("NOP", None), ("Timestamp", (ts, 5))]) / Raw(payload))
    raw = bytearray(bytes(pkt))
    if corrupt:
        raw[-1] ^= 0xff
    return bytes(raw)


def stream(n: int, start: int = 1000, size: int = MSS, **kw: object) -> list[bytes]:
    return [seg(start + i * size, bytes([65 + i % 26]) * size, **kw) for i in range(n)]  # type: ignore[arg-type]


def payload_of(frame: bytes) -> bytes:
    return bytes(Ether(frame)[TCP].payload)


def test_consecutive_segments_become_one_gso_packet_with_right_headers(port: Port) -> None:
    frames = stream(10)
    assert port.deliver(frames) == 10
    (m,) = port.messages()
    assert (m.gso_type, m.gso_size, m.flags) == (GSO_TCPV4, MSS, F_NEEDS_CSUM)
    assert (m.csum_start, m.csum_offset, m.hdr_len) == (34, 16, 34 + 32)
    pkt = Ether(m.frame)
    assert pkt[IP].len == 20 + 32 + 10 * MSS and len(m.frame) == 14 + pkt[IP].len
    ip = bytes(pkt[IP])[:20]
    assert sum(struct.unpack("!10H", ip)) % 0xffff == 0, "IPv4 header checksum must hold"
    assert payload_of(m.frame) == b"".join(payload_of(f) for f in frames)
    assert pkt[TCP].seq == 1000 and pkt[TCP].flags == "A"
    counters = port.ov.counters()
    assert (counters["gro_packets"], counters["gro_segments"], counters["deliver_out"]) == (1, 10, 10)
    assert port.ov.port_counters()["c1"]["tx_packets"] == 10


def test_the_merged_checksum_field_holds_the_seed_for_the_new_length(port: Port) -> None:
    port.deliver(stream(3))
    (m,) = port.messages()
    pkt = Ether(m.frame)
    l4len = pkt[IP].len - 20
    seed = (0x0a2a0009 >> 16) + (0x0a2a0009 & 0xffff) + (0x0a2a0002 >> 16) + (0x0a2a0002 & 0xffff) + 6 + l4len
    while seed >> 16:
        seed = (seed & 0xffff) + (seed >> 16)
    assert pkt[TCP].chksum == seed


def test_psh_joins_and_ends_the_group_a_short_segment_too(port: Port) -> None:
    frames = stream(3) + [seg(1000 + 3 * MSS, b"p" * MSS, flags="PA")] + stream(2, start=1000 + 4 * MSS)
    frames += [seg(1000 + 6 * MSS, b"s" * 100)] + stream(1, start=1000 + 6 * MSS + 100)
    port.deliver(frames)
    msgs = port.messages()
    assert [len(payload_of(m.frame)) for m in msgs] == [4 * MSS, 2 * MSS + 100, MSS]
    assert Ether(msgs[0].frame)[TCP].flags == "PA"
    assert msgs[2].gso_type == GSO_NONE


def test_a_gap_or_other_options_start_a_new_packet(port: Port) -> None:
    frames = stream(2) + stream(2, start=1000 + 5 * MSS) + [seg(1000 + 7 * MSS, b"t" * MSS, ts=8)]
    port.deliver(frames)
    assert [len(payload_of(m.frame)) for m in port.messages()] == [2 * MSS, 2 * MSS, MSS]


def test_interleaved_flows_each_merge_and_keep_their_order(port: Port) -> None:
    a, b = stream(4, sport=1), stream(4, start=50_000, sport=2)
    port.deliver([f for pair in zip(a, b, strict=True) for f in pair])
    msgs = port.messages()
    assert [(Ether(m.frame)[TCP].sport, len(payload_of(m.frame))) for m in msgs] == [(1, 4 * MSS), (2, 4 * MSS)]


def test_a_corrupted_segment_goes_alone_untouched_and_order_holds(port: Port) -> None:
    frames = stream(6)
    bad = seg(1000 + 2 * MSS, bytes([67]) * MSS, corrupt=True)
    frames[2] = bad
    port.deliver(frames)
    msgs = port.messages()
    assert [len(payload_of(m.frame)) for m in msgs] == [2 * MSS, MSS, 3 * MSS]
    assert msgs[1].frame == bad and (msgs[1].flags, msgs[1].gso_type) == (0, GSO_NONE)
    assert [Ether(m.frame)[TCP].seq for m in msgs] == [1000, 1000 + 2 * MSS, 1000 + 3 * MSS]


def test_partial_segments_merge_without_being_summed(port: Port) -> None:
    frames = [bytearray(f) for f in stream(4)]
    for f in frames:
        f[50:52] = b"\x12\x34"  # not a valid sum: partial ones are never verified
    port.deliver([bytes(f) for f in frames], partial=True)
    (m,) = port.messages()
    assert m.gso_type == GSO_TCPV4 and len(payload_of(m.frame)) == 4 * MSS


@pytest.mark.parametrize("flags", ["FA", "SA", "RA", "UA"])
def test_control_flags_end_a_group_and_go_alone(port: Port, flags: str) -> None:
    frames = stream(2) + [seg(1000 + 2 * MSS, b"f" * 10, flags=flags)] + stream(2, start=1000 + 2 * MSS + 10)
    port.deliver(frames)
    msgs = port.messages()
    assert [len(payload_of(m.frame)) for m in msgs] == [2 * MSS, 10, 2 * MSS]
    assert msgs[1].gso_type == GSO_NONE


def test_other_traffic_passes_alone_and_a_flow_goes_on_merging_around_it(port: Port) -> None:
    udp = bytes(Ether(src=REMOTE_MAC, dst=C_MAC) / IP(src="10.42.0.9", dst="10.42.0.2") / UDP(sport=1, dport=2) / Raw(b"u"))
    frames = stream(4)
    port.deliver(frames[:2] + [udp] + frames[2:])
    msgs = port.messages()
    assert len(msgs) == 2 and len(payload_of(msgs[0].frame)) == 4 * MSS
    assert msgs[1].frame == udp and msgs[1].flags == 0


def test_a_packet_never_exceeds_64k(port: Port) -> None:
    port.deliver(stream(60))
    sizes = [Ether(m.frame)[IP].len for m in port.messages()]
    assert sum(s - 52 for s in sizes) == 60 * MSS and all(s <= 65535 for s in sizes) and len(sizes) == 2


def test_gro_segments_caps_a_packet_and_one_means_no_merging(umem: Umem) -> None:
    for cap, expect in ((4, [4, 4, 2]), (1, [1] * 10)):
        p = Port(umem, gro_segments=cap)
        try:
            p.deliver(stream(10), partial=True)
            msgs = p.messages()
            assert [len(payload_of(m.frame)) // MSS for m in msgs] == expect
            if cap == 1:  # a checksum request still reaches the kernel
                assert {(m.flags, m.csum_start, m.csum_offset) for m in msgs} == {(F_NEEDS_CSUM, 34, 16)}
        finally:
            p.close()


def test_a_message_the_socket_refuses_is_counted_and_its_frames_return(port: Port) -> None:
    port.ov.set_packet_delivery(port.port, port.tx.fileno(), 1)
    port.tx.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1)  # the minimum: a few messages
    sent = port.deliver([seg(1000 + i, b"x") for i in range(200)])
    received = len(port.messages())
    counters = port.ov.counters()
    assert 0 < received == sent < 200
    assert counters["drop_tx_full"] == 200 - sent and counters["deliver_out"] == sent


def test_delivery_settings_are_checked_by_name() -> None:
    with pytest.raises(ConfigError, match="forwarding.delivery"):
        Delivery("tap").check()
    with pytest.raises(ConfigError, match="forwarding.gro_segments"):
        Delivery("packet", 65).check()
