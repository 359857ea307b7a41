"""service.py - the privileged daemon: checks the host, attaches everything, runs one worker per queue until SIGINT/SIGTERM, reloads rules on SIGHUP, and removes everything in reverse order on every exit path."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import platform
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

from prism_xdp import __version__
from prism_xdp.daemon import rundir
from prism_xdp.daemon.config import Config, Rules, check_class, check_rule_classes, load
from prism_xdp.daemon.control import ControlServer
from prism_xdp.daemon.metrics import MetricsServer
from prism_xdp.daemon.workers import WorkerProcess
from prism_xdp.dataplane import xdp
from prism_xdp.dataplane.checksum import ChecksumPolicy
from prism_xdp.dataplane.checksum import resolve as resolve_checksum
from prism_xdp.dataplane.classes import CLASS_NAMES
from prism_xdp.dataplane.datapath import MULTIBUF_COUNTERS, DatapathParams
from prism_xdp.dataplane.errors import ConfigError, PrismError
from prism_xdp.dataplane.gsoencap import describe_method, resolve_uplink_delivery
from prism_xdp.dataplane.hist import Histogram
from prism_xdp.dataplane.hostinfo import online_cpus
from prism_xdp.dataplane.programs import Programs
from prism_xdp.dataplane.sched import Mode
from prism_xdp.dataplane.snooping import Snooping
from prism_xdp.dataplane.xsk import XskParams, rx_queue_count

log = logging.getLogger("prism_xdp")
MIN_KERNEL = (5, 11)  # AF_XDP shared UMEM across devices, busy-poll socket options


def _kernel_version() -> tuple[int, int]:
    parts = platform.release().split(".")
    try:
        return int(parts[0]), int("".join(ch for ch in parts[1] if ch.isdigit()) or 0)
    except (IndexError, ValueError):
        return (0, 0)


# Config field -> DatapathParams field: the one place where the daemon's config
# meets the data plane (per queue, datapath_params adds the queue, its CPU, the
# socket settings and the checksum policy decided at start).
DATAPATH_FIELDS = {
    "uplink": "uplink", "vxlan_port": "vxlan_port", "local_ip": "local_ip", "mtu": "uplink_mtu", "ttl": "ttl",
    "classes": "nclass", "batch": "batch_size", "low_batch_with_high": "low_batch_with_high",
    "low_gro_hold": "low_gro_hold",
    "uplink_fill": "uplink_fill", "container_fill": "container_fill", "frame_size": "frame_size",
    "xdp_mode": "attach_mode", "mode": "mode", "poll": "poll", "timestamps": "timestamps",
    "fdb_ageing_s": "fdb_ageing_s", "fdb_max_per_vtep": "fdb_max_per_vtep", "snooping": "snooping",
    "delivery": "delivery", "high_path": "high_path", "uplink_delivery": "uplink_delivery",
}


def datapath_params(cfg: Config, index: int, checksum: ChecksumPolicy) -> DatapathParams:
    """The worker of cfg.queues[index]."""
    return DatapathParams(
        **{dp: getattr(cfg, name) for name, dp in DATAPATH_FIELDS.items()},
        queue=cfg.queues[index], cpu=cfg.cpus[index] if cfg.cpus else None, checksum=checksum,
        mld_querier=index == 0,  # one worker queries for the daemon
        xsk=XskParams(rx_size=cfg.ring_size, tx_size=cfg.ring_size, bind=cfg.bind,
                      busy_poll_usecs=cfg.busy_poll_usecs, busy_poll_budget=cfg.busy_poll_budget))


def preflight(cfg: Config) -> list[str]:
    """What is missing on this host for this config (empty when ready), checked before anything is touched."""
    problems = []
    if os.geteuid() != 0:
        problems.append("not root: prism-xdp run needs root (XDP programs, AF_XDP sockets)")
    if _kernel_version() < MIN_KERNEL:
        problems.append(f"kernel {platform.release()} is older than {MIN_KERNEL[0]}.{MIN_KERNEL[1]}")
    try:
        socket.socket(44, socket.SOCK_RAW).close()  # AF_XDP
    except OSError as exc:
        problems.append(f"AF_XDP sockets unavailable: {exc.strerror} (kernel built without CONFIG_XDP_SOCKETS?)")
    for name in ("prism_steer", "prism_egress"):
        try:
            xdp.bpf_object_path(name)
        except PrismError as exc:
            problems.append(str(exc))
    devices = [("uplink.interface", cfg.uplink)] + [
        (f"container[{i}].host_if", c.host_if) for i, c in enumerate(cfg.containers)]
    need = max(cfg.queues) + 1
    for key, ifname in devices:
        try:
            socket.if_nametoindex(ifname)
        except OSError:
            problems.append(f"{key}: no interface {ifname!r}")
            continue
        have = rx_queue_count(ifname)
        if have is not None and have < need:
            problems.append(f"{key}: {ifname} has {have} rx queue(s), queue {need - 1} is configured")
    for cpu in cfg.cpus:
        if cpu not in online_cpus():
            problems.append(f"scheduler.cpus: CPU {cpu} is not available")
    return problems


class PidFile:
    """A pid file that refuses a second live daemon and replaces a dead one's."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self._made_dir = rundir.ensure(self.path.parent)
        try:
            old = int(self.path.read_text().strip() or 0)
        except (OSError, ValueError):
            old = 0
        if old and old != os.getpid() and _alive(old):
            raise PrismError(errno.EEXIST, "pid file", str(self.path), f"prism-xdp (pid {old}) is running")
        if old:
            log.warning("removing the pid file of a daemon that is gone (pid %d)", old)
        self.path.write_text(f"{os.getpid()}\n")

    def close(self) -> None:
        with contextlib.suppress(FileNotFoundError, ValueError):
            if int(self.path.read_text().strip()) == os.getpid():
                self.path.unlink()
        rundir.remove_if_empty(self.path.parent, self._made_dir)


def _alive(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"prism" in cmdline


class Daemon:
    """One host's prism_xdp: programs, a worker per queue, control, metrics."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.started = time.time()
        self.workers: list[WorkerProcess] = []
        self.checksum = ChecksumPolicy()  # decided at start
        self.uplink_delivery = ("xsk", "not started")  # (method, why), decided at start
        self.snooping: Snooping | None = None  # made at start, unless [snooping] enabled = false
        self._rules: dict[str, dict[int, int]] = {"port": {}, "dscp": {}, "vni": {}}
        self._lock = threading.Lock()  # control requests come from several threads
        self._undo = contextlib.ExitStack()
        self.stop_event = threading.Event()
        self._hup = threading.Event()
        # What reloads did (SIGHUP or ctl reload): status shows it, so a refused one is seen.
        self._reloads: dict[str, Any] = {"ok": 0, "refused": 0, "last_error": None}

    # lifecycle ---------------------------------------------------------------
    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self._undo.close()
            raise

    def _start(self) -> None:
        cfg = self.cfg
        problems = preflight(cfg)
        if problems:
            raise PrismError(errno.EPERM if os.geteuid() else errno.EINVAL, "preflight", cfg.path,
                             "; ".join(problems))
        pid = PidFile(cfg.pid_file)
        self._undo.callback(pid.close)
        mode = Mode.parse(cfg.mode)
        # Probed once here, so that every worker does the same and status says what.
        self.checksum = resolve_checksum(cfg.checksum, cfg.partial_checksums, cfg.uplink)
        log.info("checksums: %s; partial checksums from the uplink: %s", self.checksum.describe()["how"],
                 self.checksum.describe()["partial_from_uplink"])
        log.info("delivery to containers: %s", cfg.delivery.describe()["how"])
        self.uplink_delivery = resolve_uplink_delivery(cfg.uplink_delivery)
        log.info("delivery to the uplink: %s (%s)", describe_method(*self.uplink_delivery)["how"],
                 self.uplink_delivery[1])
        log.info("HIGH frames finished by: %s", "the kernel (TC programs, forwarding.high_path = \"kernel\")"
                 if cfg.high_path == "kernel" else "the daemon's scheduler")
        programs = Programs(cfg.vxlan_port, cfg.classes, mode is Mode.VANILLA, list(cfg.containers), cfg.timestamps,
                            kernel_high=cfg.high_path == "kernel", ttl=cfg.ttl,
                            multi_buffer=cfg.xdp_mode is xdp.AttachMode.SKB,
                            uplink_gso=self.uplink_delivery[0] == "packet")
        self._undo.callback(programs.close)
        self.programs = programs
        # MLD snooping's table, in shared memory made before the workers fork: theirs too.
        self.snooping = Snooping(cfg.snooping) if cfg.snooping is not None else None
        if self.snooping is not None:
            self._undo.callback(self.snooping.close)
        for i in range(len(cfg.queues)):
            params = datapath_params(cfg, i, self.checksum)
            # One process per queue: queues run in parallel, each with its own
            # interpreter; the programs' maps are shared through inherited fds.
            worker = WorkerProcess(params, list(cfg.containers), list(cfg.vteps), programs, self.snooping)
            self._undo.callback(worker.stop)
            self.workers.append(worker)
        self._apply_rules(cfg.rules)
        programs.attach(cfg.uplink, cfg.xdp_mode)
        self._undo.callback(programs.detach)  # first thing undone: traffic stops reaching sockets
        control = ControlServer(cfg.control_socket, self)
        self._undo.callback(control.close)
        control.start()
        if cfg.prometheus:
            host, _, port = cfg.prometheus.rpartition(":")
            metrics = MetricsServer(host, int(port), lambda: self.stats(histograms=True))
            self._undo.callback(metrics.close)
            metrics.start()
        log.info("prism-xdp %s running: uplink %s queues %s, %d container(s), mode %s, poll %s, control %s",
                 __version__, cfg.uplink, list(cfg.queues), len(cfg.containers), cfg.mode, cfg.poll,
                 cfg.control_socket)

    def serve(self) -> int:
        """Run until SIGINT/SIGTERM (0) or a worker fails (1); SIGHUP reloads the rules."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        devices = [self.cfg.uplink] + [c.host_if for c in self.cfg.containers]
        try:
            while not self.stop_event.wait(0.2):
                gone = [d for d in devices if not os.path.exists(f"/sys/class/net/{d}")]
                if gone:
                    # Its devices went away (a test host taken down under it): nothing left to serve.
                    log.error("interface %s disappeared: stopping", gone[0])
                    return 1
                if self._hup.is_set():
                    self._hup.clear()
                    try:
                        self.reload()
                    except (ConfigError, PrismError) as exc:
                        log.error("reload refused, rules unchanged: %s", exc)
                for w in self.workers:
                    if not w.alive:
                        log.error("worker for queue %d stopped (exit code %s)", w.queue, w.proc.exitcode)
                        return 1
            return 0
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if signum == signal.SIGHUP:
            self._hup.set()
        else:
            log.info("%s: stopping", signal.Signals(signum).name)
            self.stop_event.set()

    def close(self) -> None:
        """Detach programs, stop workers, close sockets and memory, remove files: reverse order."""
        self._undo.close()
        log.info("prism-xdp stopped; nothing left attached")

    # rules -------------------------------------------------------------------
    def _apply_rules(self, rules: Rules) -> None:
        wanted = {"port": rules.ports, "dscp": rules.dscp, "vni": rules.vnis}
        for kind, table in wanted.items():
            for value in [v for v in self._rules[kind] if v not in table]:
                self.set_rule(kind, value, 0)
            for value, cls in table.items():
                self.set_rule(kind, value, cls)

    def set_rule(self, kind: str, value: int, cls: int) -> None:
        check_class(cls, self.cfg.classes, "class")  # a class without sockets would fold into another
        with self._lock:
            steer = self.programs.uplink  # the egress programs share its rule maps
            # One classifier: the workers record the class XDP puts in each packet's metadata.
            {"port": steer.set_port, "dscp": steer.set_dscp, "vni": steer.set_vni}[kind](value, cls)
            if cls:
                self._rules[kind][value] = cls
            else:
                self._rules[kind].pop(value, None)

    def rules(self) -> dict[str, dict[int, int]]:
        with self._lock:
            return {k: dict(v) for k, v in self._rules.items()}

    def clear_rules(self, kind: str | None) -> int:
        removed = 0
        for k in [kind] if kind else list(self._rules):
            for value in list(self._rules[k]):
                self.set_rule(k, value, 0)
                removed += 1
        return removed

    def reload(self) -> dict[str, Any]:
        """Re-read the config file and apply its rules; the rest needs a restart. A config
        that does not load changes nothing and is counted (status: reloads)."""
        try:
            new = load(self.cfg.path)
            check_rule_classes(new.rules, self.cfg.classes)  # sockets per class are fixed at start
        except (ConfigError, PrismError) as exc:
            self._reloads.update(refused=self._reloads["refused"] + 1, last_error=str(exc))
            raise
        self._apply_rules(new.rules)
        self._reloads["ok"] += 1
        log.info("rules reloaded from %s", self.cfg.path)
        return {"rules": {k: len(v) for k, v in self.rules().items()}}

    # mode ---------------------------------------------------------------------
    def mode(self) -> str:
        return str(self.workers[0].call("mode?"))

    def set_mode(self, mode: str) -> None:
        """One switch for the whole daemon: every worker finishes its in-flight work and holds
        (taking no packet), the shared steering changes once, then every worker drains its
        rings in the order that keeps flows in order and resumes in the new mode. (Flipping
        the steering from inside one worker's switch would reorder flows on the queues whose
        workers still run the old mode.)"""
        with self._lock:
            held, flip, ready = [], False, False
            try:
                for w in self.workers:
                    flip |= bool(w.call("mode-prepare", mode))
                    held.append(w)
                if flip:
                    self.programs.set_vanilla(mode == Mode.VANILLA.value)
                ready = True
            finally:
                for w in held:  # on a failure before the steering changed, every worker stays as it was
                    w.call("mode-finish", not ready)
            log.info("scheduling mode: %s", mode)

    # statistics ---------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        cfg = self.cfg
        return {"version": __version__, "pid": os.getpid(), "uptime_s": round(time.time() - self.started, 1),
                "config": cfg.path, "uplink": cfg.uplink, "queues": list(cfg.queues), "mode": self.mode(),
                "poll": cfg.poll, "timestamps": cfg.timestamps, "vxlan_port": cfg.vxlan_port,
                "batches": {"batch": cfg.batch, "low_batch_with_high": cfg.low_batch_with_high,
                            "low_gro_hold": cfg.low_gro_hold},
                "xdp": {"uplink": cfg.xdp_mode.name.lower(), "containers": "native",
                        "multi_buffer": cfg.xdp_mode is xdp.AttachMode.SKB},
                "checksum": self.checksum.describe(), "delivery": cfg.delivery.describe(),
                "uplink_delivery": self.uplink_delivery_status(),
                "high_path": self.high_path_status(),
                "snooping": self.snooping_status(),
                "classes": [CLASS_NAMES[c] for c in range(cfg.classes)],
                "containers": [{"name": c.name, "host_if": c.host_if, "mac": c.mac, "vni": c.vni}
                               for c in cfg.containers],
                "vteps": [{"ip": v.ip, "vni": v.vni} for v in cfg.vteps],
                "rules": {k: len(v) for k, v in self.rules().items()}, "reloads": dict(self._reloads)}

    def uplink_delivery_status(self) -> dict[str, Any]:
        """How frames leave on the uplink and, with prism_gso_encap, its counters."""
        status = describe_method(*self.uplink_delivery)
        if self.programs.gso is not None:
            status.update(self.programs.gso.counters().as_dict())
        return status

    def high_path_status(self) -> dict[str, Any]:
        """Where HIGH frames are finished and, on the kernel path, its counters."""
        kernel = self.programs.kernel
        return {"high_path": "daemon"} if kernel is None else kernel.describe()

    def snooping_status(self) -> dict[str, Any]:
        """MLD snooping's settings and its table's counters (one table for every queue)."""
        if self.snooping is None:
            return {"enabled": False}
        p = self.snooping.params
        return {"enabled": True, "query_interval_s": p.query_interval_s, "max_response_ms": p.max_response_ms,
                "membership_s": p.membership_s, "max_per_port": p.max_per_port} | self.snooping.counters()

    def stats(self, histograms: bool = False) -> dict[str, Any]:
        """Totals over queues (counters summed, histograms merged) and each queue's own; with
        histograms, the merged latency histograms too (for /metrics: too big for ctl)."""
        per_queue = {str(w.queue): w.call("stats") for w in self.workers}
        totals: dict[str, Any] = {"stages": {}, "ports": {}, "steer": {}, "xsk": {}}
        merged: dict[str, Histogram] = {}
        for s in per_queue.values():
            for k, v in s["stages"].items():
                totals["stages"][k] = totals["stages"].get(k, 0) + v
            for port, counters in s["ports"].items():
                dst = totals["ports"].setdefault(port, {})
                for k, v in counters.items():
                    dst[k] = dst.get(k, 0) + v
            totals["xsk"].update({f"q{s['queue']}:{k}": v for k, v in s["xsk"].items()})
            for name, raw in s.pop("histograms").items():
                merged.setdefault(name, Histogram()).merge(
                    Histogram(raw["buckets"], raw["count"], raw["total"], raw["min"], raw["max"]))
        totals["multi_buffer"] = {k: sum(s["multi_buffer"][k] for s in per_queue.values())
                                  for k in MULTIBUF_COUNTERS} if self.cfg.xdp_mode is xdp.AttachMode.SKB else None
        totals["mld"] = self.snooping_status() | {"queries": sum(s["mld"].get("queries", 0)
                                                                 for s in per_queue.values())}
        totals["steer"] = self.programs.uplink.counters().as_dict()  # per-CPU map: every queue already
        totals["egress"] = {c.name: eg.counters().as_dict()
                            for c, eg in zip(self.cfg.containers, self.programs.egress, strict=True)}
        totals["high_path"] = self.high_path_status()
        totals["uplink_delivery"] = self.uplink_delivery_status()
        totals["latency"] = {cls: {"latency_us": merged[f"{cls}/xdp"].summary(),
                                   "pipeline_us": merged[f"{cls}/poll"].summary()}
                             for cls in (CLASS_NAMES[c] for c in range(self.cfg.classes))}
        out = {"mode": self.mode(), "uptime_s": round(time.time() - self.started, 1), "totals": totals,
               "queues": per_queue}
        if histograms:
            out["histograms"] = merged
        return out

    def reset_stats(self) -> None:
        for w in self.workers:
            w.call("reset")


def run(config_path: str) -> int:
    """`prism-xdp run`: load, check, start, serve, always clean up."""
    cfg = load(config_path)
    logging.getLogger("prism_xdp").setLevel(cfg.log_level.upper())
    daemon = Daemon(cfg)
    daemon.start()
    try:
        return daemon.serve()
    finally:
        daemon.close()
