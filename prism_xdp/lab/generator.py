"""generator.py - a bounded fast traffic source: the prism_gen XDP program run with BPF_PROG_RUN live frames, transmitting into a veth from inside its namespace."""

from __future__ import annotations

import os
import threading
import time

from prism_xdp.dataplane import native
from prism_xdp.dataplane.native import ffi
from prism_xdp.dataplane.xdp import XdpProgram
from prism_xdp.lab.testhost import inside, link_index


def next_call_size(size: int, took: float, target: float) -> int:
    """Frames for the next BPF_PROG_RUN call so that it lasts about `target` seconds,
    given that `size` frames took `took`; within 1000..50M (a call cannot be stopped)."""
    return int(min(max(size * target / max(took, 1e-3), 1000), 50_000_000))


class LiveFrameGenerator:
    """Sends `count` copies of a frame out of ifname (in namespace ns), as fast as one CPU can.

    The kernel runs the program `count` times on the calling thread; cffi
    drops the GIL meanwhile, so a consumer thread keeps running. Bounded by
    count: it always stops by itself.
    """

    def __init__(self, ifname: str, ns: str | None) -> None:
        self.prog = XdpProgram("prism_gen")
        tx_port = self.prog.map_fd("tx_port")
        # A devmap resolves the ifindex in the namespace of whoever writes it.
        if ns:
            with inside(ns):
                self._set_port(tx_port, link_index(ifname, ns))
        else:
            self._set_port(tx_port, link_index(ifname))
        self._threads: list[threading.Thread] = []
        self._halt = threading.Event()
        self.error: BaseException | None = None

    @staticmethod
    def _set_port(fd: int, ifindex: int) -> None:
        native.map_update(fd, ffi.new("uint32_t *", 0), ffi.new("uint32_t *", ifindex), "tx_port")

    def send(self, frame: bytes, count: int, batch: int = 64) -> None:
        native.prog_run_live(self.prog.fd, frame, count, batch)

    def start(self, frame: bytes, count: int) -> None:
        def work() -> None:
            try:
                self.send(frame, count)
            except BaseException as exc:  # reported by join()
                self.error = exc

        self._threads = [threading.Thread(target=work, name="prism-gen", daemon=True)]
        self._threads[0].start()

    def start_for(self, frame: bytes, seconds: float, chunk: int = 100_000, cpu: int | None = None,
                  background: bool = False, call_seconds: float | None = None, threads: int = 1) -> None:
        """Send in chunks until `seconds` have passed (or stop()): a load bounded in time.

        cpu pins the sending thread, so that it does not share a CPU with a
        pinned worker (it would take whole scheduler time slices from it).
        background runs it as SCHED_IDLE: anything else on that CPU (an echo
        server, ksoftirqd) goes first, so a latency probe measures the data
        path and not a CPU taken for milliseconds by the load generator.

        Each BPF_PROG_RUN call has a fixed cost of ~25 ms in which it sends
        nothing (its frame pool is set up and torn down). A path that drains
        frames faster than a call lasts then sees a load with holes in it.
        call_seconds sizes each call by time instead of by `chunk` (starting
        from chunk, rescaled after every call); threads > 1 runs overlapping
        senders on the same CPU, so one sender's gap is another's busy time.
        """
        self._halt = threading.Event()
        deadline = time.monotonic() + seconds
        self._threads = []

        def work() -> None:
            size = chunk
            try:
                if cpu is not None:
                    os.sched_setaffinity(0, {cpu})
                if background:
                    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
                while (left := deadline - time.monotonic()) > 0 and not self._halt.is_set():
                    t0 = time.monotonic()
                    self.send(frame, size)
                    if call_seconds:
                        size = next_call_size(size, time.monotonic() - t0, min(call_seconds, left))
            except BaseException as exc:  # reported by join()
                self.error = exc

        for i in range(threads):
            t = threading.Thread(target=work, name=f"prism-gen-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._halt.set()
        self.join()

    def join(self, timeout: float | None = None) -> None:
        for t in self._threads:
            t.join(timeout)
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        self.prog.close()
