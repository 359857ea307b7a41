"""xdp.py - XdpProgram: load one of our BPF objects through libxdp, attach/detach it, replace a stale one, and reach its maps."""

from __future__ import annotations

import enum
import errno
import logging
import socket
from dataclasses import dataclass
from importlib import resources
from typing import Any

from prism_xdp.dataplane.errors import PrismError
from prism_xdp.dataplane.native import check_rc, ffi, lib, quiet_library, string

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
    ifindex = ifindex_of(ifname)
    prog_id = ffi.new("uint32_t *")
    mode = ffi.new("int *")
    name = ffi.new("char[32]")
    rc = check_rc(lib.prism_xdp_query(ifindex, prog_id, mode, name, 32), "XDP query", ifname)
    if rc == 0:
        return None
    return Attached(int(prog_id[0]), int(mode[0]), string(name))


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
    rc = lib.prism_xdp_detach_id(ifindex_of(ifname), current.prog_id, current.mode)
    if rc < 0 and -rc not in (errno.ENOENT, errno.ENODEV, errno.EEXIST):
        check_rc(rc, "detach stale XDP program", ifname)
    return current


class BpfMap:
    """A BPF map of a loaded program, with C types for key and value (control plane)."""

    def __init__(self, fd: int, name: str, key_type: str, value_type: str) -> None:
        self.fd = fd
        self.name = name
        self.key_type = key_type
        self.value_type = value_type

    def _key(self, key: Any) -> Any:
        return ffi.new(f"{self.key_type} *", key)

    def __setitem__(self, key: Any, value: Any) -> None:
        check_rc(
            lib.prism_map_update(self.fd, self._key(key), ffi.new(f"{self.value_type} *", value), 0),
            "map update", f"{self.name}[{key}]",
        )

    def get(self, key: Any) -> Any | None:
        value = ffi.new(f"{self.value_type} *")
        rc = lib.prism_map_lookup(self.fd, self._key(key), value)
        if rc == -errno.ENOENT:
            return None
        check_rc(rc, "map lookup", f"{self.name}[{key}]")
        return value[0]

    def __getitem__(self, key: Any) -> Any:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __delitem__(self, key: Any) -> None:
        check_rc(lib.prism_map_delete(self.fd, self._key(key)), "map delete", f"{self.name}[{key}]")

    def keys(self) -> list[Any]:
        out = []
        prev, nxt = ffi.NULL, ffi.new(f"{self.key_type} *")
        while lib.prism_map_next_key(self.fd, prev, nxt) == 0:
            out.append(nxt[0])
            prev = ffi.new(f"{self.key_type} *", nxt[0])
        return out


class XdpProgram:
    """One of our BPF objects (xdp_progs/<name>.bpf.c): load, attach, detach.

    attach() goes through a BPF link where the kernel has them (>= 5.9): the
    attachment belongs to our file descriptor, so a process that dies, even
    by kill -9, takes its program off the device with it. Elsewhere it falls
    back to libxdp's attach and first removes a stale program of ours (left
    by a crash), so a restart recovers. close() detaches from every device it
    attached to; both tolerate a device that is already gone.
    """

    def __init__(self, name: str, path: str | None = None, reuse: dict[str, int] | None = None) -> None:
        """reuse: map name -> fd of an existing map that this object shares instead of creating."""
        self.name = name
        self.path = path or bpf_object_path(name)
        out = ffi.new("prism_prog **")
        reuse = reuse or {}
        names = [ffi.new("char[]", n.encode()) for n in reuse]
        name_arr = ffi.new("char *[]", names) if names else ffi.NULL
        fd_arr = ffi.new("int[]", list(reuse.values())) if reuse else ffi.NULL
        check_rc(lib.prism_prog_open(out, self.path.encode(), name_arr, fd_arr, len(reuse)),
                 "open BPF object", self.path)
        self._ptr: Any = out[0]
        self.attachments: list[tuple[str, AttachMode]] = []
        self._links: dict[str, int] = {}  # ifname -> BPF link fd

    @property
    def ptr(self) -> Any:
        if self._ptr is None:
            raise ValueError(f"XDP program {self.name} is closed")
        return self._ptr

    @property
    def prog_name(self) -> str:
        return string(lib.prism_prog_name(self.ptr))

    @property
    def prog_id(self) -> int:
        return int(lib.prism_prog_id(self.ptr))

    @property
    def fd(self) -> int:
        return int(lib.prism_prog_fd(self.ptr))

    def attach(self, ifname: str, mode: AttachMode = AttachMode.NATIVE) -> None:
        stale = detach_stale(ifname)
        if stale is not None:
            log.warning(
                "replaced a stale %s (id %d) on %s", stale.name, stale.prog_id, ifname
            )
        hint = "native XDP needs driver support; try mode skb" if mode is AttachMode.NATIVE else ""
        rc = lib.prism_prog_attach_link(self.ptr, ifindex_of(ifname), int(mode))
        if rc >= 0:
            self._links[ifname] = rc
        elif -rc in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS):  # no XDP links on this kernel
            with quiet_library():
                rc = lib.prism_prog_attach(self.ptr, ifindex_of(ifname), int(mode))
        check_rc(rc, f"attach {self.name}", ifname, hint)
        self.attachments.append((ifname, mode))

    def detach(self, ifname: str) -> None:
        """Detach from ifname if our program is still the one attached there."""
        for entry in [a for a in self.attachments if a[0] == ifname]:
            self.attachments.remove(entry)
        link = self._links.pop(ifname, None)
        if link is not None:
            rc = lib.prism_link_detach(link)
            if rc < 0 and -rc not in (errno.ENOENT, errno.ENODEV, errno.ENOLINK):
                check_rc(rc, f"detach {self.name}", ifname)
            return
        try:
            current = attached(ifname)
        except PrismError as exc:
            if exc.errno == errno.ENODEV:
                return  # the device went away and took the program with it
            raise
        if current is None or current.prog_id != self.prog_id:
            return
        rc = lib.prism_xdp_detach_id(ifindex_of(ifname), current.prog_id, current.mode)
        if rc < 0 and -rc not in (errno.ENOENT, errno.ENODEV):
            check_rc(rc, f"detach {self.name}", ifname)

    def map_fd(self, map_name: str) -> int:
        return check_rc(lib.prism_prog_map_fd(self.ptr, map_name.encode()), "BPF map",
                        f"{self.name}.{map_name}")

    def map(self, map_name: str, key_type: str = "uint32_t", value_type: str = "uint32_t") -> BpfMap:
        return BpfMap(self.map_fd(map_name), map_name, key_type, value_type)

    def close(self) -> None:
        """Detach everywhere, then unload (reverse order of setup)."""
        if self._ptr is None:
            return
        try:
            for ifname, _mode in list(self.attachments):
                self.detach(ifname)
        finally:
            lib.prism_prog_close(self._ptr)
            self._ptr = None

    def __enter__(self) -> XdpProgram:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
