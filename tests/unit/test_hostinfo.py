"""test_hostinfo.py - the host queries without pyroute2: rtnetlink neighbour messages encoded and parsed byte by byte, the ioctl replies parsed, and the loopback device read for real."""

from __future__ import annotations

import errno
import socket
import struct

import pytest

from prism_xdp.dataplane import hostinfo as h
from prism_xdp.dataplane.errors import PrismError


def nlmsg(kind: int, flags: int, seq: int, body: bytes) -> bytes:
    return struct.pack("=IHHII", 16 + len(body), kind, flags, seq, 0) + body


def ndmsg(ifindex: int, state: int, flags: int = 0, family: int = socket.AF_INET) -> bytes:
    return struct.pack("=BBHiHBB", family, 0, 0, ifindex, state, flags, 0)


def rtattr(kind: int, data: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(data), kind) + data
    return raw + b"\0" * (-len(raw) % 4)


def test_cpu_lists() -> None:
    assert h.parse_cpu_list("0-3,6\n") == {0, 1, 2, 3, 6}
    assert h.parse_cpu_list("0") == {0}
    assert h.online_cpus()  # this machine has at least one


def test_neighbour_dump_request_bytes() -> None:
    assert h.encode_neigh_dump(7) == (
        struct.pack("=IHHII", 28, 30, 0x301, 7, 0)  # RTM_GETNEIGH, NLM_F_REQUEST | NLM_F_DUMP
        + bytes([socket.AF_INET, 0, 0, 0]) + bytes(8))  # ndmsg: family, pad; ifindex, state, flags, type: 0


def test_resolve_request_bytes() -> None:
    """What pyroute2's neigh("replace", dst, ifindex, flags=NTF_USE, state=NUD_INCOMPLETE) sent."""
    assert h.encode_neigh_use(9, 4, "10.1.0.2") == (
        struct.pack("=IHHII", 36, 28, 0x505, 9, 0)  # RTM_NEWNEIGH, REQUEST | ACK | REPLACE | CREATE
        + bytes([socket.AF_INET, 0, 0, 0]) + struct.pack("=iHBB", 4, 0x01, 0x01, 0)  # ifindex 4, INCOMPLETE, NTF_USE
        + struct.pack("=HH", 8, 1) + bytes([10, 1, 0, 2]))  # NDA_DST


def test_replies_parse_into_neighbours_until_done() -> None:
    mac = bytes.fromhex("02fc00000005")
    data = (nlmsg(28, 2, 5, ndmsg(4, 0x02) + rtattr(1, socket.inet_aton("192.0.2.1")) + rtattr(2, mac))
            + nlmsg(28, 2, 5, ndmsg(4, 0x01) + rtattr(1, socket.inet_aton("192.0.2.9")))  # incomplete: no MAC
            + nlmsg(28, 2, 5, ndmsg(4, 0x02, family=socket.AF_INET6) + rtattr(1, bytes(16)))  # not IPv4
            + nlmsg(28, 2, 4, ndmsg(4, 0x02) + rtattr(1, socket.inet_aton("192.0.2.7")) + rtattr(2, mac)))  # old seq
    found, done = h.parse_replies(data, 5)
    assert not done
    assert found == [h.Neighbour(4, 0x02, "192.0.2.1", "02:fc:00:00:00:05"),
                     h.Neighbour(4, 0x01, "192.0.2.9", None)]
    assert h.parse_replies(nlmsg(3, 2, 5, struct.pack("=i", 0)), 5) == ([], True)  # NLMSG_DONE
    assert h.find_neighbour(found, 4, "192.0.2.1") == "02:fc:00:00:00:05"
    assert h.find_neighbour(found, 4, "192.0.2.9") is None  # not resolved yet
    assert h.find_neighbour(found, 5, "192.0.2.1") is None  # another link


def test_states_that_do_not_give_a_usable_mac() -> None:
    mac = "02:00:00:00:00:01"
    assert h.Neighbour(1, 0x04, "10.0.0.1", mac).valid  # STALE is still usable
    assert h.Neighbour(1, 0x80, "10.0.0.1", mac).valid  # PERMANENT
    assert not h.Neighbour(1, 0x20, "10.0.0.1", mac).valid  # FAILED
    assert not h.Neighbour(1, 0x02, "10.0.0.1", None).valid


def test_an_acknowledgement_ends_and_an_error_raises() -> None:
    header = struct.pack("=IHHII", 36, 28, 0x505, 3, 0)
    assert h.parse_replies(nlmsg(2, 0, 3, struct.pack("=i", 0) + header), 3) == ([], True)
    with pytest.raises(OSError) as info:
        h.parse_replies(nlmsg(2, 0, 3, struct.pack("=i", -errno.EPERM) + header), 3)
    assert info.value.errno == errno.EPERM


def test_ioctl_replies() -> None:
    reply = struct.pack("16sHH4s8x", b"eth0", socket.AF_INET, 0, socket.inet_aton("10.1.0.1"))
    assert h.parse_ifreq_ipv4(reply) == "10.1.0.1"
    drvinfo = struct.pack("=I32s", 3, b"veth") + bytes(h.DRVINFO_LEN - 36)
    assert h.parse_drvinfo_driver(drvinfo) == "veth"


def test_the_loopback_device() -> None:
    assert h.link_mac("lo") == "00:00:00:00:00:00"
    assert h.link_mtu("lo") >= 1500
    assert h.ipv4_address("lo") == "127.0.0.1"
    assert not h.is_veth("lo")


def test_a_missing_device_is_named() -> None:
    for query in (h.link_mac, h.link_mtu, h.ipv4_address):
        with pytest.raises(PrismError) as info:
            query("pxnosuchdev0")
        assert info.value.errno == errno.ENODEV and "pxnosuchdev0" in str(info.value)
    assert h.link_driver("pxnosuchdev0") is None and not h.is_veth("pxnosuchdev0")
    with pytest.raises(PrismError, match="no such interface"):
        h.resolve_mac("pxnosuchdev0", "10.0.0.1")
