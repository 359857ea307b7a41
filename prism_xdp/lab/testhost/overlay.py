"""overlay.py - the overlay test host: a remote host with a kernel VXLAN device behind the uplink veth, containers as namespaces on veth pairs, and the kernel's own VXLAN + bridge path on the host."""

from __future__ import annotations

from dataclasses import dataclass, field

from prism_xdp.dataplane.errors import ConfigError
from prism_xdp.dataplane.overlay import ContainerSpec, VtepSpec
from prism_xdp.lab.testhost.links import link_counter, link_mac, set_gro, set_rps, set_tx_checksum
from prism_xdp.lab.testhost.netns import inside
from prism_xdp.lab.testhost.testbed import Testbed
from prism_xdp.lab.testhost.uplink import Uplink

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
        return link_counter(self.cont_if, self.ns, "rx_packets")

    def tx_packets(self) -> int:
        """What the container's own interface has sent."""
        return link_counter(self.cont_if, self.ns, "tx_packets")

    def set_rps(self, mask: str) -> None:
        """The container's receive processing on the CPUs of a hex mask ("0" = off; links.set_rps)."""
        set_rps(self.cont_if, self.ns, mask)

    def spec(self) -> ContainerSpec:
        return ContainerSpec(self.name, self.host_if, self.mac, self.vni, self.ip)


@dataclass
class OverlayHost:
    """What create_overlay_host() built; everything goes away with the Testbed."""

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


def container_ipv6_off(ns: str) -> None:
    """IPv6 off in a container's namespace before its interface arrives, as Docker leaves a
    container on a network without IPv6 (disable_ipv6 = 1 on its interface): no link-local
    address, so none of the neighbour/router solicitations and MLD reports that an L2 domain
    floods to every other container."""
    with inside(ns):  # /proc/sys/net is the opener's namespace's
        for scope in ("all", "default"):
            with open(f"/proc/sys/net/ipv6/conf/{scope}/disable_ipv6", "w") as f:
                f.write("1")


def create_overlay_host(tb: Testbed, prefix: str, containers: int = 2, vni: int = 42,
                        queues: int = 1, vxlan_port: int = 4789, offloads: str = "stock",
                        container_ipv6: bool = True) -> OverlayHost:
    """remote ns [vxlan vni -> host's uplink IP] <-uplink veth-> root ns (prism_xdp) <-veths-> containers.

    The containers' MTU leaves room for the 50 bytes of encapsulation on the
    uplink, as Docker and Flannel set it up. Offloads stay as the kernel
    makes them unless offloads="tx-off". container_ipv6=False turns IPv6 off in the
    containers (container_ipv6_off: Docker's default on an IPv4-only network); by default they
    keep the kernel's (link-local IPv6 on). Names: tb.name(prefix, tag).
    """
    up = Uplink.create(tb, prefix, queues=queues)
    vx = tb.name(prefix, "v")
    tb.add_vxlan(vx, vni, up.remote_ip, up.host_ip, up.remote_if, up.remote_ns, port=vxlan_port)
    tb.add_addr(vx, REMOTE_OVERLAY_IP, OVERLAY_PREFIXLEN, up.remote_ns)
    host = OverlayHost(up, vni, vx, REMOTE_OVERLAY_IP, vxlan_port=vxlan_port)
    for i in range(containers):
        ns = tb.add_netns(tb.name(prefix, f"c{i}"))
        if not container_ipv6:
            container_ipv6_off(ns)
        host_if, cont_if = tb.name(prefix, f"h{i}"), tb.name(prefix, f"k{i}")
        tb.add_veth(host_if, cont_if, None, ns, queues=queues, mtu=1450)
        ip = container_ip(i)
        tb.add_addr(cont_if, ip, OVERLAY_PREFIXLEN, ns)
        host.containers.append(Container(f"c{i}", ns, host_if, cont_if, ip, link_mac(cont_if, ns), vni))
    if offloads != "stock":
        set_offloads(host, offloads)
    return host


def add_kernel_overlay(tb: Testbed, host: OverlayHost, prefix: str) -> tuple[str, str]:
    """The stock overlay on the host, the Docker/Flannel way: a VXLAN device and a bridge
    with the containers' host-side veths. Returns (vxlan, bridge).

    It can stay while prism_xdp runs: prism_xdp's XDP programs take the
    VXLAN packets on the uplink and the containers' frames on their veths
    before the kernel's devices see them; with prism_xdp stopped, the
    kernel path carries the same traffic.
    """
    up = host.uplink
    vx, br = tb.name(prefix, "x"), tb.name(prefix, "b")
    tb.add_vxlan(vx, host.vni, up.host_ip, up.remote_ip, up.host_if, port=host.vxlan_port, learning=True)
    tb.add_bridge(br, [vx] + [c.host_if for c in host.containers])
    set_gro(up.host_if, None, True)  # the generator's frames reach the kernel path (links.set_gro)
    return vx, br
