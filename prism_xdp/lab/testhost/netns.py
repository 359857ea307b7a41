"""netns.py - being inside a network namespace: this thread entered for a while, a socket or a program started in one, and a pyroute2 handle on one."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from pyroute2 import IPRoute, NetNS

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/var/run/netns"

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def netns_exists(ns: str) -> bool:
    return os.path.exists(os.path.join(NETNS_RUN_DIR, ns))


@contextlib.contextmanager
def inside(ns: str) -> Iterator[None]:
    """Run the body with this thread in network namespace ns, then come back."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(os.path.join(NETNS_RUN_DIR, ns), os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(home)


def socket_in(ns: str, family: int, kind: int, proto: int = 0) -> socket.socket:
    """A socket that lives in namespace ns (a socket keeps the netns it was made in)."""
    with inside(ns):
        return socket.socket(family, kind, proto)


def send_frame(sock: socket.socket, frame: bytes, timeout: float = 1.0) -> bool:
    """Send one raw frame, waiting while the device pushes back; False if it still did at timeout.

    A veth whose peer's ring is full answers ENOBUFS (backpressure, kernel >= 6.x):
    the frame waits to get on the wire instead of being dropped here.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            sock.send(frame)
            return True
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as exc:
            if exc.errno != errno.ENOBUFS:
                raise
        if time.monotonic() > deadline:
            return False
        time.sleep(0.0001)


def _enter_fn(ns: str | None) -> Callable[[], None]:
    """A preexec_fn that moves the child into ns (None: stays here)."""

    def enter() -> None:
        if ns is not None:
            _setns(os.open(os.path.join(NETNS_RUN_DIR, ns), os.O_RDONLY))

    return enter


def run_in(ns: str | None, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess:
    """Run a program inside ns (None: here), without shelling out to `ip netns exec`."""
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    return subprocess.run(list(argv), preexec_fn=_enter_fn(ns), **kwargs)


def popen_in(ns: str | None, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen:
    return subprocess.Popen(list(argv), preexec_fn=_enter_fn(ns), **kwargs)


def route(ns: str | None) -> Any:
    """A pyroute2 handle on namespace ns (None: this one), for a `with` block."""
    return NetNS(ns) if ns else IPRoute()
