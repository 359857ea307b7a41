"""test_fdb.py - the forwarding table: learned remote MACs age out, a flood of invented source MACs uses up only its VTEP's share, known entries stay and move with one frame, and nothing known is flooded."""

from __future__ import annotations

import random

import pytest
from test_overlay_stages import (
    C1_MAC,
    C2_MAC,
    HEADROOM,
    LOCAL_IP,
    LOCAL_MAC,
    OUTER,
    REMOTE_MAC,
    VTEP_IP,
    VTEP_MAC,
)

from prism_xdp.dataplane.batch import Batch
from prism_xdp.dataplane.overlay import Overlay
from prism_xdp.dataplane.umem import Umem, UmemParams
from prism_xdp.lab.packets import Inner, Outer, encapsulate, inner_packet

SECOND_VTEP_IP, SECOND_VTEP_MAC = "10.1.0.9", "02:00:00:00:00:09"
S = 1_000_000_000  # ns


class Table:
    """An overlay without sockets: c1 and c2 in VNI 42 behind two VTEPs; frames carry the time given."""

    def __init__(self, umem: Umem, max_per_vtep: int = 4096, ageing_s: int = 300) -> None:
        self.umem = umem
        self.ov = Overlay(umem, 4789, LOCAL_MAC, LOCAL_IP, 1500, fdb_ageing_s=ageing_s, fdb_max_per_vtep=max_per_vtep)
        self.ov.set_uplink([])
        self.c1 = self.ov.add_container([], 42, C1_MAC, "c1")
        self.c2 = self.ov.add_container([], 42, C2_MAC, "c2")
        self.ov.add_vtep(42, VTEP_IP, VTEP_MAC)
        self.ov.add_vtep(42, SECOND_VTEP_IP, SECOND_VTEP_MAC)
        self.batch, self.out = Batch(64), Batch(256)

    def run(self, stage: str, frames: list[bytes], now: int, src: int = 0) -> list[int]:
        """The ports the stage sent each frame to (frames go back to the pool)."""
        b = self.batch
        for f in frames:
            start = b.n
            assert b.alloc(self.umem, 1, len(f)) == 1
            b.ptr.addr[start] += HEADROOM
            b.ptr.poll_ts[start] = now
            b.fill_with(self.umem, f, start, 1)
        if stage == "decap":
            self.ov.decap(b, self.out)
        else:
            self.ov.encap(src, b, self.out)
        ports = [self.out.ptr.port[i] for i in range(self.out.n)]
        self.out.drop_all(self.umem)
        return ports

    def from_remote(self, src_mac: str, now: int, outer: Outer = OUTER, dst: str = C1_MAC) -> list[int]:
        inner = bytes(inner_packet(Inner(src_mac=src_mac, dst_mac=dst), 1, 2, "udp", b"x"))
        return self.run("decap", [encapsulate(outer, inner, 42)], now)

    def to(self, dst_mac: str, now: int) -> list[int]:
        """Where c1's unicast frame to dst_mac goes: 0 is the uplink (a VTEP)."""
        inner = bytes(inner_packet(Inner(src_mac=C1_MAC, dst_mac=dst_mac), 1, 2, "udp", b"y"))
        return self.run("encap", [inner], now, src=self.c1)

    def counters(self) -> dict[str, int]:
        return self.ov.counters()


@pytest.fixture
def table():
    with Umem(UmemParams(frame_count=1024, frame_size=2048), register=False) as umem:
        t = Table(umem)
        yield t
        t.ov.close()
        assert umem.account().pool == umem.account().frames


def flood(table: Table, macs: list[str], now: int, outer: Outer = OUTER) -> None:
    """One frame from each MAC, built from one template (scapy per frame would take minutes)."""
    template = encapsulate(outer, bytes(inner_packet(Inner(src_mac=REMOTE_MAC, dst_mac=C1_MAC), 1, 2, "udp")), 42)
    at = 50 + 6  # the inner source MAC
    frames = [template[:at] + bytes.fromhex(m.replace(":", "")) + template[at + 6:] for m in macs]
    for i in range(0, len(frames), 64):
        table.run("decap", frames[i:i + 64], now)


def random_macs(n: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    return [":".join(f"{b:02x}" for b in [rng.randrange(256) & 0xFE | 0x02] + [rng.randrange(256) for _ in range(5)])
            for _ in range(n)]


def test_a_learned_mac_ages_out_and_its_traffic_floods_again(table: Table) -> None:
    table.from_remote(REMOTE_MAC, 10 * S)
    assert table.to(REMOTE_MAC, 200 * S) == [0]  # known: one VTEP, nothing to c2
    assert table.to(REMOTE_MAC, 309 * S) == [0]  # still within 300 s of its last frame
    assert sorted(table.to(REMOTE_MAC, 311 * S)) == [0, 0, table.c2]  # aged out: flooded, like a bridge
    table.from_remote(REMOTE_MAC, 312 * S)  # it speaks again: learned again
    assert table.to(REMOTE_MAC, 313 * S) == [0]
    c = table.counters()
    assert c["learned"] == 2 and c["fdb_entries"] == 1


def test_every_frame_refreshes_its_entry(table: Table) -> None:
    for t in range(0, 1000, 100):
        table.from_remote(REMOTE_MAC, t * S)
    assert table.to(REMOTE_MAC, 1100 * S) == [0]
    assert table.counters()["learned"] == 1


def test_a_flood_of_source_macs_uses_up_only_its_vteps_share(table: Table) -> None:
    table.from_remote(REMOTE_MAC, 1 * S)
    flood(table, random_macs(20000), 2 * S)
    c = table.counters()
    assert c["fdb_entries"] <= 4096 and c["fdb_refused"] >= 20000 - 4096
    # What was known stays known: c1's replies go to the VTEP only, no copy to c2.
    assert table.to(REMOTE_MAC, 3 * S) == [0]
    # Another VTEP still learns.
    second = Outer(SECOND_VTEP_MAC, LOCAL_MAC, SECOND_VTEP_IP, LOCAL_IP)
    table.from_remote("02:00:00:00:77:77", 3 * S, outer=second)
    assert table.ov.lookup(42, "02:00:00:00:77:77") == ("remote", 1)


def test_a_moved_mac_is_learned_with_its_first_frame_even_when_full(table: Table) -> None:
    table.from_remote(REMOTE_MAC, 1 * S)
    flood(table, random_macs(6000, seed=2), 2 * S)
    assert table.counters()["fdb_refused"] > 0
    second = Outer(SECOND_VTEP_MAC, LOCAL_MAC, SECOND_VTEP_IP, LOCAL_IP)
    table.from_remote(REMOTE_MAC, 3 * S, outer=second)  # it moved behind the other VTEP
    assert table.ov.lookup(42, REMOTE_MAC) == ("remote", 1)


def test_a_small_share_refuses_the_rest_and_frees_it_when_entries_age_out() -> None:
    with Umem(UmemParams(frame_count=256, frame_size=2048), register=False) as umem:
        t = Table(umem, max_per_vtep=10, ageing_s=60)
        for m in random_macs(15, seed=3):
            t.from_remote(m, 1 * S)
        c = t.counters()
        assert (c["fdb_entries"], c["fdb_refused"]) == (10, 5)
        t.from_remote("02:00:00:00:55:55", 100 * S)  # the others aged out: room again
        c = t.counters()
        assert c["fdb_entries"] == 1 and c["fdb_expired"] == 10
        assert t.ov.lookup(42, "02:00:00:00:55:55") == ("remote", 0)
        t.ov.close()
