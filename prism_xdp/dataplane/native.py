"""native.py - the one module that imports the compiled C helpers (lib, ffi): their constants, the -errno gate, the wrappers the rest of the package calls."""

# Over 400 lines on purpose: this is the single gate between Python and the C
# helpers (tests/unit/test_boundaries.py checks that nothing else touches lib).
# Setup and control calls are wrapped so that a -errno becomes an exception
# naming the object; hot-path batch calls are cffi's functions themselves, so
# the loop pays no Python frame per call. One section per C file of ffi/.

from __future__ import annotations

import contextlib
import errno
import logging
from collections.abc import Iterator
from typing import Any

from prism_xdp.dataplane.errors import NotSupported, PrismError

try:
    from prism_xdp._prism_ffi import ffi, lib
except ImportError as exc:  # pragma: no cover - only without a build
    raise ImportError(
        "prism_xdp's C helpers are not built: run tools/setup.sh "
        "(or pip install --no-build-isolation -e .) in the checkout"
    ) from exc

# The constants of xdp_progs/prism_common.h, as the compiler saw them (the cdef
# declares each as "#define NAME ...", so there is no hand copy to drift).
PRISM_NCLASS: int = lib.PRISM_NCLASS
PRISM_CLASS_LOW: int = lib.PRISM_CLASS_LOW
PRISM_CLASS_HIGH: int = lib.PRISM_CLASS_HIGH
PRISM_MAX_QUEUES: int = lib.PRISM_MAX_QUEUES
PRISM_XSKMAP_SIZE: int = lib.PRISM_XSKMAP_SIZE
PRISM_NPORTS: int = lib.PRISM_NPORTS
PRISM_NDSCP: int = lib.PRISM_NDSCP
PRISM_MAX_VNI_RULES: int = lib.PRISM_MAX_VNI_RULES
PRISM_VXLAN_PORT_DEFAULT: int = lib.PRISM_VXLAN_PORT_DEFAULT
PRISM_ETH_HLEN: int = lib.PRISM_ETH_HLEN
PRISM_GRO_MAX_SEGS: int = lib.PRISM_GRO_MAX_SEGS
PRISM_HOLD_AGE_NS: int = lib.PRISM_HOLD_AGE_NS
PRISM_HOLD_TOTAL: int = lib.PRISM_HOLD_TOTAL
PRISM_VXLAN_HLEN: int = lib.PRISM_VXLAN_HLEN
PRISM_ENCAP_LEN: int = lib.PRISM_ENCAP_LEN
PRISM_STEER_CLASSIFY: int = lib.PRISM_STEER_CLASSIFY
PRISM_STEER_VANILLA: int = lib.PRISM_STEER_VANILLA
PRISM_STEER_F_TIMESTAMP: int = lib.PRISM_STEER_F_TIMESTAMP
PRISM_STEER_F_META: int = lib.PRISM_STEER_F_META
PRISM_STEER_F_KERNEL_HIGH: int = lib.PRISM_STEER_F_KERNEL_HIGH
PRISM_KERNEL_COUNTER_WORDS: int = lib.PRISM_KERNEL_COUNTER_WORDS
PRISM_MAX_KERNEL_PORTS: int = lib.PRISM_MAX_KERNEL_PORTS
PRISM_MAX_KERNEL_TUNNELS: int = lib.PRISM_MAX_KERNEL_TUNNELS
PRISM_GSO_MARK: int = lib.PRISM_GSO_MARK
PRISM_GSO_VTEPS: int = lib.PRISM_GSO_VTEPS
PRISM_GSO_COUNTER_WORDS: int = lib.PRISM_GSO_COUNTER_WORDS
PRISM_TS_LEN: int = lib.PRISM_TS_LEN
PRISM_META_CLASS_SHIFT: int = lib.PRISM_META_CLASS_SHIFT
PRISM_MAL_VXLAN_TRUNC: int = lib.PRISM_MAL_VXLAN_TRUNC
PRISM_MAL_VXLAN_FLAGS: int = lib.PRISM_MAL_VXLAN_FLAGS
PRISM_MAL_INNER_ETH: int = lib.PRISM_MAL_INNER_ETH
PRISM_MAL_INNER_IP: int = lib.PRISM_MAL_INNER_IP
PRISM_MAL_INNER_L4: int = lib.PRISM_MAL_INNER_L4
PRISM_MAL_MAX: int = lib.PRISM_MAL_MAX
PRISM_COUNTER_WORDS: int = lib.PRISM_COUNTER_WORDS

log = logging.getLogger("prism_xdp.lib")

# libbpf/libxdp levels: 0 warn, 1 info, 2 debug.
_LEVELS = {0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG}

_UNSUPPORTED = {errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EAFNOSUPPORT}


_quiet = 0


@ffi.def_extern()  # type: ignore[misc]
def prism_log(level: int, msg: Any) -> None:
    """Library messages (libbpf, libxdp) into Python logging."""
    pylevel = logging.DEBUG if _quiet else _LEVELS.get(level, logging.DEBUG)
    log.log(pylevel, "%s", ffi.string(msg).decode(errors="replace").rstrip())


@contextlib.contextmanager
def quiet_library() -> Iterator[None]:
    """Library warnings that are expected (libxdp probing for its dispatcher and
    falling back to a single program) become debug messages; failures still
    surface as the call's -errno.
    """
    global _quiet
    _quiet += 1
    try:
        yield
    finally:
        _quiet -= 1


lib.prism_install_log(1 if log.isEnabledFor(logging.DEBUG) else 0)


def check_rc(rc: int, what: str, name: str | None = None, hint: str = "") -> int:
    """The single gate where a C helper's -errno becomes an exception."""
    if rc >= 0:
        return rc
    err = -rc
    if err in _UNSUPPORTED:
        raise NotSupported(what, name, hint)
    raise PrismError(err, what, name, hint)


def string(cdata: Any) -> str:
    return ffi.string(cdata).decode(errors="replace") if cdata != ffi.NULL else ""


# ---------------------------------------------------------------------------
# prism_umem.c: batches, the UMEM (frames, pool, accounting)
# ---------------------------------------------------------------------------

def batch_new(cap: int) -> Any:
    """A batch of cap descriptors, freed when the cdata is collected."""
    ptr = lib.prism_batch_new(cap)
    if ptr == ffi.NULL:
        raise MemoryError(f"batch of {cap} descriptors")
    return ffi.gc(ptr, lib.prism_batch_delete)


def umem_create(frame_count: int, frame_size: int, headroom: int, fill_size: int, comp_size: int,
                register: bool, multi_buffer: bool = False) -> Any:
    out = ffi.new("prism_umem **")
    check_rc(lib.prism_umem_create(out, frame_count, frame_size, headroom, fill_size, comp_size,
                                   1 if register else 0, 1 if multi_buffer else 0),
             "create UMEM", f"{frame_count} x {frame_size} B")
    return out[0]


def umem_delete(umem: Any) -> None:
    check_rc(lib.prism_umem_delete(umem), "delete UMEM", hint="close its sockets first")


def umem_area(umem: Any, size: int) -> Any:
    """The UMEM's memory as a Python buffer (tests and tools read and write packets there)."""
    return ffi.buffer(lib.prism_umem_area(umem), size)


def umem_account(umem: Any) -> Any:
    out = ffi.new("struct prism_frame_account *")
    lib.prism_umem_account(umem, out)
    return out


umem_tx_metadata = lib.prism_umem_tx_metadata
umem_pool_count = lib.prism_umem_pool_count


def alloc_batch(umem: Any, batch: Any, count: int, length: int) -> int:
    return check_rc(lib.prism_alloc_batch(umem, batch, count, length), "alloc frames")


def alloc_multibuf(umem: Any, batch: Any, data: bytes) -> int:
    return check_rc(lib.prism_alloc_multibuf(umem, batch, data, len(data)), "alloc a multi-buffer packet",
                    f"{len(data)} B (the UMEM must be multi_buffer)")


def umem_read(umem: Any, addr: int, length: int) -> bytes:
    out = ffi.new("uint8_t[]", length)
    check_rc(lib.prism_umem_read(umem, addr, length, out), "read a packet", f"{length} B at {addr}")
    return bytes(ffi.buffer(out, length))


def free_batch(umem: Any, batch: Any, start: int, count: int) -> int:
    return check_rc(lib.prism_free_batch(umem, batch, start, count), "free frames")


def copy_frames_batch(umem: Any, batch: Any, start: int, count: int, data: bytes) -> int:
    return check_rc(lib.prism_copy_frames_batch(umem, batch, start, count, data, len(data)),
                    "copy packet into frames")


# ---------------------------------------------------------------------------
# prism_socket.c: AF_XDP socket setup and control
# ---------------------------------------------------------------------------

XDP_COPY: int = lib.XDP_COPY
XDP_ZEROCOPY: int = lib.XDP_ZEROCOPY
XDP_USE_NEED_WAKEUP: int = lib.XDP_USE_NEED_WAKEUP
XDP_USE_SG: int = lib.XDP_USE_SG


def xsk_create(umem: Any, ifname: str, queue: int, rx_size: int, tx_size: int, bind_flags: int,
               name: str, hint: str = "") -> Any:
    out = ffi.new("prism_xsk **")
    check_rc(lib.prism_xsk_create(out, umem, ifname.encode(), queue, rx_size, tx_size, bind_flags),
             "AF_XDP socket", name, hint)
    return out[0]


xsk_delete = lib.prism_xsk_delete
xsk_fd = lib.prism_xsk_fd
xsk_set_rx_stamped = lib.prism_xsk_set_rx_stamped


def xsk_zerocopy(xsk: Any, name: str) -> bool:
    return bool(check_rc(lib.prism_xsk_zerocopy(xsk), "XDP_OPTIONS", name))


def xsk_set_busy_poll(xsk: Any, usecs: int, budget: int, name: str) -> None:
    check_rc(lib.prism_xsk_set_busy_poll(xsk, usecs, budget), "busy-poll socket options", name,
             "needs kernel >= 5.11")


def xsk_statistics(xsk: Any, name: str) -> Any:
    out = ffi.new("struct prism_xsk_stats *")
    check_rc(lib.prism_xsk_statistics(xsk, out), "XDP_STATISTICS", name)
    return out


def xsk_counters(xsk: Any) -> Any:
    out = ffi.new("struct prism_xsk_counters *")
    lib.prism_xsk_counters(xsk, out)
    return out


def xsk_map_insert(xsk: Any, map_fd: int, slot: int) -> None:
    check_rc(lib.prism_xsk_map_insert(xsk, map_fd, slot), "XSKMAP insert", f"slot {slot}")


# ---------------------------------------------------------------------------
# prism_xsk.c: the rings, a batch per call
# ---------------------------------------------------------------------------

def xsk_kick(xsk: Any, name: str) -> None:
    check_rc(lib.prism_xsk_kick(xsk), "TX kick", name)


def xsk_ready_new(xsks: Any, n: int) -> int:
    """An epoll set over n sockets (an fd the caller closes)."""
    return check_rc(lib.prism_xsk_ready_new(xsks, n), "epoll over the sockets")


# The hot path: one call a batch, cffi's functions themselves (no Python
# frame in between). Counts, or -errno where the caller checks (tx_batch).
fill_batch = lib.prism_fill_batch
rx_batch = lib.prism_rx_batch
rx_upto = lib.prism_rx_upto
tx_batch = lib.prism_tx_batch
complete_batch = lib.prism_complete_batch
xsk_rx_pending = lib.prism_xsk_rx_pending
xsk_pending_mask = lib.prism_xsk_pending_mask
xsk_ready_mask = lib.prism_xsk_ready_mask


# ---------------------------------------------------------------------------
# prism_bpf.c: XDP programs (libxdp) and BPF maps (libbpf)
# ---------------------------------------------------------------------------

def prog_open(path: str, reuse: dict[str, int], frags: bool = False) -> Any:
    """reuse: map name -> fd of an existing map the object takes instead of creating one;
    frags: an XDP program that takes multi-buffer packets."""
    out = ffi.new("prism_prog **")
    names = [ffi.new("char[]", n.encode()) for n in reuse]
    name_arr = ffi.new("char *[]", names) if names else ffi.NULL
    fd_arr = ffi.new("int[]", list(reuse.values())) if reuse else ffi.NULL
    check_rc(lib.prism_prog_open(out, path.encode(), name_arr, fd_arr, len(reuse), 1 if frags else 0),
             "open BPF object", path)
    return out[0]


prog_close = lib.prism_prog_close
prog_id = lib.prism_prog_id
prog_fd = lib.prism_prog_fd


def prog_name(prog: Any) -> str:
    return string(lib.prism_prog_name(prog))


def prog_map_fd(prog: Any, map_name: str, name: str) -> int:
    return check_rc(lib.prism_prog_map_fd(prog, map_name.encode()), "BPF map", name)


_NO_LINKS = {errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS}


def prog_attach_link(prog: Any, ifindex: int, mode: int, what: str, name: str, hint: str = "") -> int | None:
    """Attach through a BPF link (the attachment dies with its fd): the link's fd, or
    None on a kernel without XDP links (< 5.9: use prog_attach)."""
    rc = lib.prism_prog_attach_link(prog, ifindex, mode)
    if rc < 0 and -rc in _NO_LINKS:
        return None
    return check_rc(rc, what, name, hint)


def prog_attach(prog: Any, ifindex: int, mode: int, what: str, name: str, hint: str = "") -> None:
    """Attach as libxdp does (netlink): the program stays after the process ends."""
    with quiet_library():
        check_rc(lib.prism_prog_attach(prog, ifindex, mode), what, name, hint)


def _tolerant(rc: int, tolerate: tuple[int, ...], what: str, name: str | None) -> int:
    if rc < 0 and -rc in tolerate:
        return rc
    return check_rc(rc, what, name)


def link_detach(link_fd: int, what: str, name: str, tolerate: tuple[int, ...] = ()) -> int:
    """Close a BPF link; an errno in tolerate is returned (negative) rather than raised."""
    return _tolerant(lib.prism_link_detach(link_fd), tolerate, what, name)


def tcx_attach_link(prog_fd: int, ifindex: int, what: str, name: str, egress: bool = False,
                    hint: str = "the kernel HIGH path needs tcx links (Linux 6.6 or later)") -> int:
    """Attach a TC program to ifindex's ingress (or egress) through a tcx link (Linux >= 6.6); the link's fd."""
    return check_rc(lib.prism_tcx_attach_link(prog_fd, ifindex, int(egress)), what, name, hint)


def tcx_supported() -> bool:
    """Whether this kernel has tcx hooks (Linux >= 6.6): a query of the loopback device's egress."""
    ids = ffi.new("uint32_t[1]")
    return bool(lib.prism_tcx_query(1, 1, ids, 0) >= 0)


def tcx_query(ifindex: int, name: str, egress: bool = False) -> list[int]:
    """Ids of the programs on ifindex's tcx ingress or egress (empty where the kernel has no tcx)."""
    ids = ffi.new("uint32_t[64]")
    rc = lib.prism_tcx_query(ifindex, int(egress), ids, 64)
    if rc < 0 and -rc in (errno.EINVAL, errno.EOPNOTSUPP):
        return []
    n = check_rc(rc, "tcx query", name)
    return [int(ids[i]) for i in range(min(n, 64))]


def xdp_query(ifindex: int, name: str) -> tuple[int, int, str] | None:
    """(program id, XDP_ATTACHED_* mode, program name) on a device, or None."""
    prog_id, mode, prog = ffi.new("uint32_t *"), ffi.new("int *"), ffi.new("char[32]")
    if check_rc(lib.prism_xdp_query(ifindex, prog_id, mode, prog, 32), "XDP query", name) == 0:
        return None
    return int(prog_id[0]), int(mode[0]), string(prog)


def xdp_detach_id(ifindex: int, prog_id: int, mode: int, what: str, name: str,
                  tolerate: tuple[int, ...] = ()) -> int:
    return _tolerant(lib.prism_xdp_detach_id(ifindex, prog_id, mode), tolerate, what, name)


def map_update(fd: int, key: Any, value: Any, name: str, hint: str = "") -> None:
    """key and value: pointers (ffi.new) of the map's types."""
    check_rc(lib.prism_map_update(fd, key, value, 0), "map update", name, hint)


def map_lookup(fd: int, key: Any, value: Any, name: str) -> bool:
    """Fill value; False when there is no such key."""
    return _tolerant(lib.prism_map_lookup(fd, key, value), (errno.ENOENT,), "map lookup", name) == 0


def map_delete(fd: int, key: Any, name: str, missing_ok: bool = False) -> bool:
    """Delete key; False when there was none (an error unless missing_ok)."""
    tolerate = (errno.ENOENT,) if missing_ok else ()
    return _tolerant(lib.prism_map_delete(fd, key), tolerate, "map delete", name) == 0


def map_next_key(fd: int, prev: Any, key: Any, name: str) -> bool:
    """The key after prev (NULL: the first) into key; False past the last."""
    return _tolerant(lib.prism_map_next_key(fd, prev, key), (errno.ENOENT,), "map keys", name) == 0


def array_u8_dump(fd: int, n: int, name: str) -> bytes:
    """Every value of an array map of n uint8 values."""
    values = ffi.new("uint8_t[]", n)
    check_rc(lib.prism_array_u8_dump(fd, n, values), "map dump", name)
    return bytes(ffi.buffer(values, n))


def percpu_sum(fd: int, key: int, words: int, name: str) -> list[int]:
    """A per-CPU map's value at key as words uint64 words, summed over CPUs."""
    out = ffi.new("uint64_t[]", words)
    check_rc(lib.prism_percpu_sum(fd, key, words, out), "read counters", name)
    return list(out)


def prog_run_live(prog_fd: int, frame: bytes, count: int, batch: int) -> None:
    """BPF_PROG_RUN with live frames: count copies of frame through the program."""
    check_rc(lib.prism_prog_run_live(prog_fd, frame, len(frame), count, batch),
             "BPF_PROG_RUN live frames", hint="needs kernel >= 5.18")


def prog_run_test(prog_fd: int, frame: bytes, repeat: int) -> tuple[int, int]:
    """BPF_PROG_RUN repeat times on frame: (mean ns per run, the program's verdict)."""
    duration, retval = ffi.new("uint32_t *"), ffi.new("uint32_t *")
    check_rc(lib.prism_prog_run_test(prog_fd, frame, len(frame), repeat, duration, retval), "BPF_PROG_RUN")
    return int(duration[0]), int(retval[0])


# ---------------------------------------------------------------------------
# prism_csum.c: TCP/UDP checksums
# ---------------------------------------------------------------------------

CSUM_OFFLOAD: int = lib.PRISM_CSUM_OFFLOAD
CSUM_SOFTWARE: int = lib.PRISM_CSUM_SOFTWARE


def l4_locate(frame: bytes) -> Any | None:
    """Where a frame's TCP/UDP checksum is (struct prism_l4), or None."""
    loc = ffi.new("struct prism_l4 *")
    return loc if lib.prism_l4_locate(frame, len(frame), loc) == 1 else None


csum_batch = lib.prism_csum_batch
l4_seed = lib.prism_l4_seed
l4_write_seed = lib.prism_l4_write_seed
l4_is_seed = lib.prism_l4_is_seed
l4_complete = lib.prism_l4_complete
l4_valid = lib.prism_l4_valid


# ---------------------------------------------------------------------------
# prism_overlay.c (ports, VTEPs, counters) and prism_fdb.c (the forwarding table)
# ---------------------------------------------------------------------------

UPLINK_PORT: int = lib.PRISM_UPLINK_PORT
MAX_PORTS: int = lib.PRISM_MAX_PORTS
HIST_BUCKETS: int = lib.PRISM_HIST_BUCKETS


def overlay_new(umem: Any, cfg: Any) -> Any:
    out = ffi.new("prism_overlay **")
    check_rc(lib.prism_overlay_new(out, umem, cfg), "create overlay",
             hint="vxlan_port, uplink MTU (>= 68) and ttl must be set; checksum offload needs TX metadata")
    return out[0]


overlay_delete = lib.prism_overlay_delete


def overlay_set_uplink(overlay: Any, xsks: Any, n: int) -> int:
    return check_rc(lib.prism_overlay_set_uplink(overlay, xsks, n), "set uplink")


def overlay_add_container(overlay: Any, xsks: Any, n: int, vni: int, mac: bytes, name: str) -> int:
    return check_rc(lib.prism_overlay_add_container(overlay, xsks, n, vni, mac),
                    "add container", name, "MAC already used in this VNI, or the uplink is not set")


def overlay_add_vtep(overlay: Any, vni: int, ip_be: int, mac: bytes, name: str) -> int:
    return check_rc(lib.prism_overlay_add_vtep(overlay, vni, ip_be, mac), "add VTEP", name)


def overlay_lookup(overlay: Any, vni: int, mac: bytes) -> tuple[int, int]:
    """(kind, index): 0 unknown, 1 a local port, 2 a VTEP."""
    idx = ffi.new("uint32_t *")
    kind = lib.prism_overlay_lookup(overlay, vni, mac, idx)
    return int(kind), int(idx[0])


def overlay_counters(overlay: Any) -> Any:
    out = ffi.new("struct prism_overlay_counters *")
    lib.prism_overlay_counters(overlay, out)
    return out


def overlay_port_counters(overlay: Any, port: int, name: str) -> Any:
    out = ffi.new("struct prism_port_counters *")
    check_rc(lib.prism_overlay_port_counters(overlay, port, out), "port counters", name)
    return out


# ---------------------------------------------------------------------------
# prism_mcast.c: MLD snooping's table, shared by a daemon's workers
# ---------------------------------------------------------------------------

MC_ALL: int = lib.PRISM_MC_ALL
MC_DATA: int = lib.PRISM_MC_DATA
MC_REPORT: int = lib.PRISM_MC_REPORT


def mcast_new(member_s: int, per_port: int) -> Any:
    out = ffi.new("prism_mcast **")
    check_rc(lib.prism_mcast_new(out, member_s, per_port), "create the MLD snooping table",
             hint="membership interval and per-port limit must be positive")
    return out[0]


mcast_delete = lib.prism_mcast_delete
mcast_set_ready = lib.prism_mcast_set_ready


def mcast_counters(mcast: Any) -> Any:
    out = ffi.new("struct prism_mcast_counters *")
    lib.prism_mcast_counters(mcast, out)
    return out


def mcast_classify(frame: bytes) -> int:
    return int(lib.prism_mcast_classify(frame, len(frame)))


def mcast_learn(mcast: Any, vni: int, port: int, frame: bytes, now_ns: int) -> int:
    """Records applied from an MLD report or done that port sent; -EINVAL if unreadable."""
    return int(lib.prism_mcast_learn(mcast, vni, port, frame, len(frame), now_ns))


def mcast_members(mcast: Any, vni: int, group_mac: bytes, now_ns: int) -> list[int]:
    ports = ffi.new("uint32_t[]", MAX_PORTS)
    n = lib.prism_mcast_members(mcast, vni, group_mac, now_ns, ports, MAX_PORTS)
    return [int(ports[i]) for i in range(min(n, MAX_PORTS))]


def overlay_set_port_packet(overlay: Any, port: int, fd: int, gro_segments: int) -> None:
    check_rc(lib.prism_overlay_set_port_packet(overlay, port, fd, gro_segments),
             f"deliver to port {port} through a packet socket")


def overlay_set_mcast(overlay: Any, mcast: Any) -> None:
    check_rc(lib.prism_overlay_set_mcast(overlay, mcast), "set the MLD snooping table")


def overlay_inject(overlay: Any, frame: bytes, batch: Any) -> int:
    """A copy of frame for every container port appended to batch; copies made."""
    return check_rc(lib.prism_overlay_inject(overlay, frame, len(frame), batch), "inject a frame",
                    hint="the frame must fit a UMEM frame")


# ---------------------------------------------------------------------------
# prism_hist.c: latency histograms
# ---------------------------------------------------------------------------

def overlay_hist(overlay: Any, cls: int, from_poll: bool) -> Any:
    out = ffi.new("struct prism_hist *")
    check_rc(lib.prism_overlay_hist(overlay, cls, 1 if from_poll else 0, out), "histogram", f"class {cls}")
    return out


overlay_hist_reset = lib.prism_overlay_hist_reset
hist_bucket = lib.prism_hist_bucket
hist_bucket_low = lib.prism_hist_bucket_low


# ---------------------------------------------------------------------------
# prism_vxlan.c and prism_deliver.c: the stages, a batch per call
# ---------------------------------------------------------------------------
# -errno: the stage dropped and counted what it could not pass on; Overlay
# decides what is fatal.
decap_batch = lib.prism_decap_batch
encap_batch = lib.prism_encap_batch
deliver_batch = lib.prism_deliver_batch
overlay_through = lib.prism_overlay_through
overlay_service = lib.prism_overlay_service
overlay_flush_tx = lib.prism_overlay_flush_tx
# The hold (prism_api.h): LOW TCP segments kept for the next cut batches to merge with.
overlay_set_hold = lib.prism_overlay_set_hold
overlay_flush_held = lib.prism_overlay_flush_held
