"""conftest.py - privileged fixtures: a remote namespace behind an uplink veth, senders, receivers, and a check that nothing stays attached."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable, Iterator

import pytest

from prism_xdp.dataplane import xdp
from prism_xdp.dataplane.datapath import Datapath, Runner
from prism_xdp.dataplane.umem import Umem
from prism_xdp.lab.rx import drain
from prism_xdp.lab.testhost import Testbed, Uplink

__all__ = ["PREFIX", "Uplink", "drain", "recv_frames"]

PREFIX = "pxt"  # every namespace and link a test makes starts with this


@contextlib.contextmanager
def running(dp: Datapath) -> Iterator[Runner]:
    """dp's loop on its thread while inside; stopped, then dp closed, on every way out."""
    runner = Runner(dp).start()
    try:
        yield runner
    finally:
        try:
            runner.stop()
        finally:
            dp.close()


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


@pytest.fixture
def uplink(testbed: Testbed) -> Iterator[Uplink]:
    up = Uplink.create(testbed, PREFIX)
    yield up
    left = xdp.attached(up.host_if)
    assert left is None, f"XDP program left attached on {up.host_if}: {left}"


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
