"""test_bench_perf.py - the performance benchmark's summary: medians per configuration and ratios paired run by run."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))

from bench_perf import Sample, render, summarize  # noqa: E402


def sample(mpps: float, idle0: float = 0.0) -> Sample:
    return Sample(mpps, 2.0, {0: {"user": 0.0, "kernel": 0.0, "softirq": 1 - idle0, "idle": idle0, "steal": 0.0},
                              1: {"user": 1.0, "kernel": 0.0, "softirq": 0.0, "idle": 0.0, "steal": 0.0}})


def test_ratios_are_paired_run_by_run() -> None:
    # The machine is twice as fast in the second round: both paths move with it.
    results = {"kernel/64/1/0": [sample(0.5), sample(1.0), sample(0.6)],
               "prism-batch/64/1/0": [sample(0.8), sample(1.4), sample(0.6)],
               "c-reference/64/1/0": [sample(0.4), sample(0.7), sample(0.6)]}
    rows = {r["config"]: r for r in summarize(results)}
    batch = rows["prism-batch"]
    assert batch["mpps"] == 0.8  # median of the runs
    # Per round 1.6, 1.4 and 1.0: the median is 1.4 (medians alone would say 0.8/0.6 = 1.33).
    assert batch["vs_kernel"] == 1.4 and batch["vs_kernel_range"] == [1.0, 1.6]
    assert batch["vs_c_reference"] == 2.0 and batch["vs_c_reference_range"] == [1.0, 2.0]
    assert rows["kernel"]["vs_kernel"] == 1.0
    assert batch["cpu_busy"] == {0: 1.0, 1: 1.0}
    assert "key" not in batch


def test_a_row_without_its_baseline_has_no_ratio() -> None:
    rows = summarize({"prism-sync/1400/2/2": [sample(0.4, idle0=0.25)]})
    assert rows[0]["vs_kernel"] is None and rows[0]["vs_c_reference"] is None
    assert rows[0]["cpu_busy"][0] == 0.75
    table = render(rows)
    assert "| prism-sync | 1400 | 2 | 2 | 1/1 | 0.400 |" in table and "75% 100%" in table


def test_runs_the_hypervisor_took_are_left_out() -> None:
    def stolen_sample(mpps: float) -> Sample:
        s = sample(mpps)
        s.cpu_shares[1] = {"user": 0.3, "kernel": 0.0, "softirq": 0.0, "idle": 0.0, "steal": 0.7}
        return s

    results = {"kernel/64/1/0": [sample(0.5), stolen_sample(0.1), sample(0.6)],
               "prism-batch/64/1/0": [sample(0.8), sample(0.2), sample(0.9)]}
    rows = {r["config"]: r for r in summarize(results)}
    assert rows["kernel"]["mpps"] == 0.55 and rows["kernel"]["runs_clean"] == 2
    assert rows["prism-batch"]["mpps"] == 0.8  # its own runs were all clean
    # The second round's pair is out: 0.8/0.5 and 0.9/0.6.
    assert rows["prism-batch"]["vs_kernel"] == 1.55 and rows["prism-batch"]["vs_kernel_range"] == [1.5, 1.6]
    assert rows["kernel"]["steal_max"] == 0.7
    assert "| 2/3 |" in render(list(rows.values()))
