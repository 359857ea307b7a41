"""testhost.py - a minimal test host: an uplink veth (the host's 'NIC') with a remote namespace behind it, a raw sender there, and a receive helper for sockets."""

from __future__ import annotations

import errno
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from prism_xdp.dataplane.batch import Batch
from prism_xdp.dataplane.xsk import XskSocket
from prism_xdp.lab.packets import Outer
from prism_xdp.lab.testhost.netns import Testbed, link_mac, send_frame, socket_in, unique_name


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
    def create(cls, testbed: Testbed, prefix: str, queues: int = 1,
               naming: Callable[[str, str], str] = unique_name) -> Uplink:
        ns = testbed.add_netns(naming(prefix, "r"))
        host_if, remote_if = naming(prefix, "u"), naming(prefix, "p")
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


def drain(xsk: XskSocket, want: int, timeout: float = 2.0, batch: Batch | None = None) -> list[bytes]:
    """Receive until `want` packets came (or timeout); return their bytes, frames freed.

    Waits 50 ms past `want`, so that packets which should not come are seen
    too. For tests and tools: it copies every packet out.
    """
    batch = batch or Batch(64)
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    settle = None
    while time.monotonic() < deadline:
        batch.clear()
        if xsk.rx(batch):
            got += [xsk.umem.read(a, n) for a, n in batch.descriptors()]
            batch.drop_all(xsk.umem)
            xsk.fill(64)
        elif len(got) >= want:
            settle = settle or time.monotonic() + 0.05
            if time.monotonic() > settle:
                break
        else:
            time.sleep(0.001)
    return got
