"""test_control.py - the control protocol against a stand-in daemon: every command, every malformed request refused with a message and no change; Prometheus and table rendering."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest

from prism_xdp.daemon import metrics, report, rundir
from prism_xdp.daemon.control import COMMANDS, ControlServer, dispatch


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


def test_prometheus_text() -> None:
    text = metrics.render(SAMPLE_STATS)
    assert 'prism_xdp_drops_total{reason="unknown_vni"} 1' in text
    assert 'prism_xdp_steered_packets_total{class="high"} 2' in text
    assert 'prism_xdp_latency_microseconds{class="high",from="xdp",quantile="0.99"} 12.0' in text
    assert 'prism_xdp_mode_info{mode="sync"} 1' in text
    for line in text.splitlines():
        assert line.startswith("#") or line.startswith("prism_xdp_"), line


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
