"""testbed.py - Testbed: the namespaces, veths, VXLAN devices and bridges made for one test or command, named with a fixed prefix, removed in reverse order."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Sequence
from typing import Any

from pyroute2 import NetNS, netns

from prism_xdp.lab.testhost.netns import route

IFNAMSIZ = 15  # usable characters of an interface name


class Testbed:
    """Namespaces and links made for one test or command, removed in reverse order.

    Removal tolerates what is already gone (a namespace's links vanish with
    it; a veth takes its peer along). Names come from name(): a fixed prefix
    (pxt for tests, pxd for `prism-xdp topo`, ...) so that leftovers are easy
    to find, a tag saying what the object is, and a random suffix unless the
    testbed makes fixed names (a saved topology, whose names are known ahead).
    """

    __test__ = False  # not a test class, for pytest, when a test module imports it

    def __init__(self, fixed_names: bool = False) -> None:
        self._undo = contextlib.ExitStack()
        self.fixed_names = fixed_names
        self.namespaces: list[str] = []
        self.links: list[tuple[str, str | None]] = []  # (name, namespace) of every link made

    def name(self, prefix: str, tag: str) -> str:
        """prefix + tag (+ random hex unless fixed_names), within the 15-character interface limit."""
        base = f"{prefix}{tag}"
        if self.fixed_names:
            if len(base) > IFNAMSIZ:
                raise ValueError(f"name {base!r} is longer than {IFNAMSIZ} characters: use a shorter prefix")
            return base
        room = IFNAMSIZ - len(base)
        if room < 4:
            raise ValueError(f"name prefix {base!r} leaves no room for a unique suffix")
        return base + secrets.token_hex(3)[: min(room, 6)]

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
        with route(ns) as ipr:
            ipr.link("add", ifname=name, kind="veth", peer=peer_spec, **extra)
        self._undo.callback(self._remove_link, name, ns)
        self.links.append((name, ns))
        for ifname, where in ((name, ns), (peer, peer_ns)):
            with route(where) as ipr:
                idx = ipr.link_lookup(ifname=ifname)[0]
                if mtu:
                    ipr.link("set", index=idx, mtu=mtu)
                ipr.link("set", index=idx, state="up")

    @staticmethod
    def _remove_link(name: str, ns: str | None) -> None:
        try:
            with route(ns) as ipr:
                found = ipr.link_lookup(ifname=name)
                if found:
                    ipr.link("del", index=found[0])
        except Exception:  # the namespace itself is gone: so is the link
            pass

    def add_addr(self, ifname: str, address: str, prefixlen: int, ns: str | None = None) -> None:
        with route(ns) as ipr:
            ipr.addr("add", index=ipr.link_lookup(ifname=ifname)[0], address=address,
                     prefixlen=prefixlen)

    def add_neigh(self, ifname: str, ip: str, mac: str, ns: str | None = None) -> None:
        with route(ns) as ipr:
            ipr.neigh("replace", dst=ip, lladdr=mac, ifindex=ipr.link_lookup(ifname=ifname)[0],
                      state=0x80)  # NUD_PERMANENT

    def add_vxlan(
        self, name: str, vni: int, local: str, remote: str, dev: str, ns: str | None = None,
        port: int = 4789, learning: bool = False,
    ) -> None:
        """A kernel VXLAN device toward one remote VTEP, up."""
        with route(ns) as ipr:
            ipr.link("add", ifname=name, kind="vxlan", vxlan_id=vni, vxlan_local=local,
                     vxlan_group=remote, vxlan_port=port,
                     vxlan_link=ipr.link_lookup(ifname=dev)[0], vxlan_learning=int(learning))
            ipr.link("set", index=ipr.link_lookup(ifname=name)[0], state="up")
        self._undo.callback(self._remove_link, name, ns)
        self.links.append((name, ns))

    def add_bridge(self, name: str, ports: Sequence[str], ns: str | None = None) -> None:
        """A Linux bridge with the given links enslaved, up."""
        with route(ns) as ipr:
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
