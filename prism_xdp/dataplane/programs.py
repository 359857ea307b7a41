"""programs.py - Programs: the XDP programs of one host (the classifier on the uplink, prism_egress on every container veth, one set of rule maps), the uplink's GSO encapsulation, and, as an option, the kernel HIGH path's TC programs; shared by every queue's worker."""

from __future__ import annotations

from prism_xdp.dataplane.gsoencap import UplinkGso
from prism_xdp.dataplane.kernelpath import KernelHighPath
from prism_xdp.dataplane.overlay import ContainerSpec
from prism_xdp.dataplane.steer import Steering
from prism_xdp.dataplane.xdp import AttachMode


class Programs:
    """The XDP programs of one host: the classifier on the uplink and prism_egress on every
    container veth (sharing the uplink's rule maps). One set serves every queue's worker."""

    def __init__(self, vxlan_port: int, nclass: int, vanilla: bool, containers: list[ContainerSpec],
                 timestamps: bool = True, kernel_high: bool = False, ttl: int = 64,
                 multi_buffer: bool = False, uplink_gso: bool = False) -> None:
        # By default every packet carries the time XDP saw it: latency includes
        # its wait on the RX ring, which is where vanilla makes a HIGH packet wait.
        self.containers = list(containers)
        self.timestamps = timestamps
        self.attached: list[tuple[Steering, str]] = []
        self.kernel: KernelHighPath | None = None  # forwarding.high_path = "kernel"
        self._kernel_attached = False
        # forwarding.uplink_delivery = "packet": prism_gso_encap on the uplink's egress.
        self.gso: UplinkGso | None = None
        # Every packet carries XDP's metadata: its class, and its arrival time
        # unless timestamps are off.
        # multi_buffer: the uplink's classifier takes packets of several parts
        # (generic mode keeps the remote's GSO packets whole).
        self.uplink = Steering(vxlan_port, nclass, vanilla, timestamps=timestamps, metadata=True,
                               kernel_high=kernel_high, frags=multi_buffer)
        self.egress: list[Steering] = []
        try:
            for spec in self.containers:
                self.egress.append(Steering(vxlan_port, nclass, vanilla, program="prism_egress",
                                            rules_from=self.uplink, vni=spec.vni, timestamps=timestamps,
                                            metadata=True, kernel_high=kernel_high, ttl=ttl))
            if kernel_high:
                self.kernel = KernelHighPath(self.uplink, self.egress, self.containers)
            if uplink_gso:
                self.gso = UplinkGso()
        except BaseException:
            self.close()
            raise

    def attach(self, uplink: str, mode: AttachMode) -> None:
        """The kernel HIGH path's TC programs first (XDP passes HIGH up to them), then
        the containers, the uplink last: by then every socket is in place.

        mode is the uplink's. A container's veth always takes native XDP, which
        every veth has: it also takes software GSO from the container, so the
        container hands over MTU-sized frames, which the daemon can encapsulate
        for the wire (in generic mode it would hand over 64 KB packets that
        nothing here segments)."""
        if self.kernel is not None:
            self.kernel.attach(uplink)
            self._kernel_attached = True
        if self.gso is not None:  # before a container's frame can be merged for the uplink
            self.gso.attach(uplink)
        for spec, eg in zip(self.containers, self.egress, strict=True):
            eg.attach(spec.host_if, AttachMode.NATIVE)
            self.attached.append((eg, spec.host_if))
        self.uplink.attach(uplink, mode)
        self.attached.append((self.uplink, uplink))

    def detach(self) -> None:
        """The uplink first: no new packets come in while the rest goes. The uplink's
        GSO encapsulation stays until close(): workers that drain still send through it."""
        for steer, ifname in reversed(self.attached):
            steer.prog.detach(ifname)
        self.attached.clear()
        if self.kernel is not None and self._kernel_attached:
            self.kernel.detach()
            self._kernel_attached = False

    def set_vanilla(self, on: bool) -> None:
        for steer in [self.uplink, *self.egress]:
            if steer.vanilla != on:
                steer.vanilla = on

    def close(self) -> None:
        self.detach()
        if self.kernel is not None:
            self.kernel.close()
        if self.gso is not None:  # only now: a stopping worker may still send merged packets
            self.gso.close()
        for steer in [*self.egress, self.uplink]:
            steer.close()
