"""kernelpath.py - KernelHighPath: the option forwarding.high_path = "kernel": HIGH frames decapsulated and encapsulated by TC programs in the receiving softirq, never queued for the daemon."""

from __future__ import annotations

import errno
from dataclasses import asdict, dataclass

from prism_xdp.dataplane import native
from prism_xdp.dataplane.errors import ConfigError
from prism_xdp.dataplane.native import ffi
from prism_xdp.dataplane.overlay import ContainerSpec, parse_mac
from prism_xdp.dataplane.steer import Steering
from prism_xdp.dataplane.xdp import XdpProgram, ifindex_of

HIGH_PATHS = ("daemon", "kernel")

# struct prism_kernel_counters, in u64 words (a unit test checks the count).
KERNEL_COUNTER_FIELDS = ("decap", "decap_bytes", "encap", "encap_bytes", "no_port", "no_tunnel", "failed",
                         "aggregate", "too_big")


def check_high_path(value: object, multi_buffer: bool = False) -> str:
    """multi_buffer: the uplink's XDP is in generic mode, where a HIGH frame may come as a GSO
    packet, which prism_kdecap leaves to the kernel (it cannot clear the tunnel GSO bits): with
    no VXLAN device of the host's own, the kernel would drop it."""
    if value not in HIGH_PATHS:
        raise ConfigError(f"forwarding.high_path: must be one of {', '.join(HIGH_PATHS)}, not {value!r}")
    if value == "kernel" and multi_buffer:
        raise ConfigError('forwarding.high_path = "kernel" cannot go with uplink.xdp_mode = "skb": the uplink '
                          "then brings HIGH TCP as 64 KB GSO packets, which the kernel HIGH path cannot decapsulate")
    return str(value)


@dataclass
class KernelCounters:
    """Sums over CPUs of the kernel HIGH path's counters."""

    decap: int = 0
    decap_bytes: int = 0
    encap: int = 0
    encap_bytes: int = 0
    no_port: int = 0
    no_tunnel: int = 0
    failed: int = 0
    aggregate: int = 0
    too_big: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def kernel_key(mac: str, vni: int) -> object:
    key = ffi.new("struct prism_kernel_key *")
    key.mac = parse_mac(mac, "container.mac")
    key.vni = vni
    return key


class KernelHighPath:
    """prism_kdecap on the uplink's TC ingress, prism_kencap on every container veth's.

    PRISM-sync carries a HIGH packet to its socket at once, in the context that
    received it. Through the daemon that context is two crossings of user space
    away; with this option it is the receiving softirq itself: the XDP programs
    pass HIGH frames up (their steer_config has PRISM_STEER_F_KERNEL_HIGH), and
    the TC programs rewrite them and redirect them (bpf_redirect_peer into the
    container, bpf_redirect out of the uplink). LOW still goes through the
    daemon and its mode. Vanilla folds every class to LOW, so it never takes
    this path. The attachments are tcx links: they die with the process.
    """

    def __init__(self, uplink: Steering, egress: list[Steering], containers: list[ContainerSpec]) -> None:
        self.containers = list(containers)
        shared = uplink.shared_map_fds()
        self._links: list[tuple[int, str]] = []
        self.decap = XdpProgram("prism_kdecap", reuse={**shared, "steer_config": uplink.config_fd})
        self.encap: list[XdpProgram] = []
        try:
            for eg in egress:
                # Each container's own steer_config: its VNI is the one it encapsulates with.
                self.encap.append(XdpProgram("prism_kencap", reuse={**shared, "steer_config": eg.config_fd}))
            self._ports_fd = self.decap.map_fd("kernel_ports")
            self._counters_fd = self.decap.map_fd("kernel_counters")
            self._tunnels_fd = self.decap.map_fd("kernel_tunnels")
        except BaseException:
            self.close()
            raise

    def attach(self, uplink: str) -> None:
        """Before the XDP programs pass anything up: the containers' table, then the links."""
        for spec in self.containers:
            native.map_update(self._ports_fd, kernel_key(spec.mac, spec.vni),
                              ffi.new("uint32_t *", ifindex_of(spec.host_if)), f"kernel_ports[{spec.name}]",
                              f"at most {native.PRISM_MAX_KERNEL_PORTS} containers")
        for spec, prog in zip(self.containers, self.encap, strict=True):
            self._link(prog, spec.host_if)
        self._link(self.decap, uplink)

    def _link(self, prog: XdpProgram, ifname: str) -> None:
        fd = native.tcx_attach_link(prog.fd, ifindex_of(ifname), f"attach {prog.name} (tcx ingress)", ifname)
        self._links.append((fd, ifname))

    def detach(self) -> None:
        """The uplink's link first (it was attached last)."""
        while self._links:
            fd, ifname = self._links.pop()
            native.link_detach(fd, "detach kernel HIGH path", ifname,
                               tolerate=(errno.ENOENT, errno.ENODEV, errno.ENOLINK))

    def counters(self) -> KernelCounters:
        words = native.percpu_sum(self._counters_fd, 0, native.PRISM_KERNEL_COUNTER_WORDS, "kernel_counters")
        return KernelCounters(*(int(w) for w in words))

    def tunnels(self) -> int:
        """How many tunnels back to remote MACs are learned."""
        n, prev, key = 0, ffi.NULL, ffi.new("struct prism_kernel_key *")
        while native.map_next_key(self._tunnels_fd, prev, key, "kernel_tunnels") and n < native.PRISM_MAX_KERNEL_TUNNELS:
            n += 1
            prev = ffi.new("struct prism_kernel_key *", key[0])
        return n

    def describe(self) -> dict[str, object]:
        return {"high_path": "kernel", "tunnels": self.tunnels(), **self.counters().as_dict()}

    def close(self) -> None:
        self.detach()
        for prog in [*self.encap, getattr(self, "decap", None)]:
            if prog is not None:
                prog.close()
