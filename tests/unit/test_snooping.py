"""test_snooping.py - MLD snooping without privileges: the query frame byte by byte, the C membership table (learning, leaving, ageing, limits, malformed reports), and the overlay stages pruning a group's frames to its members."""

from __future__ import annotations

import errno
from socket import AF_INET6, inet_ntop, inet_pton

import pytest
from scapy.layers.inet6 import (
    ICMPv6MLDMultAddrRec,
    ICMPv6MLDone,
    ICMPv6MLQuery2,
    ICMPv6MLReport,
    ICMPv6MLReport2,
    ICMPv6ND_NS,
    ICMPv6ND_RS,
    IPv6,
    IPv6ExtHdrHopByHop,
    RouterAlert,
)
from scapy.layers.l2 import ARP, Ether
from scapy.utils6 import in6_getnsma, in6_getnsmac

from prism_xdp.dataplane import mld, native
from prism_xdp.dataplane.batch import Batch
from prism_xdp.dataplane.errors import ConfigError
from prism_xdp.dataplane.overlay import Overlay
from prism_xdp.dataplane.snooping import Snooping, SnoopingParams
from prism_xdp.dataplane.umem import Umem, UmemParams
from prism_xdp.lab.packets import Outer, encapsulate

LOCAL_MAC, LOCAL_IP = "02:00:00:00:00:01", "10.1.0.1"
VTEP_MAC, VTEP_IP = "02:00:00:00:00:02", "10.1.0.2"
C_MACS = ["02:00:00:00:c1:01", "02:00:00:00:c2:02", "02:00:00:00:c3:03"]
REMOTE_MAC = "02:00:00:00:ee:01"
OUTER = Outer(VTEP_MAC, LOCAL_MAC, VTEP_IP, LOCAL_IP)
VNI = 42
SEC = 1_000_000_000
T0 = 1000 * SEC  # "now" in the stages: the poll time each frame carries
HEADROOM = 256


def ll(mac: str) -> str:
    """A container's link-local address (EUI-64), as the kernel makes it."""
    return inet_ntop(AF_INET6, mld.link_local(mac_bytes(mac)))


def solicited(addr: str) -> tuple[str, str]:
    """(solicited-node group, its MAC) of an IPv6 address."""
    group = in6_getnsma(inet_pton(AF_INET6, addr))
    return inet_ntop(AF_INET6, group), in6_getnsmac(group)


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def hbh() -> IPv6ExtHdrHopByHop:
    return IPv6ExtHdrHopByHop(options=[RouterAlert()])


def report_v1(src_mac: str, group: str, group_mac: str) -> bytes:
    return bytes(Ether(src=src_mac, dst=group_mac) / IPv6(src=ll(src_mac), dst=group, hlim=1) / hbh()
                 / ICMPv6MLReport(mladdr=group))


def done_v1(src_mac: str, group: str) -> bytes:
    return bytes(Ether(src=src_mac, dst="33:33:00:00:00:02") / IPv6(src=ll(src_mac), dst="ff02::2", hlim=1)
                 / hbh() / ICMPv6MLDone(mladdr=group))


def report_v2(src_mac: str, *records: tuple[int, str, int]) -> bytes:
    """records: (type, group, number of sources)."""
    recs = [ICMPv6MLDMultAddrRec(rtype=t, dst=g, sources=[f"2001:db8::{i + 1}" for i in range(n)])
            for t, g, n in records]
    return bytes(Ether(src=src_mac, dst="33:33:00:00:00:16") / IPv6(src=ll(src_mac), dst="ff02::16", hlim=1)
                 / hbh() / ICMPv6MLReport2(records=recs))


def ns_for(src_mac: str, target: str) -> bytes:
    group, group_mac = solicited(target)
    return bytes(Ether(src=src_mac, dst=group_mac) / IPv6(src=ll(src_mac), dst=group, hlim=255)
                 / ICMPv6ND_NS(tgt=target))


def rs_from(src_mac: str) -> bytes:
    return bytes(Ether(src=src_mac, dst="33:33:00:00:00:02") / IPv6(src=ll(src_mac), dst="ff02::2", hlim=255)
                 / ICMPv6ND_RS())


# ---- the query frame --------------------------------------------------------

def test_general_query_is_what_a_host_accepts() -> None:
    frame = mld.general_query(mac_bytes(LOCAL_MAC), 1000, 125, 2)
    p = Ether(frame)
    assert p.dst == "33:33:00:00:00:01" and p.src == LOCAL_MAC
    ip = p[IPv6]
    # RFC 3810 6.2: link-local source, hop limit 1, router alert, or the host drops it
    assert ip.src == ll(LOCAL_MAC) and ip.src.startswith("fe80::") and ip.dst == "ff02::1" and ip.hlim == 1
    assert any(isinstance(o, RouterAlert) and o.value == 0 for o in p[IPv6ExtHdrHopByHop].options)
    q = p[ICMPv6MLQuery2]
    assert (q.mrd, q.QRV, q.QQIC, q.mladdr, q.sources_number) == (1000, 2, 125, "::", 0)
    sent = q.cksum
    del q.cksum
    assert Ether(bytes(p))[ICMPv6MLQuery2].cksum == sent  # scapy's own checksum agrees
    assert native.mcast_classify(frame) == native.MC_ALL  # a query reaches everyone


@pytest.mark.parametrize("value,code", [(125, 125), (127, 127), (128, 0x80), (200, 137), (31744, 0xFF)])
def test_qqic_floating_point_code(value: int, code: int) -> None:
    assert mld.qqic(value) == code
    if code >= 0x80:  # RFC 3810 5.1.9 decodes it back
        assert (code & 0xF | 0x10) << ((code >> 4 & 7) + 3) == value


def test_link_local_is_modified_eui64() -> None:
    assert mld.link_local(mac_bytes("52:54:00:12:34:56")).hex() == "fe80000000000000505400fffe123456"
    with pytest.raises(ValueError):
        mld.link_local(b"\x00" * 5)


def test_snooping_params_are_checked() -> None:
    with pytest.raises(ConfigError, match="query_interval_s"):
        SnoopingParams(query_interval_s=1).check()
    with pytest.raises(ConfigError, match="max_response_ms"):
        SnoopingParams(query_interval_s=2, max_response_ms=5000).check()
    with pytest.raises(ConfigError, match="max_per_port"):
        SnoopingParams(max_per_port=0).check()
    assert SnoopingParams().membership_s == 2 * 125 + 1


# ---- classification ---------------------------------------------------------

def test_classify_frames() -> None:
    group, gmac = solicited("fe80::1")
    assert native.mcast_classify(ns_for(C_MACS[0], "fe80::1")) == native.MC_DATA
    assert native.mcast_classify(rs_from(C_MACS[0])) == native.MC_DATA
    assert native.mcast_classify(report_v1(C_MACS[0], group, gmac)) == native.MC_REPORT
    assert native.mcast_classify(done_v1(C_MACS[0], group)) == native.MC_REPORT
    assert native.mcast_classify(report_v2(C_MACS[0], (4, group, 0))) == native.MC_REPORT
    arp = bytes(Ether(src=C_MACS[0], dst="ff:ff:ff:ff:ff:ff") / ARP())
    assert native.mcast_classify(arp) == native.MC_ALL
    all_nodes = bytes(Ether(src=C_MACS[0], dst="33:33:00:00:00:01") / IPv6(dst="ff02::1") / ICMPv6ND_RS())
    assert native.mcast_classify(all_nodes) == native.MC_ALL
    v4mcast = bytes(Ether(src=C_MACS[0], dst="01:00:5e:00:00:fb") / ARP())
    assert native.mcast_classify(v4mcast) == native.MC_ALL
    # a truncated IPv6 header is a group's data (no report to learn from)
    assert native.mcast_classify(report_v1(C_MACS[0], group, gmac)[:40]) == native.MC_DATA


# ---- the table --------------------------------------------------------------

@pytest.fixture
def table():
    t = Snooping(SnoopingParams(query_interval_s=10, max_response_ms=1000, max_per_port=4))
    yield t
    t.close()


def test_v1_report_joins_and_done_leaves(table: Snooping) -> None:
    group, gmac = solicited("fe80::1")
    assert native.mcast_learn(table.ptr, VNI, 3, report_v1(C_MACS[0], group, gmac), T0) == 1
    assert table.members(VNI, mac_bytes(gmac), T0) == [3]
    assert table.members(VNI + 1, mac_bytes(gmac), T0) == []  # another VNI's group
    assert native.mcast_learn(table.ptr, VNI, 3, done_v1(C_MACS[0], group), T0) == 1
    assert table.members(VNI, mac_bytes(gmac), T0) == []
    c = table.counters()
    assert (c["joins"], c["leaves"], c["groups"], c["reports"]) == (1, 1, 0, 2)


def test_v2_records_join_and_leave_by_type(table: Snooping) -> None:
    groups = [solicited(f"fe80::{i}") for i in range(1, 7)]
    # IS_EX, TO_EX, ALLOW with a source, IS_IN with a source: joins; IS_IN {} on a fresh group: nothing
    frame = report_v2(C_MACS[0], (2, groups[0][0], 0), (4, groups[1][0], 0), (5, groups[2][0], 1),
                      (1, groups[3][0], 1), (1, groups[4][0], 0), (6, groups[5][0], 1))
    assert native.mcast_learn(table.ptr, VNI, 1, frame, T0) == 6
    joined = [g for g in groups if table.members(VNI, mac_bytes(g[1]), T0) == [1]]
    assert joined == groups[:4]
    # TO_IN {} leaves; BLOCK does not
    native.mcast_learn(table.ptr, VNI, 1, report_v2(C_MACS[0], (3, groups[0][0], 0), (6, groups[1][0], 1)), T0)
    assert table.members(VNI, mac_bytes(groups[0][1]), T0) == []
    assert table.members(VNI, mac_bytes(groups[1][1]), T0) == [1]


def test_memberships_age_out_unless_renewed(table: Snooping) -> None:
    group, gmac = solicited("fe80::1")
    life = table.params.membership_s * SEC
    native.mcast_learn(table.ptr, VNI, 2, report_v1(C_MACS[1], group, gmac), T0)
    native.mcast_learn(table.ptr, VNI, 2, report_v1(C_MACS[1], group, gmac), T0 + life // 2)  # renewed
    assert table.members(VNI, mac_bytes(gmac), T0 + life) == [2]
    assert table.members(VNI, mac_bytes(gmac), T0 + life // 2 + life + 1) == []
    c = table.counters()
    assert c["expired"] == 1 and c["groups"] == 0 and c["joins"] == 1


def test_a_port_past_its_share_gets_every_group(table: Snooping) -> None:
    groups = [solicited(f"fe80::{i}") for i in range(1, 7)]
    for g, gm in groups:  # max_per_port is 4
        native.mcast_learn(table.ptr, VNI, 5, report_v1(C_MACS[0], g, gm), T0)
    c = table.counters()
    assert c["groups"] == 4 and c["refused"] == 2
    unrelated = mac_bytes(solicited("fe80::99")[1])
    assert table.members(VNI, unrelated, T0) == [5]  # nothing it asked for is withheld
    native.mcast_learn(table.ptr, VNI, 6, report_v1(C_MACS[1], *solicited("fe80::1")), T0)
    assert table.members(VNI, mac_bytes(groups[0][1]), T0) == [5, 6]
    # ... until its refused membership would have expired
    assert table.members(VNI, unrelated, T0 + table.params.membership_s * SEC + 1) == []


@pytest.mark.parametrize("damage", ["records", "sources", "payload"])
def test_malformed_reports_are_counted_and_learn_nothing(table: Snooping, damage: str) -> None:
    good, _ = solicited("fe80::1")
    frame = bytearray(report_v2(C_MACS[0], (4, good, 0), (4, solicited("fe80::2")[0], 1)))
    icmp = 14 + 40 + 8
    if damage == "records":
        frame[icmp + 6:icmp + 8] = (3).to_bytes(2, "big")  # one record more than there is
    elif damage == "sources":
        frame[icmp + 8 + 20 + 2:icmp + 8 + 20 + 4] = (2).to_bytes(2, "big")  # second record: past the end
    else:
        frame = frame[:-8]  # the IPv6 payload length says more than the frame holds
    assert native.mcast_learn(table.ptr, VNI, 1, bytes(frame), T0) == -errno.EINVAL
    c = table.counters()
    assert (c["malformed"], c["reports"], c["groups"]) == (1, 0, 0)


def test_a_report_for_a_unicast_group_is_malformed(table: Snooping) -> None:
    frame = bytearray(report_v1(C_MACS[0], *solicited("fe80::1")))
    at = len(frame) - 16
    frame[at] = 0x20  # group address no longer ff..
    assert native.mcast_learn(table.ptr, VNI, 1, bytes(frame), T0) == -errno.EINVAL
    assert table.counters()["malformed"] == 1 and table.counters()["groups"] == 0


# ---- the stages ---------------------------------------------------------------

class SnoopedStages:
    """An overlay without sockets: three containers in one VNI and a VTEP, snooping with table."""

    def __init__(self, umem: Umem, table: Snooping) -> None:
        self.umem = umem
        self.ov = Overlay(umem, 4789, LOCAL_MAC, LOCAL_IP, 1500)
        self.ov.set_uplink([])
        self.ports = [self.ov.add_container([], VNI, m, f"c{i}") for i, m in enumerate(C_MACS)]
        self.ov.add_vtep(VNI, VTEP_IP, VTEP_MAC)
        self.ov.set_snooping(table.ptr)

    def run(self, stage: str, frame: bytes, src: int = 0, now: int = T0) -> list[int]:
        """Ports (0: the uplink) the stage sent the frame to."""
        b, out = Batch(4), Batch(64)
        assert b.alloc(self.umem, 1, len(frame)) == 1
        b.ptr.addr[0] += HEADROOM
        b.fill_with(self.umem, frame, 0, 1)
        b.ptr.poll_ts[0] = now
        if stage == "decap":
            self.ov.decap(b, out)
        else:
            self.ov.encap(src, b, out)
        ports = sorted(int(out.ptr.port[i]) for i in range(out.n))
        out.drop_all(self.umem)
        return ports


@pytest.fixture
def st(table: Snooping):
    with Umem(UmemParams(frame_count=128, frame_size=2048), register=False) as umem:
        s = SnoopedStages(umem, table)
        yield s
        s.ov.close()
        account = umem.account()
        assert account.pool == account.frames and account.user == 0, "a stage leaked frames"


def test_before_the_first_query_a_groups_frames_are_flooded(st: SnoopedStages) -> None:
    ns = ns_for(REMOTE_MAC, ll(C_MACS[1]))
    assert st.run("decap", encapsulate(OUTER, ns, VNI)) == st.ports
    assert st.ov.counters()["mcast_pruned"] == 0


def test_after_the_query_a_solicitation_reaches_its_target_only(st: SnoopedStages, table: Snooping) -> None:
    c1, c2, c3 = st.ports
    group, gmac = solicited(ll(C_MACS[1]))
    # c2's report (sent to its own group, MLDv1) goes to the VTEP only, and is learned
    assert st.run("encap", report_v1(C_MACS[1], group, gmac), src=c2) == [0]
    table.queried(T0 - 10 * SEC)
    ns = ns_for(REMOTE_MAC, ll(C_MACS[1]))
    assert st.run("decap", encapsulate(OUTER, ns, VNI)) == [c2]
    # from a container: the member and the VTEP
    assert st.run("encap", ns_for(C_MACS[0], ll(C_MACS[1])), src=c1) == [0, c2]
    # a group nobody joined: from the uplink, dropped and counted; from a container, the VTEP
    assert st.run("decap", encapsulate(OUTER, rs_from(REMOTE_MAC), VNI)) == []
    assert st.run("encap", rs_from(C_MACS[2]), src=c3) == [0]
    c = st.ov.counters()
    assert c["drop_no_listener"] == 1 and c["mcast_pruned"] == 2 + 2 + 1 + 3 + 2
    # everyone still gets all-nodes, broadcast and queries
    all_nodes = bytes(Ether(src=REMOTE_MAC, dst="33:33:00:00:00:01") / IPv6(dst="ff02::1") / ICMPv6ND_RS())
    assert st.run("decap", encapsulate(OUTER, all_nodes, VNI)) == st.ports
    arp = bytes(Ether(src=C_MACS[0], dst="ff:ff:ff:ff:ff:ff") / ARP())
    assert st.run("encap", arp, src=c1) == [0, c2, c3]


def test_reports_never_reach_another_container(st: SnoopedStages) -> None:
    c1 = st.ports[0]
    group, gmac = solicited("ff05::1:3")
    for frame in (report_v1(C_MACS[0], group, gmac), report_v2(C_MACS[0], (4, group, 0)), done_v1(C_MACS[0], group)):
        assert st.run("encap", frame, src=c1) == [0]
        # nor one from the remote (an MLDv1 host that heard it would stay silent)
        assert st.run("decap", encapsulate(OUTER, frame, VNI)) == []


def test_a_flood_of_groups_from_one_container_does_not_cost_others(st: SnoopedStages, table: Snooping) -> None:
    c1, c2, _ = st.ports
    table.queried(T0 - 10 * SEC)
    for i in range(1, 40):  # far past its share of 4
        st.run("encap", report_v1(C_MACS[0], *solicited(f"fe80::{i:x}")), src=c1)
    group, gmac = solicited(ll(C_MACS[1]))
    st.run("encap", report_v1(C_MACS[1], group, gmac), src=c2)
    # c2's own group still reaches c2; c1 gets every group, as it asked for more than it may hold
    assert st.run("decap", encapsulate(OUTER, ns_for(REMOTE_MAC, ll(C_MACS[1])), VNI)) == [c1, c2]
    assert table.counters()["refused"] == 39 - 4
