"""test_generator.py - the load generator sizes its BPF_PROG_RUN calls by time, so that the offered load has no holes."""

from __future__ import annotations

from prism_xdp.lab.generator import next_call_size


def test_generator_calls_are_sized_by_time() -> None:
    assert next_call_size(100_000, 0.028, 0.5) == 1_785_714  # 100k took 28 ms: 0.5 s is ~1.8M
    assert next_call_size(1_000_000, 2.0, 0.5) == 250_000  # a slow path: shorter calls
    assert next_call_size(100_000, 0.0, 0.5) == 50_000_000  # no time measured: capped
    assert next_call_size(5_000, 1.0, 0.01) == 1000  # near the deadline: a small last call
