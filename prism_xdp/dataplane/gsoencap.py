"""gsoencap.py - UplinkGso: forwarding.uplink_delivery = "packet": a container's TCP segments leave the uplink merged into GSO packets, which prism_gso_encap (tcx egress) encapsulates."""

from __future__ import annotations

import errno
from dataclasses import asdict, dataclass

from prism_xdp.dataplane import native
from prism_xdp.dataplane.errors import ConfigError, PrismError
from prism_xdp.dataplane.native import ffi
from prism_xdp.dataplane.overlay import ip_be, parse_mac
from prism_xdp.dataplane.xdp import XdpProgram, ifindex_of

UPLINK_DELIVERY = ("auto", "packet", "xsk")

# struct prism_gso_counters, in u64 words (a unit test checks the count).
GSO_COUNTER_FIELDS = ("encap", "encap_bytes", "no_vtep", "failed")


def check_uplink_delivery(value: object) -> str:
    if value not in UPLINK_DELIVERY:
        raise ConfigError(f"forwarding.uplink_delivery: must be one of {', '.join(UPLINK_DELIVERY)}, not {value!r}")
    return str(value)


def resolve_uplink_delivery(value: str, has_tcx: bool | None = None) -> tuple[str, str]:
    """(method, why): "packet" where the kernel has tcx hooks (Linux >= 6.6), which
    prism_gso_encap needs; "auto" falls back to "xsk" without them, "packet" is refused."""
    check_uplink_delivery(value)
    if value == "xsk":
        return "xsk", "forwarding.uplink_delivery = \"xsk\""
    has = native.tcx_supported() if has_tcx is None else has_tcx
    if has:
        return "packet", f"forwarding.uplink_delivery = \"{value}\"; this kernel has tcx egress hooks"
    if value == "packet":
        raise PrismError(errno.EOPNOTSUPP, "forwarding.uplink_delivery", "packet",
                         "needs tcx egress hooks (Linux 6.6 or later); use \"auto\" or \"xsk\"")
    return "xsk", "forwarding.uplink_delivery = \"auto\"; this kernel has no tcx hooks (Linux < 6.6)"


def describe_method(method: str, why: str) -> dict[str, object]:
    how = ("AF_PACKET with a virtio-net header: TCP segments merged into GSO packets, encapsulated by "
           "prism_gso_encap on the uplink's tcx egress" if method == "packet"
           else "AF_XDP TX ring, one encapsulated frame per skb")
    return {"method": method, "how": how, "why": why}


@dataclass
class GsoCounters:
    """Sums over CPUs of prism_gso_encap's counters."""

    encap: int = 0
    encap_bytes: int = 0
    no_vtep: int = 0
    failed: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def gso_mark(vtep_index: int, sport: int) -> int:
    """The mark a merged packet goes with (what prism_gro.c writes; for tests)."""
    if not 0 <= vtep_index < native.PRISM_GSO_VTEPS or not 0 <= sport <= 0xffff:
        raise ValueError(f"vtep index {vtep_index} or port {sport} out of range")
    return native.PRISM_GSO_MARK | sport << 8 | vtep_index


class UplinkGso:
    """prism_gso_encap on the uplink's tcx egress, and its table of VTEPs.

    The workers write each VTEP's outer headers into the table under the
    VTEP's index (their overlays add the VTEPs in the config's order, so
    every worker writes the same slot alike). The link dies with the process:
    a daemon killed with -9 leaves nothing on the hook.
    """

    def __init__(self) -> None:
        self.prog = XdpProgram("prism_gso_encap")
        self._link: tuple[int, str] | None = None
        try:
            self._vteps_fd = self.prog.map_fd("gso_vteps")
            self._counters_fd = self.prog.map_fd("gso_counters")
        except BaseException:
            self.prog.close()
            raise

    def set_vtep(self, index: int, vni: int, ip: str, mac: str, local_ip: str, local_mac: str,
                 vxlan_port: int, ttl: int) -> None:
        v = ffi.new("struct prism_gso_vtep *")
        v.remote_mac = parse_mac(mac, f"vteps[{index}].mac")
        v.local_mac = parse_mac(local_mac, "uplink MAC")
        v.local_ip = ip_be(local_ip)
        v.remote_ip = ip_be(ip)
        v.vni = vni
        v.vxlan_port = vxlan_port
        v.ttl = ttl
        v.valid = 1
        native.map_update(self._vteps_fd, ffi.new("uint32_t *", index), v, f"gso_vteps[{index}]",
                          f"at most {native.PRISM_GSO_VTEPS} VTEPs")

    def attach(self, uplink: str) -> None:
        fd = native.tcx_attach_link(self.prog.fd, ifindex_of(uplink), "attach prism_gso_encap (tcx egress)",
                                    uplink, egress=True,
                                    hint="forwarding.uplink_delivery = \"packet\" needs tcx (Linux 6.6 or later)")
        self._link = (fd, uplink)

    def detach(self) -> None:
        if self._link is not None:
            fd, ifname = self._link
            self._link = None
            native.link_detach(fd, "detach prism_gso_encap", ifname,
                               tolerate=(errno.ENOENT, errno.ENODEV, errno.ENOLINK))

    def counters(self) -> GsoCounters:
        words = native.percpu_sum(self._counters_fd, 0, native.PRISM_GSO_COUNTER_WORDS, "gso_counters")
        return GsoCounters(*(int(w) for w in words))

    def close(self) -> None:
        self.detach()
        self.prog.close()
