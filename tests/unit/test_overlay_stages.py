"""test_overlay_stages.py - the C overlay stages on frames in plain memory: decap, learning, flooding, encap headers byte by byte, every drop reason, frame accounting; the worker loop's DatapathOps runs these same stages."""

from __future__ import annotations

import errno

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.layers.vxlan import VXLAN
from scapy.packet import Raw

from prism_xdp.dataplane.batch import Batch
from prism_xdp.dataplane.errors import ConfigError, PrismError
from prism_xdp.dataplane.ops import DatapathOps, Source
from prism_xdp.dataplane.overlay import UPLINK_PORT, ContainerSpec, Overlay, VtepSpec
from prism_xdp.dataplane.umem import Umem, UmemParams
from prism_xdp.lab.packets import Inner, Outer, encapsulate, inner_packet

LOCAL_MAC, LOCAL_IP = "02:00:00:00:00:01", "10.1.0.1"
VTEP_MAC, VTEP_IP = "02:00:00:00:00:02", "10.1.0.2"
C1_MAC, C2_MAC, C3_MAC = "02:00:00:00:c1:01", "02:00:00:00:c2:02", "02:00:00:00:c3:03"
REMOTE_MAC = "02:00:00:00:ee:01"
OUTER = Outer(VTEP_MAC, LOCAL_MAC, VTEP_IP, LOCAL_IP)
HEADROOM = 256  # what AF_XDP leaves in front of a received packet


class Stages:
    """An overlay without sockets: uplink, c1 and c2 in VNI 42, c3 in VNI 7, one VTEP per VNI."""

    def __init__(self, umem: Umem, mtu: int = 1500) -> None:
        self.umem = umem
        self.ov = Overlay(umem, 4789, LOCAL_MAC, LOCAL_IP, mtu)
        self.ov.set_uplink([])
        self.c1 = self.ov.add_container([], 42, C1_MAC, "c1")
        self.c2 = self.ov.add_container([], 42, C2_MAC, "c2")
        self.c3 = self.ov.add_container([], 7, C3_MAC, "c3")
        self.ov.add_vtep(42, VTEP_IP, VTEP_MAC)
        self.ov.add_vtep(7, "10.1.0.3", "02:00:00:00:00:03")

    def batch_of(self, *frames: bytes, offset: int = HEADROOM) -> Batch:
        b = Batch(16)
        for frame in frames:
            start = b.n
            assert b.alloc(self.umem, 1, len(frame)) == 1
            b.ptr.addr[start] += offset
            b.fill_with(self.umem, frame, start, 1)
        return b

    def run(self, stage: str, *frames: bytes, src: int = 0, offset: int = HEADROOM) -> list[tuple[int, bytes]]:
        """(port, bytes) of what the stage passed on; the frames go back to the pool."""
        b, out = self.batch_of(*frames, offset=offset), Batch(64)
        if stage == "decap":
            self.ov.decap(b, out)
        else:
            self.ov.encap(src, b, out)
        assert b.n == 0
        got = [(out.ptr.port[i], self.umem.read(a, n)) for i, (a, n) in enumerate(out.descriptors())]
        out.drop_all(self.umem)
        return got

    def drops(self) -> dict[str, int]:
        return {k: v for k, v in self.ov.counters().items() if k.startswith("drop_") and v}


@pytest.fixture
def st():
    with Umem(UmemParams(frame_count=128, frame_size=2048), register=False) as umem:
        s = Stages(umem)
        yield s
        s.ov.close()
        account = umem.account()
        assert account.pool == account.frames and account.user == 0, "a stage leaked frames"


def inner_to(dst_mac: str, src_mac: str = REMOTE_MAC, payload: bytes = b"payload", sport: int = 1000) -> bytes:
    return bytes(inner_packet(Inner(src_mac=src_mac, dst_mac=dst_mac), sport, 2000, "udp", payload))


def test_decap_strips_outer_headers_and_finds_the_container(st: Stages) -> None:
    inner = inner_to(C1_MAC)
    assert st.run("decap", encapsulate(OUTER, inner, 42)) == [(st.c1, inner)]
    c = st.ov.counters()
    assert c["decap_in"] == 1 and c["decap_out"] == 1 and not st.drops()


def test_decap_handles_outer_vlan_tag_and_ip_options(st: Stages) -> None:
    inner = inner_to(C2_MAC)
    frame = bytes(Ether(src=VTEP_MAC, dst=LOCAL_MAC) / Dot1Q(vlan=5)
                  / IP(src=VTEP_IP, dst=LOCAL_IP, options=[b"\x01\x01\x01\x00"])
                  / UDP(sport=5555, dport=4789, chksum=0) / VXLAN(vni=42, flags=0x08) / Raw(inner))
    assert st.run("decap", frame) == [(st.c2, inner)]


def test_decap_learns_the_remote_source(st: Stages) -> None:
    st.run("decap", encapsulate(OUTER, inner_to(C1_MAC), 42))
    assert st.ov.lookup(42, REMOTE_MAC) == ("remote", 0)
    assert st.ov.lookup(7, REMOTE_MAC) is None
    assert st.ov.lookup(42, C1_MAC) == ("local", st.c1)
    assert st.ov.counters()["learned"] == 1


def test_a_remote_frame_cannot_take_a_containers_mac(st: Stages) -> None:
    st.run("decap", encapsulate(OUTER, inner_to(C2_MAC, src_mac=C1_MAC), 42))
    assert st.ov.lookup(42, C1_MAC) == ("local", st.c1)


def test_decap_floods_broadcast_to_the_vnis_containers_only(st: Stages) -> None:
    arp = bytes(Ether(src=REMOTE_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(psrc="10.42.0.100", pdst="10.42.0.1"))
    got = st.run("decap", encapsulate(OUTER, arp, 42))
    assert sorted(got) == sorted([(st.c1, arp), (st.c2, arp)])
    assert st.ov.counters()["flood_copies"] == 1


def test_decap_floods_unknown_unicast_locally(st: Stages) -> None:
    frame = inner_to("02:00:00:00:99:99")
    assert sorted(p for p, _ in st.run("decap", encapsulate(OUTER, frame, 42))) == [st.c1, st.c2]


@pytest.mark.parametrize("case,reason", [
    ("unknown_vni", "drop_unknown_vni"),
    ("unknown_vtep", "drop_unknown_vtep"),
    ("bad_flags", "drop_malformed_outer"),
    ("truncated_vxlan", "drop_malformed_outer"),
    ("not_vxlan", "drop_malformed_outer"),
    ("short_inner", "drop_malformed_inner"),
])
def test_decap_drops_and_counts(st: Stages, case: str, reason: str) -> None:
    inner = inner_to(C1_MAC)
    frames = {
        "unknown_vni": encapsulate(OUTER, inner, 99),
        "unknown_vtep": encapsulate(Outer(VTEP_MAC, LOCAL_MAC, "10.9.9.9", LOCAL_IP), inner, 42),
        "bad_flags": encapsulate(OUTER, inner, 42, flags=0),
        "truncated_vxlan": encapsulate(OUTER, inner, 42)[:14 + 20 + 8 + 4],
        "not_vxlan": bytes(Ether(src=VTEP_MAC, dst=LOCAL_MAC) / IP(src=VTEP_IP, dst=LOCAL_IP) / UDP(dport=53)),
        "short_inner": encapsulate(OUTER, inner[:10], 42),
    }
    good = encapsulate(OUTER, inner, 42)
    # The bad frame is dropped; the good one in the same batch still goes through.
    assert st.run("decap", frames[case], good) == [(st.c1, inner)]
    assert st.drops() == {reason: 1}


def outer_of(frame: bytes) -> Ether:
    return Ether(frame)


def ones_complement_sum(data: bytes) -> int:
    total = sum(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def test_encap_to_a_learned_remote_writes_correct_outer_headers(st: Stages) -> None:
    st.run("decap", encapsulate(OUTER, inner_to(C1_MAC), 42))  # learn REMOTE_MAC
    reply = inner_to(REMOTE_MAC, src_mac=C1_MAC, payload=b"reply" * 10)
    [(port, frame)] = st.run("encap", reply, src=st.c1)
    assert port == 0  # the uplink
    pkt = outer_of(frame)
    assert (pkt.dst, pkt.src) == (VTEP_MAC, LOCAL_MAC)
    ip = pkt[IP]
    assert (ip.src, ip.dst, ip.ttl, ip.proto, ip.ihl, ip.len) == (LOCAL_IP, VTEP_IP, 64, 17, 5, len(reply) + 36)
    assert ones_complement_sum(frame[14:34]) == 0xFFFF  # header checksum is right
    udp = pkt[UDP]
    assert udp.dport == 4789 and udp.chksum == 0 and udp.len == len(reply) + 16
    assert 32768 <= udp.sport <= 60999
    vx = pkt[VXLAN]
    assert vx.vni == 42 and vx.flags == 0x08
    assert bytes(vx.payload) == reply


def test_encap_source_port_follows_the_inner_flow(st: Stages) -> None:
    st.run("decap", encapsulate(OUTER, inner_to(C1_MAC), 42))
    ports = {}
    for sport in range(1000, 1016):
        for _ in range(2):
            [(_, frame)] = st.run("encap", inner_to(REMOTE_MAC, C1_MAC, sport=sport), src=st.c1)
            ports.setdefault(sport, set()).add(outer_of(frame)[UDP].sport)
    assert all(len(v) == 1 for v in ports.values())  # one flow, one port
    assert len({next(iter(v)) for v in ports.values()}) > 8  # flows spread


def test_encap_between_containers_of_one_vni_stays_local(st: Stages) -> None:
    frame = inner_to(C2_MAC, src_mac=C1_MAC)
    assert st.run("encap", frame, src=st.c1) == [(st.c2, frame)]
    assert st.ov.counters()["local_out"] == 1


def test_encap_floods_broadcast_to_containers_and_vteps(st: Stages) -> None:
    arp = bytes(Ether(src=C1_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(psrc="10.42.0.1", pdst="10.42.0.100"))
    got = st.run("encap", arp, src=st.c1)
    assert sorted(p for p, _ in got) == [0, st.c2]
    by_port = dict(got)
    assert by_port[st.c2] == arp
    assert outer_of(by_port[0])[VXLAN].vni == 42 and bytes(outer_of(by_port[0])[VXLAN].payload) == arp


def test_encap_drops_what_does_not_fit_the_uplink_mtu(st: Stages) -> None:
    st.run("decap", encapsulate(OUTER, inner_to(C1_MAC), 42))
    fits = inner_to(REMOTE_MAC, C1_MAC, payload=b"x" * (1500 - 36 - 14 - 28))
    too_big = inner_to(REMOTE_MAC, C1_MAC, payload=b"x" * (1500 - 36 - 14 - 28 + 1))
    got = st.run("encap", fits, too_big, src=st.c1)
    assert len(got) == 1 and len(got[0][1]) == len(fits) + 50
    assert st.drops() == {"drop_mtu": 1}


def test_encap_without_headroom_is_dropped_not_corrupted(st: Stages) -> None:
    st.run("decap", encapsulate(OUTER, inner_to(C1_MAC), 42))
    assert st.run("encap", inner_to(REMOTE_MAC, C1_MAC), src=st.c1, offset=0) == []
    assert st.drops() == {"drop_no_headroom": 1}


def test_encap_of_a_runt_and_from_the_uplink_port(st: Stages) -> None:
    assert st.run("encap", b"\x00" * 10, src=st.c1) == []
    assert st.drops() == {"drop_malformed_inner": 1}
    b, out = st.batch_of(inner_to(C2_MAC)), Batch(8)
    with pytest.raises(PrismError) as info:  # a bug in the caller: the frame is dropped, and it is told
        st.ov.encap(0, b, out)
    assert info.value.errno == errno.EINVAL and "encap" in str(info.value)
    assert b.n == 0 and out.n == 0
    assert st.drops()["drop_no_port"] == 1


def test_deliver_to_ports_without_sockets_returns_frames(st: Stages) -> None:
    b, out = st.batch_of(encapsulate(OUTER, inner_to(C1_MAC), 42)), Batch(8)
    st.ov.decap(b, out)
    assert st.ov.deliver(0, out) == 0 and out.n == 0
    assert st.drops() == {"drop_no_port": 1}


class Ring:
    """An RX ring in plain memory, in the socket's place: rx_upto hands over the frames queued here."""

    def __init__(self, umem: Umem, *frames: bytes) -> None:
        self.umem, self.frames = umem, list(frames)

    def rx_upto(self, batch: Batch, limit: int) -> int:
        n = 0
        while self.frames and n < limit:
            frame, start = self.frames.pop(0), batch.n
            assert batch.alloc(self.umem, 1, len(frame)) == 1
            batch.ptr.addr[start] += HEADROOM
            batch.fill_with(self.umem, frame, start, 1)
            n += 1
        return n


def test_the_worker_loop_runs_these_stages(st: Stages) -> None:
    """DatapathOps, which the schedulers drive in production, passes its batches through the
    Overlay methods above: rx, then decap (from the uplink) or encap, then deliver."""
    ops = DatapathOps([], st.ov, 16, service=lambda: None, set_vanilla=lambda on: None)
    inner = inner_to(C1_MAC)
    uplink = Source(UPLINK_PORT, 0, Ring(st.umem, encapsulate(OUTER, inner, 42)), True)  # type: ignore[arg-type]
    work = ops.rx(uplink, 16)
    assert work is not None and work.n == 1 and ops.rx(uplink, 16) is None
    ops.process(work)
    assert work.rx.n == 0 and work.out.n == 1 and work.out.ptr.port[0] == st.c1
    assert st.umem.read(*work.out.descriptors()[0]) == inner
    ops.deliver(work)  # the container has no socket here: dropped and counted
    assert work.out.n == 0 and st.drops() == {"drop_no_port": 1}

    reply = inner_to(REMOTE_MAC, src_mac=C1_MAC)
    container = Source(st.c1, 0, Ring(st.umem, reply), False)  # type: ignore[arg-type]
    work = ops.rx(container, 16)
    assert work is not None
    ops.process(work)
    assert work.out.n == 1 and work.out.ptr.port[0] == UPLINK_PORT  # encapsulated toward the VTEP
    assert outer_of(st.umem.read(*work.out.descriptors()[0]))[IP].dst == VTEP_IP
    ops.deliver(work)
    c = st.ov.counters()
    assert (c["decap_in"], c["encap_in"], c["encap_out"], c["deliver_in"]) == (1, 1, 1, 2)
    assert st.drops() == {"drop_no_port": 2}


def test_flood_copies_stop_when_the_pool_is_empty() -> None:
    with Umem(UmemParams(frame_count=2, frame_size=2048), register=False) as umem:
        s = Stages(umem)
        arp = bytes(Ether(src=REMOTE_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP())
        b, out = s.batch_of(encapsulate(OUTER, arp, 42), encapsulate(OUTER, arp, 42)), Batch(8)
        s.ov.decap(b, out)
        assert out.n == 2 and s.drops() == {"drop_no_frame": 2}
        out.drop_all(umem)
        assert umem.account().pool == 2
        s.ov.close()


def test_container_and_vtep_specs_name_the_bad_key() -> None:
    with pytest.raises(ConfigError, match=r"containers\[0\].mac"):
        ContainerSpec("c", "veth0", "ff:ff:ff:ff:ff:ff", 1).check("containers[0]")
    with pytest.raises(ConfigError, match=r"containers\[1\].vni"):
        ContainerSpec("c", "veth0", C1_MAC, 1 << 24).check("containers[1]")
    with pytest.raises(ConfigError, match=r"host_if"):
        ContainerSpec("c", "a-very-long-interface-name", C1_MAC, 1).check()
    with pytest.raises(ConfigError, match=r"vteps\[0\].ip"):
        VtepSpec("10.0.0.300", 1).check("vteps[0]")
    with pytest.raises(ConfigError, match=r"vtep.mac"):
        VtepSpec("10.0.0.3", 1, "zz").check()


def test_duplicate_container_mac_in_a_vni_is_refused(st: Stages) -> None:
    from prism_xdp.dataplane.errors import PrismError

    with pytest.raises(PrismError, match="c4"):
        st.ov.add_container([], 42, C1_MAC, "c4")
    assert st.ov.add_container([], 7, C1_MAC, "c5") > 0  # same MAC, another VNI: fine
