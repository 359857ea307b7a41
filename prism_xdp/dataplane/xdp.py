"""xdp.py - XdpProgram: load one of our BPF objects through libxdp, attach/detach it, replace a stale one, and reach its maps."""

from __future__ import annotations

import enum
import errno
import logging
import socket
from dataclasses import dataclass
from importlib import resources
from typing import Any

from prism_xdp.dataplane import native
from prism_xdp.dataplane.errors import PrismError

log = logging.getLogger("prism_xdp")

# Every program of ours is named xdp_prism_<role>; the kernel keeps 15
# characters of a name, and this prefix survives that.
OUR_PREFIX = "xdp_prism_"


class AttachMode(enum.IntEnum):
    """libxdp's enum xdp_attach_mode."""

    NATIVE = 1
    SKB = 2
    HW = 3


@dataclass(frozen=True)
class Attached:
    """What the kernel says is attached to a device."""

    prog_id: int
    mode: int  # XDP_ATTACHED_*
    name: str

    @property
    def ours(self) -> bool:
        return self.name.startswith(OUR_PREFIX)


def ifindex_of(ifname: str) -> int:
    try:
        return socket.if_nametoindex(ifname)
    except OSError:
        raise PrismError(errno.ENODEV, "XDP", ifname, "no such interface") from None


def bpf_object_path(name: str) -> str:
    """Path of a built BPF object shipped in the package (prism_steer, ...)."""
    path = resources.files("prism_xdp") / "bpf" / f"{name}.bpf.o"
    if not path.is_file():
        raise PrismError(
            errno.ENOENT, "BPF object", str(path),
            "not built: run tools/setup.sh or pip install --no-build-isolation -e .",
        )
    return str(path)


def attached(ifname: str) -> Attached | None:
    """The XDP program attached to ifname, or None."""
    found = native.xdp_query(ifindex_of(ifname), ifname)
    return Attached(*found) if found is not None else None


def detach_stale(ifname: str) -> Attached | None:
    """Detach a program of ours left behind (a crash); refuse to touch anyone else's.

    Returns what was detached, or None if nothing was attached.
    """
    current = attached(ifname)
    if current is None:
        return None
    if not current.ours:
        raise PrismError(
            errno.EBUSY, "attach XDP program", ifname,
            f"program {current.name!r} (id {current.prog_id}) is attached and is not ours; "
            "detach it first (xdp-loader unload or ip link set dev IF xdp off)",
        )
    native.xdp_detach_id(ifindex_of(ifname), current.prog_id, current.mode, "detach stale XDP program", ifname,
                         tolerate=(errno.ENOENT, errno.ENODEV, errno.EEXIST))
    return current


class XdpProgram:
    """One of our BPF objects (xdp_progs/<name>.bpf.c): load, attach, detach.

    attach() goes through a BPF link where the kernel has them (>= 5.9): the
    attachment belongs to our file descriptor, so a process that dies, even
    by kill -9, takes its program off the device with it. Elsewhere it falls
    back to libxdp's attach and first removes a stale program of ours (left
    by a crash), so a restart recovers. close() detaches from every device it
    attached to; both tolerate a device that is already gone.
    """

    def __init__(self, name: str, path: str | None = None, reuse: dict[str, int] | None = None,
                 frags: bool = False) -> None:
        """reuse: map name -> fd of an existing map that this object shares instead of creating;
        frags: the program takes multi-buffer packets (BPF_F_XDP_HAS_FRAGS)."""
        self.name = name
        self.path = path or bpf_object_path(name)
        self._ptr: Any = native.prog_open(self.path, reuse or {}, frags)
        self.attachments: list[tuple[str, AttachMode]] = []
        self._links: dict[str, int] = {}  # ifname -> BPF link fd

    @property
    def ptr(self) -> Any:
        if self._ptr is None:
            raise ValueError(f"XDP program {self.name} is closed")
        return self._ptr

    @property
    def prog_name(self) -> str:
        return native.prog_name(self.ptr)

    @property
    def prog_id(self) -> int:
        return int(native.prog_id(self.ptr))

    @property
    def fd(self) -> int:
        return int(native.prog_fd(self.ptr))

    def attach(self, ifname: str, mode: AttachMode = AttachMode.NATIVE) -> None:
        stale = detach_stale(ifname)
        if stale is not None:
            log.warning(
                "replaced a stale %s (id %d) on %s", stale.name, stale.prog_id, ifname
            )
        hint = "native XDP needs driver support; try mode skb" if mode is AttachMode.NATIVE else ""
        what = f"attach {self.name}"
        link = native.prog_attach_link(self.ptr, ifindex_of(ifname), int(mode), what, ifname, hint)
        if link is not None:
            self._links[ifname] = link
        else:  # no XDP links on this kernel
            native.prog_attach(self.ptr, ifindex_of(ifname), int(mode), what, ifname, hint)
        self.attachments.append((ifname, mode))

    def detach(self, ifname: str) -> None:
        """Detach from ifname if our program is still the one attached there."""
        for entry in [a for a in self.attachments if a[0] == ifname]:
            self.attachments.remove(entry)
        link = self._links.pop(ifname, None)
        if link is not None:
            native.link_detach(link, f"detach {self.name}", ifname,
                               tolerate=(errno.ENOENT, errno.ENODEV, errno.ENOLINK))
            return
        try:
            current = attached(ifname)
        except PrismError as exc:
            if exc.errno == errno.ENODEV:
                return  # the device went away and took the program with it
            raise
        if current is None or current.prog_id != self.prog_id:
            return
        native.xdp_detach_id(ifindex_of(ifname), current.prog_id, current.mode, f"detach {self.name}", ifname,
                             tolerate=(errno.ENOENT, errno.ENODEV))

    def map_fd(self, map_name: str) -> int:
        return native.prog_map_fd(self.ptr, map_name, f"{self.name}.{map_name}")

    def close(self) -> None:
        """Detach everywhere, then unload (reverse order of setup)."""
        if self._ptr is None:
            return
        try:
            for ifname, _mode in list(self.attachments):
                self.detach(ifname)
        finally:
            native.prog_close(self._ptr)
            self._ptr = None

    def __enter__(self) -> XdpProgram:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
