"""steer.py - Steering: the prism_steer XDP program with its rules (ports, DSCP, VNI), mode and counters, changed at runtime through its maps."""

from __future__ import annotations

from dataclasses import dataclass, field

from prism_xdp.dataplane import native
from prism_xdp.dataplane.classes import CLASS_NAMES
from prism_xdp.dataplane.errors import ConfigError
from prism_xdp.dataplane.native import ffi
from prism_xdp.dataplane.xdp import AttachMode, XdpProgram
from prism_xdp.dataplane.xsk import XskSocket

MALFORMED_REASONS = {
    native.PRISM_MAL_VXLAN_TRUNC: "vxlan_truncated",
    native.PRISM_MAL_VXLAN_FLAGS: "vxlan_bad_flags",
    native.PRISM_MAL_INNER_ETH: "inner_eth_truncated",
    native.PRISM_MAL_INNER_IP: "inner_ipv4_bad",
    native.PRISM_MAL_INNER_L4: "inner_l4_truncated",
}

# struct prism_steer_counters, in u64 words: steered[4], steered_bytes[4],
# no_socket[4], passed, malformed[5] (a unit test checks every offset).
COUNTER_FIELDS = (
    [("steered", c) for c in range(native.PRISM_NCLASS)]
    + [("steered_bytes", c) for c in range(native.PRISM_NCLASS)]
    + [("no_socket", c) for c in range(native.PRISM_NCLASS)]
    + [("passed", None)]
    + [("malformed", r) for r in range(native.PRISM_MAL_MAX)]
)


def xsk_slot(queue: int, cls: int) -> int:
    """XSKMAP slot of (rx queue, class), as the BPF program computes it."""
    if not 0 <= queue < native.PRISM_MAX_QUEUES:
        raise ValueError(f"queue {queue} out of range 0..{native.PRISM_MAX_QUEUES - 1}")
    if not 0 <= cls < native.PRISM_NCLASS:
        raise ValueError(f"class {cls} out of range 0..{native.PRISM_NCLASS - 1}")
    return queue * native.PRISM_NCLASS + cls


@dataclass
class SteerCounters:
    """Sums over CPUs of the program's per-CPU counters."""

    steered: list[int] = field(default_factory=lambda: [0] * native.PRISM_NCLASS)
    steered_bytes: list[int] = field(default_factory=lambda: [0] * native.PRISM_NCLASS)
    no_socket: list[int] = field(default_factory=lambda: [0] * native.PRISM_NCLASS)
    passed: int = 0
    malformed: dict[str, int] = field(default_factory=dict)

    @property
    def malformed_total(self) -> int:
        return sum(self.malformed.values())

    def as_dict(self) -> dict[str, object]:
        return {
            "steered": {CLASS_NAMES[c]: v for c, v in enumerate(self.steered)},
            "steered_bytes": {CLASS_NAMES[c]: v for c, v in enumerate(self.steered_bytes)},
            "no_socket": {CLASS_NAMES[c]: v for c, v in enumerate(self.no_socket)},
            "passed": self.passed,
            "malformed": dict(self.malformed),
        }


def _check_class(cls: int, nclass: int) -> int:
    if not isinstance(cls, int) or not 0 <= cls < nclass:
        raise ConfigError(f"class must be an integer in 0..{nclass - 1} (0 = low), not {cls!r}")
    return cls


class Steering:
    """The classifier on one device: rules, mode and sockets, all changeable at runtime.

    A rule gives a class to an inner port, an inner DSCP value or a VNI; a
    packet gets the highest class any of its rules gives (0 = LOW when none).
    """

    def __init__(
        self,
        vxlan_port: int = native.PRISM_VXLAN_PORT_DEFAULT,
        nclass: int = 2,
        vanilla: bool = False,
        program: str = "prism_steer",
        rules_from: Steering | None = None,
        vni: int = 0,
        timestamps: bool = False,
        metadata: bool = False,
        kernel_high: bool = False,
        ttl: int = 64,
        frags: bool = False,
    ) -> None:
        """rules_from: share that Steering's rule maps (a container side program
        classifies with the uplink's rules); vni: the container's VNI there;
        metadata: put 8 bytes in front of every packet sent to a socket, with
        the class the rules gave it (the sockets must then strip them:
        XskSocket.set_rx_stamped); timestamps: also the time XDP saw it;
        kernel_high: HIGH frames the kernel HIGH path can finish go to the kernel
        (kernelpath.KernelHighPath), not to a socket; ttl: the outer TTL that path writes;
        frags: the program takes multi-buffer packets (generic-mode XDP keeps a
        sender's GSO packet whole: the sockets must be multi-buffer too)."""
        if not 1 <= nclass <= native.PRISM_NCLASS:
            raise ConfigError(f"nclass must be in 1..{native.PRISM_NCLASS}, not {nclass}")
        reuse = rules_from.shared_map_fds() if rules_from is not None else None
        self.prog = XdpProgram(program, reuse=reuse, frags=frags)
        self._vni = vni
        self._flags = ((native.PRISM_STEER_F_TIMESTAMP if timestamps else 0)
                       | (native.PRISM_STEER_F_META if metadata else 0)
                       | (native.PRISM_STEER_F_KERNEL_HIGH if kernel_high else 0))
        self.nclass = nclass
        self._ttl = ttl
        self._config_fd = self.prog.map_fd("steer_config")
        self._ports_fd = self.prog.map_fd("port_rules")
        self._dscp_fd = self.prog.map_fd("dscp_rules")
        self._vni_fd = self.prog.map_fd("vni_rules")
        self._counters_fd = self.prog.map_fd("steer_counters")  # per CPU
        self.xsks_fd = self.prog.map_fd("xsks")
        self._vxlan_port = vxlan_port
        self._vanilla = vanilla
        self._write_config()

    def shared_map_fds(self) -> dict[str, int]:
        """The maps another program of ours shares: the rules (it classifies with the
        same ones) and the kernel HIGH path's tables and counters."""
        fds = {"port_rules": self._ports_fd, "dscp_rules": self._dscp_fd, "vni_rules": self._vni_fd}
        for name in ("kernel_ports", "kernel_tunnels", "kernel_counters"):
            fds[name] = self.prog.map_fd(name)
        return fds

    @property
    def config_fd(self) -> int:
        """The steer_config map, which the kernel HIGH path's TC programs read too."""
        return self._config_fd

    # configuration -------------------------------------------------------
    def _write_config(self) -> None:
        conf = ffi.new("struct prism_steer_config *")
        conf.vxlan_port = self._vxlan_port
        conf.mode = native.PRISM_STEER_VANILLA if self._vanilla else native.PRISM_STEER_CLASSIFY
        conf.nclass = self.nclass
        conf.vni = self._vni
        conf.flags = self._flags
        conf.ttl = self._ttl
        native.map_update(self._config_fd, ffi.new("uint32_t *", 0), conf, "steer_config")

    @property
    def vxlan_port(self) -> int:
        return self._vxlan_port

    @vxlan_port.setter
    def vxlan_port(self, port: int) -> None:
        if not isinstance(port, int) or not 1 <= port <= 65535:
            raise ConfigError(f"vxlan_port must be in 1..65535, not {port!r}")
        self._vxlan_port = port
        self._write_config()

    @property
    def vanilla(self) -> bool:
        return self._vanilla

    @vanilla.setter
    def vanilla(self, on: bool) -> None:
        """Vanilla: every VXLAN packet to the queue's class-0 socket (stock order)."""
        self._vanilla = bool(on)
        self._write_config()

    # rules -----------------------------------------------------------------
    def set_port(self, port: int, cls: int = native.PRISM_CLASS_HIGH) -> None:
        """Give a class to an inner TCP/UDP port (source or destination); 0 clears."""
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise ConfigError(f"port must be in 0..65535, not {port!r}")
        _check_class(cls, self.nclass)
        native.map_update(self._ports_fd, ffi.new("uint32_t *", port), ffi.new("uint8_t *", cls),
                          f"port_rules[{port}]")

    def clear_port(self, port: int) -> None:
        self.set_port(port, native.PRISM_CLASS_LOW)

    def ports(self) -> dict[int, int]:
        """Every port that has a rule, with its class."""
        raw = native.array_u8_dump(self._ports_fd, native.PRISM_NPORTS, "port_rules")
        return {p: c for p, c in enumerate(raw) if c}

    def clear_ports(self) -> None:
        """The equivalent of writing 0 to the kernel patch's /proc/port."""
        for port in self.ports():
            self.clear_port(port)

    def set_dscp(self, dscp: int, cls: int = native.PRISM_CLASS_HIGH) -> None:
        if not isinstance(dscp, int) or not 0 <= dscp < native.PRISM_NDSCP:
            raise ConfigError(f"dscp must be in 0..{native.PRISM_NDSCP - 1}, not {dscp!r}")
        _check_class(cls, self.nclass)
        native.map_update(self._dscp_fd, ffi.new("uint32_t *", dscp), ffi.new("uint8_t *", cls),
                          f"dscp_rules[{dscp}]")

    def dscp_rules(self) -> dict[int, int]:
        raw = native.array_u8_dump(self._dscp_fd, native.PRISM_NDSCP, "dscp_rules")
        return {d: c for d, c in enumerate(raw) if c}

    def set_vni(self, vni: int, cls: int = native.PRISM_CLASS_HIGH) -> None:
        if not isinstance(vni, int) or not 0 <= vni < (1 << 24):
            raise ConfigError(f"vni must be in 0..{(1 << 24) - 1}, not {vni!r}")
        _check_class(cls, self.nclass)
        key = ffi.new("uint32_t *", vni)
        if cls == native.PRISM_CLASS_LOW:
            # No rule: nothing to clear.
            native.map_delete(self._vni_fd, key, f"vni_rules[{vni}]", missing_ok=True)
            return
        native.map_update(self._vni_fd, key, ffi.new("uint8_t *", cls), f"vni_rules[{vni}]",
                          f"at most {native.PRISM_MAX_VNI_RULES} VNI rules")

    def vni_rules(self) -> dict[int, int]:
        out: dict[int, int] = {}
        prev, key = ffi.NULL, ffi.new("uint32_t *")
        value = ffi.new("uint8_t *")
        while native.map_next_key(self._vni_fd, prev, key, "vni_rules"):
            if native.map_lookup(self._vni_fd, key, value, "vni_rules"):
                out[int(key[0])] = int(value[0])
            prev = ffi.new("uint32_t *", key[0])
        return out

    # sockets and counters ----------------------------------------------------
    def add_socket(self, xsk: XskSocket, cls: int) -> None:
        """Steer class cls of the socket's queue to it."""
        _check_class(cls, native.PRISM_NCLASS)
        xsk.insert_into(self.xsks_fd, xsk_slot(xsk.queue, cls))

    def remove_socket(self, queue: int, cls: int) -> None:
        slot = xsk_slot(queue, cls)
        native.map_delete(self.xsks_fd, ffi.new("uint32_t *", slot), f"xsks[{slot}]", missing_ok=True)

    def counters(self) -> SteerCounters:
        words = native.percpu_sum(self._counters_fd, 0, native.PRISM_COUNTER_WORDS, "steer_counters")
        out = SteerCounters()
        for i, (name, idx) in enumerate(COUNTER_FIELDS):
            if idx is None:  # the one scalar: passed
                out.passed = int(words[i])
            elif name == "malformed":
                out.malformed[MALFORMED_REASONS[idx]] = int(words[i])
            else:
                getattr(out, name)[idx] = int(words[i])
        return out

    # lifecycle ---------------------------------------------------------------
    def attach(self, ifname: str, mode: AttachMode = AttachMode.NATIVE) -> None:
        self.prog.attach(ifname, mode)

    def close(self) -> None:
        self.prog.close()

    def __enter__(self) -> Steering:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
