"""configs.py - the configurations the A/B compares, each set up and torn down: the kernel path (stock, and with prism_xdp's old TX-checksum setting), the PRISM kernel patch's modes when its knobs exist, and prism_xdp's daemon in each mode (and, on request, with its kernel HIGH path)."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prism_xdp.daemon import config as daemon_config
from prism_xdp.daemon.control import ControlClient
from prism_xdp.dataplane.errors import ConfigError, PrismError
from prism_xdp.lab.procinfo import tree_cpu_seconds
from prism_xdp.lab.testhost import OverlayHost, TxChecksumOff, topo, tx_checksum_interfaces

KNOBS = ("port", "sync", "split")
KERNEL_CONFIGS = ("kernel", "kernel-txoff")
PATCH_CONFIGS = ("kernel-prism-batch", "kernel-prism-sync")
PRISM_CONFIGS = ("prism-vanilla", "prism-batch", "prism-sync")
# Options of the daemon, each labelled as its own configuration (a mode + a suffix) so
# that one run measures it next to the defaults; only when asked for (--configs).
# Suffix -> the setting it makes: (section, key, TOML literal).
KERNEL_HIGH = "+kernel-high"
GENERIC_UPLINK = "+skb"
UPLINK_XSK = "+uplink-xsk"
NO_HOLD = "+no-hold"
HOLDS = {f"+hold{n}": n for n in (8, 16, 32, 64)}  # scheduler.low_gro_hold sizes
OPTIONS = {KERNEL_HIGH: ("forwarding", "high_path", '"kernel"'), GENERIC_UPLINK: ("uplink", "xdp_mode", '"skb"'),
           UPLINK_XSK: ("forwarding", "uplink_delivery", '"xsk"'), NO_HOLD: ("scheduler", "low_gro_hold", "0"),
           **{h: ("scheduler", "low_gro_hold", str(n)) for h, n in HOLDS.items()}}
OPTION_CONFIGS = ("prism-batch" + KERNEL_HIGH, "prism-sync" + KERNEL_HIGH,  # vanilla never uses them
                  *(mode + GENERIC_UPLINK for mode in PRISM_CONFIGS),
                  *(mode + UPLINK_XSK for mode in PRISM_CONFIGS),
                  *(mode + hold for hold in (NO_HOLD, *HOLDS) for mode in ("prism-batch", "prism-sync")))
DESCRIPTIONS = {
    "kernel": "the kernel's VXLAN device + bridge, with the topology's offloads as they are",
    "kernel-txoff": "the same, with TX checksum offload off (ethtool -K <if> tx off) on the remote's VXLAN device "
                    "and uplink veth and on the containers' interfaces, restored after: the setting prism_xdp "
                    "used to need",
    "kernel-prism-batch": "the kernel path with the PRISM patch: /proc/port = the HIGH ports, /proc/sync = 0",
    "kernel-prism-sync": "the kernel path with the PRISM patch: /proc/port = the HIGH ports, /proc/sync = 1",
    "prism-vanilla": "prism-xdp run (the daemon as users start it), scheduler.mode = vanilla",
    "prism-batch": "prism-xdp run, scheduler.mode = batch, the HIGH ports as priority rules",
    "prism-sync": "prism-xdp run, scheduler.mode = sync, the HIGH ports as priority rules",
    "prism-batch+kernel-high": "prism-batch with forwarding.high_path = \"kernel\": HIGH frames decapsulated, "
                               "encapsulated and redirected by TC programs in the receiving softirq",
    "prism-sync+kernel-high": "prism-sync with forwarding.high_path = \"kernel\"",
    **{mode + GENERIC_UPLINK: f"{mode} with uplink.xdp_mode = \"skb\": generic-mode XDP on the uplink, so the "
                              "remote keeps TSO and its 64 KB GSO packets reach the daemon whole (multi-buffer)"
       for mode in PRISM_CONFIGS},
    **{mode + UPLINK_XSK: f"{mode} with forwarding.uplink_delivery = \"xsk\": containers' frames leave on the "
                          "uplink's AF_XDP ring one by one, as before the merged GSO path (the default)"
       for mode in PRISM_CONFIGS},
    **{mode + NO_HOLD: f"{mode} with scheduler.low_gro_hold = 0: each cut LOW batch leaves at once, its TCP "
                       "segments merged with each other only"
       for mode in ("prism-batch", "prism-sync")},
    **{mode + hold: f"{mode} with scheduler.low_gro_hold = {n}: up to {n} LOW TCP segments per port wait across "
                    "cut batches to leave as one GSO packet"
       for hold, n in HOLDS.items() for mode in ("prism-batch", "prism-sync")},
}


# ---- the PRISM kernel patch's knobs -----------------------------------------

def kernel_knobs(proc: str = "/proc") -> dict[str, Path] | None:
    """/proc/port, /proc/sync, /proc/split when the running kernel has the PRISM patch, else None."""
    paths = {k: Path(proc) / k for k in KNOBS}
    return paths if all(p.exists() for p in paths.values()) else None


def kernel_configs(proc: str = "/proc") -> tuple[list[str], str]:
    """Kernel configurations to run, and why the patched ones are in or out."""
    if kernel_knobs(proc) is None:
        return list(KERNEL_CONFIGS), f"PRISM kernel patch: absent (no {proc}/port, {proc}/sync, {proc}/split)"
    return list(KERNEL_CONFIGS + PATCH_CONFIGS), f"PRISM kernel patch: present ({proc}/port ...)"


def available(proc: str = "/proc") -> list[str]:
    """Every configuration this host can run, in the A/B's order."""
    return kernel_configs(proc)[0] + list(PRISM_CONFIGS) + list(OPTION_CONFIGS)


def choose(text: str | None, proc: str = "/proc") -> list[str]:
    """--configs as a list (default: every one available but the options), or ConfigError naming what is not."""
    here = available(proc)
    if not text:
        return [c for c in here if c not in OPTION_CONFIGS]
    names = [n.strip() for n in text.split(",") if n.strip()]
    for n in names:
        if n not in here:
            why = " (needs the PRISM kernel patch's /proc knobs)" if n in PATCH_CONFIGS else ""
            raise ConfigError(f"--configs: {n!r} is not available here{why}; choose from {', '.join(here)}")
    if len(set(names)) != len(names):
        raise ConfigError("--configs: a configuration is listed twice")
    return names


class KernelPatch:
    """Sets the patch's knobs for a configuration and restores stock behaviour after."""

    def __init__(self, proc: str = "/proc") -> None:
        knobs = kernel_knobs(proc)
        if knobs is None:
            raise PrismError(2, "PRISM kernel patch", proc, "no /proc/port, /proc/sync, /proc/split")
        self.knobs = knobs

    def apply(self, ports: list[int], sync: bool) -> None:
        if len(ports) > 10:
            raise ConfigError(f"the kernel patch takes at most 10 ports, not {len(ports)}")
        self.knobs["port"].write_text(",".join(str(p) for p in ports) + "\n")
        self.knobs["sync"].write_text("1\n" if sync else "0\n")

    def reset(self) -> None:
        """An empty port list is stock behaviour."""
        self.knobs["port"].write_text("0\n")
        self.knobs["sync"].write_text("0\n")


# ---- prism_xdp's daemon -----------------------------------------------------

# Daemon settings a bench may change for every prism-* configuration (--set): the
# scheduler's knobs but the mode and CPUs (the configuration and the placement decide
# those), the forwarding table, snooping, checksums and the UMEM. What defines the
# topology (uplink, containers, VTEPs, rules, control socket) is the bench's.
SETTABLE_SECTIONS = ("scheduler", "forwarding", "snooping", "checksum", "umem")
BENCH_OWNED = ("scheduler.mode", "scheduler.cpus")


def daemon_setup(config: str, settings: dict[str, dict[str, str]] | None
                 ) -> tuple[str, dict[str, dict[str, str]] | None]:
    """A prism-* configuration's scheduling mode, and the daemon settings with its option's
    (the part after "+", OPTIONS) on top of the bench's."""
    base, plus, option = config.partition("+")
    mode = base.removeprefix("prism-")
    if not plus:
        return mode, settings
    section, key, literal = OPTIONS[plus + option]
    out = {**(settings or {})}
    out[section] = {**out.get(section, {}), key: literal}
    return mode, out


def parse_settings(items: list[str]) -> dict[str, dict[str, str]]:
    """SECTION.KEY=VALUE items as section -> key -> TOML literal (a bare word becomes a string)."""
    out: dict[str, dict[str, str]] = {}
    for item in items:
        name, sep, value = item.partition("=")
        section, dot, key = name.strip().partition(".")
        if not sep or not dot or not key or not value.strip():
            raise ConfigError(f"--set {item!r}: write SECTION.KEY=VALUE, e.g. scheduler.low_batch_with_high=16")
        if section not in SETTABLE_SECTIONS:
            raise ConfigError(f"--set {name.strip()}: the bench sets [{section}] itself; settable: "
                              f"{', '.join(SETTABLE_SECTIONS)}")
        if name.strip() in BENCH_OWNED:
            raise ConfigError(f"--set {name.strip()}: chosen by the configuration and the placement policy")
        literal = value.strip()
        try:
            tomllib.loads(f"v = {literal}")
        except tomllib.TOMLDecodeError:
            literal = json.dumps(literal)  # a bare word: a TOML string
        out.setdefault(section, {})[key.strip()] = literal
    return out


def with_settings(text: str, settings: dict[str, dict[str, str]]) -> str:
    """A config text with each section.key = literal: replaced where the key is, else added to
    its table (made in front of [control] when the text has none)."""
    lines = text.splitlines()
    for section, keys in settings.items():
        header = f"[{section}]"
        if header not in lines:
            at = lines.index("[control]")
            lines[at:at] = [header, ""]
        start = lines.index(header) + 1
        end = next((i for i in range(start, len(lines)) if lines[i].startswith("[")), len(lines))
        for key, literal in keys.items():
            found = [i for i in range(start, end) if lines[i].split("=")[0].strip() == key]
            if found:
                lines[found[0]] = f"{key} = {literal}"
            else:
                lines.insert(start, f"{key} = {literal}")
                end += 1
    return "\n".join(lines) + "\n"


class PrismDaemon:
    """prism-xdp run on the topology, as users run it; started and stopped between configurations.

    cpu pins every queue's worker to that CPU (scheduler.cpus); mode and ports, when
    given, go into the config as a user would write them (scheduler.mode, rules.ports);
    settings (parse_settings) change the daemon's other settings for every mode alike.
    """

    def __init__(self, state: dict[str, Any], workdir: Path, cpu: int | None = None, mode: str | None = None,
                 ports: list[int] | None = None, settings: dict[str, dict[str, str]] | None = None) -> None:
        self.config = workdir / "prism.toml"
        self.text = PrismDaemon.config_text(state, str(workdir), cpu, mode, ports, settings)
        self.config.write_text(self.text)
        self.socket = workdir / f"{state['spec']['name']}.sock"
        self.proc: subprocess.Popen[str] | None = None

    @staticmethod
    def config_text(state: dict[str, Any], control_dir: str, cpu: int | None = None, mode: str | None = None,
                    ports: list[int] | None = None, settings: dict[str, dict[str, str]] | None = None) -> str:
        """The config the daemon runs with; checked as the daemon checks it (ConfigError naming the key)."""
        all_settings = {section: dict(keys) for section, keys in (settings or {}).items()}
        sched = all_settings.setdefault("scheduler", {})
        if mode:
            sched["mode"] = json.dumps(mode)
        if cpu is not None:
            sched["cpus"] = str([cpu] * state["spec"]["queues"])
        text = with_settings(topo.daemon_config(state, control_dir), {k: v for k, v in all_settings.items() if v})
        if ports is not None:
            text = text.replace("ports = [7000]", f"ports = {sorted(ports)}")
        daemon_config.parse(tomllib.loads(text), "the bench's daemon config")
        return text

    def start(self) -> None:
        if self.proc is not None:
            return
        self.proc = subprocess.Popen([sys.executable, "-m", "prism_xdp.daemon.cli", "run", "--config", str(self.config)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 20
        while True:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read() if self.proc.stderr else ""
                self.proc = None
                raise PrismError(5, "prism-xdp run", str(self.config), err.strip()[-500:])
            try:
                if self.call("status")["pid"] == self.proc.pid:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise PrismError(110, "prism-xdp run", str(self.config), "did not answer in 20 s")
            time.sleep(0.05)

    def call(self, cmd: str, **fields: Any) -> Any:
        with ControlClient(str(self.socket)) as c:
            return c.call(cmd, **fields)

    def cpu_seconds(self) -> float | None:
        return tree_cpu_seconds(self.proc.pid) if self.proc else None

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None


# ---- one configuration, set up for a block of measurements ---------------------

@contextlib.contextmanager
def configured(config: str, state: dict[str, Any], host: OverlayHost, workdir: Path, ports: list[int],
               worker_cpu: int | None, proc: str = "/proc",
               settings: dict[str, dict[str, str]] | None = None) -> Iterator[PrismDaemon | None]:
    """The host set up as `config` while inside (the daemon, when it is one, is yielded),
    and put back as it was after, on every way out."""
    patch = KernelPatch(proc) if kernel_knobs(proc) is not None else None
    if patch is not None:
        patch.reset()  # stock, unless this configuration is one of the patch's
    try:
        if config.startswith("prism-"):
            mode, settings = daemon_setup(config, settings)
            daemon = PrismDaemon(state, workdir, worker_cpu, mode=mode, ports=ports, settings=settings)
            try:
                daemon.start()
                yield daemon
            finally:
                daemon.stop()
        elif config == "kernel-txoff":
            with TxChecksumOff(tx_checksum_interfaces(host)):
                yield None
        elif config in PATCH_CONFIGS:
            if patch is None:
                raise ConfigError(f"{config}: the running kernel has no PRISM patch knobs in {proc}")
            patch.apply(ports, sync=config.endswith("sync"))
            yield None
        elif config == "kernel":
            yield None
        else:
            raise ConfigError(f"configs: unknown configuration {config!r}")
    finally:
        if patch is not None:
            patch.reset()
