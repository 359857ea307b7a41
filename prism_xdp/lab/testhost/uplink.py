"""uplink.py - the pair host: an uplink veth (the host's 'NIC') with a remote namespace behind it and a raw sender there; the AF_XDP tests use it alone, the overlay host builds on it."""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass, field

from prism_xdp.lab.packets import Outer
from prism_xdp.lab.testhost.links import link_mac
from prism_xdp.lab.testhost.netns import send_frame, socket_in
from prism_xdp.lab.testhost.testbed import Testbed


@dataclass
class Uplink:
    """host_if (root namespace) <-> remote_if (in remote_ns), addressed and up."""

    testbed: Testbed
    host_if: str
    remote_if: str
    remote_ns: str
    host_ip: str = "10.201.0.1"
    remote_ip: str = "10.201.0.2"
    host_mac: str = ""
    remote_mac: str = ""
    _tx: socket.socket | None = field(default=None, repr=False)

    @classmethod
    def create(cls, testbed: Testbed, prefix: str, queues: int = 1) -> Uplink:
        ns = testbed.add_netns(testbed.name(prefix, "r"))
        host_if, remote_if = testbed.name(prefix, "u"), testbed.name(prefix, "p")
        testbed.add_veth(host_if, remote_if, None, ns, queues=queues)
        up = cls(testbed, host_if, remote_if, ns)
        testbed.add_addr(host_if, up.host_ip, 24)
        testbed.add_addr(remote_if, up.remote_ip, 24, ns)
        up.host_mac = link_mac(host_if)
        up.remote_mac = link_mac(remote_if, ns)
        testbed.defer(up.close)
        return up

    @property
    def outer(self) -> Outer:
        return Outer(self.remote_mac, self.host_mac, self.remote_ip, self.host_ip)

    def send(self, *frames: bytes) -> None:
        """Transmit raw frames from the remote side onto the uplink."""
        if self._tx is None:
            self._tx = socket_in(self.remote_ns, socket.AF_PACKET, socket.SOCK_RAW)
            self._tx.bind((self.remote_if, 0))
        for frame in frames:
            if not send_frame(self._tx, frame):
                raise OSError(errno.ENOBUFS, f"{self.remote_if} refused a frame for 1 s")

    def close(self) -> None:
        if self._tx is not None:
            self._tx.close()
            self._tx = None
