"""topo.py - the saved topology of `prism-xdp topo up|down|show|config`: a named test host in namespaces that outlives the command, recorded in a state file so that `down` removes exactly what `up` made."""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from prism_xdp.dataplane.errors import ConfigError
from prism_xdp.lab.testhost.links import check_rps_mask, link_exists
from prism_xdp.lab.testhost.netns import netns_exists
from prism_xdp.lab.testhost.overlay import (
    Container,
    OverlayHost,
    add_kernel_overlay,
    create_overlay_host,
)
from prism_xdp.lab.testhost.testbed import Testbed
from prism_xdp.lab.testhost.uplink import Uplink

STATE_DIR = Path(os.environ.get("PRISM_XDP_STATE", "/run/prism-xdp/topo"))
DEFAULT_NAME = "pxd"
_NAME = re.compile(r"^[a-z][a-z0-9]{0,7}$")


@dataclass(frozen=True)
class TopoSpec:
    name: str = DEFAULT_NAME  # also the prefix of every namespace and link
    containers: int = 2
    queues: int = 1
    vni: int = 42
    vxlan_port: int = 4789
    kernel_path: bool = True  # the stock VXLAN device + bridge on the host, for A/B runs
    container_rps: str = "0"  # hex CPU mask for the containers' receive processing; 0 = off (stock)

    def check(self) -> None:
        if not _NAME.match(self.name):
            raise ConfigError(f"topo name: {self.name!r} must be 1-8 lowercase letters/digits, starting with a letter")
        if not 1 <= self.containers <= 99:
            raise ConfigError(f"containers: must be in 1..99, not {self.containers}")
        if not 1 <= self.queues <= 16:
            raise ConfigError(f"queues: must be in 1..16, not {self.queues}")
        if not 0 <= self.vni < 1 << 24:
            raise ConfigError(f"vni: must be in 0..16777215, not {self.vni}")
        check_rps_mask(self.container_rps)


def _state_path(name: str) -> Path:
    return STATE_DIR / f"{name}.json"


def load_state(name: str) -> dict[str, Any] | None:
    try:
        return dict(json.loads(_state_path(name).read_text()))
    except FileNotFoundError:
        return None


def _complete(state: dict[str, Any]) -> bool:
    made = state["made"]
    return all(netns_exists(ns) for ns in made["namespaces"]) and all(
        link_exists(name, ns) for name, ns in made["links"])


def up(spec: TopoSpec) -> tuple[dict[str, Any], bool]:
    """(state, created): an existing complete topology of that name is left as it is."""
    spec.check()
    state = load_state(spec.name)
    if state is not None:
        if state["spec"] == asdict(spec) and _complete(state):
            return state, False
        down(spec.name)  # partial, or asked for another shape: rebuild
    tb = Testbed(fixed_names=True)  # `down` and another command find them by name
    try:
        host = create_overlay_host(tb, spec.name, spec.containers, spec.vni, spec.queues, spec.vxlan_port)
        kernel = add_kernel_overlay(tb, host, spec.name) if spec.kernel_path else None
        for c in host.containers:
            c.set_rps(spec.container_rps)
    except BaseException:
        tb.close()
        raise
    state = {"spec": asdict(spec), "made": tb.keep(), "host": describe(host),
             "kernel_path": {"vxlan": kernel[0], "bridge": kernel[1]} if kernel else None}
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    _state_path(spec.name).write_text(json.dumps(state, indent=2))
    return state, True


def down(name: str) -> dict[str, Any] | None:
    """Remove what up() recorded for name (and only that); None if there was nothing."""
    state = load_state(name)
    if state is None:
        return None
    Testbed.remove(state["made"])
    _state_path(name).unlink(missing_ok=True)
    for d in (STATE_DIR, STATE_DIR.parent):  # ours, when nothing else is left in them
        try:
            d.rmdir()
        except OSError:
            break
    return state


def describe(host: OverlayHost) -> dict[str, Any]:
    up_ = host.uplink
    return {"uplink": {"host_if": up_.host_if, "remote_if": up_.remote_if, "remote_ns": up_.remote_ns,
                       "host_ip": up_.host_ip, "remote_ip": up_.remote_ip, "host_mac": up_.host_mac,
                       "remote_mac": up_.remote_mac},
            "vni": host.vni, "vxlan_if": host.vxlan_if, "remote_overlay_ip": host.remote_overlay_ip,
            "vxlan_port": host.vxlan_port, "containers": [asdict(c) for c in host.containers]}


def host_of(state: dict[str, Any]) -> OverlayHost:
    """The OverlayHost a state file describes (for inject and bench)."""
    h = state["host"]
    u = h["uplink"]
    uplink = Uplink(Testbed(), u["host_if"], u["remote_if"], u["remote_ns"], u["host_ip"], u["remote_ip"],
                    u["host_mac"], u["remote_mac"])
    return OverlayHost(uplink, h["vni"], h["vxlan_if"], h["remote_overlay_ip"],
                       [Container(**c) for c in h["containers"]], h["vxlan_port"])


def daemon_config(state: dict[str, Any], control_dir: str = "/run/prism-xdp") -> str:
    """A prism-xdp run config for this topology."""
    h = state["host"]
    spec = state["spec"]
    lines = [f"# prism-xdp run config for topology {spec['name']} (prism-xdp topo config {spec['name']})",
             "[uplink]", f'interface = "{h["uplink"]["host_if"]}"', f"queues = {spec['queues']}",
             f"vxlan_port = {h['vxlan_port']}", "", "[control]", f'socket = "{control_dir}/{spec["name"]}.sock"',
             f'pid_file = "{control_dir}/{spec["name"]}.pid"', "", "[[vtep]]", f'ip = "{h["uplink"]["remote_ip"]}"',
             f"vni = {h['vni']}"]
    for c in h["containers"]:
        lines += ["", "[[container]]", f'name = "{c["name"]}"', f'host_if = "{c["host_if"]}"', f'mac = "{c["mac"]}"',
                  f"vni = {c['vni']}", f'ip = "{c["ip"]}"']
    lines += ["", "[rules]", "ports = [7000]"]
    return "\n".join(lines) + "\n"


def show(name: str) -> str:
    state = load_state(name)
    if state is None:
        return f"topology {name}: not up (prism-xdp topo up --name {name})"
    h = state["host"]
    u = h["uplink"]
    out = [f"topology {name}: {'complete' if _complete(state) else 'INCOMPLETE (run topo up again)'}",
           f"  remote host   netns {u['remote_ns']}  {u['remote_if']} {u['remote_ip']}  "
           f"VXLAN {h['vxlan_if']} VNI {h['vni']} port {h['vxlan_port']}  overlay {h['remote_overlay_ip']}",
           f"  uplink (NIC)  {u['host_if']} {u['host_ip']}  queues {state['spec']['queues']}"]
    if state.get("kernel_path"):
        out.append(f"  kernel path   {state['kernel_path']['vxlan']} + bridge {state['kernel_path']['bridge']}")
    for c in h["containers"]:
        out.append(f"  container {c['name']:3} netns {c['ns']}  {c['host_if']} <-> {c['cont_if']}  {c['ip']}  {c['mac']}")
    out.append(f"  made: {len(state['made']['namespaces'])} namespaces, {len(state['made']['links'])} links "
               f"(state {_state_path(name)})")
    return "\n".join(out)
