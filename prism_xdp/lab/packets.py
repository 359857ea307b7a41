"""packets.py - VXLAN test and injection packets built with scapy's own layers (outer Eth/IPv4/UDP/VXLAN around an inner Eth/IPv4/TCP|UDP)."""

from __future__ import annotations

from dataclasses import dataclass

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.layers.vxlan import VXLAN
from scapy.packet import Packet, Raw

from prism_xdp.dataplane.native import PRISM_VXLAN_PORT_DEFAULT


@dataclass(frozen=True)
class Outer:
    """The tunnel: who sends (remote VTEP) to whom (the host's uplink)."""

    src_mac: str
    dst_mac: str
    src_ip: str
    dst_ip: str
    vxlan_port: int = PRISM_VXLAN_PORT_DEFAULT


@dataclass(frozen=True)
class Inner:
    """The container's packet inside the tunnel."""

    src_mac: str = "02:00:00:00:aa:01"
    dst_mac: str = "02:00:00:00:bb:01"
    src_ip: str = "172.30.0.1"
    dst_ip: str = "172.30.0.2"


def inner_packet(
    inner: Inner, sport: int, dport: int, proto: str = "udp", payload: bytes = b"", dscp: int = 0
) -> Packet:
    l4 = TCP(sport=sport, dport=dport, flags="A") if proto == "tcp" else UDP(sport=sport, dport=dport)
    return (
        Ether(src=inner.src_mac, dst=inner.dst_mac)
        / IP(src=inner.src_ip, dst=inner.dst_ip, tos=dscp << 2)
        / l4
        / Raw(payload)
    )


def encapsulate(outer: Outer, inner: Packet | bytes, vni: int, flags: int = 0x08,
                udp_sport: int = 49152) -> bytes:
    """Wrap an inner frame in outer Ethernet/IPv4/UDP/VXLAN; flags 0x08 is the I flag."""
    return bytes(
        Ether(src=outer.src_mac, dst=outer.dst_mac)
        / IP(src=outer.src_ip, dst=outer.dst_ip)
        / UDP(sport=udp_sport, dport=outer.vxlan_port, chksum=0)
        / VXLAN(vni=vni, flags=flags)
        / (inner if isinstance(inner, Packet) else Raw(inner))
    )


def vxlan_packet(
    outer: Outer,
    vni: int,
    sport: int,
    dport: int,
    proto: str = "udp",
    payload: bytes = b"",
    dscp: int = 0,
    inner: Inner = Inner(),
) -> bytes:
    return encapsulate(outer, inner_packet(inner, sport, dport, proto, payload, dscp), vni)


def malformed_packets(outer: Outer, vni: int = 42) -> dict[str, bytes]:
    """One packet per malformed reason the classifier counts (keys are layout's names)."""
    good_inner = bytes(inner_packet(Inner(), 1000, 2000, "udp", b"x" * 16))
    base = Ether(src=outer.src_mac, dst=outer.dst_mac) / IP(src=outer.src_ip, dst=outer.dst_ip)
    udp = UDP(sport=49152, dport=outer.vxlan_port, chksum=0)
    inner = Inner()
    # inner IPv4 says TCP, but only 12 bytes of the 20-byte TCP header follow
    short_tcp = bytes(
        Ether(src=inner.src_mac, dst=inner.dst_mac)
        / IP(src=inner.src_ip, dst=inner.dst_ip, proto=6)
        / Raw(b"\x03\xe8\x07\xd0" + b"\x00" * 8)
    )
    # inner IPv4 whose IHL says 4 (< 5 is invalid)
    bad_ihl = bytearray(good_inner)
    bad_ihl[14] = 0x44
    # inner IPv4 that claims more bytes than the frame holds
    long_ip = bytearray(good_inner)
    long_ip[16:18] = (len(good_inner) - 14 + 100).to_bytes(2, "big")
    return {
        "vxlan_truncated": bytes(base / udp / Raw(b"\x08\x00\x00")),
        "vxlan_bad_flags": encapsulate(outer, good_inner, vni, flags=0x00),
        "inner_eth_truncated": encapsulate(outer, good_inner[:10], vni),
        "inner_ipv4_bad": encapsulate(outer, bytes(bad_ihl), vni),
        "inner_ipv4_too_long": encapsulate(outer, bytes(long_ip), vni),
        "inner_l4_truncated": encapsulate(outer, short_tcp, vni),
    }
