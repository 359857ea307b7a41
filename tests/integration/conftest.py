"""conftest.py - privileged fixtures: a remote namespace behind an uplink veth, senders, receivers, and a check that nothing stays attached."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from prism_xdp import xdp
from prism_xdp.batch import Batch
from prism_xdp.netns import Testbed, link_mac, socket_in, unique_name
from prism_xdp.packets import Outer
from prism_xdp.umem import Umem
from prism_xdp.xsk import XskSocket

PREFIX = "pxt"  # every namespace and link a test makes starts with this


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.privileged)


def _privileged_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces, XDP, AF_XDP)"
    try:
        socket.socket(44, socket.SOCK_RAW).close()  # AF_XDP
    except OSError as exc:
        return f"AF_XDP sockets unavailable: {exc}"
    return None


@pytest.fixture(autouse=True)
def _require_privileges() -> None:
    reason = _privileged_reason()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def testbed() -> Iterator[Testbed]:
    with Testbed() as tb:
        yield tb


@dataclass
class Uplink:
    """The host's 'NIC' (host_if, root namespace) and the remote host behind it."""

    testbed: Testbed
    host_if: str
    remote_if: str
    remote_ns: str
    host_ip: str = "10.201.0.1"
    remote_ip: str = "10.201.0.2"
    host_mac: str = ""
    remote_mac: str = ""
    _tx: socket.socket | None = field(default=None, repr=False)

    @property
    def outer(self) -> Outer:
        return Outer(self.remote_mac, self.host_mac, self.remote_ip, self.host_ip)

    def send(self, *frames: bytes) -> None:
        """Transmit raw frames from the remote side onto the uplink."""
        if self._tx is None:
            self._tx = socket_in(self.remote_ns, socket.AF_PACKET, socket.SOCK_RAW)
            self._tx.bind((self.remote_if, 0))
        for frame in frames:
            self._tx.send(frame)

    def close(self) -> None:
        if self._tx is not None:
            self._tx.close()


@pytest.fixture
def uplink(testbed: Testbed) -> Iterator[Uplink]:
    ns = testbed.add_netns(unique_name(PREFIX, "r"))
    host_if, remote_if = unique_name(PREFIX, "u"), unique_name(PREFIX, "p")
    testbed.add_veth(host_if, remote_if, None, ns)
    up = Uplink(testbed, host_if, remote_if, ns)
    testbed.add_addr(host_if, up.host_ip, 24)
    testbed.add_addr(remote_if, up.remote_ip, 24, ns)
    up.host_mac = link_mac(host_if)
    up.remote_mac = link_mac(remote_if, ns)
    yield up
    up.close()
    left = xdp.attached(host_if)
    assert left is None, f"XDP program left attached on {host_if}: {left}"


def drain(xsk: XskSocket, want: int, timeout: float = 2.0, batch: Batch | None = None) -> list[bytes]:
    """Receive until `want` packets came (or timeout); return their bytes, frames freed.

    Waits a little past `want` so that extra packets that should not come
    are seen too.
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


def recv_frames(
    sock: socket.socket, want: int, timeout: float = 2.0, keep: Callable[[bytes], bool] = bool
) -> list[bytes]:
    """Frames from an AF_PACKET socket that pass `keep`, until want arrived or timeout.

    `keep` filters out what the namespace's own stack sends meanwhile
    (IPv6 DAD, router solicitations).
    """
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            frame = sock.recv(65535)
        except TimeoutError:
            break
        if keep(frame):
            got.append(frame)
    return got


@pytest.fixture
def umem() -> Iterator[Umem]:
    u = Umem()
    yield u
    for s in list(u.sockets):
        s.close()
    u.close()
