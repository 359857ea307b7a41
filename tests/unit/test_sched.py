"""test_sched.py - the three scheduling modes on a simulated clock: delivery order, waiting times, preemption, no loss and no reordering, mode switches under load."""

from __future__ import annotations

import random

import pytest
from simsched import Costs, SimOps, SimPacket, Step, run

from prism_xdp.dataplane.errors import ConfigError
from prism_xdp.dataplane.sched import Engine, Mode

LOW, HIGH = 0, 1
COSTS = Costs()


def flow(flow_id: int, cls: int, times: list[float]) -> list[SimPacket]:
    return [SimPacket(flow_id, seq, cls, t) for seq, t in enumerate(times)]


def simulate(mode: str, arrivals: list[SimPacket], switches: dict[float, str] | None = None,
             low_batch_with_high: int = 0) -> SimOps:
    ops = SimOps(arrivals, COSTS)
    engine = Engine(ops, mode, batch=64, settle=lambda: None, low_batch_with_high=low_batch_with_high)
    run(engine, ops, switches)
    return ops


def saturating_low_with_high_probes() -> list[SimPacket]:
    """512 LOW packets at once, then a LOW packet every 0.2 µs; a HIGH probe every 50 µs."""
    low = flow(1, LOW, [0.0] * 512 + [i * 0.2 for i in range(1, 2000)])
    high = flow(2, HIGH, [5.0 + 50.0 * i for i in range(8)])
    return low + high


def assert_no_loss_no_reorder(ops: SimOps, arrivals: list[SimPacket]) -> None:
    assert not ops.dropped
    assert sorted((p.flow, p.seq) for p in ops.delivered) == sorted((p.flow, p.seq) for p in arrivals)
    for f in {p.flow for p in arrivals}:
        seqs = [p.seq for p in ops.delivered if p.flow == f]
        assert seqs == sorted(seqs), f"flow {f} reordered"


def low_steps_between(ops: SimOps, start: float, end: float) -> list[Step]:
    """LOW stage steps that began in (start, end)."""
    return [s for s in ops.trace if s.cls == LOW and start < s.start < end]


@pytest.mark.parametrize("mode", ["vanilla", "batch", "sync"])
def test_no_packet_is_lost_or_reordered(mode: str) -> None:
    arrivals = saturating_low_with_high_probes()
    ops = simulate(mode, arrivals)
    assert_no_loss_no_reorder(ops, arrivals)


def test_vanilla_interleaves_stages_of_different_batches() -> None:
    ops = simulate("vanilla", flow(1, LOW, [0.0] * 256))
    ops_seq = [(s.op, s.packets[0].seq) for s in ops.trace]
    # The first batch is taken, processed, then the second batch is taken
    # before the first is delivered: stage steps of batches alternate.
    first_deliver = ops_seq.index(("deliver", 0))
    assert ("rx", 64) in ops_seq[:first_deliver]
    assert ops_seq[:4] == [("rx", 0), ("process", 0), ("rx", 64), ("deliver", 0)]


def test_vanilla_makes_high_wait_behind_low() -> None:
    arrivals = flow(1, LOW, [0.0] * 512) + flow(2, HIGH, [1.0])
    ops = simulate("vanilla", arrivals)
    high = next(p for p in ops.delivered if p.flow == 2)
    lows_before = [p for p in ops.delivered[: ops.delivered.index(high)] if p.flow == 1]
    assert len(lows_before) == 512  # FIFO: every LOW packet queued before it goes first


@pytest.mark.parametrize("low_batch_with_high", [0, 4])
def test_batch_never_starts_a_low_batch_while_high_waits(low_batch_with_high: int) -> None:
    """Also when LOW goes in small batches while HIGH is active (the default cut, 4)."""
    arrivals = saturating_low_with_high_probes()
    ops = simulate("batch", arrivals, low_batch_with_high=low_batch_with_high)
    highs = [p for p in arrivals if p.cls == HIGH]
    for step in ops.trace:
        if step.op == "rx" and step.cls == LOW:
            waiting = [p for p in highs if p.arrival <= step.start and (p.rx is None or p.rx > step.start)]
            assert not waiting, f"LOW batch taken at {step.start} while HIGH waited"


def test_batch_high_waits_at_most_for_the_batch_in_progress() -> None:
    ops = simulate("batch", saturating_low_with_high_probes())
    for p in (p for p in ops.delivered if p.cls == HIGH):
        steps = low_steps_between(ops, p.arrival, p.done)  # type: ignore[arg-type]
        assert len(steps) <= 2, "more than the rest of one LOW batch went first"
        assert not any(s.op == "rx" for s in steps)


def test_sync_delivers_high_before_any_further_low_step() -> None:
    ops = simulate("sync", saturating_low_with_high_probes())
    for p in (p for p in ops.delivered if p.cls == HIGH):
        assert low_steps_between(ops, p.arrival, p.done) == []  # type: ignore[arg-type]
        assert p.rx is not None
        steps = [s for s in ops.trace if p in s.packets]
        assert [s.op for s in steps] == ["rx", "process", "deliver"] and all(len(s.packets) == 1 for s in steps)


def test_waiting_times_match_the_definitions_exactly() -> None:
    """64 LOW at t=0 (one batch), one HIGH at t=1 µs, with known stage costs."""
    c = COSTS
    rx64, proc64, del64 = c.rx_call + 64 * c.rx_pkt, c.process_call + 64 * c.process_pkt, c.deliver_call + 64 * c.deliver_pkt
    rx1, proc1, del1 = c.rx_call + c.rx_pkt, c.process_call + c.process_pkt, c.deliver_call + c.deliver_pkt

    def high_wait(mode: str) -> float:
        ops = simulate(mode, flow(1, LOW, [0.0] * 64) + flow(2, HIGH, [1.0]))
        return next(p for p in ops.delivered if p.flow == 2).wait

    # batch: the LOW batch runs to its TX kick, then service, then HIGH alone.
    assert high_wait("batch") == pytest.approx(rx64 + proc64 + del64 + c.service + rx1 + proc1 + del1 - 1.0)
    # sync: HIGH is served right after the LOW batch's rx step.
    assert high_wait("sync") == pytest.approx(rx64 + rx1 + proc1 + del1 - 1.0)
    # vanilla: HIGH joined the LOW ring; its batch follows the first through the poll list.
    assert high_wait("vanilla") > high_wait("batch") > high_wait("sync")


def test_high_latency_ranks_sync_batch_vanilla_under_load() -> None:
    def p99(mode: str) -> float:
        ops = simulate(mode, saturating_low_with_high_probes())
        waits = sorted(p.wait for p in ops.delivered if p.cls == HIGH)
        return waits[int(0.99 * (len(waits) - 1))]

    assert p99("sync") < p99("batch") < p99("vanilla")


@pytest.mark.parametrize("switches", [
    {200.0: "batch"}, {200.0: "sync"}, {0.0: "vanilla"},
    {150.0: "vanilla", 450.0: "sync", 1000.0: "batch", 1300.0: "vanilla"},
])
@pytest.mark.parametrize("start", ["vanilla", "batch"])
def test_switching_modes_under_load_keeps_every_flow_whole_and_in_order(start: str, switches: dict[float, str]) -> None:
    # Close to the pipeline's capacity (rings fill up, queues build) but not
    # beyond, so that the kernel would not drop at a full ring.
    rng = random.Random(7)
    arrivals = flow(1, LOW, sorted(rng.uniform(0, 1500) for _ in range(3000)))
    arrivals += flow(2, HIGH, sorted(rng.uniform(0, 1500) for _ in range(300)))
    arrivals += flow(3, LOW, sorted(rng.uniform(0, 1500) for _ in range(1000)))
    ops = SimOps(arrivals, COSTS)
    # While the engine settles, packets keep arriving under the new steering.
    engine = Engine(ops, start, settle=lambda: ops.advance(5.0))
    run(engine, ops, switches)
    assert_no_loss_no_reorder(ops, arrivals)
    modes = [start] + [m for _, m in sorted(switches.items())]
    assert engine.switches == sum(a != b for a, b in zip(modes, modes[1:], strict=False))
    assert engine.mode.value == modes[-1]


@pytest.mark.parametrize(("start", "to", "log"), [
    ("batch", "vanilla", [True, False, False]), ("vanilla", "sync", [False, False, True]),
    ("batch", "sync", [True, False, True]), ("sync", "sync", [True]),
])
def test_the_hold_is_on_in_prism_modes_and_off_across_a_switch(start: str, to: str, log: list[bool]) -> None:
    """Held LOW segments leave before a switch drains the rings (prepare), since they came first."""
    ops = SimOps(flow(1, LOW, [1.0, 2.0]), COSTS)
    engine = Engine(ops, start, settle=lambda: None)
    engine.switch(to)
    assert ops.hold_log == log and ops.hold is (to != "vanilla")


def test_mode_names_are_checked() -> None:
    assert Mode.parse("SYNC") is Mode.SYNC
    with pytest.raises(ConfigError, match="vanilla, batch, sync"):
        Mode.parse("fast")


@pytest.mark.parametrize("mode", ["batch", "sync"])
def test_low_batches_shrink_while_high_is_active_and_grow_back(mode: str) -> None:
    """low_batch_with_high: LOW steps take 8 while HIGH probes arrive; long after the last probe,
    64 again. HIGH waits less for the LOW step under way, and nothing is lost or reordered."""
    low = flow(1, LOW, [0.0] * 512 + [i * 0.6 for i in range(1, 8000)])
    low += flow(3, LOW, [20000.0] * 512)  # a burst long after the last HIGH probe
    high = flow(2, HIGH, [5.0 + 20.0 * i for i in range(5)])
    ops = SimOps(low + high, COSTS)
    run(Engine(ops, mode, batch=64, settle=lambda: None, low_batch_with_high=8), ops)
    assert_no_loss_no_reorder(ops, low + high)
    last_high = max(p.done for p in ops.delivered if p.cls == HIGH)
    rx_sizes = [(s.start, len(s.packets)) for s in ops.trace if s.cls == LOW and s.op == "rx"]
    while_high = [n for t, n in rx_sizes if 10.0 < t < last_high]
    assert while_high and max(while_high) == 8
    assert max(n for t, n in rx_sizes if t >= 20000.0) == 64  # HIGH long gone: full batches again
    plain_arrivals = [SimPacket(p.flow, p.seq, p.cls, p.arrival) for p in low + high]  # a run marks its packets
    plain = SimOps(plain_arrivals, COSTS)
    run(Engine(plain, mode, batch=64, settle=lambda: None), plain)
    # The first probe finds a full LOW batch under way either way; the later ones wait less.
    waits = sorted((p.arrival, p.done - p.arrival) for p in ops.delivered if p.cls == HIGH)[1:]
    plain_waits = sorted((p.arrival, p.done - p.arrival) for p in plain.delivered if p.cls == HIGH)[1:]
    assert max(w for _, w in waits) < max(w for _, w in plain_waits)


def test_vanilla_never_cuts_low_batches() -> None:
    arrivals = flow(1, LOW, [0.0] * 512) + flow(2, HIGH, [1.0, 2.0])
    ops = SimOps(arrivals, COSTS)
    run(Engine(ops, "vanilla", batch=64, settle=lambda: None, low_batch_with_high=8), ops)
    sizes = [len(s.packets) for s in ops.trace if s.op == "rx"]
    assert sizes == [64] * 8 + [2]  # 514 packets on one ring, taken 64 at a time


def test_pick_is_round_robin_within_a_class_and_strict_across_classes() -> None:
    """Hundreds of sockets: a pick is integer operations on the pending mask, fair inside a class."""
    from types import SimpleNamespace

    from prism_xdp.dataplane.sched import BatchScheduler

    sources = [SimpleNamespace(cls=i % 2) for i in range(600)]  # LOW and HIGH socket per device
    sched = BatchScheduler(SimpleNamespace(sources=lambda: sources), batch=64)  # type: ignore[arg-type]
    low = (1 << 2) | (1 << 10) | (1 << 598)
    assert [sched._pick(low) for _ in range(5)] == [2, 10, 598, 2, 10]
    high = 1 << 501
    assert sched._pick(low | high) == 501  # a more urgent class first
    assert sched._pick(low | high, only_low=True) == 598  # LOW's turn goes on where it stopped
