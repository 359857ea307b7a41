"""mld.py - the MLDv2 general query (RFC 3810) that the daemon sends its containers as their querier, built byte by byte."""

from __future__ import annotations

import struct

ALL_NODES_MAC = bytes.fromhex("333300000001")
ALL_NODES = bytes.fromhex("ff020000000000000000000000000001")
ETH_P_IPV6 = 0x86DD
NEXTHDR_HOP = 0
NEXTHDR_ICMPV6 = 58
MLD_QUERY = 130
# Hop-by-hop options: router alert (type 5, length 2, value 0: MLD), then PadN
# to 8 bytes. A host drops a query without it (RFC 3810 6.2), or whose hop
# limit is not 1, or whose source is not link-local.
ROUTER_ALERT_MLD = bytes([NEXTHDR_ICMPV6, 0, 5, 2, 0, 0, 1, 0])
MAX_CODE_LINEAR = 0x8000  # codes below are the value itself; above, floating point
MAX_QQIC_LINEAR = 0x80


def link_local(mac: bytes) -> bytes:
    """fe80::/64 with the modified EUI-64 interface identifier of mac (RFC 4291)."""
    if len(mac) != 6:
        raise ValueError(f"a MAC address has 6 bytes, not {len(mac)}")
    eui = bytes([mac[0] ^ 0x02]) + mac[1:3] + b"\xff\xfe" + mac[3:]
    return bytes.fromhex("fe80000000000000") + eui


def _float_code(value: int, mant_bits: int, limit: int) -> int:
    """RFC 3810's code for value: the value itself below limit, else 1|exp(3)|mant."""
    if value < limit:
        return value
    for exp in range(8):
        mant = (value >> (exp + 3)) - (1 << mant_bits)
        if 0 <= mant < 1 << mant_bits:
            return limit | exp << mant_bits | mant
    raise ValueError(f"{value} is too large for an MLD code")


def max_response_code(ms: int) -> int:
    return _float_code(ms, 12, MAX_CODE_LINEAR)


def qqic(seconds: int) -> int:
    return _float_code(seconds, 4, MAX_QQIC_LINEAR)


def icmpv6_checksum(src: bytes, dst: bytes, message: bytes) -> int:
    """The ICMPv6 checksum over the IPv6 pseudo-header and message (its field zero)."""
    data = src + dst + struct.pack("!I3xB", len(message), NEXTHDR_ICMPV6) + message
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def general_query(src_mac: bytes, max_response_ms: int, query_interval_s: int, robustness: int = 2) -> bytes:
    """An Ethernet frame: an MLDv2 general query from src_mac's link-local address to all nodes."""
    if not 1 <= robustness <= 7:
        raise ValueError(f"robustness must be in 1..7, not {robustness}")
    src = link_local(src_mac)
    message = bytearray(struct.pack("!BBHHH16sBBH", MLD_QUERY, 0, 0, max_response_code(max_response_ms), 0,
                                    bytes(16), robustness, qqic(query_interval_s), 0))
    struct.pack_into("!H", message, 2, icmpv6_checksum(src, ALL_NODES, bytes(message)))
    payload = ROUTER_ALERT_MLD + bytes(message)
    ipv6 = struct.pack("!IHBB16s16s", 6 << 28, len(payload), NEXTHDR_HOP, 1, src, ALL_NODES)
    return ALL_NODES_MAC + src_mac + struct.pack("!H", ETH_P_IPV6) + ipv6 + payload
