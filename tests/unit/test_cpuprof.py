"""test_cpuprof.py - the benchmark's CPU accounting: /proc/stat per-CPU shares (steal apart from busy) and the perf report parser."""

from __future__ import annotations

import os

import pytest

from prism_xdp.lab import cpuprof

STAT_BEFORE = """cpu  300 0 60 900 10 0 100 20 0 0
cpu0 100 0 20 400 5 0 80 10 0 0
cpu1 200 0 40 500 5 0 20 10 0 0
intr 12345 0 0
ctxt 999
"""
# 100 jiffies later on each CPU: cpu0 softirq-bound, cpu1 half user and 10 stolen.
STAT_AFTER = """cpu  400 0 80 990 10 0 190 30 0 0
cpu0 100 0 30 400 5 0 170 10 0 0
cpu1 250 0 50 530 5 0 20 20 0 0
"""


def test_proc_stat_per_cpu_lines_only() -> None:
    times = cpuprof.parse_proc_stat(STAT_BEFORE)
    assert sorted(times) == [0, 1]
    assert times[0] == cpuprof.CpuTimes(user=100, system=20, softirq=80, idle=405, steal=10, total=615)


def test_shares_per_cpu_over_an_interval() -> None:
    shares = cpuprof.shares(cpuprof.parse_proc_stat(STAT_BEFORE), cpuprof.parse_proc_stat(STAT_AFTER))
    assert shares[0] == {"user": 0.0, "kernel": 0.1, "softirq": 0.9, "idle": 0.0, "steal": 0.0}
    assert shares[1] == {"user": 0.5, "kernel": 0.1, "softirq": 0.0, "idle": 0.3, "steal": 0.1}
    for s in shares.values():
        assert sum(s.values()) == pytest.approx(1.0)


def test_busy_seconds_leaves_out_idle_and_steal() -> None:
    before, after = cpuprof.parse_proc_stat(STAT_BEFORE), cpuprof.parse_proc_stat(STAT_AFTER)
    hz = os.sysconf("SC_CLK_TCK")
    # cpu0: 10 system + 90 softirq; cpu1: 50 user + 10 system.
    assert cpuprof.busy_seconds(after) - cpuprof.busy_seconds(before) == pytest.approx(160 / hz)


def test_a_cpu_that_appears_later_is_skipped() -> None:
    before = cpuprof.parse_proc_stat("cpu0 1 0 1 1 0 0 0 0\n")
    after = cpuprof.parse_proc_stat("cpu0 2 0 1 2 0 0 0 0\ncpu1 5 0 0 5 0 0 0 0\n")
    assert list(cpuprof.shares(before, after)) == [0]


PERF_REPORT = """# To display the perf.data header info, please use --header/--header-only options.
#
# Samples: 8K of event 'cpu-clock:pppH'
#
# Overhead  CPU  Shared Object                 Symbol
# ........  ...  ............................  ..................................
#
    16.14%  001  libpython3.11.so.1.0          [.] _PyEval_EvalFrameDefault
     8.13%  000  [kernel.kallsyms]             [k] pv_native_safe_halt
     3.70%  000  [kernel.kallsyms]             [k] fib_table_lookup
     2.31%  001  _prism_ffi.abi3.so            [.] prism_complete_batch
     0.92%  000  [kernel.kallsyms]             [k] bpf_prog_e3de0878c5ba9038_xdp_prism_steer
     0.80%  000  [kernel.kallsyms]             [k] finish_task_switch.isra.0
"""


def test_perf_report_top_symbols_per_cpu() -> None:
    rows = cpuprof.parse_perf_report(PERF_REPORT, top=3)
    assert [r["symbol"] for r in rows[0]] == ["pv_native_safe_halt", "fib_table_lookup",
                                              "bpf_prog_e3de0878c5ba9038_xdp_prism_steer"]
    assert rows[1][0] == {"percent": 16.14, "dso": "libpython3.11.so.1.0", "space": "user",
                          "symbol": "_PyEval_EvalFrameDefault"}
    assert rows[0][1]["space"] == "kernel"
    assert len(rows[1]) == 2
    lines = cpuprof.format_profile(rows, top=1)
    assert lines == ["CPU 0: pv_native_safe_halt 8.1%", "CPU 1: _PyEval_EvalFrameDefault 16.1%"]


def test_perf_report_without_rows() -> None:
    assert cpuprof.parse_perf_report("# only comments\n\n") == {}


def test_busy_fraction_over_all_cpus() -> None:
    before, after = cpuprof.parse_proc_stat(STAT_BEFORE), cpuprof.parse_proc_stat(STAT_AFTER)
    # 160 busy jiffies of 200; the 10 stolen count neither as busy nor as ours.
    assert cpuprof.busy_fraction(before, after) == pytest.approx(160 / 200)

