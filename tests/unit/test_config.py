"""test_config.py - the daemon's TOML config: the annotated example loads, and every kind of mistake is refused with a message naming its key."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from prism_xdp.daemon import config
from prism_xdp.dataplane.errors import ConfigError
from prism_xdp.dataplane.pktsock import Delivery
from prism_xdp.dataplane.snooping import SnoopingParams
from prism_xdp.dataplane.xdp import AttachMode

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "prism.example.toml"
GOOD = {
    "uplink": {"interface": "eth1"},
    "vtep": [{"ip": "192.0.2.20", "vni": 42}],
    "container": [{"name": "web", "host_if": "veth-web", "mac": "02:42:0a:2a:00:01", "vni": 42}],
}


def test_the_annotated_example_loads() -> None:
    cfg = config.load(EXAMPLE)
    assert cfg.uplink == "eth1" and cfg.queues == (0,) and cfg.mode == "batch"
    assert cfg.rules.ports == {11211: 1} and cfg.containers[0].name == "web"


def test_defaults_and_rule_tables() -> None:
    data = copy.deepcopy(GOOD)
    data["rules"] = {"ports": {"11211": "high", "8080": "low"}, "dscp": [46]}
    data["uplink"]["queues"] = 2
    cfg = config.parse(data)
    assert cfg.queues == (0, 1) and cfg.rules.ports == {11211: 1, 8080: 0} and cfg.rules.dscp == {46: 1}
    assert cfg.control_socket == "/run/prism-xdp/ctl.sock" and cfg.prometheus == ""


def with_change(path: str, value: object) -> dict:
    data = copy.deepcopy(GOOD)
    node = data
    keys = path.split(".")
    for k in keys[:-1]:
        node = node[int(k)] if isinstance(node, list) else node.setdefault(k, {})
    if value is DELETE:
        del node[keys[-1]]
    elif isinstance(node, list):
        node[int(keys[-1])] = value
    else:
        node[keys[-1]] = value
    return data


DELETE = object()


@pytest.mark.parametrize("path,value,message", [
    ("uplink.interface", DELETE, r"uplink.interface: missing"),
    ("uplink.interface", 7, r"uplink.interface: must be str"),
    ("uplink.interface", "a-much-too-long-name", r"uplink.interface: .* not an interface name"),
    ("uplink.queues", 0, r"uplink.queues: must be in 1..64"),
    ("uplink.queues", [0, 0], r"uplink.queues: must be a count or a list of distinct"),
    ("uplink.bind", "fast", r"uplink.bind: must be one of auto, copy, zerocopy"),
    ("uplink.vxlan_port", 70000, r"uplink.vxlan_port: must be in 1..65535"),
    ("uplink.local_ip", "10.0.0.999", r"uplink.local_ip: .* not an IPv4 address"),
    ("uplink.colour", "red", r"uplink.colour: unknown key"),
    ("scheduler.mode", "turbo", r"scheduler.mode: must be one of vanilla, batch, sync"),
    ("scheduler.poll", "sometimes", r"scheduler.poll: must be one of busy, blocking"),
    ("scheduler.batch", 0, r"scheduler.batch: must be in 1..4096"),
    ("scheduler.batch", True, r"scheduler.batch: must be int, not bool"),
    ("scheduler.cpus", [0, 1], r"scheduler.cpus: one CPU per queue \(1\), not 2"),
    ("scheduler.busy_poll_usecs", -1, r"scheduler.busy_poll_usecs: must be in 0..1000000"),
    ("scheduler.busy_poll_budget", 0, r"scheduler.busy_poll_budget: must be in 1..1024"),
    ("scheduler.low_gro_hold", 65, r"scheduler.low_gro_hold: must be in 0..64"),
    ("scheduler.low_gro_hold", True, r"scheduler.low_gro_hold: must be int, not bool"),
    ("scheduler.timestamps", 1, r"scheduler.timestamps: must be bool, not int 1"),
    ("scheduler.classes", 5, r"scheduler.classes: must be in 2..4"),
    ("rules.ports", {"9000": "class3"}, r"rules.ports.9000: class3 needs scheduler.classes = 4; this config has 2 \(low, high\)"),
    ("forwarding.ageing_s", 0, r"forwarding.ageing_s: must be in 1..1000000"),
    ("forwarding.max_per_vtep", 10000, r"forwarding.max_per_vtep: must be in 1..8192"),
    ("forwarding.delivery", "tap", r"forwarding.delivery: must be one of packet, xsk, not 'tap'"),
    ("forwarding.gro_segments", 65, r"forwarding.gro_segments: must be in 1..64"),
    ("forwarding.high_path", "fast", r"forwarding.high_path: must be one of daemon, kernel, not 'fast'"),
    ("forwarding.high_path", 1, r"forwarding.high_path: must be str"),
    ("forwarding.uplink_delivery", "tap", r"forwarding.uplink_delivery: must be one of auto, packet, xsk, not 'tap'"),
    ("snooping.enabled", "yes", r"snooping.enabled: must be bool"),
    ("snooping.query_interval_s", 1, r"snooping.query_interval_s: must be in 2..31744"),
    ("snooping.max_response_ms", 50, r"snooping.max_response_ms: must be in 100..10000"),
    ("snooping.max_per_port", 0, r"snooping.max_per_port: must be in 1..8192"),
    ("snooping.querier", True, r"snooping.querier: unknown key"),
    ("checksum.method", "hardware", r"checksum.method: must be one of auto, offload, software"),
    ("checksum.partial_from_uplink", True, r"checksum.partial_from_uplink: must be str"),
    ("checksum.speed", 1, r"checksum.speed: unknown key"),
    ("umem.frame_size", 3000, r"umem.frame_size: must be a power of two"),
    ("umem.frame_size", 8192, r"umem.frame_size: must be in 2048..4096, not 8192"),  # above a page
    ("umem.ring_size", 32, r"umem.ring_size: must be in 64..65536"),
    ("control.socket", "relative.sock", r"control.socket: must be an absolute path"),
    ("control.prometheus", "9417", r"control.prometheus: must be HOST:PORT"),
    ("log.level", "loud", r"log.level: must be one of debug, info, warning, error"),
    ("vtep.0.ip", "nope", r"vtep\[0\].ip: 'nope' is not an IPv4 address"),
    ("vtep.0.vni", 99, r"vtep\[0\].vni: no container is in VNI 99"),
    ("container.0.mac", "02:42:0a", r"container\[0\].mac: .* not a MAC address"),
    ("container.0.mac", "01:00:5e:00:00:01", r"container\[0\].mac: .* multicast"),
    ("container.0.vni", -1, r"container\[0\].vni: VNI must be an integer in 0..16777215"),
    ("container.0.host_if", "eth1", r"container\[0\].host_if: eth1 is the uplink"),
    ("container.0.name", DELETE, r"container\[0\].name: missing"),
    ("rules.ports", [0], r"rules.ports\[0\]: must be in 1..65535"),
    ("rules.ports", {"80": "urgent"}, r"rules.ports\['80'\]: class must be low, high"),
    ("rules.dscp", [64], r"rules.dscp\[64\]: must be in 0..63"),
    ("rules.extra", [1], r"rules.extra: unknown key"),
    ("mystery", {}, r"mystery: unknown key"),
])
def test_each_mistake_is_refused_naming_its_key(path: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config.parse(with_change(path, value))


def test_snooping_defaults_settings_and_off() -> None:
    assert config.parse(copy.deepcopy(GOOD)).snooping == SnoopingParams()
    cfg = config.parse(with_change("snooping", {"query_interval_s": 30, "max_response_ms": 500, "max_per_port": 8}))
    assert cfg.snooping == SnoopingParams(query_interval_s=30, max_response_ms=500, max_per_port=8)
    assert config.parse(with_change("snooping", {"enabled": False})).snooping is None
    with pytest.raises(ConfigError, match=r"snooping.max_response_ms: must be below snooping.query_interval_s"):
        config.parse(with_change("snooping", {"query_interval_s": 2, "max_response_ms": 5000}))


def test_delivery_defaults_to_the_packet_socket_with_gro() -> None:
    assert config.parse(copy.deepcopy(GOOD)).delivery == Delivery("packet", 64)
    cfg = config.parse(with_change("forwarding", {"delivery": "xsk", "gro_segments": 1}))
    assert cfg.delivery == Delivery("xsk", 1) and cfg.delivery.describe()["method"] == "xsk"


def test_a_generic_mode_uplink_needs_packet_delivery_and_the_daemons_high_path() -> None:
    cfg = copy.deepcopy(GOOD)
    cfg["uplink"]["xdp_mode"] = "skb"
    parsed = config.parse(copy.deepcopy(cfg))
    assert parsed.xdp_mode is AttachMode.SKB and parsed.frame_size == 4096
    assert config.parse(copy.deepcopy(GOOD)).frame_size == 2048
    cfg["forwarding"] = {"delivery": "xsk"}
    with pytest.raises(ConfigError, match=r'uplink.xdp_mode = "skb" needs forwarding.delivery = "packet"'):
        config.parse(copy.deepcopy(cfg))
    cfg["forwarding"] = {"high_path": "kernel"}
    with pytest.raises(ConfigError, match=r'forwarding.high_path = "kernel" cannot go with uplink.xdp_mode = "skb"'):
        config.parse(cfg)


def test_high_path_defaults_to_the_daemon() -> None:
    assert config.parse(copy.deepcopy(GOOD)).high_path == "daemon"
    assert config.parse(with_change("forwarding", {"high_path": "kernel"})).high_path == "kernel"


def test_duplicate_container_mac_in_a_vni() -> None:
    data = copy.deepcopy(GOOD)
    data["container"].append(dict(data["container"][0], name="web2", host_if="veth-web2"))
    with pytest.raises(ConfigError, match=r"container\[1\].mac: .* already web's in VNI 42"):
        config.parse(data)


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        config.load(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[uplink\ninterface = 'x'\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(bad)


def many_containers(n: int) -> dict:
    data = copy.deepcopy(GOOD)
    data["container"] = [{"name": f"c{i}", "host_if": f"veth{i}", "mac": f"02:42:00:00:{i >> 8:02x}:{i & 255:02x}",
                          "vni": 42} for i in range(1, n + 1)]
    return data


def test_hundreds_of_containers_up_to_the_port_limit() -> None:
    assert len(config.parse(many_containers(300)).containers) == 300
    with pytest.raises(ConfigError, match=r"container: at most 511 containers per host, not 512"):
        config.parse(many_containers(512))


def test_classes_2_and_3_with_sockets_of_their_own() -> None:
    data = copy.deepcopy(GOOD)
    data.setdefault("scheduler", {})["classes"] = 4
    data["rules"] = {"ports": {"9000": "class3", "9001": "class2"}}
    cfg = config.parse(data)
    assert cfg.classes == 4 and cfg.rules.ports == {9000: 3, 9001: 2}
