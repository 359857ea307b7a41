"""rx.py - receiving from an AF_XDP socket in the lab: drain() copies packets out for tests, rx_until_idle() drops (or forwards) them at full speed for benches."""

from __future__ import annotations

import time

from prism_xdp.dataplane.batch import Batch
from prism_xdp.dataplane.xsk import XskSocket


def drain(xsk: XskSocket, want: int, timeout: float = 2.0, batch: Batch | None = None) -> list[bytes]:
    """Receive until `want` packets came (or timeout); return their bytes, frames freed.

    Waits 50 ms past `want`, so that packets which should not come are seen
    too. For tests and tools: it copies every packet out.
    """
    batch = batch or Batch(64)
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    settle = None
    while time.monotonic() < deadline:
        batch.clear()
        if xsk.rx(batch):
            got += [xsk.umem.read(a, n) for a, n in batch.descriptors()]
            batch.drop_all(xsk.umem)
            xsk.fill(64)
        elif len(got) >= want:
            settle = settle or time.monotonic() + 0.05
            if time.monotonic() > settle:
                break
        else:
            time.sleep(0.001)
    return got


def rx_until_idle(rx: XskSocket, batch: Batch, max_s: float, idle_s: float = 0.3,
                  tx: XskSocket | None = None) -> tuple[int, float]:
    """Receive and drop (or, with tx, forward through tx) until idle_s passes without a packet
    or max_s in all: (packets dropped or sent, seconds from the first packet to the last).

    A busy loop with one call per stage per batch, as a data path drives it: what a bench
    measures is the layer, not this loop.
    """
    umem = rx.umem
    packets, first, last = 0, 0.0, 0.0
    deadline = time.monotonic() + max_s
    now = time.monotonic
    while True:
        t = now()
        if t > deadline or (last and t - last > idle_s):
            break
        batch.clear()
        n = rx.rx(batch)
        if not n:
            if tx is not None:
                tx.complete()
            continue
        if not first:
            first = t
        last = t
        if tx is not None:
            sent = tx.tx(batch)
            packets += sent  # forward counts what went out
            if sent < n:
                batch.free(umem, sent, n - sent)
            tx.complete()
        else:
            packets += n
            batch.free(umem)
        rx.fill(n)
    return packets, last - first
