"""overlay.py - the overlay's forwarding state (containers, VTEPs) and the C stages that decapsulate, encapsulate and deliver whole batches."""

from __future__ import annotations

import errno
import ipaddress
import re
import socket
import sys
from dataclasses import dataclass
from typing import Any

from prism_xdp.dataplane import native
from prism_xdp.dataplane.batch import Batch
from prism_xdp.dataplane.checksum import ChecksumPolicy
from prism_xdp.dataplane.errors import ConfigError
from prism_xdp.dataplane.hist import Histogram
from prism_xdp.dataplane.native import check_rc, ffi
from prism_xdp.dataplane.umem import Umem
from prism_xdp.dataplane.xsk import XskSocket

UPLINK_PORT = native.UPLINK_PORT
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def parse_mac(value: str, what: str) -> bytes:
    """Six bytes of a unicast MAC written aa:bb:cc:dd:ee:ff; ConfigError naming `what` otherwise."""
    text = str(value).lower()
    if not _MAC.match(text):
        raise ConfigError(f"{what}: {value!r} is not a MAC address (aa:bb:cc:dd:ee:ff)")
    raw = bytes.fromhex(text.replace(":", ""))
    if raw[0] & 1:
        raise ConfigError(f"{what}: {value} is a multicast address; a port needs a unicast MAC")
    return raw


def parse_ipv4(value: str, what: str) -> str:
    try:
        return str(ipaddress.IPv4Address(value))
    except (ipaddress.AddressValueError, ValueError):
        raise ConfigError(f"{what}: {value!r} is not an IPv4 address") from None


def check_vni(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << 24:
        raise ConfigError(f"{what}: VNI must be an integer in 0..16777215, not {value!r}")
    return value


@dataclass(frozen=True)
class ContainerSpec:
    """A container: a network namespace reached through the host side of a veth pair."""

    name: str
    host_if: str
    mac: str  # the container's own (namespace side) MAC
    vni: int
    ip: str | None = None  # informational: the container's address in the overlay

    def check(self, where: str = "container") -> None:
        if not self.name:
            raise ConfigError(f"{where}.name: must not be empty")
        if not self.host_if or len(self.host_if) > 15:
            raise ConfigError(f"{where}.host_if: {self.host_if!r} is not an interface name (1-15 characters)")
        parse_mac(self.mac, f"{where}.mac")
        check_vni(self.vni, f"{where}.vni")
        if self.ip is not None:
            parse_ipv4(self.ip.split("/")[0], f"{where}.ip")


@dataclass(frozen=True)
class VtepSpec:
    """A remote VXLAN endpoint of a VNI; its MAC is resolved on the uplink when not given."""

    ip: str
    vni: int
    mac: str | None = None

    def check(self, where: str = "vtep") -> None:
        parse_ipv4(self.ip, f"{where}.ip")
        check_vni(self.vni, f"{where}.vni")
        if self.mac is not None:
            parse_mac(self.mac, f"{where}.mac")


def ip_be(ip: str) -> int:
    """The uint32 whose bytes in memory are the address in network order."""
    return int.from_bytes(socket.inet_aton(ip), sys.byteorder)


def _mac_bytes(mac: str) -> bytes:
    return parse_mac(mac, "mac")


def _stage_error(rc: int, what: str) -> int:
    if rc == -errno.ENOMEM:
        return 0  # counted in drop_no_memory; the next batch may find memory
    return check_rc(rc, what)


_decap, _encap, _deliver = native.decap_batch, native.encap_batch, native.deliver_batch
_through, _service = native.overlay_through, native.overlay_service

COUNTER_NAMES = tuple(name for name, _ in ffi.typeof("struct prism_overlay_counters").fields)
PORT_COUNTER_NAMES = tuple(name for name, _ in ffi.typeof("struct prism_port_counters").fields)


class Overlay:
    """The C forwarding state of one worker and its three stages, a batch per call.

    Port 0 is the uplink; each container added becomes the next port.
    """

    def __init__(self, umem: Umem, vxlan_port: int, local_mac: str, local_ip: str, uplink_mtu: int,
                 ttl: int = 64, learn: bool = True, checksum: ChecksumPolicy | None = None,
                 fdb_ageing_s: int = 300, fdb_max_per_vtep: int = 4096) -> None:
        checksum = checksum or ChecksumPolicy("offload" if umem.tx_metadata else "software")
        cfg = ffi.new("struct prism_overlay_config *")
        cfg.vxlan_port = vxlan_port
        cfg.local_mac = parse_mac(local_mac, "uplink mac")
        cfg.local_ip = ip_be(local_ip)
        cfg.uplink_mtu = uplink_mtu
        cfg.ttl = ttl
        cfg.learn = 1 if learn else 0
        cfg.checksum = checksum.c_method()
        cfg.accept_partial = 1 if checksum.accept_partial else 0
        cfg.fdb_ageing_s = fdb_ageing_s
        cfg.fdb_max_per_vtep = fdb_max_per_vtep
        self._ptr: Any = native.overlay_new(umem.ptr, cfg)
        self.checksum = checksum
        self.umem = umem
        self.ports: list[str] = []  # port number -> name

    @property
    def ptr(self) -> Any:
        if self._ptr is None:
            raise ValueError("overlay is closed")
        return self._ptr

    @staticmethod
    def _sockets(socks: list[XskSocket]) -> Any:
        return ffi.new("prism_xsk *[]", [s.ptr for s in socks]) if socks else ffi.NULL

    def set_uplink(self, socks: list[XskSocket], name: str = "uplink") -> int:
        native.overlay_set_uplink(self.ptr, self._sockets(socks), len(socks))
        if not self.ports:
            self.ports.append(name)
        return UPLINK_PORT

    def add_container(self, socks: list[XskSocket], vni: int, mac: str, name: str) -> int:
        port = native.overlay_add_container(self.ptr, self._sockets(socks), len(socks), vni, _mac_bytes(mac), name)
        self.ports.append(name)
        return port

    def add_vtep(self, vni: int, ip: str, mac: str) -> int:
        return native.overlay_add_vtep(self.ptr, vni, ip_be(ip), _mac_bytes(mac), f"{ip} VNI {vni}")

    def set_packet_delivery(self, port: int, fd: int, gro_segments: int) -> None:
        """Deliver to container port through packet socket fd (-1: its AF_XDP sockets again),
        up to gro_segments TCP segments merged into one GSO packet. The caller keeps fd open."""
        native.overlay_set_port_packet(self.ptr, port, fd, gro_segments)

    def set_snooping(self, table: Any) -> None:
        """Snoop MLD with table (a Snooping's pointer; it must outlive the overlay)."""
        native.overlay_set_mcast(self.ptr, table)

    def inject(self, frame: bytes, out: Batch) -> int:
        """A copy of frame for every container port, appended to out (the daemon's own frames)."""
        return native.overlay_inject(self.ptr, frame, out.ptr)

    def lookup(self, vni: int, mac: str) -> tuple[str, int] | None:
        """Where (vni, mac) goes: ("local", port), ("remote", vtep) or None."""
        kind, idx = native.overlay_lookup(self.ptr, vni, _mac_bytes(mac))
        return {0: None, 1: ("local", idx), 2: ("remote", idx)}[kind]

    # stages: what the worker's loop runs, a batch per call -------------------
    # Each takes every packet of its input batch and appends what it passes on
    # to out. A -ENOMEM is the host's (counted in drop_no_memory, the loop goes
    # on: 0); any other -errno is a bug and raises. The pointer is read without
    # the closed check of .ptr: a closed overlay fails in cffi all the same.
    def decap(self, batch: Batch, out: Batch) -> int:
        rc: int = _decap(self._ptr, batch.ptr, out.ptr)
        return rc if rc >= 0 else _stage_error(rc, "decap")

    def encap(self, src_port: int, batch: Batch, out: Batch) -> int:
        rc: int = _encap(self._ptr, src_port, batch.ptr, out.ptr)
        return rc if rc >= 0 else _stage_error(rc, "encap")

    def deliver(self, cls: int, batch: Batch) -> int:
        """Transmit batch on each packet's port, class cls's socket; batch is empty afterwards."""
        rc: int = _deliver(self._ptr, cls, batch.ptr)
        return rc if rc >= 0 else _stage_error(rc, "deliver")

    def through(self, xsk: XskSocket, src_port: int, cls: int, batch: Batch, out: Batch, limit: int) -> int:
        """rx (up to limit) from xsk, then decap (from the uplink) or encap, then deliver,
        in one call; packets taken. batch and out are scratch, empty before and after."""
        rc: int = _through(self._ptr, xsk.ptr, src_port, cls, batch.ptr, out.ptr, limit)
        return rc if rc >= 0 else _stage_error(rc, f"through {xsk.ifname}")

    def service(self, uplink_fill: int, fill_level: int) -> int:
        """Completions back to the pool, every fill ring topped up; frames reaped."""
        return int(_service(self._ptr, uplink_fill, fill_level))

    def set_hold(self, segments: int) -> None:
        """Up to segments LOW TCP segments per port wait for the next batches to merge with
        (prism_api.h, "the hold"); 0 (off), or a smaller size, sends what waits."""
        check_rc(native.overlay_set_hold(self.ptr, segments), f"hold {segments} segments")

    def flush_held(self, older_than_ns: int = 0) -> int:
        """Send the segments held longer than older_than_ns (0: all); frames sent."""
        return int(native.overlay_flush_held(self.ptr, older_than_ns))

    def flush_tx(self, max_rounds: int = 1000) -> bool:
        """Kick until every TX ring is empty; False if they did not empty."""
        return int(native.overlay_flush_tx(self.ptr, max_rounds)) >= 0

    # measurement -----------------------------------------------------------
    def histogram(self, cls: int, from_poll: bool = False) -> tuple[Histogram, list[int]]:
        """Class cls's latency in ns to the TX kick — from arrival (XDP's stamp), or
        from_poll from the RX poll — and its deliver batch sizes (log2 buckets)."""
        raw = native.overlay_hist(self.ptr, cls, from_poll)
        h = Histogram(list(raw.buckets), int(raw.count), int(raw.sum), int(raw.min), int(raw.max))
        return h, list(raw.batch_sizes)

    def reset_histograms(self) -> None:
        native.overlay_hist_reset(self.ptr)

    # statistics ----------------------------------------------------------
    def counters(self) -> dict[str, int]:
        out = native.overlay_counters(self.ptr)
        return {name: int(getattr(out, name)) for name in COUNTER_NAMES}

    def port_counters(self) -> dict[str, dict[str, int]]:
        result = {}
        for port, name in enumerate(self.ports):
            out = native.overlay_port_counters(self.ptr, port, name)
            result[name] = {k: int(getattr(out, k)) for k in PORT_COUNTER_NAMES}
        return result

    def close(self) -> None:
        if self._ptr is not None:
            native.overlay_delete(self._ptr)
            self._ptr = None

