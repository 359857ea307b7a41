"""test_checksum.py - TCP/UDP checksums in C (locate, seed, complete, verify) against scapy's, the stages' checksum requests in both methods, and how the policy is decided."""

from __future__ import annotations

import os
import random

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw

from prism_xdp.dataplane import native
from prism_xdp.dataplane.batch import Batch
from prism_xdp.dataplane.checksum import ChecksumPolicy, resolve
from prism_xdp.dataplane.errors import ConfigError
from prism_xdp.dataplane.native import ffi
from prism_xdp.dataplane.overlay import Overlay
from prism_xdp.dataplane.umem import Umem, UmemParams
from prism_xdp.lab.packets import Inner, Outer, encapsulate, inner_packet

LOCAL_MAC, LOCAL_IP = "02:00:00:00:00:01", "10.1.0.1"
VTEP_MAC, VTEP_IP = "02:00:00:00:00:02", "10.1.0.2"
C1_MAC, C2_MAC, REMOTE_MAC = "02:00:00:00:c1:01", "02:00:00:00:c2:02", "02:00:00:00:ee:01"
HEADROOM = 256


def frame(proto: str, payload: bytes, vlan: bool = False, options: bool = False) -> bytes:
    l4 = TCP(sport=40000, dport=5201, flags="PA", seq=7) if proto == "tcp" else UDP(sport=40000, dport=7000)
    ip = IP(src="10.42.0.100", dst="10.42.0.2", options=b"\x01\x01\x01\x00" if options else b"")
    eth = Ether(src=REMOTE_MAC, dst=C1_MAC)
    if vlan:
        eth = eth / Dot1Q(vlan=5)
    return bytes(eth / ip / l4 / Raw(payload))


def locate(f: bytes) -> object | None:
    return native.l4_locate(f)


def field(f: bytes, loc: object) -> int:
    at = loc.start + loc.offset  # type: ignore[attr-defined]
    return f[at] << 8 | f[at + 1]


def pseudo_seed(f: bytes, loc: object) -> int:
    """The pseudo-header sum, folded and not complemented, as the kernel leaves it for an offload."""
    l3 = loc.l3  # type: ignore[attr-defined]
    words = [f[i] << 8 | f[i + 1] for i in range(l3 + 12, l3 + 20, 2)]
    s = sum(words) + loc.proto + loc.l4len  # type: ignore[attr-defined]
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


@pytest.mark.parametrize("proto", ["tcp", "udp"])
@pytest.mark.parametrize("shape", ["plain", "vlan", "ip-options"])
def test_complete_matches_scapy_from_a_seed_or_a_full_sum(proto: str, shape: str) -> None:
    rng = random.Random(f"{proto}{shape}")
    for size in [0, 1, 2, 3, 7, 8, 9, 63, 64, 65, 1000, 1371, 1400] + [rng.randrange(1, 1401) for _ in range(20)]:
        good = frame(proto, os.urandom(size), vlan=shape == "vlan", options=shape == "ip-options")
        loc = locate(good)
        assert loc is not None and native.l4_valid(good, len(good)) == 1
        assert native.l4_seed(good, loc) == pseudo_seed(good, loc)
        partial = bytearray(good)
        native.l4_write_seed(ffi.from_buffer(partial), loc)
        assert native.l4_is_seed(bytes(partial), loc) == 1
        assert native.l4_valid(bytes(partial), len(partial)) == (field(good, loc) == pseudo_seed(good, loc))
        native.l4_complete(ffi.from_buffer(partial), loc)
        assert bytes(partial) == good, f"{proto} {shape} {size} B"


def test_a_corrupted_byte_makes_the_checksum_wrong() -> None:
    good = bytearray(frame("udp", b"x" * 100))
    good[-1] ^= 0x40
    assert native.l4_valid(bytes(good), len(good)) == 0


def test_locate_reports_the_ip_packet_end_before_ethernet_padding() -> None:
    f = frame("udp", b"ab")
    loc = locate(f + b"\0" * 16)
    assert loc is not None and loc.end == len(f) and loc.start == 34 and loc.offset == 6
    tcp = locate(frame("tcp", b"ab", vlan=True))
    assert tcp is not None and tcp.l3 == 18 and tcp.start == 38 and tcp.offset == 16


@pytest.mark.parametrize("case", ["fragment", "later-fragment", "udp-no-checksum", "truncated", "icmp",
                                  "not-ip", "length-beyond-frame", "ihl-short", "tcp-header-cut"])
def test_locate_declines_what_has_no_checksum_to_finish(case: str) -> None:
    base = Ether(src=REMOTE_MAC, dst=C1_MAC)
    ip = IP(src="10.0.0.1", dst="10.0.0.2")
    f = {
        "fragment": lambda: bytes(base / IP(src="10.0.0.1", dst="10.0.0.2", flags="MF") / UDP() / Raw(b"x" * 8)),
        "later-fragment": lambda: bytes(base / IP(src="10.0.0.1", dst="10.0.0.2", frag=3) / Raw(b"x" * 16)),
        "udp-no-checksum": lambda: bytes(base / ip / UDP(chksum=0) / Raw(b"abc")),
        "truncated": lambda: frame("udp", b"abcdef")[:40],
        "icmp": lambda: bytes(base / ip / Raw(b"\x08\x00" + b"\0" * 30)),
        "not-ip": lambda: bytes(Ether(type=0x0806) / Raw(b"\0" * 28)),
        "length-beyond-frame": lambda: bytes(base / IP(src="10.0.0.1", dst="10.0.0.2", len=200) / UDP() / Raw(b"x")),
        "ihl-short": lambda: bytes(base / IP(src="10.0.0.1", dst="10.0.0.2", ihl=4) / UDP() / Raw(b"x")),
        "tcp-header-cut": lambda: bytes(base / IP(src="10.0.0.1", dst="10.0.0.2", proto=6) / Raw(b"x" * 10)),
    }[case]()
    assert locate(f) is None
    assert native.l4_valid(f, len(f)) < 0


# ---- the stages ---------------------------------------------------------------


class Stages:
    """An overlay without sockets: uplink, c1 and c2 in VNI 42, one VTEP."""

    def __init__(self, umem: Umem, policy: ChecksumPolicy) -> None:
        self.umem = umem
        self.ov = Overlay(umem, 4789, LOCAL_MAC, LOCAL_IP, 1500, checksum=policy)
        self.ov.set_uplink([])
        self.c1 = self.ov.add_container([], 42, C1_MAC, "c1")
        self.c2 = self.ov.add_container([], 42, C2_MAC, "c2")
        self.ov.add_vtep(42, VTEP_IP, VTEP_MAC)

    def run(self, stage: str, data: bytes, src: int = 0) -> list[tuple[int, bytes, int]]:
        """(port, bytes, TX checksum request) of what the stage passed on."""
        b, out = Batch(4), Batch(8)
        assert b.alloc(self.umem, 1, len(data)) == 1
        b.ptr.addr[0] += HEADROOM
        b.fill_with(self.umem, data, 0, 1)
        if stage == "decap":
            self.ov.decap(b, out)
        else:
            self.ov.encap(src, b, out)
        got = [(out.ptr.port[i], self.umem.read(a, n), out.ptr.csum[i]) for i, (a, n) in enumerate(out.descriptors())]
        out.drop_all(self.umem)
        return got


@pytest.fixture(params=["offload", "software"])
def stages(request: pytest.FixtureRequest):
    with Umem(UmemParams(frame_count=64, frame_size=2048), register=False) as umem:
        s = Stages(umem, ChecksumPolicy(request.param, accept_partial=True))
        yield s
        s.ov.close()
        assert umem.account().pool == umem.account().frames


def partial_of(f: bytes) -> bytes:
    loc = locate(f)
    out = bytearray(f)
    native.l4_write_seed(ffi.from_buffer(out), loc)
    return bytes(out)


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_a_containers_partial_checksum_is_finished_on_the_way_out(stages: Stages, proto: str) -> None:
    st = stages
    st.run("decap", encapsulate(Outer(VTEP_MAC, LOCAL_MAC, VTEP_IP, LOCAL_IP),
                                bytes(inner_packet(Inner(src_mac=REMOTE_MAC, dst_mac=C1_MAC), 1, 2, "udp", b"x")), 42))
    good = bytes(Ether(src=C1_MAC, dst=REMOTE_MAC) / Ether(frame(proto, os.urandom(300))).payload)  # c1 -> remote
    (port, out, req), = st.run("encap", partial_of(good), src=st.c1)
    inner = out[50:]
    loc = locate(inner)
    assert port == 0 and loc is not None
    if st.ov.checksum.method == "offload":
        assert req == (50 + loc.start) << 16 | loc.offset  # relative to the encapsulated frame
        assert native.l4_is_seed(inner, loc) == 1 and st.ov.counters()["csum_offload"] == 1
    else:
        assert req == 0 and inner == good and st.ov.counters()["csum_software"] == 1


def test_container_to_container_gets_a_finished_checksum(stages: Stages) -> None:
    st = stages
    good = bytes(Ether(src=C1_MAC, dst=C2_MAC) / IP(src="10.42.0.1", dst="10.42.0.2") / UDP(sport=1, dport=2) / Raw(b"hi" * 50))
    (port, out, req), = st.run("encap", partial_of(good), src=st.c1)
    assert port == st.c2
    assert req == (0 if st.ov.checksum.method == "software" else 34 << 16 | 6)
    assert out == (good if req == 0 else partial_of(good))


def test_from_the_wire_a_seed_only_field_is_partial_and_anything_else_is_left_alone(stages: Stages) -> None:
    st = stages
    outer = Outer(VTEP_MAC, LOCAL_MAC, VTEP_IP, LOCAL_IP)
    good = frame("udp", b"payload" * 30)
    corrupt = bytearray(good)
    corrupt[-1] ^= 1
    (_, out, req), = st.run("decap", encapsulate(outer, bytes(corrupt), 42))
    assert req == 0 and out == bytes(corrupt), "a wrong checksum must reach the container as it is, to be dropped there"
    (_, out, req), = st.run("decap", encapsulate(outer, partial_of(good), 42))
    assert st.ov.counters()["csum_partial_in"] == 1
    assert (out, req) == ((good, 0) if st.ov.checksum.method == "software" else (partial_of(good), 34 << 16 | 6))


def test_partial_checksums_from_the_wire_are_verified_when_not_accepted() -> None:
    with Umem(UmemParams(frame_count=32, frame_size=2048), register=False) as umem:
        st = Stages(umem, ChecksumPolicy("offload", accept_partial=False))
        part = partial_of(frame("tcp", b"z" * 80))
        (_, out, req), = st.run("decap", encapsulate(Outer(VTEP_MAC, LOCAL_MAC, VTEP_IP, LOCAL_IP), part, 42))
        assert (out, req) == (part, 0) and st.ov.counters()["csum_partial_in"] == 0
        st.ov.close()


def test_csum_batch_finishes_every_packet_as_asked() -> None:
    with Umem(UmemParams(frame_count=32, frame_size=2048), register=False) as umem:
        frames = [frame("udp", os.urandom(n)) for n in (10, 500)] + [frame("tcp", os.urandom(1400))]
        b = Batch(8)
        for f in frames:
            start = b.n
            b.alloc(umem, 1, len(f))
            b.fill_with(umem, partial_of(f), start, 1)
        assert native.csum_batch(umem.ptr, b.ptr, native.CSUM_SOFTWARE) == 3
        assert [umem.read(a, n) for a, n in b.descriptors()] == frames
        assert native.csum_batch(umem.ptr, b.ptr, native.CSUM_OFFLOAD) == 3
        assert [umem.read(a, n) for a, n in b.descriptors()] == [partial_of(f) for f in frames]
        assert all(b.ptr.csum[i] for i in range(3))
        b.drop_all(umem)


# ---- the policy -----------------------------------------------------------------


def test_auto_takes_the_kernels_offload_when_it_has_one() -> None:
    assert resolve("auto", "auto", "eth0", has_tx_metadata=True, veth=False) == ChecksumPolicy("offload", False)
    assert resolve("auto", "auto", "eth0", has_tx_metadata=False, veth=True) == ChecksumPolicy("software", True)
    assert resolve("software", "verify", "eth0", has_tx_metadata=True, veth=True) == ChecksumPolicy("software", False)
    assert resolve("offload", "accept", "eth0", has_tx_metadata=True, veth=False).accept_partial


def test_offload_on_a_kernel_without_tx_metadata_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="checksum.method: offload needs AF_XDP TX metadata"):
        resolve("offload", "auto", "eth0", has_tx_metadata=False, veth=False)
    with pytest.raises(ConfigError, match="checksum.method: must be one of"):
        resolve("hardware", "auto", "eth0")
    with pytest.raises(ConfigError, match="checksum.partial_from_uplink"):
        resolve("auto", "sometimes", "eth0")
