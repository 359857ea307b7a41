"""test_control.py - the control protocol against a stand-in daemon: every command, every malformed request refused with a message and no change; Prometheus and table rendering."""

from __future__ import annotations

import json
import os
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from prism_xdp.daemon import metrics, report, rundir
from prism_xdp.daemon.control import COMMANDS, ControlServer, dispatch
from prism_xdp.dataplane.hist import Histogram, bucket_high, bucket_of


class FakeDaemon:
    def __init__(self) -> None:
        self._rules: dict[str, dict[int, int]] = {"port": {}, "dscp": {}, "vni": {}}
        self._mode = "batch"
        self.calls: list[str] = []

    def status(self) -> dict[str, Any]:
        return {"mode": self._mode}

    def rules(self) -> dict[str, dict[int, int]]:
        return {k: dict(v) for k, v in self._rules.items()}

    def set_rule(self, kind: str, value: int, cls: int) -> None:
        self.calls.append(f"set {kind} {value} {cls}")
        if cls:
            self._rules[kind][value] = cls
        else:
            self._rules[kind].pop(value, None)

    def clear_rules(self, kind: str | None) -> int:
        n = 0
        for k in [kind] if kind else list(self._rules):
            n += len(self._rules[k])
            self._rules[k].clear()
        return n

    def mode(self) -> str:
        return self._mode

    def set_mode(self, mode: str) -> None:
        self._mode = mode

    def stats(self) -> dict[str, Any]:
        return SAMPLE_STATS

    def reset_stats(self) -> None:
        self.calls.append("reset")

    def reload(self) -> dict[str, Any]:
        raise RuntimeError("disk on fire")


def call(api: FakeDaemon, **req: Any) -> dict[str, Any]:
    return dispatch(api, json.dumps(req))


def test_rules_and_mode_round_trip() -> None:
    d = FakeDaemon()
    assert call(d, cmd="rule-add", kind="port", value=11211)["result"] == {"kind": "port", "value": 11211, "class": 1}
    assert call(d, cmd="rule-add", kind="dscp", value=46, **{"class": "class2"})["ok"]
    assert call(d, cmd="rules")["result"] == {"port": {"11211": 1}, "dscp": {"46": 2}, "vni": {}}
    assert call(d, cmd="rule-del", kind="port", value=11211)["ok"]
    assert call(d, cmd="rules-clear")["result"] == {"removed": 1}
    assert call(d, cmd="mode-set", mode="sync")["result"] == {"mode": "sync"}
    assert call(d, cmd="mode")["result"] == {"mode": "sync"}
    assert call(d, cmd="stats-reset")["ok"] and "reset" in d.calls
    assert set(call(d, cmd="help")["result"]) == set(COMMANDS)


@pytest.mark.parametrize("line,error", [
    (b"garbage", "not a JSON object"),
    (b"\xff\xfe", "not a JSON object"),
    (b"[1, 2]", "a request is a JSON object"),
    (b'{"cmd": "format-disk"}', "unknown cmd 'format-disk'"),
    (b'{"nocmd": 1}', "unknown cmd None"),
    (b'{"cmd": ["status"]}', "cmd must be a string naming a command, not list"),
    (b'{"cmd": {"status": 1}}', "cmd must be a string naming a command, not dict"),
    (b"[" * 100000 + b"]" * 100000, "nested too deeply"),
    (b'{"cmd": "rule-add", "kind": ["port"], "value": 80}', "kind must be a string"),
    (b'{"cmd": "rule-add", "kind": "port", "value": 80, "class": ["high"]}', "class must be one of"),
    (b'{"cmd": "rule-add", "value": 80}', "missing field 'kind'"),
    (b'{"cmd": "rule-add", "kind": "mac", "value": 80}', "kind must be one of port, dscp, vni"),
    (b'{"cmd": "rule-add", "kind": "port", "value": "80"}', "value must be an integer"),
    (b'{"cmd": "rule-add", "kind": "port", "value": 70000}', "a port must be in 1..65535"),
    (b'{"cmd": "rule-add", "kind": "dscp", "value": 64}', "a dscp must be in 0..63"),
    (b'{"cmd": "rule-add", "kind": "port", "value": 80, "class": "urgent"}', "class must be one of"),
    (b'{"cmd": "rule-del", "kind": "port", "value": 81}', "no port rule for 81"),
    (b'{"cmd": "mode-set", "mode": "turbo"}', "mode must be vanilla, batch or sync"),
    (b'{"cmd": "mode-set"}', "missing field 'mode'"),
    (b'{"cmd": "reload"}', "internal error: disk on fire"),
])
def test_bad_requests_get_an_error_and_change_nothing(line: bytes, error: str) -> None:
    d = FakeDaemon()
    d.set_rule("port", 80, 1)
    d.calls.clear()
    before = (d.rules(), d.mode())
    reply = dispatch(d, line)
    assert reply["ok"] is False and error in reply["error"]
    assert (d.rules(), d.mode()) == before and d.calls == []


SAMPLE_STATS: dict[str, Any] = {
    "mode": "sync", "uptime_s": 12.5, "queues": {"0": {}},
    "totals": {
        "stages": {"decap_in": 10, "decap_out": 9, "drop_unknown_vni": 1},
        "ports": {"eth1": {"tx_packets": 5, "tx_bytes": 500, "tx_full": 0}},
        "steer": {"steered": {"low": 8, "high": 2, "class2": 0, "class3": 0}, "passed": 3,
                  "malformed": {"vxlan_truncated": 1}},
        "xsk": {"q0:eth1/low": {"rx_dropped": 0, "rx_invalid_descs": 0, "tx_invalid_descs": 0, "rx_ring_full": 4,
                                "rx_fill_ring_empty_descs": 0, "tx_ring_empty_descs": 0}},
        "latency": {c: {"latency_us": {"count": 2, "p50": 10.0, "p90": 11.0, "p99": 12.0, "p99.9": 13.0, "max": 14.0},
                        "pipeline_us": {"count": 2, "p50": 5.0, "p90": 6.0, "p99": 7.0, "p99.9": 8.0, "max": 9.0}}
                    for c in ("low", "high")},
    },
}


def _known_histogram() -> Histogram:
    h = Histogram()
    for ns, n in ((800, 3), (1023, 1), (1024, 2), (5000, 4), (3_000_000, 1), (2_000_000_000, 1)):
        h.record(ns, n)
    return h


def test_prometheus_exposition_has_real_types() -> None:
    h = _known_histogram()
    stats = SAMPLE_STATS | {"queues": {"0": {"frames": {"frames": 4096, "pool": 4000}}},
                            "histograms": {"high/xdp": h, "low/poll": Histogram()}}
    text = metrics.render(stats)
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    assert all(name.startswith("prism_xdp_") for name in fams)
    for line in text.splitlines():
        assert line.startswith("#") or line.startswith("prism_xdp_"), line
    assert not any(n.startswith(("process_", "python_")) for n in fams)  # a private registry
    types = {"stage_packets": "counter", "drops": "counter", "steered_packets": "counter",
             "xsk_statistics": "counter", "port_tx_full": "counter", "fdb_entries": "gauge", "frames": "gauge",
             "uptime_seconds": "gauge", "mode_info": "gauge", "latency_seconds": "histogram"}
    assert {k: fams[f"prism_xdp_{k}"].type for k in types} == types

    def samples(fam: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {(s.name, tuple(sorted(s.labels.items()))): s.value for s in fams[f"prism_xdp_{fam}"].samples}

    assert samples("drops")[("prism_xdp_drops_total", (("reason", "unknown_vni"),))] == 1
    assert samples("steered_packets")[("prism_xdp_steered_packets_total", (("class", "high"),))] == 2
    assert samples("mode_info")[("prism_xdp_mode_info", (("mode", "sync"),))] == 1
    assert samples("frames")[("prism_xdp_frames", (("place", "pool"), ("queue", "0")))] == 4000
    assert ("prism_xdp_stage_packets_total", (("counter", "decap_in"),)) in samples("stage_packets")

    # The histogram: cumulative, in seconds, at exact bucket edges 2^k - 1 ns, +Inf last.
    lat = [s for s in fams["prism_xdp_latency_seconds"].samples if s.labels.get("class") == "high"]
    buckets = [(float(s.labels["le"]), s.value) for s in lat if s.name.endswith("_bucket")]
    assert [le for le, _ in buckets[:-1]] == [e / 1e9 for e in metrics.LATENCY_LE_NS]
    assert buckets[-1] == (float("inf"), h.count)
    for le_ns, (_, count) in zip(metrics.LATENCY_LE_NS, buckets, strict=False):
        assert count == h.count_at_or_below(le_ns)
    by_le = dict(buckets)
    assert by_le[1023e-9] == 4  # 800 x3 and 1023; 1024 is above
    assert by_le[2047e-9] == 6 and by_le[8191e-9] == 10
    assert by_le[4194303e-9] == 11 and by_le[((1 << 30) - 1) / 1e9] == 11  # 2 s: only in +Inf
    [count] = [s.value for s in lat if s.name.endswith("_count")]
    [total] = [s.value for s in lat if s.name.endswith("_sum")]
    assert count == h.count == 12 and total == pytest.approx(h.total / 1e9)
    empty = [s for s in fams["prism_xdp_latency_seconds"].samples if s.labels.get("class") == "low"]
    assert all(s.value == 0 for s in empty)


def test_latency_boundaries_are_bucket_edges() -> None:
    assert all(bucket_high(bucket_of(edge)) == edge for edge in metrics.LATENCY_LE_NS)
    assert metrics.LATENCY_LE_NS[0] < 1100 and metrics.LATENCY_LE_NS[-1] > 1e9


def test_metrics_server_serves_only_metrics() -> None:
    server = metrics.MetricsServer("127.0.0.1", 0, lambda: SAMPLE_STATS)
    server.start()
    try:
        host, port = server.address[:2]
        text = urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5).read().decode()
        assert 'prism_xdp_mode_info{mode="sync"} 1.0' in text
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://{host}:{port}/", timeout=5)
        assert err.value.code == 404
    finally:
        server.close()


def test_readable_table() -> None:
    text = report.render(SAMPLE_STATS, SAMPLE_STATS, 1.0)
    assert "mode sync" in text and "unknown_vni" in text and "malformed vxlan_truncated" in text
    assert "q0:eth1/low" in text and "0/s" in text


@pytest.mark.skipif(os.geteuid() != 0, reason="the control socket answers root only")
def test_a_burst_of_200_clients_is_served(tmp_path: Path) -> None:
    server = ControlServer(str(tmp_path / "ctl.sock"), FakeDaemon())
    server.start()
    clients = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(200)]
    try:
        for c in clients:  # all connect before any is served: the listen backlog holds them
            c.settimeout(10)
            c.connect(str(tmp_path / "ctl.sock"))
        for c in clients:
            c.sendall(b'{"cmd": "mode"}\n')
        replies = [json.loads(c.makefile("rb").readline()) for c in clients]
        assert all(r == {"ok": True, "result": {"mode": "batch"}} for r in replies)
    finally:
        for c in clients:
            c.close()
        server.close()


def test_runtime_directories_go_when_found_empty_at_stop(tmp_path: Path) -> None:
    left = tmp_path / "prism-xdp"  # made by a daemon that was killed, found by the next one
    left.mkdir()
    assert rundir.ensure(left) is False
    rundir.remove_if_empty(left, made=False)
    assert not left.exists()
    users = tmp_path / "mine"  # a directory the user chose, not ours
    users.mkdir()
    rundir.remove_if_empty(users, made=rundir.ensure(users))
    assert users.exists()
    made = tmp_path / "new" / "run"
    assert rundir.ensure(made) is True
    (made / "f").write_text("x")
    rundir.remove_if_empty(made, made=True)  # not empty: stays
    assert made.exists()


def test_every_command_has_its_ctl_words() -> None:
    """`prism-xdp ctl` is built from control.COMMANDS: each command is reached by its words and
    arguments, and the arguments become the request's fields."""
    from prism_xdp.daemon.cli import _chosen, build_parser

    samples = {"kind": "port", "value": "11211", "class": "class2", "mode": "sync"}
    parser = build_parser()
    for name, cmd in COMMANDS.items():
        argv = ["ctl", *cmd.words, *(samples[a.field] for a in cmd.args if a.required)]
        chosen = _chosen(parser.parse_args(argv))
        assert chosen is not None and chosen[0] == name, (argv, chosen)
    args = parser.parse_args(["ctl", "rule", "add", "dscp", "46"])
    assert (args.kind, args.value, getattr(args, "class")) == ("dscp", 46, "high")
    with pytest.raises(SystemExit):
        parser.parse_args(["ctl", "rule", "add", "mac", "1"])


def test_ctl_shows_replies_readably() -> None:
    d = FakeDaemon()
    added = call(d, cmd="rule-add", kind="port", value=6379)["result"]
    assert COMMANDS["rule-add"].show is not None and COMMANDS["rule-add"].show(added) == "port 6379: high"
    assert report.rule(call(d, cmd="rule-del", kind="port", value=6379)["result"]) == "port 6379: rule removed"
    assert report.rule(call(d, cmd="rules-clear")["result"]) == "removed 0 rule(s)"
    assert report.rules(call(d, cmd="rules")["result"]) == "no rules: every packet is LOW"
    call(d, cmd="rule-add", kind="vni", value=42)
    assert "vni      42   high" in report.rules(call(d, cmd="rules")["result"])
    status = report.fields({"mode": "sync", "reloads": {"ok": 1, "refused": 0}, "vteps": [{"ip": "10.0.0.2", "vni": 42}]})
    assert status.splitlines() == ["mode         sync", "reloads      ok=1  refused=0", "vteps        ip=10.0.0.2  vni=42"]
    assert "p99 ≤ µs" in report.render(SAMPLE_STATS)


def test_lab_commands_without_the_lab_say_what_is_missing(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from prism_xdp.lab.cli import needs_lab

    def handler(args: argparse.Namespace) -> int:
        raise ModuleNotFoundError("No module named 'scapy.all'", name="scapy.all")

    assert needs_lab(handler)(argparse.Namespace(command="inject")) == 2
    assert capsys.readouterr().err == "prism-xdp inject: needs the lab extra: pip install prism_xdp[lab] (missing: scapy)\n"

    def other(args: argparse.Namespace) -> int:
        raise ModuleNotFoundError("No module named 'nope'", name="nope")

    with pytest.raises(ModuleNotFoundError):  # not the lab's: a real defect
        needs_lab(other)(argparse.Namespace(command="inject"))


def test_prometheus_exposition_has_mld_snooping() -> None:
    mld = {"enabled": True, "groups": 7, "joins": 9, "leaves": 1, "expired": 1, "refused": 0, "reports": 20,
           "malformed": 2, "queries": 3}
    stats = SAMPLE_STATS | {"totals": SAMPLE_STATS["totals"] | {"mld": mld}}
    fams = {f.name: f for f in text_string_to_metric_families(metrics.render(stats))}
    assert fams["prism_xdp_mld_memberships"].type == "gauge"
    assert fams["prism_xdp_mld_memberships"].samples[0].value == 7
    events = {s.labels["event"]: s.value for s in fams["prism_xdp_mld_events"].samples}
    assert events == {k: mld[k] for k in ("reports", "joins", "leaves", "expired", "refused", "malformed", "queries")}
    off = SAMPLE_STATS | {"totals": SAMPLE_STATS["totals"] | {"mld": {"enabled": False}}}
    assert "prism_xdp_mld_memberships" not in {f.name for f in text_string_to_metric_families(metrics.render(off))}


def test_multi_buffer_counters_are_on_metrics_and_in_stats_only_with_a_generic_mode_uplink() -> None:
    mb = {"rx_multibuf": 900, "rx_multibuf_parts": 15300}
    stats = SAMPLE_STATS | {"totals": SAMPLE_STATS["totals"] | {"multi_buffer": mb}}
    fams = {f.name: f for f in text_string_to_metric_families(metrics.render(stats))}
    events = {s.labels["event"]: s.value for s in fams["prism_xdp_multibuf_events"].samples}
    assert events == {"multibuf": 900, "multibuf_parts": 15300}
    assert "multi-buffer packets from the uplink (xdp_mode skb): 900 in 15300 parts" in report.render(stats)
    native = SAMPLE_STATS | {"totals": SAMPLE_STATS["totals"] | {"multi_buffer": None}}
    assert "prism_xdp_multibuf_events" not in metrics.render(native) and "multi-buffer" not in report.render(native)


def test_the_uplinks_gso_path_is_on_metrics_and_in_stats_only_when_on() -> None:
    up = {"method": "packet", "how": "...", "why": "...", "encap": 30, "encap_bytes": 1_900_000, "no_vtep": 0,
          "failed": 1}
    stages = SAMPLE_STATS["totals"]["stages"] | {"gso_out_packets": 30, "gso_out_segments": 1200}
    stats = SAMPLE_STATS | {"totals": SAMPLE_STATS["totals"] | {"uplink_delivery": up, "stages": stages}}
    fams = {f.name: f for f in text_string_to_metric_families(metrics.render(stats))}
    events = {s.labels["event"]: s.value for s in fams["prism_xdp_uplink_gso_events"].samples}
    assert events == {"encap": 30, "encap_bytes": 1_900_000, "no_vtep": 0, "failed": 1}
    assert ("to the uplink in GSO packets: 1200 segments merged into 30; prism_gso_encap encapsulated 30 "
            "(1900000 bytes), dropped: no VTEP 0, failed 1") in report.render(stats)
    xsk = SAMPLE_STATS | {"totals": SAMPLE_STATS["totals"] | {"uplink_delivery": {"method": "xsk"}}}
    assert "prism_xdp_uplink_gso_events" not in metrics.render(xsk) and "GSO packets" not in report.render(xsk)


def test_the_hold_is_a_stats_line_only_once_it_held_something() -> None:
    hold = {"hold_frames": 900, "hold_flush_full": 3, "hold_flush_psh": 20, "hold_flush_idle": 4,
            "hold_flush_age": 1, "hold_flush_other": 2}
    stats = SAMPLE_STATS | {"totals": SAMPLE_STATS["totals"] | {"stages": SAMPLE_STATS["totals"]["stages"] | hold}}
    assert ("LOW segments held for the next batches (scheduler.low_gro_hold): 900; sent for: a packet's worth 3, "
            "PSH 20, idle 4, age 1, a frame that could not wait 2") in report.render(stats)
    fams = {f.name: f for f in text_string_to_metric_families(metrics.render(stats))}
    stage = {s.labels["counter"]: s.value for s in fams["prism_xdp_stage_packets"].samples}
    assert stage["hold_frames"] == 900 and stage["hold_flush_psh"] == 20
    none = SAMPLE_STATS["totals"]["stages"] | {k: 0 for k in hold}
    assert "held" not in report.render(SAMPLE_STATS | {"totals": SAMPLE_STATS["totals"] | {"stages": none}})


def test_the_kernel_high_path_is_on_metrics_and_in_top_only_when_on() -> None:
    kernel = {"high_path": "kernel", "tunnels": 2, "decap": 40, "decap_bytes": 4000, "encap": 39,
              "encap_bytes": 5000, "no_port": 1, "no_tunnel": 0, "failed": 0, "aggregate": 3,
              "too_big": 0}
    stats = SAMPLE_STATS | {"totals": SAMPLE_STATS["totals"] | {"high_path": kernel}}
    fams = {f.name: f for f in text_string_to_metric_families(metrics.render(stats))}
    packets = {s.labels["direction"]: s.value for s in fams["prism_xdp_kernel_high_packets"].samples}
    events = {s.labels["event"]: s.value for s in fams["prism_xdp_kernel_high_events"].samples}
    assert packets == {"decap": 40, "encap": 39} and events["aggregate"] == 3 and events["no_port"] == 1
    assert "kernel HIGH path: decap 40, encap 39, tunnels 2" in report.render(stats)
    daemon_path = SAMPLE_STATS | {"totals": SAMPLE_STATS["totals"] | {"high_path": {"high_path": "daemon"}}}
    assert "prism_xdp_kernel_high_packets" not in {f.name for f in
                                                    text_string_to_metric_families(metrics.render(daemon_path))}
    assert "kernel HIGH path" not in report.render(daemon_path)
