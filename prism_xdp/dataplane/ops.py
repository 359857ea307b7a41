"""ops.py - DatapathOps: the scheduler's view of one worker's data path (its sockets, the Overlay's stages, a pool of in-flight work items), a batch per call."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

from prism_xdp.dataplane import native
from prism_xdp.dataplane.batch import Batch
from prism_xdp.dataplane.native import ffi
from prism_xdp.dataplane.overlay import Overlay
from prism_xdp.dataplane.xsk import XskSocket

log = logging.getLogger("prism_xdp")

# Reap completions and refill after this many delivered batches under load: the
# pool holds thousands of frames, a batch uses at most batch_size.
SERVICE_EVERY = 4
READY_SCAN = 64  # sockets a worker looks at ring by ring; more: the kernel's readiness (epoll)


@dataclass
class Source:
    """A socket the loop receives from: the uplink's or a container's, of one class."""

    port: int
    cls: int
    xsk: XskSocket
    from_uplink: bool


class _Work:
    """A batch taken off one ring, with room for what its process stage makes of it."""

    __slots__ = ("rx", "out", "src", "n")

    def __init__(self, batch: int) -> None:
        self.rx = Batch(batch)
        self.out = Batch(batch * 4)  # floods make more packets than they take
        self.src: Source | None = None
        self.n = 0


class DatapathOps:
    """The scheduler's view of a data path: rings, stages, a pool of in-flight work items.

    The stages are the Overlay's own methods (what tests/unit/test_overlay_stages.py
    checks), on batches allocated here once: nothing is allocated per batch.
    """

    def __init__(self, sources: list[Source], overlay: Overlay, batch_size: int,
                 service: Callable[[], object], set_vanilla: Callable[[bool], None], pool: int = 64,
                 hold: int = 0) -> None:
        self._sources = sources
        self._xsks = ffi.new("prism_xsk *[]", [s.xsk.ptr for s in sources])
        self._nxsk = len(sources)
        self._free = [_Work(batch_size) for _ in range(pool)]
        self._service = service
        self._set_vanilla = set_vanilla
        self._mask = native.xsk_pending_mask
        # Sockets past the first 64 (32 containers and up) report in words of
        # their own, read as one little-endian integer.
        self._more = ffi.new("uint64_t[]", max(1, (self._nxsk - 1) // 64))
        self._more_bytes = ffi.buffer(self._more)
        # Past READY_SCAN sockets, asking the kernel (epoll) beats looking at every ring.
        self._ready_fd = -1
        if self._nxsk > READY_SCAN:
            self._ready_fd = native.xsk_ready_new(self._xsks, self._nxsk)
        self._ready = native.xsk_ready_mask
        self._delivered_since = 0
        self._decap, self._encap, self._deliver = overlay.decap, overlay.encap, overlay.deliver
        self._through, self._flush = overlay.through, overlay.flush_tx
        # The hold (segments per port), where the schedulers allow it (set_hold); 0: never.
        self._overlay, self._hold_segments, self._holding = overlay, hold, False
        # through's scratch batches: empty before and after every call.
        self._in, self._out = Batch(batch_size), Batch(batch_size * 4)

    def sources(self) -> list[Source]:
        return self._sources

    def pending(self) -> int:
        if self._ready_fd >= 0:
            first = int(self._ready(self._ready_fd, self._nxsk, self._more))
        else:
            first = int(self._mask(self._xsks, self._nxsk, self._more))
        if self._nxsk <= 64:
            return first
        return first | int.from_bytes(self._more_bytes, "little") << 64

    def pending_count(self, src: Source) -> int:
        return src.xsk.rx_pending

    def rx(self, src: Source, limit: int) -> _Work | None:
        if not self._free:
            return None  # every work item is in flight: the ring waits
        work = self._free.pop()
        work.rx.clear()
        n = src.xsk.rx_upto(work.rx, limit)
        if n <= 0:
            self._free.append(work)
            return None
        work.src, work.n = src, n
        return work

    def through(self, src: Source, limit: int) -> int:
        n = self._through(src.xsk, src.port, src.cls, self._in, self._out, limit)
        if n > 0:
            self._delivered_since += 1
        return n

    def process(self, work: _Work) -> None:
        src = work.src
        if src is None:
            raise ValueError("process: a work item without its source")
        work.out.clear()
        if src.from_uplink:
            self._decap(work.rx, work.out)
        else:
            self._encap(src.port, work.rx, work.out)

    def deliver(self, work: _Work) -> None:
        if work.src is None:
            raise ValueError("deliver: a work item without its source")
        try:
            self._deliver(work.src.cls, work.out)
        finally:
            self._free.append(work)  # its batch is empty whatever happened
            self._delivered_since += 1

    def service(self, now: bool = False) -> None:
        """Completions back to the pool and fill rings topped up (a walk over every port's
        rings): after every SERVICE_EVERY delivered batches, and when asked to run now.
        Counted in deliveries, not in steps: vanilla takes three steps per batch (rx,
        process, deliver) and counting steps made it walk the rings ~3x as often."""
        if now or self._delivered_since >= SERVICE_EVERY:
            if now and self._holding:
                self._overlay.flush_held()  # nothing to do: held segments wait no more
            self._delivered_since = 0
            self._service()

    def set_vanilla(self, on: bool) -> None:
        self._set_vanilla(on)

    def set_hold(self, on: bool) -> None:
        self._holding = on and self._hold_segments > 0
        self._overlay.set_hold(self._hold_segments if self._holding else 0)

    def flush_tx(self) -> None:
        if not self._flush():
            log.warning("TX rings did not empty before a mode switch; a flow may be reordered")

    def close(self) -> None:
        """The epoll set over the sockets, if there is one (before the sockets close)."""
        if self._ready_fd >= 0:
            os.close(self._ready_fd)
            self._ready_fd = -1
