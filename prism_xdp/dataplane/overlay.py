"""overlay.py - the overlay's forwarding state (containers, VTEPs) and the C stages that decapsulate, encapsulate and deliver whole batches."""

from __future__ import annotations

import ipaddress
import re
import socket
import sys
import time
from dataclasses import dataclass
from typing import Any

from prism_xdp.dataplane.batch import Batch
from prism_xdp.dataplane.checksum import ChecksumPolicy
from prism_xdp.dataplane.errors import ConfigError, PrismError
from prism_xdp.dataplane.hist import Histogram
from prism_xdp.dataplane.native import check_rc, ffi, lib
from prism_xdp.dataplane.umem import Umem
from prism_xdp.dataplane.xsk import XskSocket

UPLINK_PORT = int(lib.PRISM_UPLINK_PORT)
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


def resolve_mac(ifname: str, ip: str, timeout: float = 2.0) -> str:
    """The link-layer address of ip on ifname from the kernel's neighbour table.

    When the entry is missing or stale, the kernel is asked to resolve it
    (NTF_USE: it sends the ARP request itself), then the table is polled.
    ARP replies are not VXLAN, so the steering program passes them on.
    """
    from pyroute2 import IPRoute

    nud_valid = 0x02 | 0x04 | 0x08 | 0x10 | 0x40 | 0x80  # REACHABLE..PERMANENT
    deadline = time.monotonic() + timeout
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            raise PrismError(19, "resolve VTEP", ifname, "no such interface")
        index = found[0]
        asked = False
        while True:
            for entry in ipr.get_neighbours(ifindex=index, dst=ip):
                mac = entry.get_attr("NDA_LLADDR")
                if mac and entry["state"] & nud_valid:
                    return str(mac)
            if time.monotonic() > deadline:
                raise PrismError(113, "resolve VTEP", f"{ip} on {ifname}",
                                 "no ARP reply; is the VTEP up, or give its mac in the config")
            if not asked:
                ipr.neigh("replace", dst=ip, ifindex=index, flags=0x01, state=0x01)  # NTF_USE
                asked = True
            time.sleep(0.01)


def _ip_be(ip: str) -> int:
    """The uint32 whose bytes in memory are the address in network order."""
    return int.from_bytes(socket.inet_aton(ip), sys.byteorder)


def _mac_bytes(mac: str) -> Any:
    return ffi.new("uint8_t[6]", parse_mac(mac, "mac"))


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
        cfg.local_ip = _ip_be(local_ip)
        cfg.uplink_mtu = uplink_mtu
        cfg.ttl = ttl
        cfg.learn = 1 if learn else 0
        cfg.checksum = checksum.c_method()
        cfg.accept_partial = 1 if checksum.accept_partial else 0
        cfg.fdb_ageing_s = fdb_ageing_s
        cfg.fdb_max_per_vtep = fdb_max_per_vtep
        out = ffi.new("prism_overlay **")
        check_rc(lib.prism_overlay_new(out, umem.ptr, cfg), "create overlay",
                 hint="vxlan_port, uplink MTU (>= 68) and ttl must be set; checksum offload needs TX metadata")
        self.checksum = checksum
        self._ptr: Any = out[0]
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
        check_rc(lib.prism_overlay_set_uplink(self.ptr, self._sockets(socks), len(socks)), "set uplink")
        if not self.ports:
            self.ports.append(name)
        return UPLINK_PORT

    def add_container(self, socks: list[XskSocket], vni: int, mac: str, name: str) -> int:
        port = check_rc(
            lib.prism_overlay_add_container(self.ptr, self._sockets(socks), len(socks), vni,
                                            _mac_bytes(mac)),
            "add container", name, "MAC already used in this VNI, or the uplink is not set",
        )
        self.ports.append(name)
        return port

    def add_vtep(self, vni: int, ip: str, mac: str) -> int:
        return check_rc(lib.prism_overlay_add_vtep(self.ptr, vni, _ip_be(ip),
                                                   _mac_bytes(mac)), "add VTEP", f"{ip} VNI {vni}")

    def lookup(self, vni: int, mac: str) -> tuple[str, int] | None:
        """Where (vni, mac) goes: ("local", port), ("remote", vtep) or None."""
        idx = ffi.new("uint32_t *")
        kind = lib.prism_overlay_lookup(self.ptr, vni, _mac_bytes(mac), idx)
        return {0: None, 1: ("local", int(idx[0])), 2: ("remote", int(idx[0]))}[kind]

    # stages --------------------------------------------------------------
    def decap(self, batch: Batch, out: Batch) -> int:
        return int(lib.prism_decap_batch(self.ptr, batch.ptr, out.ptr))

    def encap(self, src_port: int, batch: Batch, out: Batch) -> int:
        return int(lib.prism_encap_batch(self.ptr, src_port, batch.ptr, out.ptr))

    def deliver(self, cls: int, batch: Batch) -> int:
        return check_rc(lib.prism_deliver_batch(self.ptr, cls, batch.ptr), "deliver")

    def service(self, uplink_fill: int, fill_level: int) -> int:
        return int(lib.prism_overlay_service(self.ptr, uplink_fill, fill_level))

    # measurement -----------------------------------------------------------
    def histogram(self, cls: int, from_poll: bool = False) -> tuple[Histogram, list[int]]:
        """Class cls's latency in ns to the TX kick — from arrival (XDP's stamp), or
        from_poll from the RX poll — and its deliver batch sizes (log2 buckets)."""
        raw = ffi.new("struct prism_hist *")
        check_rc(lib.prism_overlay_hist(self.ptr, cls, 1 if from_poll else 0, raw), "histogram",
                 f"class {cls}")
        h = Histogram(list(raw.buckets), int(raw.count), int(raw.sum), int(raw.min), int(raw.max))
        return h, list(raw.batch_sizes)

    def reset_histograms(self) -> None:
        lib.prism_overlay_hist_reset(self.ptr)

    # statistics ----------------------------------------------------------
    def counters(self) -> dict[str, int]:
        out = ffi.new("struct prism_overlay_counters *")
        lib.prism_overlay_counters(self.ptr, out)
        return {name: int(getattr(out, name)) for name in COUNTER_NAMES}

    def port_counters(self) -> dict[str, dict[str, int]]:
        out = ffi.new("struct prism_port_counters *")
        result = {}
        for port, name in enumerate(self.ports):
            check_rc(lib.prism_overlay_port_counters(self.ptr, port, out), "port counters", name)
            result[name] = {k: int(getattr(out, k)) for k in PORT_COUNTER_NAMES}
        return result

    def close(self) -> None:
        if self._ptr is not None:
            lib.prism_overlay_delete(self._ptr)
            self._ptr = None


DROP_REASONS = tuple(n[len("drop_"):] for n in COUNTER_NAMES if n.startswith("drop_"))
