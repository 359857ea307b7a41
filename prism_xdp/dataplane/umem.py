"""umem.py - Umem: the frame memory shared by AF_XDP sockets, with its free-frame pool and frame accounting."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prism_xdp.dataplane import native


@dataclass(frozen=True)
class UmemParams:
    """What a UMEM is made of. Sizes are in frames; rings are powers of two."""

    frame_count: int = 4096
    frame_size: int = 2048
    headroom: int = 0
    fill_size: int = 2048
    comp_size: int = 2048
    # Sockets bound with XskParams.multi_buffer may bring a packet in several
    # frames, which stay chained (a few bytes of bookkeeping per frame).
    multi_buffer: bool = False

    def check(self) -> None:
        for name in ("frame_size", "fill_size", "comp_size"):
            value = getattr(self, name)
            if value <= 0 or value & (value - 1):
                raise ValueError(f"umem {name} must be a power of two, not {value}")
        if self.frame_size < 2048:
            raise ValueError(f"umem frame_size must be at least 2048, not {self.frame_size}")
        if self.frame_count <= 0:
            raise ValueError(f"umem frame_count must be positive, not {self.frame_count}")
        if not 0 <= self.headroom < self.frame_size // 2:
            raise ValueError(
                f"umem headroom must be in 0..{self.frame_size // 2 - 1}, not {self.headroom}"
            )


@dataclass(frozen=True)
class FrameAccount:
    """Where every frame is; pool + kernel_rx + kernel_tx + user == frames.

    kernel_rx splits into fill_ring + rx_ring + what the kernel holds between
    them (copy mode keeps a few frames in its buffer pool); kernel_tx into
    tx_ring + comp_ring + frames in the kernel's transmit path.
    """

    frames: int
    pool: int
    kernel_rx: int
    kernel_tx: int
    user: int
    fill_ring: int = 0
    rx_ring: int = 0
    tx_ring: int = 0
    comp_ring: int = 0

    @property
    def kernel_rx_held(self) -> int:
        return self.kernel_rx - self.fill_ring - self.rx_ring

    @property
    def kernel_tx_held(self) -> int:
        return self.kernel_tx - self.tx_ring - self.comp_ring

    def as_dict(self) -> dict[str, int]:
        return {"frames": self.frames, "pool": self.pool, "fill_ring": self.fill_ring,
                "rx_ring": self.rx_ring, "kernel_rx_held": self.kernel_rx_held, "batches": self.user,
                "tx_ring": self.tx_ring, "comp_ring": self.comp_ring,
                "kernel_tx_held": self.kernel_tx_held}

    @property
    def balanced(self) -> bool:
        return self.pool + self.kernel_rx + self.kernel_tx + self.user == self.frames


class Umem:
    """Frames in one memory area, registered with the kernel (or not, for tests).

    One thread drives a Umem: its pool and rings are not locked.
    """

    def __init__(self, params: UmemParams | None = None, *, register: bool = True) -> None:
        self.params = params or UmemParams()
        self.params.check()
        p = self.params
        self._ptr: Any = native.umem_create(p.frame_count, p.frame_size, p.headroom, p.fill_size,
                                            p.comp_size, register, p.multi_buffer)
        self._area = native.umem_area(self._ptr, p.frame_count * p.frame_size)
        self.sockets: list[Any] = []

    @property
    def ptr(self) -> Any:
        if self._ptr is None:
            raise ValueError("UMEM is closed")
        return self._ptr

    @property
    def tx_metadata(self) -> bool:
        """The kernel takes a checksum request with each frame (AF_XDP TX metadata, probed at create)."""
        return bool(native.umem_tx_metadata(self.ptr))

    @property
    def free_frames(self) -> int:
        return int(native.umem_pool_count(self.ptr))

    def account(self) -> FrameAccount:
        out = native.umem_account(self.ptr)
        return FrameAccount(out.frames, out.pool, out.kernel_rx, out.kernel_tx, out.user,
                            out.fill_ring, out.rx_ring, out.tx_ring, out.comp_ring)

    def read(self, addr: int, length: int) -> bytes:
        """Copy of a packet's bytes, a chained packet's parts in order (tests and tools,
        not the hot path)."""
        if not self.params.multi_buffer:
            return bytes(self._area[addr : addr + length])
        return native.umem_read(self.ptr, addr, length)

    def write(self, addr: int, data: bytes) -> None:
        self._area[addr : addr + len(data)] = data

    def close(self) -> None:
        """Free the memory; every socket on it must be closed first."""
        if self._ptr is None:
            return
        native.umem_delete(self._ptr)
        self._ptr = None

    def __enter__(self) -> Umem:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
