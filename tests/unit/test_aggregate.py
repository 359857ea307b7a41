"""test_aggregate.py - multi-buffer packets from the uplink (generic-mode XDP keeps a sender's 64 KB GSO packet whole) in chained frames, on frames in plain memory: decap takes the checksum from the headers (the seed of a GSO packet), delivery sends one GSO packet made of every part, byte for byte, and everything that cannot be one is dropped and counted; every frame of a chain goes back to the pool. A socketpair stands in for the packet socket."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from prism_xdp.dataplane.batch import Batch
from prism_xdp.dataplane.errors import PrismError
from prism_xdp.dataplane.overlay import Overlay
from prism_xdp.dataplane.umem import Umem, UmemParams
from prism_xdp.lab.packets import Outer, encapsulate

LOCAL_MAC, LOCAL_IP = "02:00:00:00:00:01", "10.1.0.1"
VTEP_MAC, VTEP_IP = "02:00:00:00:00:02", "10.1.0.2"
C1_MAC, REMOTE_MAC = "02:00:00:00:c1:01", "02:00:00:00:ee:01"
OUTER = Outer(VTEP_MAC, LOCAL_MAC, VTEP_IP, LOCAL_IP)
VNET = struct.Struct("<BBHHHH")  # struct virtio_net_hdr
F_NEEDS_CSUM, GSO_TCPV4 = 1, 1
PAYLOAD = 30000
TCP_AT = 14 + 20  # the inner TCP header, from the inner frame's first byte


def tcp_frame(csum: str, payload: int = PAYLOAD, dst: str = C1_MAC) -> bytes:
    """An inner TCP/IPv4 frame with timestamps (a 32-byte TCP header) and a checksum field
    holding the pseudo-header seed, the full sum, or a wrong full sum."""
    seg = (Ether(src=REMOTE_MAC, dst=dst) / IP(src="10.42.0.100", dst="10.42.0.2", flags="DF")
           / TCP(sport=40000, dport=5201, flags="A", seq=1000, ack=1,
                 options=[("NOP", None), ("NOP", None), ("Timestamp", (1, 2))])
           / Raw(bytes(range(256)) * (payload // 256) + bytes(payload % 256)))
    frame = bytearray(bytes(seg))
    if csum == "seed":
        ip = frame[14:34]
        total = sum(struct.unpack("!4H", ip[12:20])) + 6 + len(frame) - TCP_AT
        while total >> 16:
            total = (total & 0xFFFF) + (total >> 16)
        struct.pack_into("!H", frame, TCP_AT + 16, total)
    elif csum == "wrong":
        frame[TCP_AT + 16] ^= 0x5A
    return bytes(frame)


class Uplink:
    """An overlay whose one container (VNI 42) takes packets through a 'packet socket'."""

    def __init__(self, umem: Umem) -> None:
        self.umem = umem
        self.ov = Overlay(umem, 4789, LOCAL_MAC, LOCAL_IP, 1500)
        self.ov.set_uplink([])
        self.port = self.ov.add_container([], 42, C1_MAC, "c1")
        self.ov.add_vtep(42, VTEP_IP, VTEP_MAC)
        self.tx, self.rx = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.rx.setblocking(False)
        # A datagram this long must fit the socketpair's buffers.
        self.tx.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        self.rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.ov.set_packet_delivery(self.port, self.tx.fileno(), 64)

    def receive(self, *inner: bytes) -> list[tuple[tuple[int, ...], bytes]]:
        """Decap and deliver the inner frames, encapsulated (longer than a frame: chained,
        as RX leaves them); returns (virtio-net header, frame) of each message the
        container got."""
        b, out = Batch(8), Batch(8)
        room = self.umem.params.frame_size - 256  # what the kernel leaves for a packet's part
        for frame in inner:
            packet = encapsulate(OUTER, frame, 42)
            if len(packet) > room:
                assert b.alloc_multibuf(self.umem, packet) == 1
            else:
                assert b.alloc(self.umem, 1, len(packet)) == 1
                b.fill_with(self.umem, packet, b.n - 1, 1)
        self.ov.decap(b, out)
        self.ov.deliver(0, out)
        got = []
        while True:
            try:
                data = self.rx.recv(1 << 17)
            except BlockingIOError:
                return got
            got.append((VNET.unpack_from(data), data[VNET.size:]))

    def close(self) -> None:
        self.ov.close()
        self.tx.close()
        self.rx.close()


@pytest.fixture
def up() -> Iterator[Uplink]:
    with Umem(UmemParams(frame_count=256, frame_size=2048, multi_buffer=True), register=False) as umem:
        u = Uplink(umem)
        yield u
        u.close()
        account = umem.account()
        assert account.balanced and account.user == 0
        assert umem.free_frames == 256


def test_an_aggregate_reaches_its_container_as_one_gso_packet_of_all_its_parts(up: Uplink) -> None:
    frame = tcp_frame("seed")
    [(vh, got)] = up.receive(frame)
    flags, gso_type, hdr_len, gso_size, csum_start, csum_offset = vh
    assert (flags, gso_type, csum_start, csum_offset) == (F_NEEDS_CSUM, GSO_TCPV4, TCP_AT, 16)
    # The segment size the sender had on this path: 1500 - 50 of tunnel, IPv4 and TCP headers.
    assert hdr_len == TCP_AT + 32 and gso_size == 1500 - 50 - 20 - 32
    assert got == frame  # 17 parts, in order, nothing lost at their seams
    c = up.ov.counters()
    assert c["agg_in"] == 1 and c["drop_aggregate"] == 0


def test_an_aggregate_that_fits_one_frame_is_still_one_gso_packet() -> None:
    """With 4 KB frames, a GSO packet of two segments comes in one frame: longer than a wire
    frame, it is an aggregate all the same (a packet socket refuses it without GSO)."""
    with Umem(UmemParams(frame_count=64, frame_size=4096, multi_buffer=True), register=False) as umem:
        u = Uplink(umem)
        try:
            frame = tcp_frame("seed", payload=2 * 1398)
            [(vh, got)] = u.receive(frame)
            assert vh[1] == GSO_TCPV4 and got == frame and u.ov.counters()["agg_in"] == 1
            small = tcp_frame("full", payload=1398)  # a wire frame: as it came
            [(vh, got)] = u.receive(small)
            assert vh[1] == 0 and got == small and u.ov.counters()["agg_in"] == 1
        finally:
            u.close()
        assert umem.account().balanced and umem.free_frames == 64


def test_what_cannot_be_one_gso_packet_is_dropped_and_counted(up: Uplink) -> None:
    udp = bytes(Ether(src=REMOTE_MAC, dst=C1_MAC) / IP(src="10.42.0.100", dst="10.42.0.2")
                / UDP(sport=1, dport=2) / Raw(bytes(20000)))
    unknown = tcp_frame("seed", dst="02:00:00:00:c9:09")  # would be flooded
    # A full sum, right or wrong, is no GSO packet's: GSO senders and GRO leave the seed.
    got = up.receive(tcp_frame("wrong"), tcp_frame("full"), udp, unknown)
    assert got == []
    c = up.ov.counters()
    assert c["drop_aggregate"] == 4 and c["agg_in"] == 0 and c["decap_out"] == 0


def test_a_frame_between_aggregates_keeps_its_place(up: Uplink) -> None:
    small = tcp_frame("full", payload=100)
    got = up.receive(tcp_frame("seed"), small, tcp_frame("seed"))
    assert [len(frame) for _, frame in got] == [len(tcp_frame("seed")), len(small), len(tcp_frame("seed"))]
    assert [vh[1] for vh, _ in got] == [GSO_TCPV4, 0, GSO_TCPV4]


def test_a_chain_holds_its_frames_until_freed_and_reads_back_whole() -> None:
    with Umem(UmemParams(frame_count=8, frame_size=2048, multi_buffer=True), register=False) as umem:
        b = Batch(4)
        data = bytes(i % 251 for i in range(5000))
        assert b.alloc_multibuf(umem, data) == 1  # 3 frames of 1792 B
        assert umem.free_frames == 5 and umem.account().user == 3 and umem.account().balanced
        addr, n = b.descriptors()[0]
        assert n == 5000 and umem.read(addr, n) == data and umem.read(addr + 10, 100) == data[10:110]
        with pytest.raises(PrismError):
            umem.read(addr, 5001)  # past the packet's last part
        assert b.alloc_multibuf(umem, bytes(10000)) == 0  # 6 frames: the pool has 5
        b.drop_all(umem)
        assert umem.free_frames == 8 and umem.account().user == 0 and umem.account().balanced
    with Umem(UmemParams(frame_count=8, frame_size=2048), register=False) as umem, pytest.raises(PrismError):
        Batch(1).alloc_multibuf(umem, data)  # a UMEM without multi_buffer has no chains
