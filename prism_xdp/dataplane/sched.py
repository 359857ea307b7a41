"""sched.py - the three scheduling modes (vanilla, PRISM-batch, PRISM-sync) as small pure schedulers over abstract stage operations, and the engine that runs one and switches modes without losing or reordering packets."""

# Over 400 lines on purpose: the three schedulers and the engine that switches
# between them share one Ops protocol and one invariant (a switch loses and
# reorders nothing); the engine's drain is only readable next to the schedulers
# whose in-flight state it empties.

from __future__ import annotations

import enum
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from prism_xdp.dataplane.errors import ConfigError

HIGH_ACTIVE_STEPS = 256  # LOW steps after a HIGH packet during which HIGH counts as active
# Packets a batch may take (the one definition: the daemon's config checks against it).
BATCH_MIN, BATCH_MAX = 1, 4096


def check_batch(batch: int, low_batch_with_high: int = 0) -> None:
    """A batch size in BATCH_MIN..BATCH_MAX; a LOW batch while HIGH is active in 0..BATCH_MAX (0: the batch)."""
    if not BATCH_MIN <= batch <= BATCH_MAX:
        raise ConfigError(f"batch must be in {BATCH_MIN}..{BATCH_MAX}, not {batch}")
    if not 0 <= low_batch_with_high <= BATCH_MAX:
        raise ConfigError(f"low_batch_with_high must be in 0..{BATCH_MAX}, not {low_batch_with_high}")


class Mode(enum.Enum):
    VANILLA = "vanilla"
    BATCH = "batch"
    SYNC = "sync"

    @classmethod
    def parse(cls, value: str | Mode) -> Mode:
        if isinstance(value, Mode):
            return value
        try:
            return cls(str(value).lower())
        except ValueError:
            names = ", ".join(m.value for m in cls)
            raise ConfigError(f"mode must be one of {names}, not {value!r}") from None


class Work(Protocol):
    """Packets taken off one ring together; they move through the stages as one."""

    n: int


class Ops(Protocol):
    """What a scheduler drives: the real data path (ops.DatapathOps) or a simulation (simsched)."""

    def sources(self) -> Sequence[Any]:
        """Every RX ring, each with .cls (0 = LOW, higher = more urgent)."""
        ...

    def pending(self) -> int:
        """Bit i set when sources()[i] has packets waiting (one cheap call)."""
        ...

    def pending_count(self, src: Any) -> int:
        """Packets waiting on src's ring now."""
        ...

    def rx(self, src: Any, limit: int) -> Work | None:
        """Up to limit packets off src's ring, or None if it is empty."""
        ...

    def process(self, work: Any) -> None:
        """decap or encap: the middle stage (work: what rx returned)."""
        ...

    def deliver(self, work: Any) -> None:
        """TX on each packet's port, kick; the work item is done."""
        ...

    def through(self, src: Any, limit: int) -> int:
        """rx + process + deliver of one batch from src in one go; packets taken (0: ring empty)."""
        ...

    def service(self, now: bool = False) -> None:
        """Completions back to the pool, fill rings topped up. Called after every step.
        now: it must run now (the step found nothing to do, so the rings may be starved
        of frames; or a drain wants the rings clean); otherwise it may be batched."""
        ...

    def set_vanilla(self, on: bool) -> None:
        """Steering: every packet to class 0 (vanilla) or each class to its socket."""
        ...

    def flush_tx(self) -> None:
        """Return once every TX ring is empty: what was sent has left, in order."""
        ...

    def set_hold(self, on: bool) -> None:
        """Whether LOW TCP segments may wait for the next batches to merge with (PRISM's
        modes, whose LOW batches are cut short); off sends what waits."""
        ...


@dataclass
class SchedStats:
    steps: int = 0
    idle_steps: int = 0
    rx_calls: int = 0
    packets: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"steps": self.steps, "idle_steps": self.idle_steps, "rx_calls": self.rx_calls,
                "packets": self.packets}


class Scheduler:
    """Decides, per batch, which ring to take from and which stage to run next."""

    mode: Mode

    def __init__(self, ops: Ops, batch: int = 64, low_batch_with_high: int = 0) -> None:
        check_batch(batch, low_batch_with_high)
        self.ops = ops
        self.batch = batch
        # While HIGH traffic is active, a LOW batch is cut to this size: each
        # LOW step then hands the kernel less work (copy-mode TX runs the
        # container's receive path inside the kick), and a HIGH packet that
        # arrives meanwhile waits for less. Active = a HIGH packet within the
        # last HIGH_ACTIVE_STEPS LOW steps. 0: always the full batch.
        self.low_batch_with_high = low_batch_with_high or batch
        self._high_active = 0
        self.sources = list(ops.sources())
        self.stats = SchedStats()
        # Sources grouped by class, most urgent first; round-robin inside a class.
        classes = sorted({s.cls for s in self.sources}, reverse=True)
        self._by_class = [[i for i, s in enumerate(self.sources) if s.cls == c] for c in classes]
        self._next = [0] * len(classes)
        self._high = [i for i, s in enumerate(self.sources) if s.cls > 0]
        self._high_mask = sum(1 << i for i in self._high)
        # Per class, its bit mask: picking is a few integer operations on the pending
        # mask, whatever the number of sockets (hundreds of containers).
        self._groups = [(sum(1 << i for i in g), self.sources[g[0]].cls > 0) for g in self._by_class]

    def _pick(self, mask: int, only_low: bool = False) -> int | None:
        """Index of the source to take from: most urgent class first, round-robin within it
        (the first pending source at or after the one after the last pick, wrapping)."""
        for g, (gmask, urgent) in enumerate(self._groups):
            ready = mask & gmask
            if not ready or (only_low and urgent):
                continue
            later = ready >> self._next[g] << self._next[g]
            pick = later or ready
            i = (pick & -pick).bit_length() - 1
            self._next[g] = i + 1
            return i
        return None

    def _through(self, i: int, limit: int) -> int:
        self.stats.rx_calls += 1
        n = self.ops.through(self.sources[i], limit)
        self.stats.packets += n
        return n

    def _low_limit(self) -> int:
        """The size of the next LOW batch (one LOW step spent)."""
        if not self._high_active:
            return self.batch
        self._high_active -= 1
        return self.low_batch_with_high

    def _rx(self, i: int, limit: int) -> Work | None:
        self.stats.rx_calls += 1
        work = self.ops.rx(self.sources[i], limit)
        if work is not None:
            self.stats.packets += work.n
        return work

    def step(self) -> int:
        """One scheduling decision and the work it implies; returns packets taken off rings."""
        raise NotImplementedError

    def in_flight(self) -> int:
        """Work items taken off rings and not delivered yet."""
        return 0

    def drain(self) -> None:
        """Finish in-flight work in order, taking nothing new (before a mode switch)."""


class VanillaScheduler(Scheduler):
    """The stock kernel's order: every stage is a device on a poll list, polled round-robin, FIFO.

    Devices are each RX ring and the two stage queues (process, deliver),
    as NAPI devices are the NIC, the VXLAN gro_cells and the backlog. A
    device with work sits on the poll list; polling it handles up to
    `weight` packets (one work item) and, if work is left, puts it back at
    the tail; a device that gets work is appended at the tail. A batch is
    therefore processed one stage at a time with other batches' stage
    steps in between — the interleaving PRISM removes — and a HIGH packet
    shares every queue with LOW ones. The process queue holds at most
    `backlog` packets (netdev_max_backlog); beyond that RX waits.
    """

    mode = Mode.VANILLA
    _PROCESS = -1
    _DELIVER = -2

    def __init__(self, ops: Ops, batch: int = 64, backlog: int = 1000) -> None:
        super().__init__(ops, batch)
        self.backlog = backlog
        self.process_q: deque[Work] = deque()
        self.deliver_q: deque[Work] = deque()
        self._queued = 0  # packets in process_q
        self.poll_list: deque[int] = deque()  # source index, or _PROCESS / _DELIVER
        self._listed: set[int] = set()

    def _schedule(self, dev: int) -> None:
        if dev not in self._listed:
            self._listed.add(dev)
            self.poll_list.append(dev)

    def step(self) -> int:
        # "Interrupts": rings with packets put their device on the list.
        mask = self.ops.pending()
        for i in range(len(self.sources)):
            if mask >> i & 1:
                self._schedule(i)
        if not self.poll_list:
            self.ops.service(now=True)
            return 0
        dev = self.poll_list.popleft()
        self._listed.discard(dev)
        moved = 0
        if dev == self._PROCESS:
            work = self.process_q.popleft()
            self._queued -= work.n
            self.ops.process(work)
            self.deliver_q.append(work)
            self._schedule(self._DELIVER)
            if self.process_q:
                self._schedule(self._PROCESS)
            moved = work.n
        elif dev == self._DELIVER:
            work = self.deliver_q.popleft()
            self.ops.deliver(work)
            if self.deliver_q:
                self._schedule(self._DELIVER)
            moved = work.n
        elif self._queued < self.backlog:
            taken = self._rx(dev, self.batch)
            if taken is not None:
                self.process_q.append(taken)
                self._queued += taken.n
                self._schedule(self._PROCESS)
                moved = taken.n
                if self.ops.pending() >> dev & 1:
                    self._schedule(dev)  # weight used up, more waiting: to the tail
        else:
            self._schedule(dev)  # backlog full: the ring waits its next turn
            moved = 1 if self.process_q or self.deliver_q else 0
        self.ops.service(now=moved == 0)
        return moved

    def in_flight(self) -> int:
        return len(self.process_q) + len(self.deliver_q)

    def drain(self) -> None:
        while self.process_q or self.deliver_q:
            if self.process_q:
                work = self.process_q.popleft()
                self._queued -= work.n
                self.ops.process(work)
                self.deliver_q.append(work)
            self.ops.deliver(self.deliver_q.popleft())
        self.poll_list.clear()
        self._listed.clear()
        self.ops.service(now=True)


class BatchScheduler(Scheduler):
    """PRISM-batch: take one batch (most urgent class first), push it through every stage, re-check.

    Before every batch the HIGH rings are looked at again, so a LOW batch is
    never started while a HIGH packet waits; a batch in progress is not
    interrupted (batch-level preemption).
    """

    mode = Mode.BATCH

    def step(self) -> int:
        i = self._pick(self.ops.pending())
        if i is None:
            self.ops.service(now=True)
            return 0
        if self.sources[i].cls > 0:
            self._high_active = HIGH_ACTIVE_STEPS
            limit = self.batch
        else:
            limit = self._low_limit()
        n = self._through(i, limit)  # rx, process, deliver: the batch is never interrupted
        self.ops.service(now=n == 0)
        return n


class SyncScheduler(Scheduler):
    """PRISM-sync: every HIGH packet alone from RX to TX kick at once; LOW in batches.

    The HIGH rings are re-checked before each of a LOW batch's stage steps
    (rx, process, deliver), so a HIGH packet waits for at most one LOW stage
    step already under way.
    """

    mode = Mode.SYNC

    def _serve_high(self) -> int:
        done = 0
        while True:
            mask = self.ops.pending() & self._high_mask
            if not mask:
                return done
            i = self._pick(mask)
            if i is None:
                return done
            n = self._through(i, 1)
            if not n:
                return done
            done += n
            self._high_active = HIGH_ACTIVE_STEPS

    def step(self) -> int:
        moved = self._serve_high()
        i = self._pick(self.ops.pending(), only_low=True)
        if i is not None:
            work = self._rx(i, self._low_limit())
            if work is not None:
                moved += work.n
                self._serve_high()
                self.ops.process(work)
                self._serve_high()
                self.ops.deliver(work)
        self.ops.service(now=moved == 0)
        return moved


SCHEDULERS: dict[Mode, type[Scheduler]] = {
    Mode.VANILLA: VanillaScheduler,
    Mode.BATCH: BatchScheduler,
    Mode.SYNC: SyncScheduler,
}


def make_scheduler(mode: Mode | str, ops: Ops, batch: int = 64, low_batch_with_high: int = 0) -> Scheduler:
    """vanilla keeps the stock kernel's order: it never cuts LOW batches."""
    mode = Mode.parse(mode)
    if mode is Mode.VANILLA:
        return SCHEDULERS[mode](ops, batch)
    return SCHEDULERS[mode](ops, batch, low_batch_with_high=low_batch_with_high)


class Engine:
    """Runs the scheduler of the current mode and switches modes safely.

    A switch changes which ring a flow's packets arrive on, and which socket
    they leave through (vanilla puts everything on class 0). To keep every
    flow in order, the engine first finishes the old scheduler's in-flight
    work, changes the steering, waits for packets the kernel is still
    placing under the old rule, drains what the old rule put on the rings —
    the rings the new rule no longer uses for those flows first — and lets
    every TX ring empty before the new scheduler starts.
    """

    def __init__(self, ops: Ops, mode: Mode | str = Mode.BATCH, batch: int = 64,
                 settle: Callable[[], None] | None = None, low_batch_with_high: int = 0) -> None:
        self.ops = ops
        self.batch = batch
        self.low_batch_with_high = low_batch_with_high
        self.sched = make_scheduler(mode, ops, batch, low_batch_with_high)
        ops.set_vanilla(self.sched.mode is Mode.VANILLA)
        ops.set_hold(self.sched.mode is not Mode.VANILLA)
        # Packets steered before a switch become visible on their ring at the
        # end of the kernel's NAPI poll; a millisecond covers it.
        self._settle = settle or (lambda: time.sleep(0.001))
        self.switches = 0

    @property
    def mode(self) -> Mode:
        return self.sched.mode

    def step(self) -> int:
        return self.sched.step()

    def switch(self, mode: Mode | str) -> None:
        """Switch alone: this engine owns the steering (one queue). With several queues the
        daemon runs prepare() on every worker, changes the steering once, then finish()."""
        new = Mode.parse(mode)
        if new is self.sched.mode:
            return
        if self.prepare(new):
            self.ops.set_vanilla(new is Mode.VANILLA)
        self.finish(new)

    def prepare(self, mode: Mode | str) -> bool:
        """First half of a switch: finish the old mode's in-flight work and take nothing new.
        True when the steering must change (to or from vanilla) before finish()."""
        new = Mode.parse(mode)
        self.sched.drain()
        # Held LOW segments leave before any packet the drains below take: they came first.
        self.ops.set_hold(False)
        return new is not self.sched.mode and (self.sched.mode is Mode.VANILLA) != (new is Mode.VANILLA)

    def finish(self, mode: Mode | str) -> None:
        """Second half, once the steering is the new mode's: drain what the old rule put on
        the rings in the order that keeps every flow in order, empty the TX rings, start the
        new scheduler."""
        new = Mode.parse(mode)
        old = self.sched
        if new is old.mode:
            self.ops.set_hold(old.mode is not Mode.VANILLA)  # prepare() turned it off
            return
        if (old.mode is Mode.VANILLA) != (new is Mode.VANILLA):
            self._settle()
            sources = list(self.ops.sources())
            # Vanilla -> PRISM: a HIGH flow's older packets sit on class 0, so
            # class 0 goes first. PRISM -> vanilla: its older packets sit on the
            # HIGH rings, which go first.
            order = sorted(range(len(sources)), key=lambda i: sources[i].cls,
                           reverse=new is Mode.VANILLA)
            mask = self.ops.pending()
            snapshot = [(i, self.ops.pending_count(sources[i])) for i in order if mask >> i & 1]
            for i, count in snapshot:
                while count > 0:
                    work = self.ops.rx(sources[i], min(count, self.batch))
                    if work is None:
                        break
                    count -= work.n
                    self.ops.process(work)
                    self.ops.deliver(work)
            self.ops.service(now=True)
        # A flow's packets may now leave through another socket (vanilla sends
        # everything through class 0): what waits on the old TX ring goes first.
        self.ops.flush_tx()
        stats = old.stats
        self.sched = make_scheduler(new, self.ops, self.batch, self.low_batch_with_high)
        self.sched.stats = stats
        self.ops.set_hold(new is not Mode.VANILLA)
        self.switches += 1
