"""hostinfo.py - what the data plane asks the host, with the standard library only: online CPUs, a link's MAC, MTU, IPv4 address and driver, and a neighbour's MAC (rtnetlink)."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from prism_xdp.dataplane.errors import PrismError

SIOCGIFADDR = 0x8915
SIOCETHTOOL = 0x8946
ETHTOOL_GDRVINFO = 0x00000003
DRVINFO_LEN = 196  # struct ethtool_drvinfo: cmd, driver[32], 4 more strings[32], reserved[12], 5 u32


# ---- CPUs and sysfs ---------------------------------------------------------

def parse_cpu_list(text: str) -> set[int]:
    """A kernel CPU list such as "0-3,6" (sysfs's cpu/online)."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        if part:
            lo, _, hi = part.partition("-")
            cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


def online_cpus() -> set[int]:
    """CPUs the kernel has online (not only those this process may use now)."""
    try:
        with open("/sys/devices/system/cpu/online") as f:
            return parse_cpu_list(f.read())
    except OSError:
        return set(range(os.cpu_count() or 1))


def _sysfs(ifname: str, attr: str, what: str) -> str:
    try:
        with open(f"/sys/class/net/{ifname}/{attr}") as f:
            return f.read().strip()
    except FileNotFoundError:
        raise PrismError(errno.ENODEV, what, ifname, "no such interface") from None


def link_mac(ifname: str) -> str:
    """The link's MAC address, aa:bb:cc:dd:ee:ff."""
    return _sysfs(ifname, "address", "link address")


def link_mtu(ifname: str) -> int:
    return int(_sysfs(ifname, "mtu", "uplink"))


# ---- ioctls -------------------------------------------------------------------

def _ifreq(ifname: str, tail: bytes = b"") -> bytes:
    """struct ifreq: the name in 16 bytes, then the union (24 bytes on 64-bit)."""
    return struct.pack("16s", ifname.encode()) + tail.ljust(24, b"\0")


def ipv4_address(ifname: str) -> str:
    """The link's (first) IPv4 address."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            reply = fcntl.ioctl(s.fileno(), SIOCGIFADDR, _ifreq(ifname))
        except OSError as exc:
            if exc.errno == errno.ENODEV:
                raise PrismError(errno.ENODEV, "uplink", ifname, "no such interface") from None
            if exc.errno == errno.EADDRNOTAVAIL:
                raise PrismError(errno.EADDRNOTAVAIL, "uplink", ifname,
                                 "has no IPv4 address: set local_ip or add one") from None
            raise
    return parse_ifreq_ipv4(reply)


def parse_ifreq_ipv4(reply: bytes) -> str:
    """The address in an ifreq that SIOCGIFADDR filled (a sockaddr_in after the name)."""
    return socket.inet_ntoa(reply[20:24])


def parse_drvinfo_driver(raw: bytes) -> str:
    """The driver's name in a struct ethtool_drvinfo."""
    return raw[4:36].split(b"\0", 1)[0].decode(errors="replace")


def link_driver(ifname: str) -> str | None:
    """The link's driver as ethtool reports it ("veth", "ixgbe", ...); None if it has no ethtool
    driver info or does not exist."""
    info = ctypes.create_string_buffer(struct.pack("I", ETHTOOL_GDRVINFO), DRVINFO_LEN)
    req = _ifreq(ifname, struct.pack("P", ctypes.addressof(info)))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            fcntl.ioctl(s.fileno(), SIOCETHTOOL, req)
        except OSError:
            return None
    return parse_drvinfo_driver(info.raw)


def is_veth(ifname: str) -> bool:
    """The link is one end of a veth pair (a test host's "wire"); a NIC is not."""
    return link_driver(ifname) == "veth"


# ---- rtnetlink: the neighbour (ARP) table ---------------------------------------

NETLINK_ROUTE = 0
NLMSG_ERROR, NLMSG_DONE = 2, 3
RTM_NEWNEIGH, RTM_GETNEIGH = 28, 30
NLM_F_REQUEST, NLM_F_ACK, NLM_F_REPLACE, NLM_F_CREATE, NLM_F_DUMP = 0x1, 0x4, 0x100, 0x400, 0x300
NDA_DST, NDA_LLADDR = 1, 2
NTF_USE = 0x01
NUD_INCOMPLETE = 0x01
NUD_VALID = 0x02 | 0x04 | 0x08 | 0x10 | 0x40 | 0x80  # REACHABLE, STALE, DELAY, PROBE, NOARP, PERMANENT
_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_NDMSG = struct.Struct("=BxxxiHBB")  # family, pad, ifindex, state, flags, type
_RTATTR = struct.Struct("=HH")  # len, type


@dataclass(frozen=True)
class Neighbour:
    ifindex: int
    state: int
    dst: str | None
    lladdr: str | None

    @property
    def valid(self) -> bool:
        return bool(self.lladdr) and bool(self.state & NUD_VALID)


def _align(n: int) -> int:
    return (n + 3) & ~3


def _attr(kind: int, data: bytes) -> bytes:
    return (_RTATTR.pack(_RTATTR.size + len(data), kind) + data).ljust(_align(_RTATTR.size + len(data)), b"\0")


def _message(kind: int, flags: int, seq: int, body: bytes) -> bytes:
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), kind, flags, seq, 0) + body


def encode_neigh_dump(seq: int) -> bytes:
    """RTM_GETNEIGH: every IPv4 neighbour (the reply is filtered here)."""
    return _message(RTM_GETNEIGH, NLM_F_REQUEST | NLM_F_DUMP, seq, _NDMSG.pack(socket.AF_INET, 0, 0, 0, 0))


def encode_neigh_use(seq: int, ifindex: int, ip: str) -> bytes:
    """RTM_NEWNEIGH with NTF_USE: the kernel resolves ip on ifindex itself (sends the ARP request)."""
    body = _NDMSG.pack(socket.AF_INET, ifindex, NUD_INCOMPLETE, NTF_USE, 0) + _attr(NDA_DST, socket.inet_aton(ip))
    return _message(RTM_NEWNEIGH, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE, seq, body)


def _attrs(data: bytes) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    pos = 0
    while pos + _RTATTR.size <= len(data):
        length, kind = _RTATTR.unpack_from(data, pos)
        if length < _RTATTR.size:
            break
        out[kind] = data[pos + _RTATTR.size:pos + length]
        pos += _align(length)
    return out


def parse_replies(data: bytes, seq: int) -> tuple[list[Neighbour], bool]:
    """The neighbours in one read of replies to request seq, and whether the reply is complete
    (NLMSG_DONE, or an acknowledgement). A netlink error raises OSError with its errno."""
    found: list[Neighbour] = []
    pos = 0
    while pos + _NLMSGHDR.size <= len(data):
        length, kind, _flags, msg_seq, _pid = _NLMSGHDR.unpack_from(data, pos)
        if length < _NLMSGHDR.size:
            break
        body = data[pos + _NLMSGHDR.size:pos + length]
        pos += _align(length)
        if msg_seq != seq:
            continue
        if kind == NLMSG_DONE:
            return found, True
        if kind == NLMSG_ERROR:
            (err,) = struct.unpack_from("=i", body)
            if err:
                raise OSError(-err, os.strerror(-err))
            return found, True  # an acknowledgement
        if kind == RTM_NEWNEIGH and len(body) >= _NDMSG.size:
            family, ifindex, state, _nflags, _ntype = _NDMSG.unpack_from(body)
            if family != socket.AF_INET:
                continue
            attrs = _attrs(body[_NDMSG.size:])
            dst = socket.inet_ntoa(attrs[NDA_DST]) if len(attrs.get(NDA_DST, b"")) == 4 else None
            ll = attrs.get(NDA_LLADDR)
            found.append(Neighbour(ifindex, state, dst, ":".join(f"{b:02x}" for b in ll) if ll else None))
    return found, False


def find_neighbour(entries: list[Neighbour], ifindex: int, ip: str) -> str | None:
    """The MAC of ip on ifindex if the table holds a usable entry for it."""
    for entry in entries:
        if entry.ifindex == ifindex and entry.dst == ip and entry.valid:
            return entry.lladdr
    return None


class _Rtnl:
    """One rtnetlink socket: a request, then its replies until complete."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        self.sock.settimeout(2.0)
        self.seq = 0

    def request(self, encode: Callable[..., bytes], *args: object) -> list[Neighbour]:
        self.seq += 1
        self.sock.send(encode(self.seq, *args))
        out: list[Neighbour] = []
        while True:
            found, done = parse_replies(self.sock.recv(1 << 16), self.seq)
            out += found
            if done:
                return out

    def close(self) -> None:
        self.sock.close()


def resolve_mac(ifname: str, ip: str, timeout: float = 2.0) -> str:
    """The link-layer address of ip on ifname from the kernel's neighbour table.

    When the entry is missing or stale, the kernel is asked to resolve it
    (NTF_USE: it sends the ARP request itself), then the table is polled.
    ARP replies are not VXLAN, so the steering program passes them on.
    """
    try:
        index = socket.if_nametoindex(ifname)
    except OSError:
        raise PrismError(errno.ENODEV, "resolve VTEP", ifname, "no such interface") from None
    deadline = time.monotonic() + timeout
    rtnl = _Rtnl()
    try:
        asked = False
        while True:
            mac = find_neighbour(rtnl.request(encode_neigh_dump), index, ip)
            if mac is not None:
                return mac
            if time.monotonic() > deadline:
                raise PrismError(errno.EHOSTUNREACH, "resolve VTEP", f"{ip} on {ifname}",
                                 "no ARP reply; is the VTEP up, or give its mac in the config")
            if not asked:
                rtnl.request(encode_neigh_use, index, ip)
                asked = True
            time.sleep(0.01)
    except PrismError:
        raise
    except OSError as exc:  # the neighbour table could not be read or written
        raise PrismError(exc.errno or errno.EIO, "resolve VTEP", f"{ip} on {ifname}", "rtnetlink") from None
    finally:
        rtnl.close()
