"""netns.py - network namespaces and veth pairs through pyroute2, entering a namespace from this thread, and a cleanup stack."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import secrets
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from pyroute2 import IPRoute, NetNS, netns

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/var/run/netns"
IFNAMSIZ = 15  # usable characters of an interface name

_libc = ctypes.CDLL(None, use_errno=True)


def unique_name(prefix: str, tag: str = "") -> str:
    """prefix + tag + random hex, within the 15-character interface limit."""
    base = f"{prefix}{tag}"
    room = IFNAMSIZ - len(base)
    if room < 4:
        raise ValueError(f"name prefix {base!r} leaves no room for a unique suffix")
    return base + secrets.token_hex(3)[: min(room, 6)]


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


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


def _ipr(ns: str | None) -> Any:
    return NetNS(ns) if ns else IPRoute()


def link_index(ifname: str, ns: str | None = None) -> int:
    with _ipr(ns) as ipr:
        found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise OSError(errno.ENODEV, f"no interface {ifname} in {ns or 'root namespace'}")
    return int(found[0])


def link_mac(ifname: str, ns: str | None = None) -> str:
    with _ipr(ns) as ipr:
        idx = ipr.link_lookup(ifname=ifname)[0]
        return str(ipr.get_links(idx)[0].get_attr("IFLA_ADDRESS"))


def link_exists(ifname: str, ns: str | None = None) -> bool:
    try:
        link_index(ifname, ns)
        return True
    except OSError:
        return False


class Testbed:
    """Namespaces and links made for one test or command, removed in reverse order.

    Removal tolerates what is already gone (a namespace's links vanish with
    it; a veth takes its peer along).
    """

    def __init__(self) -> None:
        self._undo = contextlib.ExitStack()
        self.namespaces: list[str] = []
        self.links: list[tuple[str, str | None]] = []  # (name, namespace) of every link made

    def keep(self) -> dict[str, list]:
        """Stop owning what was made (it stays after close()); what was made, for remove()."""
        self._undo.pop_all()
        return {"namespaces": list(self.namespaces), "links": [list(x) for x in self.links]}

    @classmethod
    def remove(cls, made: dict[str, list]) -> None:
        """Remove what keep() reported, links first; what is already gone is fine."""
        for name, ns in reversed(made.get("links", [])):
            cls._remove_link(name, ns)
        for name in reversed(made.get("namespaces", [])):
            cls._remove_netns(name)

    def add_netns(self, name: str) -> str:
        netns.create(name)
        self.namespaces.append(name)
        self._undo.callback(self._remove_netns, name)
        with NetNS(name) as ns:
            ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
        return name

    @staticmethod
    def _remove_netns(name: str) -> None:
        with contextlib.suppress(OSError, FileNotFoundError):
            netns.remove(name)

    def add_veth(
        self,
        name: str,
        peer: str,
        ns: str | None = None,
        peer_ns: str | None = None,
        queues: int = 1,
        mtu: int | None = None,
    ) -> None:
        """A veth pair name (in ns) <-> peer (in peer_ns), both up."""
        peer_spec: dict[str, Any] = {"ifname": peer}
        if peer_ns:
            peer_spec["net_ns_fd"] = peer_ns
        extra: dict[str, Any] = {}
        if queues > 1:
            extra = {"num_rx_queues": queues, "num_tx_queues": queues}
            peer_spec.update(extra)
        with _ipr(ns) as ipr:
            ipr.link("add", ifname=name, kind="veth", peer=peer_spec, **extra)
        self._undo.callback(self._remove_link, name, ns)
        self.links.append((name, ns))
        for ifname, where in ((name, ns), (peer, peer_ns)):
            with _ipr(where) as ipr:
                idx = ipr.link_lookup(ifname=ifname)[0]
                if mtu:
                    ipr.link("set", index=idx, mtu=mtu)
                ipr.link("set", index=idx, state="up")

    @staticmethod
    def _remove_link(name: str, ns: str | None) -> None:
        try:
            with _ipr(ns) as ipr:
                found = ipr.link_lookup(ifname=name)
                if found:
                    ipr.link("del", index=found[0])
        except Exception:  # the namespace itself is gone: so is the link
            pass

    def add_addr(self, ifname: str, address: str, prefixlen: int, ns: str | None = None) -> None:
        with _ipr(ns) as ipr:
            ipr.addr("add", index=ipr.link_lookup(ifname=ifname)[0], address=address,
                     prefixlen=prefixlen)

    def add_neigh(self, ifname: str, ip: str, mac: str, ns: str | None = None) -> None:
        with _ipr(ns) as ipr:
            ipr.neigh("replace", dst=ip, lladdr=mac, ifindex=ipr.link_lookup(ifname=ifname)[0],
                      state=0x80)  # NUD_PERMANENT

    def add_vxlan(
        self, name: str, vni: int, local: str, remote: str, dev: str, ns: str | None = None,
        port: int = 4789, learning: bool = False,
    ) -> None:
        """A kernel VXLAN device toward one remote VTEP, up."""
        with _ipr(ns) as ipr:
            ipr.link("add", ifname=name, kind="vxlan", vxlan_id=vni, vxlan_local=local,
                     vxlan_group=remote, vxlan_port=port,
                     vxlan_link=ipr.link_lookup(ifname=dev)[0], vxlan_learning=int(learning))
            ipr.link("set", index=ipr.link_lookup(ifname=name)[0], state="up")
        self._undo.callback(self._remove_link, name, ns)
        self.links.append((name, ns))

    def add_bridge(self, name: str, ports: Sequence[str], ns: str | None = None) -> None:
        """A Linux bridge with the given links enslaved, up."""
        with _ipr(ns) as ipr:
            ipr.link("add", ifname=name, kind="bridge")
            br = ipr.link_lookup(ifname=name)[0]
            for port in ports:
                ipr.link("set", index=ipr.link_lookup(ifname=port)[0], master=br)
            ipr.link("set", index=br, state="up")
        self._undo.callback(self._remove_link, name, ns)
        self.links.append((name, ns))

    def defer(self, fn: Any, *args: Any) -> None:
        """Run fn(*args) at cleanup, before what was made earlier is removed."""
        self._undo.callback(fn, *args)

    def close(self) -> None:
        self._undo.close()

    def __enter__(self) -> Testbed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
