"""datapath.py - one worker's data path on one queue: the XDP programs, the sockets on the uplink and on every container veth, one UMEM, the overlay stages, and the loop that drives them."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from pyroute2 import IPRoute

from prism_xdp import layout as L
from prism_xdp.batch import Batch
from prism_xdp.errors import ConfigError, PrismError
from prism_xdp.netns import link_mac
from prism_xdp.overlay import UPLINK_PORT, ContainerSpec, Overlay, VtepSpec, resolve_mac
from prism_xdp.steer import Steering
from prism_xdp.umem import Umem, UmemParams
from prism_xdp.xdp import AttachMode
from prism_xdp.xsk import XskParams, XskSocket

log = logging.getLogger("prism_xdp")


@dataclass(frozen=True)
class DatapathParams:
    """How one worker is built; the daemon's config maps onto this."""

    uplink: str
    queue: int = 0
    vxlan_port: int = L.PRISM_VXLAN_PORT_DEFAULT
    local_ip: str | None = None  # default: the uplink's first IPv4 address
    uplink_mtu: int | None = None  # default: the uplink's MTU
    ttl: int = 64
    nclass: int = 2  # sockets per device: LOW and HIGH
    vanilla: bool = False
    batch_size: int = 64
    uplink_fill: int = 2048  # frames kept on the uplink's fill ring
    container_fill: int = 256  # frames kept on each container veth's fill ring
    frame_size: int = 2048
    xsk: XskParams = field(default_factory=XskParams)
    attach_mode: AttachMode = AttachMode.NATIVE
    learn: bool = True

    def check(self) -> None:
        if not 1 <= self.batch_size <= 4096:
            raise ConfigError(f"batch_size must be in 1..4096, not {self.batch_size}")
        if not 1 <= self.nclass <= L.PRISM_NCLASS:
            raise ConfigError(f"nclass must be in 1..{L.PRISM_NCLASS}, not {self.nclass}")
        if not 0 <= self.queue < L.PRISM_MAX_QUEUES:
            raise ConfigError(f"queue must be in 0..{L.PRISM_MAX_QUEUES - 1}, not {self.queue}")
        if not 1 <= self.ttl <= 255:
            raise ConfigError(f"ttl must be in 1..255, not {self.ttl}")
        for name in ("uplink_fill", "container_fill"):
            value = getattr(self, name)
            if not 1 <= value <= 1 << 16:
                raise ConfigError(f"{name} must be in 1..65536, not {value}")


def _uplink_address(ifname: str) -> tuple[str, int]:
    """The uplink's first IPv4 address and its MTU."""
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            raise PrismError(19, "uplink", ifname, "no such interface")
        mtu = int(ipr.get_links(found[0])[0].get_attr("IFLA_MTU"))
        for addr in ipr.get_addr(index=found[0], family=2):
            return str(addr.get_attr("IFA_ADDRESS")), mtu
    raise PrismError(99, "uplink", ifname, "has no IPv4 address: set local_ip or add one")


@dataclass
class Source:
    """A socket the loop receives from: the uplink's or a container's, of one class."""

    port: int
    cls: int
    xsk: XskSocket
    from_uplink: bool


class Datapath:
    """Everything one worker owns, built in order and torn down in reverse.

    Frames: one UMEM; the uplink and every container veth each have a fill
    and completion ring pair on it. A frame received on the uplink leaves on
    a container veth (decap) and the other way round (encap) without a copy.
    """

    def __init__(self, params: DatapathParams, containers: list[ContainerSpec],
                 vteps: list[VtepSpec]) -> None:
        params.check()
        for i, c in enumerate(containers):
            c.check(f"containers[{i}]")
        for i, v in enumerate(vteps):
            v.check(f"vteps[{i}]")
        self.params = params
        self.containers = list(containers)
        self.vteps = list(vteps)
        self._undo = contextlib.ExitStack()
        try:
            self._build()
        except BaseException:
            self._undo.close()
            raise

    def _build(self) -> None:
        p = self.params
        local_ip, mtu = _uplink_address(p.uplink)
        local_ip = p.local_ip or local_ip
        ipaddress.IPv4Address(local_ip)
        frames = 2 * p.uplink_fill + len(self.containers) * 2 * p.container_fill + 8 * p.batch_size + 1024
        ring = max(2048, 1 << (p.uplink_fill - 1).bit_length())
        self.umem = Umem(UmemParams(frame_count=frames, frame_size=p.frame_size,
                                    fill_size=ring, comp_size=ring))
        self._undo.callback(self._close_umem)

        self.steer = Steering(p.vxlan_port, p.nclass, p.vanilla)
        self._undo.callback(self.steer.close)
        self.egress: list[Steering] = []

        self.overlay = Overlay(self.umem, p.vxlan_port, link_mac(p.uplink), local_ip,
                               p.uplink_mtu or mtu, p.ttl, p.learn)
        self._undo.callback(self.overlay.close)

        self.sources: list[Source] = []
        uplink_socks = self._sockets(p.uplink, self.steer)
        self.overlay.set_uplink(uplink_socks, p.uplink)
        self.sources += [Source(UPLINK_PORT, c, s, True) for c, s in enumerate(uplink_socks)]

        for spec in self.containers:
            eg = Steering(p.vxlan_port, p.nclass, p.vanilla, program="prism_egress",
                          rules_from=self.steer, vni=spec.vni)
            self._undo.callback(eg.close)
            self.egress.append(eg)
            socks = self._sockets(spec.host_if, eg)
            port = self.overlay.add_container(socks, spec.vni, spec.mac, spec.name)
            self.sources += [Source(port, c, s, False) for c, s in enumerate(socks)]

        for vtep in self.vteps:
            mac = vtep.mac or resolve_mac(p.uplink, vtep.ip)
            self.overlay.add_vtep(vtep.vni, vtep.ip, mac)

        # Frames first, programs last: a program steers to sockets that
        # already have frames to receive into.
        self.service()
        for spec, eg in zip(self.containers, self.egress, strict=True):
            eg.attach(spec.host_if, p.attach_mode)
        self.steer.attach(p.uplink, p.attach_mode)
        # Undone first: no new packets reach the sockets while they close.
        self._undo.callback(self._detach_all)

        # Highest class first: the order in which the loop looks at sources.
        self.sources.sort(key=lambda s: (-s.cls, not s.from_uplink, s.port))
        self._rx = Batch(p.batch_size)
        # Floods make more packets than they take; room for a few per packet.
        self._out = Batch(p.batch_size * 4)
        self.idle_loops = 0
        self.loops = 0

    def _sockets(self, ifname: str, steer: Steering) -> list[XskSocket]:
        socks = []
        for cls in range(self.params.nclass):
            sock = XskSocket(self.umem, ifname, self.params.queue, self.params.xsk)
            self._undo.callback(sock.close)
            steer.add_socket(sock, cls)
            socks.append(sock)
        return socks

    def _detach_all(self) -> None:
        self.steer.prog.detach(self.params.uplink)
        for spec, eg in zip(self.containers, self.egress, strict=False):
            eg.prog.detach(spec.host_if)

    def _close_umem(self) -> None:
        for sock in list(self.umem.sockets):
            sock.close()
        self.umem.close()

    # the stages, for the schedulers ------------------------------------------
    def service(self) -> int:
        p = self.params
        return self.overlay.service(p.uplink_fill, p.container_fill)

    def process(self, src: Source, batch: Batch, out: Batch) -> int:
        """decap (from the uplink) or encap (from a container): batch -> out."""
        if src.from_uplink:
            return self.overlay.decap(batch, out)
        return self.overlay.encap(src.port, batch, out)

    def run_source(self, src: Source) -> int:
        """One batch from src through every stage to its TX kick (PRISM-batch's unit of work)."""
        rx, out = self._rx, self._out
        rx.ptr.n = 0
        n = src.xsk.rx(rx)
        if n:
            self.process(src, rx, out)
            self.overlay.deliver(src.cls, out)
        return n

    def poll(self) -> int:
        """One pass over every source, highest class first; then recycle frames."""
        work = 0
        for src in self.sources:
            work += self.run_source(src)
        self.service()
        self.loops += 1
        if not work:
            self.idle_loops += 1
        return work

    def run(self, stop: threading.Event, idle_sleep: float = 0.0) -> None:
        """Loop until stop is set; idle_sleep > 0 yields the CPU between empty passes."""
        while not stop.is_set():
            if not self.poll() and idle_sleep:
                time.sleep(idle_sleep)

    # control -----------------------------------------------------------------
    def set_vanilla(self, on: bool) -> None:
        for steer in [self.steer, *self.egress]:
            steer.vanilla = on

    def stats(self) -> dict[str, Any]:
        return {
            "stages": self.overlay.counters(),
            "ports": self.overlay.port_counters(),
            "steer": self.steer.counters().as_dict(),
            "egress": {c.name: eg.counters().as_dict() for c, eg in zip(self.containers, self.egress, strict=True)},
            "frames": self.umem.account().as_dict(),
            "loops": self.loops,
            "idle_loops": self.idle_loops,
        }

    def close(self) -> None:
        """Detach programs first (no new packets), then sockets, then memory."""
        self._undo.close()

    def __enter__(self) -> Datapath:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Runner:
    """Runs a Datapath's loop on a thread until stopped (tests, tools).

    The C calls release the GIL, so other threads keep moving; idle_sleep
    gives the CPU away between empty passes instead of spinning.
    """

    def __init__(self, dp: Datapath, idle_sleep: float = 0.0001) -> None:
        self.dp = dp
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, args=(idle_sleep,), name="prism-worker",
                                        daemon=True)

    def _work(self, idle_sleep: float) -> None:
        try:
            self.dp.run(self._stop, idle_sleep)
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def start(self) -> Runner:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        if self.error is not None:
            raise self.error

    def __enter__(self) -> Runner:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
