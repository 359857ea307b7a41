"""batch.py - Batch: a reusable struct-of-arrays of packet descriptors that the C helpers fill and drain."""

from __future__ import annotations

from typing import Any

from prism_xdp.dataplane import native
from prism_xdp.dataplane.umem import Umem


class Batch:
    """Descriptors (UMEM address, length), allocated once in C and reused.

    Python reads .n and passes the batch on; it never walks the arrays in
    the hot path. descriptors() is for tests and tools.
    """

    def __init__(self, cap: int = 64) -> None:
        if cap <= 0:
            raise ValueError(f"batch capacity must be positive, not {cap}")
        self.ptr: Any = native.batch_new(cap)
        self.cap = cap

    @property
    def n(self) -> int:
        return int(self.ptr.n)

    def clear(self) -> None:
        self.ptr.n = 0

    def descriptors(self) -> list[tuple[int, int]]:
        return [(self.ptr.addr[i], self.ptr.len[i]) for i in range(self.ptr.n)]

    def alloc(self, umem: Umem, count: int, length: int) -> int:
        """Take up to count free frames of the given length from the pool."""
        return native.alloc_batch(umem.ptr, self.ptr, count, length)

    def alloc_multibuf(self, umem: Umem, data: bytes) -> int:
        """One packet in as many chained frames as it takes, as RX leaves a multi-buffer
        packet (tests, tools; a multi_buffer UMEM): 1, or 0 when there is no room."""
        return native.alloc_multibuf(umem.ptr, self.ptr, data)

    def fill_with(self, umem: Umem, data: bytes, start: int = 0, count: int | None = None) -> int:
        """Copy one packet into frames start..start+count of the batch (tools, tests)."""
        count = self.n - start if count is None else count
        return native.copy_frames_batch(umem.ptr, self.ptr, start, count, data)

    def free(self, umem: Umem, start: int = 0, count: int | None = None) -> int:
        """Give frames back to the pool; the caller then drops them from the batch."""
        count = self.n - start if count is None else count
        return native.free_batch(umem.ptr, self.ptr, start, count)

    def drop_all(self, umem: Umem) -> int:
        n = self.free(umem)
        self.clear()
        return n
