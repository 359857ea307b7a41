"""xsk.py - XskSocket: one AF_XDP socket on (interface, queue), sharing a Umem, with batch rx/tx/fill/completion calls."""

from __future__ import annotations

import enum
import errno
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

from prism_xdp.dataplane import native
from prism_xdp.dataplane.batch import Batch
from prism_xdp.dataplane.errors import PrismError
from prism_xdp.dataplane.native import check_rc
from prism_xdp.dataplane.umem import Umem


class BindMode(enum.Enum):
    """How the socket binds: zero-copy where the driver can, else copy."""

    AUTO = "auto"
    COPY = "copy"
    ZEROCOPY = "zerocopy"


@dataclass(frozen=True)
class XskParams:
    rx_size: int = 2048
    tx_size: int = 2048
    bind: BindMode = BindMode.AUTO
    need_wakeup: bool = True
    busy_poll_usecs: int = 0  # 0 = no busy-poll socket options
    busy_poll_budget: int = 64
    # A packet may come in several descriptors (XDP_USE_SG, Linux >= 6.6), which
    # stay chained in their frames (the UMEM must be UmemParams.multi_buffer).
    multi_buffer: bool = False

    def bind_flags(self) -> int:
        flags = {BindMode.AUTO: 0, BindMode.COPY: native.XDP_COPY, BindMode.ZEROCOPY: native.XDP_ZEROCOPY}
        return (flags[self.bind] | (native.XDP_USE_NEED_WAKEUP if self.need_wakeup else 0)
                | (native.XDP_USE_SG if self.multi_buffer else 0))


STAT_FIELDS = (
    "rx_dropped",
    "rx_invalid_descs",
    "tx_invalid_descs",
    "rx_ring_full",
    "rx_fill_ring_empty_descs",
    "tx_ring_empty_descs",
)
COUNTER_FIELDS = (
    "rx_packets",
    "rx_bytes",
    "rx_batches",
    "rx_wakeups",
    "tx_packets",
    "tx_bytes",
    "tx_ring_full",
    "tx_kicks",
    "tx_kick_errors",
    "comp_reaped",
    "fill_added",
    "rx_multibuf",
    "rx_multibuf_parts",
)


def rx_queue_count(ifname: str) -> int | None:
    """Number of RX queues the kernel shows for a device (None if unknown)."""
    try:
        return len([q for q in os.listdir(f"/sys/class/net/{ifname}/queues") if q.startswith("rx-")])
    except OSError:
        return None


class XskSocket:
    """An AF_XDP socket bound to (ifname, queue) on a Umem.

    Several sockets may share one (ifname, queue): they share its fill and
    completion rings. Sockets on other devices join the same Umem with a
    ring pair of their own, so frames move between devices without a copy.
    """

    def __init__(
        self, umem: Umem, ifname: str, queue: int = 0, params: XskParams | None = None
    ) -> None:
        self.umem = umem
        self.ifname = ifname
        self.queue = queue
        self.params = params or XskParams()
        name = f"{ifname} queue {queue}"
        try:
            socket.if_nametoindex(ifname)
        except OSError:
            raise PrismError(errno.ENODEV, "AF_XDP socket", name, "no such interface") from None
        nqueues = rx_queue_count(ifname)
        if nqueues is not None and queue >= nqueues:
            raise PrismError(
                errno.EINVAL, "AF_XDP socket", name, f"{ifname} has {nqueues} rx queue(s)"
            )
        p = self.params
        if p.multi_buffer and not umem.params.multi_buffer:
            raise PrismError(errno.EINVAL, "AF_XDP socket", name,
                             "a multi-buffer socket needs a UMEM made with multi_buffer")
        hint = ""
        if p.bind is BindMode.ZEROCOPY:
            hint = "zero-copy needs driver support (veth has none); use bind mode copy or auto"
        # A socket closed just before may still hold the queue: the kernel
        # frees its binding asynchronously. EBUSY that lasts is a real owner.
        deadline = time.monotonic() + 1.0
        while True:
            try:
                self._ptr: Any = native.xsk_create(umem.ptr, ifname, queue, p.rx_size, p.tx_size,
                                                   p.bind_flags(), name, hint)
                break
            except PrismError as exc:
                if exc.errno != errno.EBUSY:
                    raise
                if time.monotonic() > deadline:
                    raise PrismError(errno.EBUSY, "AF_XDP socket", name,
                                     "another AF_XDP socket (another process?) is bound to this queue") from None
            time.sleep(0.01)
        umem.sockets.append(self)
        if p.busy_poll_usecs:
            native.xsk_set_busy_poll(self._ptr, p.busy_poll_usecs, p.busy_poll_budget, name)

    @property
    def ptr(self) -> Any:
        if self._ptr is None:
            raise ValueError(f"AF_XDP socket on {self.ifname} queue {self.queue} is closed")
        return self._ptr

    @property
    def fd(self) -> int:
        return int(native.xsk_fd(self.ptr))

    @property
    def zerocopy(self) -> bool:
        return native.xsk_zerocopy(self.ptr, self.ifname)

    # The hot path: one call a batch.
    def fill(self, max_frames: int) -> int:
        """Move up to max_frames free frames onto this (device, queue)'s fill ring."""
        return int(native.fill_batch(self.ptr, max_frames))

    def rx(self, batch: Batch) -> int:
        """Append what the RX ring holds (up to the batch's room) to the batch."""
        return int(native.rx_batch(self.ptr, batch.ptr))

    def rx_upto(self, batch: Batch, limit: int) -> int:
        """As rx, taking at most limit packets (a scheduler's batch size)."""
        return int(native.rx_upto(self.ptr, batch.ptr, limit))

    def tx(self, batch: Batch, start: int = 0, count: int | None = None) -> int:
        """Put batch descriptors on the TX ring and kick; returns how many went."""
        count = batch.n - start if count is None else count
        return check_rc(native.tx_batch(self.ptr, batch.ptr, start, count), "tx", self.ifname)

    def complete(self, max_frames: int = 1 << 30) -> int:
        """Return transmitted frames from the completion ring to the pool."""
        return int(native.complete_batch(self.ptr, max_frames))

    def kick(self) -> None:
        native.xsk_kick(self.ptr, self.ifname)

    def set_rx_stamped(self, on: bool) -> None:
        """The XDP program puts metadata in front of each packet (Steering(metadata=True)):
        strip it on rx, taking the packet's class and arrival time from it."""
        native.xsk_set_rx_stamped(self.ptr, 1 if on else 0)

    @property
    def rx_pending(self) -> int:
        return int(native.xsk_rx_pending(self.ptr))

    def insert_into(self, map_fd: int, slot: int) -> None:
        """Make this socket XSKMAP slot `slot` (the program redirects there)."""
        native.xsk_map_insert(self.ptr, map_fd, slot)

    def statistics(self) -> dict[str, int]:
        """The kernel's XDP_STATISTICS for this socket."""
        out = native.xsk_statistics(self.ptr, self.ifname)
        return {f: int(getattr(out, f)) for f in STAT_FIELDS}

    def counters(self) -> dict[str, int]:
        """What the helpers did on this socket (user-space counters)."""
        out = native.xsk_counters(self.ptr)
        return {f: int(getattr(out, f)) for f in COUNTER_FIELDS}

    def close(self) -> None:
        if self._ptr is None:
            return
        native.xsk_delete(self._ptr)
        self._ptr = None
        if self in self.umem.sockets:
            self.umem.sockets.remove(self)

    def __enter__(self) -> XskSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"XskSocket({self.ifname!r}, queue={self.queue})"
