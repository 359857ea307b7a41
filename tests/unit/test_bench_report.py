"""test_bench_report.py - the A/B's pure logic: nearest-rank percentiles, spreads and pooled CDFs, the placement policies, the report's summaries and table, and `bench merge` keeping both kernels' rows and refusing results that measured different things."""

from __future__ import annotations

import json
import random
import tomllib
from pathlib import Path
from typing import Any

import pytest

from prism_xdp.daemon import config as daemon_config
from prism_xdp.dataplane.errors import ConfigError
from prism_xdp.lab.bench import configs, placement, workloads
from prism_xdp.lab.bench import report as abreport
from prism_xdp.lab.bench.runner import BenchParams
from prism_xdp.lab.bench.samples import CDF_GRID, cdf, nearest_rank, pool_cdf, spread, summarize


def test_nearest_rank_is_a_sample_and_exact() -> None:
    values = [float(v) for v in range(1, 1001)]
    assert nearest_rank(values, 50) == 500 and nearest_rank(values, 99) == 990
    assert nearest_rank(values, 99.9) == 999 and nearest_rank(values, 100) == 1000 and nearest_rank(values, 0) == 1
    assert nearest_rank([7.5], 99.9) == 7.5
    assert nearest_rank([1.0, 2.0, 3.0, 4.0], 50) == 2.0 and nearest_rank([1.0, 2.0, 3.0, 4.0], 51) == 3.0
    with pytest.raises(ValueError):
        nearest_rank([], 50)
    s = summarize([3.0, 1.0, 2.0])
    assert (s["count"], s["min"], s["p50"], s["max"]) == (3, 1.0, 2.0, 3.0)
    assert summarize([]) == {"count": 0}


def test_spread_and_pooled_cdf() -> None:
    assert spread([3, None, 1, 2]) == {"min": 1, "median": 2, "max": 3, "n": 3} and spread([None]) is None
    rng = random.Random(1)
    a = sorted(rng.expovariate(1 / 50) for _ in range(20_000))
    b = sorted(rng.expovariate(1 / 500) for _ in range(20_000))
    assert len(cdf(a)) == len(CDF_GRID) and cdf(a)[-1] == a[-1] and cdf(a)[0] == a[0]
    xs, ys = pool_cdf([(cdf(a), len(a)), (cdf(b), len(b))])
    assert xs == sorted(xs) and ys[-1] == pytest.approx(1.0)
    pooled = sorted(a + b)
    for q in (0.5, 0.9, 0.99):  # the pooled points follow the pooled samples
        x = next(x for x, y in zip(xs, ys, strict=True) if y >= q)
        assert x == pytest.approx(nearest_rank(pooled, q * 100), rel=0.05)


def test_placement_policies() -> None:
    default = placement.policy("default", [0, 1])
    assert default.wrap(["iperf3", "-s"]) == ["iperf3", "-s"] and default.generator_cpu() is None
    split = placement.policy("split", [0, 1])
    assert split.wrap(["iperf3", "-s"]) == ["taskset", "-c", "0", "iperf3", "-s"] and split.worker_cpus == (1,)
    roles = split.record()["roles"]
    assert roles["daemon worker"].startswith("CPUs [1]") and roles["HIGH client"].startswith("CPUs [0]")  # type: ignore[index]
    assert "any CPU" in default.record()["roles"]["LOW clients"]  # type: ignore[index]
    with pytest.raises(ConfigError, match="needs 2 or more CPUs"):
        placement.policy("split", [0])
    with pytest.raises(ConfigError, match="--placement: 'pinned' is not a policy; choose from default, split"):
        placement.policy("pinned", [0, 1])


STATE = {"spec": {"name": "pxt", "container_rps": "0"}}


def fake_bench(high: str = "sockperf-udp,nginx", low: str = "idle,tcp1", duration: int = 2,
               scale: float = 1.0) -> tuple[list[dict[str, Any]], list[dict[str, Any]], BenchParams]:
    """Cells shaped as the bench writes them; the numbers are made up for the logic under test."""
    params = BenchParams(workloads.parse_high_list(high), workloads.parse_low_list(low), ["kernel", "prism-sync"],
                         placement.policy("default", [0, 1]), duration=duration, runs=2, command="test")
    rng = random.Random(2)
    cells, lows = [], []
    cpu = {"seconds": 2.0, "busy_cpu_s": 2.0, "busy_cpus": 1.0, "daemon_cpu_s": None, "daemon_cpus": None,
           "per_cpu": {}, "steal_max": 0.01, "steal_flagged": False}
    for run in range(2):
        for config in params.configs:
            for lo in params.low:
                lows.append({"config": config, "low": lo.name, "run": run, "ok": True,
                             **({} if lo.kind == "idle" else {"gbps": 5.0 + run, "mpps": 0.1, "loss_pct": None,
                                                              "cpu": dict(cpu, steal_flagged=run == 1)})})
                for h in params.high:
                    values = sorted(rng.expovariate(1 / (40 * scale)) for _ in range(2000))
                    cells.append({"config": config, "high": h.name, "low": lo.name, "run": run, "ok": True,
                                  "requests": 2000, "requests_per_s": 1000.0, "latency_us": summarize(values),
                                  "cdf": cdf(values), "cpu": cpu})
    cells[-1] = {**cells[-1], "ok": False, "error": "ToolError: wrk did not finish within 32 s"}
    return cells, lows, params


def test_report_summarises_over_runs_and_says_what_failed() -> None:
    cells, lows, params = fake_bench()
    rep = abreport.build(cells, lows, [], params, True, "PRISM kernel patch: absent", STATE)
    rows = {(r["config"], r["high"], r["low"]): r for r in rep["summary"]["high"]}
    assert len(rows) == 2 * 2 * 2
    row = rows[("kernel", "sockperf-udp", "idle")]
    runs = [c["latency_us"]["p99"] for c in cells if (c["config"], c["high"], c["low"]) == ("kernel", "sockperf-udp", "idle")]
    assert row["p99"] == {"min": min(runs), "median": sum(runs) / 2, "max": max(runs), "n": 2}
    failed = rows[("prism-sync", "nginx", "tcp1")]
    assert failed["runs_ok"] == 1 and failed["runs_failed"] == 1 and "wrk did not finish" in failed["failures"][0]
    low = {(r["config"], r["low"]): r for r in rep["summary"]["low"]}
    assert set(low) == {("kernel", "tcp1"), ("prism-sync", "tcp1")}  # idle has no throughput
    assert low[("kernel", "tcp1")]["gbps"]["median"] == 5.5 and low[("kernel", "tcp1")]["steal_flagged"] == 1
    md = abreport.table(rep)
    assert "## HIGH sockperf-udp" in md and "## HIGH nginx" in md and "wrk's own 1 µs latency histogram" in md
    assert "| tcp1 | " in md and "placement `default`" in md and "1 steal" in md
    assert "## Failed" in md and "wrk did not finish" in md


def write(tmp_path: Path, name: str, rep: dict[str, Any]) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(rep))
    return str(path)


def test_merge_keeps_both_kernels_and_refuses_different_workloads(tmp_path: Path) -> None:
    cells, lows, params = fake_bench()
    a = abreport.build(cells, lows, [], params, True, "PRISM kernel patch: present", STATE)
    a["kernels"] = ["5.4.0-prism"]
    for row in a["cells"] + a["low_runs"]:
        row["kernel"] = "5.4.0-prism"
    cells, lows, params = fake_bench(scale=3.0)
    b = abreport.build(cells, lows, [], params, True, "PRISM kernel patch: absent", STATE)
    merged = abreport.merge([write(tmp_path, "a.json", a), write(tmp_path, "b.json", b)])
    assert merged["kernels"] == ["5.4.0-prism", b["kernels"][0]]
    kernels = {r["kernel"] for r in merged["summary"]["high"]}
    assert kernels == set(merged["kernels"]) and len(merged["summary"]["high"]) == 2 * len(a["summary"]["high"])
    assert "| idle | 5.4.0-prism | kernel |" in abreport.table(merged)
    # Same kernel twice: the file names tell the rows apart.
    twice = abreport.merge([write(tmp_path, "x.json", b), write(tmp_path, "y.json", b)])
    assert len(set(twice["kernels"])) == 2 and twice["kernels"][0].endswith("(x)")

    cells, lows, params = fake_bench(low="idle,tcp2")
    c = abreport.build(cells, lows, [], params, True, "", STATE)
    with pytest.raises(ConfigError, match=r"did not measure the same: LOW workloads differ: \['idle', 'tcp1'\] vs \['idle', 'tcp2'\]"):
        abreport.merge([write(tmp_path, "a.json", a), write(tmp_path, "c.json", c)])
    cells, lows, params = fake_bench(duration=5)
    d = abreport.build(cells, lows, [], params, True, "", STATE)
    with pytest.raises(ConfigError, match="duration_s differs: 2 vs 5"):
        abreport.merge([write(tmp_path, "a.json", a), write(tmp_path, "d.json", d)])
    with pytest.raises(ConfigError, match="is not a result of this bench"):
        abreport.merge([write(tmp_path, "a.json", a), write(tmp_path, "e.json", {"format": "old"})])


def test_bench_options_are_checked_before_anything_is_brought_up(tmp_path: Path) -> None:
    from prism_xdp.daemon.cli import build_parser
    from prism_xdp.lab.cli import bench_params

    def params(*argv: str) -> BenchParams:
        return bench_params(build_parser().parse_args(["bench", "--proc", str(tmp_path), *argv]))

    quick = params("--quick")
    assert [h.name for h in quick.high] == ["sockperf-udp"] and [lo.name for lo in quick.low] == ["idle", "tcp1"]
    assert quick.configs == ["kernel", "prism-vanilla", "prism-batch", "prism-sync"] and quick.runs == 2
    assert quick.estimate_s() < 4 * 60  # the demo: a few minutes at most
    full = params()
    assert len(full.high) == 4 and full.configs[:2] == ["kernel", "kernel-txoff"] and full.duration == 10
    assert params("--quick", "--runs", "1").runs == 1  # an explicit option wins over --quick
    for argv, why in ((["--duration", "0"], "--duration: must be 1..3600"), (["--runs", "0"], "--runs: must be"),
                      (["--steal-max", "2"], "--steal-max"), (["--low", "tcp1,udp9000"], "UDP payload"),
                      (["--high", "ping"], "--high: 'ping'"), (["--configs", "kernel-prism-sync"], "PRISM kernel patch"),
                      (["--placement", "x"], "--placement: 'x'")):
        with pytest.raises(ConfigError, match=why):
            params(*argv)


TOPO_STATE = {"spec": {"name": "pxt", "queues": 1, "container_rps": "0"},
              "host": {"uplink": {"host_if": "pxtu", "remote_ip": "10.201.0.2"}, "vxlan_port": 4789, "vni": 42,
                       "containers": [{"name": "c0", "host_if": "pxtc0", "mac": "02:00:00:00:00:10", "vni": 42,
                                       "ip": "10.42.0.1"}]}}


def test_daemon_settings_for_the_bench_are_applied_checked_and_recorded() -> None:
    settings = configs.parse_settings(["scheduler.low_batch_with_high=16", "snooping.enabled=false",
                                       "checksum.method=software"])
    assert settings == {"scheduler": {"low_batch_with_high": "16"}, "snooping": {"enabled": "false"},
                        "checksum": {"method": '"software"'}}
    text = configs.PrismDaemon.config_text(TOPO_STATE, "/run/x", cpu=1, mode="sync", ports=[7000, 7001],
                                           settings=settings)
    cfg = daemon_config.parse(tomllib.loads(text))
    assert (cfg.low_batch_with_high, cfg.mode, cfg.cpus, cfg.snooping, cfg.checksum) == (16, "sync", (1,), None,
                                                                                         "software")
    assert sorted(cfg.rules.ports) == [7000, 7001]
    # a setting replaces the key where the text has it, never doubling it
    again = configs.with_settings(text, {"scheduler": {"low_batch_with_high": "32"}})
    assert daemon_config.parse(tomllib.loads(again)).low_batch_with_high == 32
    params = BenchParams(workloads.parse_high_list("sockperf-udp"), workloads.parse_low_list("idle"), ["prism-sync"],
                         placement.policy("default", [0, 1]), settings=settings)
    rep = abreport.build([], [], [], params, True, "no patch", STATE)
    assert rep["daemon_settings"]["scheduler.low_batch_with_high"] == "16"
    assert "`scheduler.low_batch_with_high = 16`" in abreport.table(rep)


@pytest.mark.parametrize("item,message", [
    ("scheduler.low_batch_with_high", "write SECTION.KEY=VALUE"),
    ("batch=8", "write SECTION.KEY=VALUE"),
    ("uplink.queues=2", r"the bench sets \[uplink\] itself"),
    ("scheduler.mode=sync", "chosen by the configuration"),
])
def test_bad_bench_settings_are_refused(item: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        configs.parse_settings([item])


def test_a_setting_the_daemon_refuses_is_refused_naming_the_key() -> None:
    with pytest.raises(ConfigError, match="scheduler.low_batch_with_high: must be in 0..4096"):
        configs.PrismDaemon.config_text(TOPO_STATE, "/run/x", settings=configs.parse_settings(
            ["scheduler.low_batch_with_high=99999"]))
