"""workers.py - one process per queue: each worker builds its own Datapath (UMEM, sockets, stages) over the daemon's shared XDP programs and answers the daemon over a pipe, so that queues run in parallel without sharing a GIL."""

from __future__ import annotations

import ctypes
import logging
import multiprocessing as mp
import os
import signal
import threading
from multiprocessing.connection import Connection
from typing import Any

from prism_xdp.dataplane.classes import CLASS_NAMES
from prism_xdp.dataplane.datapath import Datapath, DatapathParams, Runner
from prism_xdp.dataplane.errors import PrismError
from prism_xdp.dataplane.overlay import ContainerSpec, VtepSpec
from prism_xdp.dataplane.programs import Programs
from prism_xdp.dataplane.snooping import Snooping

log = logging.getLogger("prism_xdp")
PR_SET_PDEATHSIG = 1


class WorkerError(PrismError):
    pass


class WorkerProcess:
    """The daemon's handle on one queue's worker process."""

    def __init__(self, params: DatapathParams, containers: list[ContainerSpec], vteps: list[VtepSpec],
                 programs: Programs, snooping: Snooping | None = None, timeout: float = 30.0) -> None:
        self.queue = params.queue
        self._lock = threading.Lock()  # control requests come from several threads
        ctx = mp.get_context("fork")  # the child inherits the programs' map fds
        self._conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, params, containers, vteps, programs, snooping),
                                name=f"prism-worker-q{params.queue}")
        self.proc.start()
        child.close()
        if not self._conn.poll(timeout):
            self.kill()
            raise WorkerError(110, "worker", f"queue {self.queue}", "did not start")
        status, detail = self._conn.recv()
        if status != "ready":
            self.proc.join(5)
            raise WorkerError(5, "worker", f"queue {self.queue}", str(detail))

    @property
    def alive(self) -> bool:
        return self.proc.is_alive()

    def call(self, op: str, *args: Any, timeout: float = 10.0) -> Any:
        with self._lock:
            if not self.proc.is_alive():
                raise WorkerError(3, "worker", f"queue {self.queue}", "is not running")
            self._conn.send((op, args))
            if not self._conn.poll(timeout):
                raise WorkerError(110, "worker", f"queue {self.queue}", f"{op}: no answer in {timeout} s")
            status, result = self._conn.recv()
        if status != "ok":
            raise WorkerError(5, "worker", f"queue {self.queue}", f"{op}: {result}")
        return result

    def stop(self, timeout: float = 15.0) -> None:
        """Ask the worker to close its sockets and memory; kill it if it does not."""
        if self.proc.is_alive():
            try:
                with self._lock:
                    self._conn.send(("stop", ()))
            except (BrokenPipeError, OSError):
                pass
            self.proc.join(timeout)
        self.kill()
        self._conn.close()

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)


def _worker_main(conn: Connection, params: DatapathParams, containers: list[ContainerSpec],
                 vteps: list[VtepSpec], programs: Programs, snooping: Snooping | None) -> None:
    # A daemon killed with -9 takes its workers along (they close their sockets).
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # ^C reaches the daemon, which stops the workers in order
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        dp = Datapath(params, containers, vteps, programs, snooping)
    except BaseException as exc:
        conn.send(("error", str(exc)))
        return
    runner = Runner(dp).start()
    conn.send(("ready", os.getpid()))
    try:
        while not stop.is_set() and runner.alive:
            if not conn.poll(0.2):
                continue
            try:
                op, args = conn.recv()
            except EOFError:
                break  # the daemon is gone
            if op == "stop":
                break
            try:
                conn.send(("ok", _handle(dp, op, args)))
            except Exception as exc:
                conn.send(("error", str(exc)))
    finally:
        try:
            runner.stop()
        finally:
            dp.close()
    if runner.error is not None:
        log.error("worker for queue %d failed: %s", params.queue, runner.error)


class _HeldSwitch:
    """A mode switch in two halves across processes (Daemon.set_mode): prepare() drains this
    worker and holds its thread, taking no packet, until finish() - after the daemon has
    changed the shared steering once, with every worker held - lets it finish the switch."""

    def __init__(self) -> None:
        self._gate: threading.Event | None = None
        self._done = threading.Event()
        self._box: dict[str, Any] = {}

    def prepare(self, dp: Datapath, mode: str) -> bool:
        if self._gate is not None:
            raise RuntimeError("a mode switch is already held")
        gate, ready, self._done, self._box = threading.Event(), threading.Event(), threading.Event(), {}
        box, done = self._box, self._done

        def held() -> None:
            try:
                box["flip"] = dp.engine.prepare(mode)
            except Exception as exc:
                box["error"] = exc
                ready.set()
                done.set()
                return
            ready.set()
            if not gate.wait(HOLD_S):
                box["error"] = TimeoutError(f"the daemon did not finish the switch in {HOLD_S} s")
            try:
                dp.engine.finish(box.get("mode", mode))
            except Exception as exc:
                box.setdefault("error", exc)
            done.set()

        self._gate = gate
        dp.call_soon(held)
        if not ready.wait(10):
            raise TimeoutError("the worker thread did not answer")
        if "error" in box:
            self._gate = None
            raise box["error"]
        return bool(box["flip"])

    def finish(self, dp: Datapath, abort: bool = False) -> str:
        """abort: another worker could not prepare; stay in the current mode (drained, no harm)."""
        gate, self._gate = self._gate, None
        if gate is None:
            raise RuntimeError("no mode switch is held")
        if abort:
            self._box["mode"] = dp.mode.value
        gate.set()
        if not self._done.wait(10):
            raise TimeoutError("the worker thread did not finish the switch")
        if "error" in self._box:
            raise self._box["error"]
        return dp.mode.value


HOLD_S = 10.0  # a held worker finishes its switch on its own after this, so it never hangs
_HELD = _HeldSwitch()


def _handle(dp: Datapath, op: str, args: tuple[Any, ...]) -> Any:
    if op == "mode":
        dp.run_on_worker(lambda: dp.switch_mode(args[0]))
        return dp.mode.value
    if op == "mode-prepare":
        return _HELD.prepare(dp, args[0])
    if op == "mode-finish":
        return _HELD.finish(dp, abort=bool(args and args[0]))
    if op == "reset":
        dp.run_on_worker(dp.overlay.reset_histograms)
        return None
    if op == "stats":
        stats = dp.stats()
        stats["histograms"] = {}
        for cls in range(dp.params.nclass):
            for from_poll in (False, True):
                h, _ = dp.overlay.histogram(cls, from_poll=from_poll)
                stats["histograms"][f"{CLASS_NAMES[cls]}/{'poll' if from_poll else 'xdp'}"] = {
                    "buckets": h.buckets, "count": h.count, "total": h.total, "min": h.min, "max": h.max}
        return stats
    if op == "mode?":
        return dp.mode.value
    raise ValueError(f"unknown worker request {op!r}")
