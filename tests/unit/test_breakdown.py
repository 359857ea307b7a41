"""test_breakdown.py - `bench --breakdown`'s pure half on real `perf script` captures: parsing, the chain per configuration, pairing events into round trips, stages that add up, the in-kernel filters, the table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prism_xdp.dataplane.errors import ConfigError
from prism_xdp.lab.bench import breakdown as bd
from prism_xdp.lab.bench import stages, tracing

DATA = Path(__file__).parent / "data" / "breakdown"
NAMES = {k: stages.Names(**v) for k, v in json.loads((DATA / "names.json").read_text()).items()}


def capture(config: str) -> str:
    return (DATA / f"perf-{config}-idle.txt").read_text()


def points(config: str) -> list[stages.Point]:
    path = "kernel" if config == "kernel" else "kernel-high" if config.endswith("+kernel-high") else "prism"
    return stages.chain(path, NAMES[config], bd.slot_of(config))


def test_perf_script_lines_become_events_in_time_order() -> None:
    text = capture("prism-sync")
    events = stages.parse_script(text)
    assert len(events) == len(text.splitlines()) == 250
    assert [e.t_ns for e in events] == sorted(e.t_ns for e in events)
    redirect = next(e for e in events if e.event == "xdp:xdp_redirect")
    assert redirect.fields["ifindex"] in ("600", "601") and redirect.fields["map_index"] == "1"
    xmit = next(e for e in events if e.event == "net:net_dev_start_xmit")
    assert xmit.fields["dev"] == "pxtkv" and xmit.fields["len"] == "106" and xmit.fields["skbaddr"].startswith("0x")
    assert stages.parse_script("not perf output\n") == []


def test_each_configuration_has_its_chain() -> None:
    kernel = [p.name for p in points("kernel")]
    assert kernel == list(stages.ALL_POINTS)
    sync = points("prism-sync")
    assert [p.name for p in sync] == list(stages.ALL_POINTS)
    host_rx = next(p for p in sync if p.name == "host_rx")
    assert host_rx.event == "xdp:xdp_redirect" and ("map_index", "1") in host_rx.match
    # vanilla: one socket per queue takes LOW too, so the uplink's redirect is no HIGH point
    vanilla = stages.chain("prism", NAMES["prism-sync"], bd.slot_of("prism-vanilla"))
    assert "host_rx" not in [p.name for p in vanilla]
    assert ("map_index", "0") in next(p for p in vanilla if p.name == "host_back").match


@pytest.mark.parametrize("config", ["kernel", "prism-sync", "prism-sync+kernel-high"])
def test_round_trips_pair_in_order_and_their_stages_add_up(config: str) -> None:
    chain, names = points(config), NAMES[config]
    res = stages.pair(stages.parse_script(capture(config)), chain, names)
    assert len(res.trips) >= 15
    assert res.started - len(res.trips) == res.incomplete <= 1  # the capture is cut at its end
    for trip in res.trips:
        times = [trip[p.name] for p in chain]
        assert times == sorted(times)
    segs = stages.segments(res.trips, chain)
    for i, span in enumerate(segs["span"]):
        assert sum(segs[p.name][i] for p in chain[1:]) == pytest.approx(span, abs=1e-6)
    assert 10 < sorted(segs["span"])[len(segs["span"]) // 2] < 1000  # µs: a real round trip


def test_wakeups_are_kept_beside_the_chain() -> None:
    res = stages.pair(stages.parse_script(capture("kernel")), points("kernel"), NAMES["kernel"])
    woken = [t for t in res.trips if "server_wakeup" in t]
    assert woken and all(t["cont_rx"] <= t["server_wakeup"] <= t["server_recv"] for t in woken)
    segs = stages.segments(res.trips, points("kernel"))
    assert len(segs["server_wakeup_to_run"]) == len(woken) and min(segs["server_wakeup_to_run"]) >= 0


def test_a_missed_event_makes_its_round_trip_incomplete_not_wrong() -> None:
    lines = capture("kernel").splitlines()
    first_cont_rx = next(i for i, line in enumerate(lines) if "netif_receive_skb: dev=pxtkk0" in line)
    text = "\n".join(lines[:first_cont_rx] + lines[first_cont_rx + 1:])
    full = stages.pair(stages.parse_script(capture("kernel")), points("kernel"), NAMES["kernel"])
    cut = stages.pair(stages.parse_script(text), points("kernel"), NAMES["kernel"])
    assert cut.started == full.started and len(cut.trips) == len(full.trips) - 1
    assert cut.incomplete == full.incomplete + 1
    assert cut.trips == full.trips[1:]  # the first round trip lost its point; no other changed


def test_a_frame_of_the_same_size_on_another_skb_is_not_taken() -> None:
    """A LOW 64 B UDP frame on the remote's uplink has the HIGH request's length: the uplink
    point must be the skb the remote's VXLAN device sent."""
    lines = capture("kernel").splitlines()
    i = next(i for i, line in enumerate(lines) if "dev=pxtkv " in line and "len=106" in line)
    t = lines[i].split()[2].rstrip(":")
    s, ns = t.split(".")
    fake = (f"25000 [000]  {s}.{int(ns) + 1:09d}:     net:net_dev_start_xmit: dev=pxtkp queue_mapping=0 "
            "skbaddr=0xffff000000000001 len=156")
    text = "\n".join(lines[:i + 1] + [fake] + lines[i + 1:])
    full = stages.pair(stages.parse_script(capture("kernel")), points("kernel"), NAMES["kernel"])
    got = stages.pair(stages.parse_script(text), points("kernel"), NAMES["kernel"])
    assert got.trips == full.trips


def test_analyse_summarises_every_stage() -> None:
    out = stages.analyse(capture("prism-sync"), points("prism-sync"), NAMES["prism-sync"])
    assert out["round_trips"] >= 15 and out["events"] == 250
    segs = out["segments_us"]
    assert all(segs[p]["count"] == out["round_trips"] for p in stages.ALL_POINTS[1:])
    assert out["sum_of_means_us"] == pytest.approx(segs["span"]["mean"], abs=0.05)
    assert abs(out["sum_of_medians_us"] - segs["span"]["p50"]) < 0.3 * segs["span"]["p50"]


def test_perf_records_only_what_the_chain_names() -> None:
    n = NAMES["prism-sync"]
    args = tracing.perf_events(points("prism-sync"), n)
    events = args[1::4]
    assert args[0::4] == ["-e"] * len(events) and args[2::4] == ["--filter"] * len(events)
    assert len(set(events)) == len(events)  # one filter per tracepoint: perf takes the last one given
    filters = dict(zip(events, args[3::4], strict=True))
    assert set(filters) == {p.event for p in points("prism-sync")} | {"sched:sched_wakeup"}
    def clauses(event: str) -> set[str]:
        return set(filters[event].split(" || "))

    assert clauses("syscalls:sys_enter_sendto") == {f"common_pid == {n.client_pid}", f"common_pid == {n.server_pid}"}
    assert clauses("sched:sched_wakeup") == {f"pid == {n.client_pid}", f"pid == {n.server_pid}"}
    assert '(name == "pxtkk0" && len == 92)' in filters["net:netif_rx"]
    assert "(ifindex == 600 && map_index == 1)" in filters["xdp:xdp_redirect"]
    assert all(f for f in filters.values())


def test_the_table_shows_each_configuration_and_what_it_lacks() -> None:
    rows = []
    for config in ("kernel", "prism-sync"):
        trace = stages.analyse(capture(config), points(config), NAMES[config])
        rows.append({"config": config, "low": "idle", "trace": trace, "ok": True, "perf_cpu_s": 0.5, "lost": 0,
                     "sockperf_traced_us": {"count": 10, "p50": 50.0, "p99": 90.0}, "sockperf_sent": 30})
    rows[1]["daemon"] = {"latency_us": {"count": 5, "p50": 12.0, "p99": 40.0},
                         "pipeline_us": {"count": 5, "p50": 8.0, "p99": 30.0}}
    rows.append({"config": "prism-vanilla", "low": "idle", "ok": False, "error": "ToolError: x"})
    text = bd.table(rows)
    assert "| from the previous point to | kernel | prism-sync | prism-vanilla |" in text
    assert "| daemon: HIGH XDP->TX kick | - | 12.0 / 40.0 | - |" in text
    assert "- prism-vanilla: ToolError: x" in text
    # How many slept, beside the share: one wakeup's "p99" is no tail.
    assert "| of which server wakeup->running (share woken) | 2.5 / 11.6 (100%: 17) | 67.4 / 67.4 (6%: 1) |" in text
    assert text.count("\n| ") == 1 + len(stages.ALL_POINTS) - 1 + 10  # header, stages, the rest


def test_breakdown_needs_sockperf_udp(tmp_path: Path) -> None:
    from prism_xdp.daemon.cli import build_parser
    from prism_xdp.lab.cli import bench_params

    with pytest.raises(ConfigError, match="--breakdown traces sockperf-udp"):
        bench_params(build_parser().parse_args(["bench", "--proc", str(tmp_path), "--breakdown", "--high",
                                                "memcached"]))
    p = bench_params(build_parser().parse_args(["bench", "--proc", str(tmp_path), "--high", "sockperf-udp"]))
    assert p.breakdown is False


def test_the_kernel_high_path_chain_skips_the_container_receive_it_never_traces() -> None:
    n = stages.Names("pxr0", "pxrv", "pxu", "pxh0", "eth0", 600, 601, client_pid=11, server_pid=22)
    chain = stages.chain("kernel-high", n, bd.slot_of("prism-sync+kernel-high"))
    assert bd.slot_of("prism-sync+kernel-high") is None
    assert bd.slot_of("prism-vanilla+skb") is None and bd.slot_of("prism-sync+skb") == bd.slot_of("prism-sync")
    names = [p.name for p in chain]
    assert names == [p for p in stages.ALL_POINTS if p not in ("cont_in", "cont_rx")]
    by = {p.name: p for p in chain}
    assert by["host_rx"].event == by["host_back"].event == "net:netif_receive_skb"
    assert dict(by["host_rx"].match)["name"] == "pxu" and dict(by["host_back"].match)["name"] == "pxh0"

    def ev(t: int, event: str, tid: int = 0, **fields: str) -> stages.Event:
        return stages.Event(t * 1000, 0, tid, event, fields)

    rx, tx = str(stages.INNER_RX), str(stages.INNER_TX)
    events = [
        ev(0, "syscalls:sys_enter_sendto", 11),
        ev(1, "net:net_dev_start_xmit", dev="pxrv", len=tx, skbaddr="a"),
        ev(2, "net:net_dev_start_xmit", dev="pxr0", len=str(stages.OUTER_TX), skbaddr="a"),
        ev(3, "net:netif_receive_skb", dev="pxu", len=str(stages.OUTER_RX), skbaddr="a"),
        ev(5, "sched:sched_wakeup", pid="22"),  # the server, woken by the redirected request
        ev(9, "syscalls:sys_exit_recvfrom", 22),
        ev(10, "syscalls:sys_enter_sendto", 22),
        ev(11, "net:net_dev_start_xmit", dev="eth0", len=tx, skbaddr="b"),
        ev(12, "net:netif_receive_skb", dev="pxh0", len=rx, skbaddr="b"),
        ev(14, "net:netif_rx", dev="pxr0", len=str(stages.OUTER_RX), skbaddr="c"),
        ev(15, "net:netif_receive_skb", dev="pxrv", len=rx, skbaddr="c"),
        ev(17, "syscalls:sys_exit_recvfrom", 11),
    ]
    pairing = stages.pair(events, chain, n)
    assert len(pairing.trips) == 1 and pairing.incomplete == 0
    segs = stages.segments(pairing.trips, chain)
    assert segs["server_recv"] == [6.0] and segs["server_wakeup_to_run"] == [4.0] and segs["span"] == [17.0]
