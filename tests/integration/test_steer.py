"""test_steer.py - the VXLAN classifier on a real veth: each rule type, runtime changes, vanilla mode, host traffic, malformed frames, kernel VXLAN senders, and a GSO packet whole in generic mode (multi-buffer)."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from conftest import PREFIX, Uplink, drain

from prism_xdp.dataplane.errors import ConfigError
from prism_xdp.dataplane.native import PRISM_CLASS_HIGH, PRISM_CLASS_LOW
from prism_xdp.dataplane.steer import Steering
from prism_xdp.dataplane.umem import Umem, UmemParams
from prism_xdp.dataplane.xdp import AttachMode
from prism_xdp.dataplane.xsk import XskParams, XskSocket
from prism_xdp.lab.packets import Inner, malformed_packets, vxlan_packet
from prism_xdp.lab.testhost import socket_in

UDP_SEGMENT = 103  # linux/udp.h: the socket option for UDP GSO


@dataclass
class Steered:
    steer: Steering
    low: XskSocket
    high: XskSocket
    uplink: Uplink

    def classify(self, *frames: bytes) -> tuple[int, int]:
        """Send frames; return how many arrived on (low, high)."""
        self.uplink.send(*frames)
        return len(drain(self.low, 0, timeout=0.3)), len(drain(self.high, 0, timeout=0.3))


@pytest.fixture
def steered(uplink: Uplink, umem: Umem) -> Iterator[Steered]:
    with Steering() as steer:
        steer.attach(uplink.host_if)
        low = XskSocket(umem, uplink.host_if, 0)
        high = XskSocket(umem, uplink.host_if, 0)
        steer.add_socket(low, PRISM_CLASS_LOW)
        steer.add_socket(high, PRISM_CLASS_HIGH)
        low.fill(1024)
        yield Steered(steer, low, high, uplink)
        high.close()
        low.close()


def test_port_rules_match_source_and_destination(steered: Steered) -> None:
    st, out = steered.steer, steered.uplink.outer
    st.set_port(11211)
    assert st.ports() == {11211: PRISM_CLASS_HIGH}
    assert steered.classify(vxlan_packet(out, 42, 5555, 11211)) == (0, 1)  # dst port
    assert steered.classify(vxlan_packet(out, 42, 11211, 5555)) == (0, 1)  # src port
    assert steered.classify(vxlan_packet(out, 42, 11211, 5555, proto="tcp")) == (0, 1)
    assert steered.classify(vxlan_packet(out, 42, 5555, 80)) == (1, 0)


def test_many_ports_beyond_the_kernel_patch_limit(steered: Steered) -> None:
    st, out = steered.steer, steered.uplink.outer
    ports = list(range(20000, 20050))
    for p in ports:
        st.set_port(p)
    assert sorted(st.ports()) == ports
    frames = [vxlan_packet(out, 42, 1000, p) for p in ports]
    assert steered.classify(*frames) == (0, len(ports))


def test_dscp_rule(steered: Steered) -> None:
    steered.steer.set_dscp(46)  # EF
    out = steered.uplink.outer
    assert steered.classify(vxlan_packet(out, 42, 1, 2, dscp=46)) == (0, 1)
    assert steered.classify(vxlan_packet(out, 42, 1, 2, dscp=0)) == (1, 0)
    assert steered.steer.dscp_rules() == {46: PRISM_CLASS_HIGH}


def test_vni_rule(steered: Steered) -> None:
    steered.steer.set_vni(99)
    out = steered.uplink.outer
    assert steered.classify(vxlan_packet(out, 99, 1, 2)) == (0, 1)
    assert steered.classify(vxlan_packet(out, 98, 1, 2)) == (1, 0)
    assert steered.steer.vni_rules() == {99: PRISM_CLASS_HIGH}
    steered.steer.set_vni(99, PRISM_CLASS_LOW)
    assert steered.steer.vni_rules() == {}


def test_rule_change_takes_effect_on_next_packet(steered: Steered) -> None:
    st, out = steered.steer, steered.uplink.outer
    frame = vxlan_packet(out, 42, 1234, 6000)
    assert steered.classify(frame) == (1, 0)
    st.set_port(6000)
    assert steered.classify(frame) == (0, 1)
    st.clear_ports()
    assert st.ports() == {}
    assert steered.classify(frame) == (1, 0)


def test_vanilla_mode_sends_everything_to_one_socket(steered: Steered) -> None:
    st, out = steered.steer, steered.uplink.outer
    st.set_port(6000)
    st.vanilla = True
    assert steered.classify(vxlan_packet(out, 42, 1, 6000), vxlan_packet(out, 42, 1, 80)) == (2, 0)
    st.vanilla = False
    assert steered.classify(vxlan_packet(out, 42, 1, 6000)) == (0, 1)


def test_invalid_rules_are_refused(steered: Steered) -> None:
    st = steered.steer
    with pytest.raises(ConfigError, match="port"):
        st.set_port(70000)
    with pytest.raises(ConfigError, match="class"):
        st.set_port(80, 3)  # only 2 classes configured
    with pytest.raises(ConfigError, match="dscp"):
        st.set_dscp(64)
    with pytest.raises(ConfigError, match="vni"):
        st.set_vni(1 << 24)
    assert st.ports() == {}


def test_host_traffic_passes_while_attached(steered: Steered) -> None:
    up = steered.uplink
    before = steered.steer.counters().passed
    # ARP and ICMP between the host and the remote side go through the uplink.
    ping = subprocess.run(["ping", "-c", "3", "-i", "0.2", "-w", "5", up.remote_ip],
                          capture_output=True, text=True)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    # Plain UDP to the host, not to the VXLAN port.
    s = socket_in(up.remote_ns, socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(b"not vxlan", (up.host_ip, 9))
    s.close()
    assert steered.classify() == (0, 0)
    assert steered.steer.counters().passed >= before + 4


@pytest.mark.parametrize("kind", sorted(malformed_packets(
    __import__("prism_xdp.lab.packets", fromlist=["Outer"]).Outer("0:0:0:0:0:1", "0:0:0:0:0:2",
                                                            "1.1.1.1", "2.2.2.2"))))
def test_malformed_frames_are_counted_and_dropped(steered: Steered, kind: str) -> None:
    st, out = steered.steer, steered.uplink.outer
    frame = malformed_packets(out)[kind]
    reason = {"inner_ipv4_too_long": "inner_ipv4_bad"}.get(kind, kind)
    before = st.counters()
    good = vxlan_packet(out, 42, 1, 2, payload=b"good")
    assert steered.classify(frame, good) == (1, 0)  # only the good one arrives
    after = st.counters()
    assert after.malformed[reason] == before.malformed[reason] + 1
    assert after.malformed_total == before.malformed_total + 1
    assert after.steered[PRISM_CLASS_LOW] == before.steered[PRISM_CLASS_LOW] + 1


def test_frames_from_a_kernel_vxlan_device(steered: Steered) -> None:
    """The remote host is a real kernel VXLAN endpoint, not scapy."""
    up, tb = steered.uplink, steered.uplink.testbed
    vx = tb.name(PREFIX, "v")
    tb.add_vxlan(vx, 42, up.remote_ip, up.host_ip, up.remote_if, up.remote_ns)
    inner = Inner()
    tb.add_addr(vx, "172.30.0.1", 24, up.remote_ns)
    tb.add_neigh(vx, inner.dst_ip, inner.dst_mac, up.remote_ns)
    steered.steer.set_port(7000)
    s = socket_in(up.remote_ns, socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for port in (7000, 7000, 80, 81, 82):
            s.sendto(b"from the kernel", (inner.dst_ip, port))
    finally:
        s.close()
    # The VXLAN device's own chatter (IPv6 ND, MLD) is LOW too: keep ours.
    high = [f for f in drain(steered.high, 2, timeout=3) if f.endswith(b"from the kernel")]
    low = [f for f in drain(steered.low, 3, timeout=1) if f.endswith(b"from the kernel")]
    assert len(high) == 2 and len(low) == 3
    # The kernel set the outer UDP port 4789 and a VNI of 42.
    assert all(f[36:38] == (4789).to_bytes(2, "big") and f[46:49] == (42).to_bytes(3, "big")
               for f in high + low)


def test_generic_mode_takes_a_gso_packet_whole_in_chained_frames(uplink: Uplink) -> None:
    """uplink.xdp_mode = "skb": a UDP GSO send through the remote's kernel VXLAN device stays one
    GSO packet across the veth (no native XDP takes GSO from the remote), reaches the frags
    classifier in generic mode whole, and comes to a multi-buffer socket in several parts, which
    stay chained, in order, byte for byte."""
    tb = uplink.testbed
    vx = tb.name(PREFIX, "v")
    tb.add_vxlan(vx, 42, uplink.remote_ip, uplink.host_ip, uplink.remote_if, uplink.remote_ns)
    inner = Inner()
    tb.add_addr(vx, "172.30.0.1", 24, uplink.remote_ns)
    tb.add_neigh(vx, inner.dst_ip, inner.dst_mac, uplink.remote_ns)
    payload = bytes((i * 7 + i // 251) & 0xFF for i in range(20000))
    with Umem(UmemParams(multi_buffer=True)) as umem, Steering(frags=True) as steer:
        steer.attach(uplink.host_if, AttachMode.SKB)
        low = XskSocket(umem, uplink.host_if, 0, XskParams(multi_buffer=True))
        try:
            steer.add_socket(low, PRISM_CLASS_LOW)
            low.fill(1024)
            s = socket_in(uplink.remote_ns, socket.AF_INET, socket.SOCK_DGRAM)
            try:
                s.setsockopt(socket.SOL_UDP, UDP_SEGMENT, 1400)
                s.sendto(payload, (inner.dst_ip, 9000))
            finally:
                s.close()
            whole = [f for f in drain(low, 1, timeout=3) if f.endswith(payload)]
            c = low.counters()
            assert len(whole) == 1 and len(whole[0]) == 14 + 50 + 20 + 8 + len(payload)  # outer, inner IPv4, UDP
            assert c["rx_multibuf"] == 1 and c["rx_multibuf_parts"] >= len(payload) // 4096 + 1
            account = umem.account()
            assert account.balanced and account.user == 0
        finally:
            low.close()
