"""topology.py - an overlay test host in namespaces: a remote host with a kernel VXLAN device behind the uplink veth, and containers as namespaces on veth pairs."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from pyroute2 import NetNS

from prism_xdp.dataplane.errors import ConfigError
from prism_xdp.dataplane.overlay import ContainerSpec, VtepSpec
from prism_xdp.lab.testhost.netns import Testbed, link_mac, run_in, unique_name
from prism_xdp.lab.testhost.pair import Uplink

OVERLAY_NET = "10.42.0"  # containers .1 to .99; the remote host's overlay address .100
OVERLAY_PREFIXLEN = 16  # room for hundreds of containers: the 100th on goes to 10.42.1.1, ...
REMOTE_OVERLAY_IP = f"{OVERLAY_NET}.100"


def container_ip(i: int) -> str:
    """Container i's overlay address: 10.42.0.1-99, then 10.42.1.1-250, 10.42.2.1-250, ..."""
    if i < 99:
        return f"{OVERLAY_NET}.{i + 1}"
    return f"10.42.{1 + (i - 99) // 250}.{1 + (i - 99) % 250}"


@dataclass
class Container:
    name: str
    ns: str
    host_if: str  # root namespace side: prism_xdp's port
    cont_if: str  # inside the namespace
    ip: str
    mac: str
    vni: int

    def rx_packets(self) -> int:
        """What the container's own interface has received (where every path's delivery is counted)."""
        return container_rx_packets(self)

    def tx_packets(self) -> int:
        """What the container's own interface has sent."""
        return container_rx_packets(self, "tx_packets")

    def spec(self) -> ContainerSpec:
        return ContainerSpec(self.name, self.host_if, self.mac, self.vni, self.ip)


@dataclass
class OverlayHost:
    """What create() built; everything goes away with the Testbed."""

    uplink: Uplink
    vni: int
    vxlan_if: str  # the remote host's kernel VXLAN device
    remote_overlay_ip: str
    containers: list[Container] = field(default_factory=list)
    vxlan_port: int = 4789

    @property
    def remote_ns(self) -> str:
        return self.uplink.remote_ns

    def vteps(self) -> list[VtepSpec]:
        return [VtepSpec(self.uplink.remote_ip, self.vni)]

    def specs(self) -> list[ContainerSpec]:
        return [c.spec() for c in self.containers]


OFFLOADS = ("stock", "tx-off")


def set_tx_checksum(ifname: str, ns: str | None, on: bool) -> None:
    """TX checksum offload of one interface (ethtool -K IF tx on|off).

    Stock veths leave TCP/UDP checksums to "hardware" (the pseudo-header
    seed only); prism_xdp finishes them (prism_xdp/checksum.py). "tx off"
    is what AF_XDP data paths without that (Open vSwitch's) ask containers
    for; the bench measures the kernel path that way too, for comparison.
    """
    run_in(ns, ["ethtool", "-K", ifname, "tx", "on" if on else "off"], check=True, capture_output=True)


def tx_checksum_interfaces(host: OverlayHost) -> list[tuple[str, str | None]]:
    """Where a sender's checksum offload matters: the remote's VXLAN device and uplink, and each container."""
    found: list[tuple[str, str | None]] = [(host.vxlan_if, host.remote_ns), (host.uplink.remote_if, host.remote_ns)]
    return found + [(c.cont_if, c.ns) for c in host.containers]


def set_offloads(host: OverlayHost, offloads: str) -> None:
    """stock: as the kernel made the interfaces; tx-off: TX checksum offload off on every sender."""
    if offloads not in OFFLOADS:
        raise ConfigError(f"offloads: must be one of {', '.join(OFFLOADS)}, not {offloads!r}")
    for ifname, ns in tx_checksum_interfaces(host):
        set_tx_checksum(ifname, ns, offloads == "stock")


def fixed_name(prefix: str, tag: str) -> str:
    """Names for a topology that outlives the command that made it: prefix + tag."""
    name = f"{prefix}{tag}"
    if len(name) > 15:
        raise ValueError(f"name {name!r} is longer than 15 characters: use a shorter topology name")
    return name


def create_overlay_host(tb: Testbed, prefix: str, containers: int = 2, vni: int = 42,
                        queues: int = 1, vxlan_port: int = 4789,
                        naming: Callable[[str, str], str] = unique_name,
                        offloads: str = "stock") -> OverlayHost:
    """remote ns [vxlan vni -> host's uplink IP] <-uplink veth-> root ns (prism_xdp) <-veths-> containers.

    The containers' MTU leaves room for the 50 bytes of encapsulation on the
    uplink, as Docker and Flannel set it up. Offloads stay as the kernel
    makes them unless offloads="tx-off".
    """
    up = Uplink.create(tb, prefix, queues=queues, naming=naming)
    vx = naming(prefix, "v")
    tb.add_vxlan(vx, vni, up.remote_ip, up.host_ip, up.remote_if, up.remote_ns, port=vxlan_port)
    tb.add_addr(vx, REMOTE_OVERLAY_IP, OVERLAY_PREFIXLEN, up.remote_ns)
    host = OverlayHost(up, vni, vx, REMOTE_OVERLAY_IP, vxlan_port=vxlan_port)
    for i in range(containers):
        ns = tb.add_netns(naming(prefix, f"c{i}"))
        host_if, cont_if = naming(prefix, f"h{i}"), naming(prefix, f"k{i}")
        tb.add_veth(host_if, cont_if, None, ns, queues=queues, mtu=1450)
        ip = container_ip(i)
        tb.add_addr(cont_if, ip, OVERLAY_PREFIXLEN, ns)
        host.containers.append(Container(f"c{i}", ns, host_if, cont_if, ip, link_mac(cont_if, ns), vni))
    if offloads != "stock":
        set_offloads(host, offloads)
    return host


def add_kernel_overlay(tb: Testbed, host: OverlayHost, prefix: str,
                       naming: Callable[[str, str], str] = unique_name) -> tuple[str, str]:
    """The stock overlay on the host, the Docker/Flannel way: a VXLAN device and a bridge
    with the containers' host-side veths. Returns (vxlan, bridge).

    It can stay while prism_xdp runs: prism_xdp's XDP programs take the
    VXLAN packets on the uplink and the containers' frames on their veths
    before the kernel's devices see them; with prism_xdp stopped, the
    kernel path carries the same traffic.
    """
    up = host.uplink
    vx, br = naming(prefix, "x"), naming(prefix, "b")
    tb.add_vxlan(vx, host.vni, up.host_ip, up.remote_ip, up.host_if, port=host.vxlan_port, learning=True)
    tb.add_bridge(br, [vx] + [c.host_if for c in host.containers])
    # A veth receives frames redirected into it by XDP (the generator) only
    # in NAPI mode: with an XDP program, or with GRO on.
    run_in(None, ["ethtool", "-K", up.host_if, "gro", "on"], check=True, capture_output=True)
    return vx, br


def container_rx_packets(c: Container, counter: str = "rx_packets") -> int:
    """rx_packets (or another IFLA_STATS64 counter) of the container's interface, read inside its namespace."""
    with NetNS(c.ns) as ipr:
        return int(ipr.get_links(ipr.link_lookup(ifname=c.cont_if)[0])[0].get_attr("IFLA_STATS64")[counter])


def check_rps_mask(mask: str, what: str = "container_rps") -> str:
    """A hex CPU mask as sysfs takes it (1, 3, ff), or ConfigError naming `what`."""
    if not re.fullmatch(r"[0-9a-fA-F]{1,16}", mask):
        raise ConfigError(f"{what}: must be a hex CPU mask such as 1 or 3, not {mask!r}")
    return mask


def set_rps(c: Container, mask: str) -> None:
    """Steer the container's receive processing to the CPUs of a hex mask (RPS; "0" = off).

    A poll-mode data path transmits into the container from its worker's CPU,
    and the container's receive path would run there too, inside the TX kick;
    RPS moves it to the CPUs given. Needs the namespace's own sysfs, hence
    `ip netns exec`.
    """
    check_rps_mask(mask)  # it goes into a shell command line
    run_in(None, ["ip", "netns", "exec", c.ns, "sh", "-c",
                  f"echo {mask} > /sys/class/net/{c.cont_if}/queues/rx-0/rps_cpus"], check=True)
