"""config.py - the daemon's TOML configuration: parsed into dataclasses and checked completely before anything is attached; every error names its key."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prism_xdp.dataplane import native
from prism_xdp.dataplane.classes import class_name, parse_class
from prism_xdp.dataplane.errors import ConfigError
from prism_xdp.dataplane.gsoencap import check_uplink_delivery
from prism_xdp.dataplane.kernelpath import check_high_path
from prism_xdp.dataplane.overlay import ContainerSpec, VtepSpec, check_vni, parse_ipv4, parse_mac
from prism_xdp.dataplane.pktsock import Delivery
from prism_xdp.dataplane.sched import BATCH_MAX, BATCH_MIN, Mode
from prism_xdp.dataplane.snooping import SnoopingParams
from prism_xdp.dataplane.xdp import AttachMode
from prism_xdp.dataplane.xsk import BindMode

LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class Rules:
    """Priority rules: value -> class (1 = HIGH)."""

    ports: dict[int, int] = field(default_factory=dict)
    dscp: dict[int, int] = field(default_factory=dict)
    vnis: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Config:
    path: str
    uplink: str
    queues: tuple[int, ...] = (0,)
    bind: BindMode = BindMode.AUTO
    xdp_mode: AttachMode = AttachMode.NATIVE
    vxlan_port: int = native.PRISM_VXLAN_PORT_DEFAULT
    local_ip: str | None = None
    mtu: int | None = None
    ttl: int = 64
    mode: str = "batch"
    poll: str = "busy"
    batch: int = 64
    low_batch_with_high: int = 4
    low_gro_hold: int = 0
    classes: int = 2  # priority classes with sockets of their own: LOW, HIGH (, class2, class3)
    cpus: tuple[int, ...] = ()
    busy_poll_usecs: int = 0
    busy_poll_budget: int = 64
    timestamps: bool = True
    fdb_ageing_s: int = 300  # forwarding.ageing_s
    fdb_max_per_vtep: int = 4096  # forwarding.max_per_vtep
    checksum: str = "auto"  # checksum.method
    partial_checksums: str = "auto"  # checksum.partial_from_uplink
    frame_size: int = 2048
    ring_size: int = 2048
    uplink_fill: int = 2048
    container_fill: int = 256
    control_socket: str = "/run/prism-xdp/ctl.sock"
    pid_file: str = "/run/prism-xdp/prism-xdp.pid"
    prometheus: str = ""
    log_level: str = "info"
    vteps: tuple[VtepSpec, ...] = ()
    containers: tuple[ContainerSpec, ...] = ()
    rules: Rules = field(default_factory=Rules)
    snooping: SnoopingParams | None = field(default_factory=SnoopingParams)  # [snooping]; None: off
    delivery: Delivery = field(default_factory=Delivery)  # forwarding.delivery, forwarding.gro_segments
    high_path: str = "daemon"  # forwarding.high_path: "kernel" finishes HIGH in TC programs (kernelpath.py)
    # forwarding.uplink_delivery: "packet" merges containers' TCP segments into GSO packets
    # for the uplink (gsoencap.py), "xsk" sends frame by frame; "auto": "packet" with tcx.
    uplink_delivery: str = "auto"


class _Table:
    """One TOML table; reading a key checks its type, and unknown keys are refused."""

    def __init__(self, data: Any, name: str) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"{name}: must be a table")
        self.data = dict(data)
        self.name = name
        self.seen: set[str] = set()

    def key(self, k: str) -> str:
        return f"{self.name}.{k}" if self.name else k

    def get(self, k: str, kind: type | tuple[type, ...], default: Any = None, required: bool = False) -> Any:
        self.seen.add(k)
        if k not in self.data:
            if required:
                raise ConfigError(f"{self.key(k)}: missing (required)")
            return default
        value = self.data[k]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            names = " or ".join(t.__name__ for t in kinds)
            raise ConfigError(f"{self.key(k)}: must be {names}, not {type(value).__name__} {value!r}")
        return value

    def int_in(self, k: str, lo: int, hi: int, default: int | None = None, required: bool = False) -> Any:
        value = self.get(k, int, default, required)
        if value is not None and not lo <= value <= hi:
            raise ConfigError(f"{self.key(k)}: must be in {lo}..{hi}, not {value}")
        return value

    def choice(self, k: str, options: tuple[str, ...], default: str) -> str:
        value = self.get(k, str, default)
        if value not in options:
            raise ConfigError(f"{self.key(k)}: must be one of {', '.join(options)}, not {value!r}")
        return str(value)

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            raise ConfigError(f"{self.key(unknown[0])}: unknown key")


def _power_of_two(t: _Table, k: str, default: int, lo: int, hi: int) -> int:
    value = t.int_in(k, lo, hi, default)
    if value & (value - 1):
        raise ConfigError(f"{t.key(k)}: must be a power of two, not {value}")
    return int(value)


def _class(value: Any, where: str) -> int:
    try:
        return parse_class(value)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _rule_map(t: _Table, k: str, lo: int, hi: int) -> dict[int, int]:
    """A list of values (all HIGH), or a table value -> class."""
    raw = t.get(k, (list, dict), [])
    out: dict[int, int] = {}
    items = raw.items() if isinstance(raw, dict) else ((v, native.PRISM_CLASS_HIGH) for v in raw)
    for value, cls in items:
        where = f"{t.key(k)}[{value!r}]"
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: must be an integer") from None
        if isinstance(value, bool) or not lo <= number <= hi:
            raise ConfigError(f"{where}: must be in {lo}..{hi}")
        out[number] = _class(cls, where)
    return out


def parse_rules(data: Any, name: str = "rules") -> Rules:
    t = _Table(data, name)
    rules = Rules(ports=_rule_map(t, "ports", 1, 65535), dscp=_rule_map(t, "dscp", 0, 63),
                  vnis=_rule_map(t, "vnis", 0, (1 << 24) - 1))
    t.done()
    return rules


def check_class(cls: int, classes: int, what: str) -> None:
    """A rule's class must have sockets: classes 0..classes-1 (scheduler.classes)."""
    if cls >= classes:
        raise ConfigError(f"{what}: {class_name(cls)} needs scheduler.classes = {cls + 1}; this config has {classes} "
                          f"({', '.join(class_name(c) for c in range(classes))})")


def check_rule_classes(rules: Rules, classes: int) -> None:
    for key, table in (("ports", rules.ports), ("dscp", rules.dscp), ("vnis", rules.vnis)):
        for value, cls in table.items():
            check_class(cls, classes, f"rules.{key}.{value}")


def parse(data: dict[str, Any], path: str = "<config>") -> Config:
    """A Config from TOML data; ConfigError naming the first wrong key."""
    top = _Table(data, "")
    up = _Table(top.get("uplink", dict, required=True), "uplink")
    interface = up.get("interface", str, required=True)
    if not interface or len(interface) > 15:
        raise ConfigError(f"uplink.interface: {interface!r} is not an interface name (1-15 characters)")
    queues_raw = up.get("queues", (int, list), 1)
    if isinstance(queues_raw, int):
        if not 1 <= queues_raw <= native.PRISM_MAX_QUEUES:
            raise ConfigError(f"uplink.queues: must be in 1..{native.PRISM_MAX_QUEUES}, not {queues_raw}")
        queues = tuple(range(queues_raw))
    else:
        if not queues_raw or any(isinstance(q, bool) or not isinstance(q, int) or not 0 <= q < native.PRISM_MAX_QUEUES
                                 for q in queues_raw) or len(set(queues_raw)) != len(queues_raw):
            raise ConfigError(f"uplink.queues: must be a count or a list of distinct queue numbers "
                              f"0..{native.PRISM_MAX_QUEUES - 1}, not {queues_raw!r}")
        queues = tuple(queues_raw)
    bind = BindMode(up.choice("bind", tuple(m.value for m in BindMode), "auto"))
    xdp_mode = {"native": AttachMode.NATIVE, "skb": AttachMode.SKB}[up.choice("xdp_mode", ("native", "skb"), "native")]
    vxlan_port = up.int_in("vxlan_port", 1, 65535, native.PRISM_VXLAN_PORT_DEFAULT)
    local_ip = up.get("local_ip", str)
    if local_ip is not None:
        parse_ipv4(local_ip, "uplink.local_ip")
    mtu = up.int_in("mtu", 68, 65535)
    ttl = up.int_in("ttl", 1, 255, 64)
    up.done()

    sc = _Table(top.get("scheduler", dict, {}), "scheduler")
    mode = sc.choice("mode", tuple(m.value for m in Mode), "batch")
    poll = sc.choice("poll", ("busy", "blocking"), "busy")
    batch = sc.int_in("batch", BATCH_MIN, BATCH_MAX, 64)
    low_batch_with_high = sc.int_in("low_batch_with_high", 0, BATCH_MAX, 4)
    low_gro_hold = sc.int_in("low_gro_hold", 0, native.PRISM_GRO_MAX_SEGS, 0)
    classes = sc.int_in("classes", 2, native.PRISM_NCLASS, 2)
    cpus = sc.get("cpus", list, [])
    if any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in cpus):
        raise ConfigError(f"scheduler.cpus: must be a list of CPU numbers, not {cpus!r}")
    if cpus and len(cpus) != len(queues):
        raise ConfigError(f"scheduler.cpus: one CPU per queue ({len(queues)}), not {len(cpus)}")
    busy_poll_usecs = sc.int_in("busy_poll_usecs", 0, 1_000_000, 0)
    busy_poll_budget = sc.int_in("busy_poll_budget", 1, 1024, 64)
    timestamps = sc.get("timestamps", bool, True)
    sc.done()

    fw = _Table(top.get("forwarding", dict, {}), "forwarding")
    fdb_ageing_s = fw.int_in("ageing_s", 1, 1_000_000, 300)
    fdb_max_per_vtep = fw.int_in("max_per_vtep", 1, 8192, 4096)
    delivery = Delivery(fw.get("delivery", str, "packet"),
                        fw.int_in("gro_segments", 1, native.PRISM_GRO_MAX_SEGS, 64))
    delivery.check()
    delivery.check_with_uplink(xdp_mode is AttachMode.SKB)
    high_path = check_high_path(fw.get("high_path", str, "daemon"), xdp_mode is AttachMode.SKB)
    uplink_delivery = check_uplink_delivery(fw.get("uplink_delivery", str, "auto"))
    fw.done()

    sn = _Table(top.get("snooping", dict, {}), "snooping")
    snooping: SnoopingParams | None = SnoopingParams(
        query_interval_s=sn.int_in("query_interval_s", 2, 31744, 125),
        max_response_ms=sn.int_in("max_response_ms", 100, 10_000, 1000),
        max_per_port=sn.int_in("max_per_port", 1, 8192, 64))
    if not sn.get("enabled", bool, True):
        snooping = None
    sn.done()
    if snooping is not None and snooping.max_response_ms >= snooping.query_interval_s * 1000:
        raise ConfigError("snooping.max_response_ms: must be below snooping.query_interval_s "
                          f"({snooping.max_response_ms} ms >= {snooping.query_interval_s} s)")

    cs = _Table(top.get("checksum", dict, {}), "checksum")
    checksum = cs.choice("method", ("auto", "offload", "software"), "auto")
    partial_checksums = cs.choice("partial_from_uplink", ("auto", "accept", "verify"), "auto")
    cs.done()

    um = _Table(top.get("umem", dict, {}), "umem")
    # A generic-mode uplink brings 64 KB packets in frame-sized parts: 4 KB frames halve them.
    # The kernel refuses a UMEM chunk above a page (EINVAL at the first socket, even with
    # hugepages: docs/benchmarks.md), so the config says so first.
    frame_size = _power_of_two(um, "frame_size", 4096 if xdp_mode is AttachMode.SKB else 2048, 2048,
                               os.sysconf("SC_PAGE_SIZE"))
    ring_size = _power_of_two(um, "ring_size", 2048, 64, 1 << 16)
    uplink_fill = um.int_in("uplink_fill", 1, 1 << 16, 2048)
    container_fill = um.int_in("container_fill", 1, 1 << 16, 256)
    um.done()

    ct = _Table(top.get("control", dict, {}), "control")
    control_socket = ct.get("socket", str, "/run/prism-xdp/ctl.sock")
    pid_file = ct.get("pid_file", str, "/run/prism-xdp/prism-xdp.pid")
    prometheus = ct.get("prometheus", str, "")
    if prometheus:
        host, _, port = prometheus.rpartition(":")
        if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ConfigError(f"control.prometheus: must be HOST:PORT (e.g. 127.0.0.1:9417) or empty, not {prometheus!r}")
    for k, v in (("socket", control_socket), ("pid_file", pid_file)):
        if not v.startswith("/"):
            raise ConfigError(f"control.{k}: must be an absolute path, not {v!r}")
    ct.done()

    lg = _Table(top.get("log", dict, {}), "log")
    log_level = lg.choice("level", LOG_LEVELS, "info")
    lg.done()

    vteps = []
    for i, raw in enumerate(top.get("vtep", list, [])):
        t = _Table(raw, f"vtep[{i}]")
        vtep = VtepSpec(t.get("ip", str, required=True), t.get("vni", int, required=True), t.get("mac", str))
        t.done()
        vtep.check(f"vtep[{i}]")
        vteps.append(vtep)
    containers = []
    seen: dict[tuple[int, bytes], str] = {}
    for i, raw in enumerate(top.get("container", list, [])):
        t = _Table(raw, f"container[{i}]")
        spec = ContainerSpec(t.get("name", str, required=True), t.get("host_if", str, required=True),
                             t.get("mac", str, required=True), t.get("vni", int, required=True), t.get("ip", str))
        t.done()
        spec.check(f"container[{i}]")
        key = (spec.vni, parse_mac(spec.mac, f"container[{i}].mac"))
        if key in seen:
            raise ConfigError(f"container[{i}].mac: {spec.mac} is already {seen[key]}'s in VNI {spec.vni}")
        seen[key] = spec.name
        if spec.host_if == interface:
            raise ConfigError(f"container[{i}].host_if: {spec.host_if} is the uplink")
        containers.append(spec)
    if len(containers) > native.MAX_PORTS - 1:
        raise ConfigError(f"container: at most {native.MAX_PORTS - 1} containers per host, not {len(containers)}")
    names = [c.name for c in containers]
    if len(set(names)) != len(names):
        raise ConfigError(f"container: names must be distinct, {names!r}")
    for i, v in enumerate(vteps):
        check_vni(v.vni, f"vtep[{i}].vni")
        if not any(c.vni == v.vni for c in containers):
            raise ConfigError(f"vtep[{i}].vni: no container is in VNI {v.vni}")
    rules = parse_rules(top.get("rules", dict, {}))
    check_rule_classes(rules, classes)
    top.done()
    return Config(path, interface, queues, bind, xdp_mode, vxlan_port, local_ip, mtu, ttl, mode, poll, batch,
                  low_batch_with_high, low_gro_hold, classes, tuple(cpus), busy_poll_usecs, busy_poll_budget, timestamps, fdb_ageing_s, fdb_max_per_vtep, checksum, partial_checksums, frame_size, ring_size, uplink_fill, container_fill, control_socket, pid_file,
                  prometheus, log_level, tuple(vteps), tuple(containers), rules, snooping, delivery, high_path,
                  uplink_delivery)


def load(path: str | Path) -> Config:
    """Read and check a config file."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse(data, str(p))
