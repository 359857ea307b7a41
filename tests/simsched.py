"""simsched.py - the schedulers' stage operations simulated on a virtual clock: scripted arrivals, stage costs, a trace of every step; for tests and for reasoning about the modes without a kernel."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from prism_xdp.dataplane.sched import Engine


@dataclass
class SimPacket:
    flow: int
    seq: int
    cls: int  # what the rules say (0 LOW, 1 HIGH)
    arrival: float  # µs
    rx: float | None = None
    done: float | None = None  # time of the TX kick that sent it

    @property
    def wait(self) -> float:
        assert self.done is not None
        return self.done - self.arrival


@dataclass
class SimSource:
    name: str
    cls: int
    ring: deque[SimPacket] = field(default_factory=deque)


@dataclass
class SimWork:
    src: SimSource
    packets: list[SimPacket]

    @property
    def n(self) -> int:
        return len(self.packets)


@dataclass(frozen=True)
class Costs:
    """µs per call and per packet of each stage."""

    rx_call: float = 0.5
    rx_pkt: float = 0.05
    process_call: float = 0.2
    process_pkt: float = 0.1
    deliver_call: float = 1.0
    deliver_pkt: float = 0.1
    service: float = 0.2
    pending: float = 0.0


@dataclass
class Step:
    """One stage step in the trace."""

    start: float
    end: float
    op: str  # rx, process, deliver
    cls: int  # the ring's class (what socket the batch came from)
    packets: tuple[SimPacket, ...]


class SimOps:
    """One uplink with a LOW and a HIGH ring; XDP steering by class, or all to LOW in vanilla."""

    def __init__(self, arrivals: list[SimPacket], costs: Costs = Costs(), ring_size: int = 2048) -> None:
        self.clock = 0.0
        self.costs = costs
        self.ring_size = ring_size
        self._future = deque(sorted(arrivals, key=lambda p: p.arrival))
        self._sources = [SimSource("low", 0), SimSource("high", 1)]
        self.vanilla = False
        self.hold = False
        self.hold_log: list[bool] = []  # every set_hold, in order
        self.trace: list[Step] = []
        self.delivered: list[SimPacket] = []
        self.dropped: list[SimPacket] = []

    # time --------------------------------------------------------------------
    def _admit(self) -> None:
        """Arrivals up to now go onto the ring the current steering picks."""
        while self._future and self._future[0].arrival <= self.clock:
            p = self._future.popleft()
            ring = self._sources[0 if self.vanilla else min(p.cls, 1)].ring
            if len(ring) < self.ring_size:
                ring.append(p)
            else:
                self.dropped.append(p)

    def _spend(self, op: str, cls: int, packets: list[SimPacket], cost: float) -> None:
        start = self.clock
        self.clock += cost
        self.trace.append(Step(start, self.clock, op, cls, tuple(packets)))
        self._admit()

    def advance(self, dt: float) -> None:
        """Let time pass with nothing taken off the rings (the engine's settle after a switch)."""
        self.clock += dt
        self._admit()

    def idle(self) -> bool:
        """Jump to the next arrival; False when none is left."""
        if not self._future:
            return False
        self.clock = max(self.clock, self._future[0].arrival)
        self._admit()
        return True

    @property
    def busy(self) -> bool:
        return any(s.ring for s in self._sources)

    # Ops ---------------------------------------------------------------------
    def sources(self) -> list[SimSource]:
        return self._sources

    def pending(self) -> int:
        self.clock += self.costs.pending
        self._admit()
        return sum(1 << i for i, s in enumerate(self._sources) if s.ring)

    def pending_count(self, src: SimSource) -> int:
        self._admit()
        return len(src.ring)

    def rx(self, src: SimSource, limit: int) -> SimWork | None:
        if not src.ring:
            self.clock += self.costs.rx_call
            self._admit()
            return None
        taken = [src.ring.popleft() for _ in range(min(limit, len(src.ring)))]
        for p in taken:
            p.rx = self.clock
        self._spend("rx", src.cls, taken, self.costs.rx_call + self.costs.rx_pkt * len(taken))
        return SimWork(src, taken)

    def process(self, work: SimWork) -> None:
        self._spend("process", work.src.cls, work.packets,
                    self.costs.process_call + self.costs.process_pkt * work.n)

    def deliver(self, work: SimWork) -> None:
        self._spend("deliver", work.src.cls, work.packets,
                    self.costs.deliver_call + self.costs.deliver_pkt * work.n)
        for p in work.packets:
            p.done = self.clock
        self.delivered += work.packets

    def through(self, src: SimSource, limit: int) -> int:
        work = self.rx(src, limit)
        if work is None:
            return 0
        self.process(work)
        self.deliver(work)
        return work.n

    def service(self, now: bool = False) -> None:
        self.clock += self.costs.service
        self._admit()

    def set_vanilla(self, on: bool) -> None:
        self.vanilla = on

    def flush_tx(self) -> None:
        """Delivery is instantaneous here: nothing waits on a TX ring."""

    def set_hold(self, on: bool) -> None:
        """Nothing is merged here, so nothing waits to be."""
        self.hold = on
        self.hold_log.append(on)


def run(engine: Engine, ops: SimOps, switches: dict[float, str] | None = None, limit: int = 10_000_000) -> None:
    """Step the engine until every arrival is delivered; switch modes at the given times."""
    pending_switches = sorted((switches or {}).items())
    for _ in range(limit):
        while pending_switches and pending_switches[0][0] <= ops.clock:
            engine.switch(pending_switches.pop(0)[1])
        if engine.step():
            continue
        if engine.sched.in_flight() or ops.busy:
            continue
        if not ops.idle():
            return
    raise RuntimeError("simulation did not finish")
