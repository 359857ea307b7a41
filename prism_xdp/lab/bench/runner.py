"""runner.py - `prism-xdp bench`: the A/B on one test host with the tools researchers use - HIGH request/response applications (sockperf, memcached, nginx + wrk) idle and under LOW bulk loads (iperf3, prism_gen) - through the kernel path and prism_xdp, one placement policy for all, repeated and interleaved."""

from __future__ import annotations

import math
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prism_xdp.lab import cpuprof
from prism_xdp.lab.bench import breakdown, iperf, memcache, sockperf, webserve, workloads
from prism_xdp.lab.bench import configs as abconfigs
from prism_xdp.lab.bench import report as abreport
from prism_xdp.lab.bench.configs import PrismDaemon
from prism_xdp.lab.bench.placement import Placement
from prism_xdp.lab.bench.samples import cdf, summarize
from prism_xdp.lab.bench.toolproc import Tool, ToolError, Tools
from prism_xdp.lab.bench.workloads import High, Low
from prism_xdp.lab.probe import pm_qos_low_latency
from prism_xdp.lab.testhost import OverlayHost, run_in, topo, tx_checksum_interfaces
from prism_xdp.lab.testhost.links import read_features

LEAD_S = 0.5  # a LOW load runs this long before the first HIGH measurement under it
GAP_S = 0.2  # between HIGH measurements: a client's start and exit
TAIL_S = 0.5  # the LOW load outlasts the last HIGH measurement by at least this
TX_FEATURES: tuple[str, ...] = ("tx-checksum-ip-generic", "tx-tcp-segmentation")


@dataclass
class BenchParams:
    high: list[High]
    low: list[Low]
    configs: list[str]
    placement: Placement
    duration: int = 10  # seconds of each HIGH measurement
    runs: int = 3
    steal_max: float = 0.05  # a run in which the hypervisor took more of a CPU is flagged
    proc: str = "/proc"
    command: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    breakdown: bool = False  # trace one HIGH sockperf-udp round trip's stages (run 1 of each configuration x LOW)
    # Daemon settings for every prism-* configuration alike (configs.parse_settings), recorded in the report.
    settings: dict[str, dict[str, str]] = field(default_factory=dict)

    def high_seconds(self) -> float:
        """Every HIGH workload measured once, one after the other (and the traced extra run)."""
        extra = breakdown.client_seconds() + 5 if self.breakdown and any(h.name == breakdown.HIGH for h in self.high) \
            else 0
        return sum(self.duration + h.startup_s + GAP_S for h in self.high) + extra

    def low_seconds(self) -> int:
        """How long a LOW load runs: every HIGH workload is measured under it in turn, with
        room for clients that the load slows down (a cell that still outlasts it fails)."""
        return math.ceil(LEAD_S + 1.2 * self.high_seconds() + TAIL_S)

    def estimate_s(self) -> float:
        per_config = sum(self.low_seconds() + 1 if lo.kind != "idle" else self.high_seconds() for lo in self.low)
        return (per_config + 3) * len(self.configs) * self.runs


def progress(done: int, total: int, label: str) -> None:
    width = 30
    filled = int(width * done / total) if total else width
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {label:48.48}")
    sys.stderr.flush()
    if done == total:
        sys.stderr.write("\n")


class Window:
    """What the machine did during one measurement: CPU time here and stolen, per CPU."""

    def __init__(self, daemon: PrismDaemon | None) -> None:
        self.daemon = daemon
        self.t0, self.cpu0 = time.monotonic(), cpuprof.read_cpu_times()
        self.d0 = daemon.cpu_seconds() if daemon else None

    def close(self, steal_max: float) -> dict[str, Any]:
        cpu1, secs = cpuprof.read_cpu_times(), time.monotonic() - self.t0
        d1 = self.daemon.cpu_seconds() if self.daemon else None
        shares = cpuprof.shares(self.cpu0, cpu1)
        steal = max((s["steal"] for s in shares.values()), default=0.0)
        busy = cpuprof.busy_seconds(cpu1) - cpuprof.busy_seconds(self.cpu0)
        daemon = d1 - self.d0 if d1 is not None and self.d0 is not None else None
        return {"seconds": round(secs, 3), "busy_cpu_s": round(busy, 3), "busy_cpus": round(busy / secs, 3),
                "daemon_cpu_s": round(daemon, 3) if daemon is not None else None,
                "daemon_cpus": round(daemon / secs, 3) if daemon is not None else None,
                "per_cpu": {str(c): s for c, s in shares.items()}, "steal_max": steal,
                "steal_flagged": steal > steal_max}


class Bench:
    """One bench on one topology: servers up, configurations in turn, every cell recorded."""

    def __init__(self, state: dict[str, Any], params: BenchParams, workdir: Path) -> None:
        self.state, self.p, self.workdir = state, params, workdir
        self.host: OverlayHost = topo.host_of(state)
        self.c_high, self.c_low = self.host.containers[0], self.host.containers[1]
        self.tools = Tools(workdir)
        self.servers: dict[str, Tool] = {}
        self.cells: list[dict[str, Any]] = []
        self.low_runs: list[dict[str, Any]] = []
        self.breakdowns: list[dict[str, Any]] = []  # --breakdown: one per configuration x LOW (run 1)
        self.errors: list[str] = []  # what failed outside a cell (setting a configuration up or down)
        self.gen: Any = None
        self.memc = memcache.client_path() if any(h.name == "memcached" for h in params.high) else ""
        self.done, self.total = 0, len(params.configs) * params.runs * len(params.low) * len(params.high)

    # ---- servers in container c0, for the whole bench --------------------------

    def _server_argv(self, h: High) -> list[str]:
        ip = self.c_high.ip
        if h.name.startswith("sockperf"):
            return sockperf.server_argv(ip, h.port, h.proto == "tcp")
        if h.name == "memcached":
            return memcache.server_argv(ip, h.port)
        root = self.workdir / "nginx"
        return webserve.server_argv(webserve.prepare(root, ip, h.port), root)

    def _ensure_server(self, h: High) -> None:
        """Start h's server (again, if it died: the cell that found it dead fails)."""
        old = self.servers.get(h.name)
        if old is not None and old.proc.poll() is None:
            return
        self.servers[h.name] = srv = self.tools.start(f"{h.name}-server", self.c_high.ns,
                                                      self.p.placement.wrap(self._server_argv(h)))
        srv.wait_listening(h.port, h.proto == "tcp")
        if h.name == "memcached":
            load = self.tools.start("memcached-preload", self.host.remote_ns, self.p.placement.wrap(
                memcache.preload_argv(self.memc, self.c_high.ip, h.port, str(self.workdir / "preload.log"))))
            if load.wait(60) != 0:
                raise ToolError(f"storing memcached's keys failed: {load.stderr_tail()}")
        if old is not None:
            raise ToolError(f"{h.name} server had exited ({old.proc.returncode}): {old.stderr_tail()}")

    # ---- the bench --------------------------------------------------------------

    def run(self) -> bool:
        """Every configuration x LOW x HIGH, runs times, interleaved; returns whether PM QoS was held."""
        from prism_xdp.lab.generator import LiveFrameGenerator  # only when prism_gen is asked for

        if self.p.placement.tool_cpus is not None and shutil.which("taskset") is None:
            raise ToolError("taskset (util-linux) is needed for a pinned placement policy")  # tools run under it
        if any(lo.kind == "prism-gen" for lo in self.p.low):
            self.gen = LiveFrameGenerator(self.host.uplink.remote_if, self.host.remote_ns)
        try:
            with pm_qos_low_latency() as held:
                for h in self.p.high:
                    self._ensure_server(h)
                for rep in range(self.p.runs):
                    for config in self.p.configs:
                        self._config(config, rep)
                progress(self.total, self.total, "done")
            return held
        finally:
            self.tools.stop_all()
            if self.gen is not None:
                self.gen.close()

    def _config(self, config: str, rep: int) -> None:
        ports = sorted(h.port for h in self.p.high)
        worker = self.p.placement.worker_cpus[0] if self.p.placement.worker_cpus else None
        measured = 0
        try:
            with abconfigs.configured(config, self.state, self.host, self.workdir, ports, worker,
                                      self.p.proc, self.p.settings) as daemon:
                self._settle()
                for low in self.p.low:
                    self._block(config, low, rep, daemon)
                    measured += 1
        except Exception as exc:  # the configuration itself failed: its cells say why
            reason = f"{config}: {type(exc).__name__}: {exc}"
            self.errors.append(f"run {rep + 1}: {reason}")
            for low in self.p.low[measured:]:
                self.low_runs.append(self._low_failed(config, low, rep, reason))
                for h in self.p.high:
                    self._record(self._high_failed(config, h, low, rep, reason))

    def _settle(self) -> None:
        """ARP, the bridge's and prism_xdp's learning: done before anything is timed."""
        for c in (self.c_high, self.c_low):
            run_in(self.host.remote_ns, ["ping", "-q", "-c", "3", "-i", "0.2", "-w", "3", c.ip])

    def _record(self, cell: dict[str, Any]) -> None:
        self.cells.append(cell)
        self.done += 1

    # ---- one LOW load, every HIGH workload under it ---------------------------------

    def _block(self, config: str, low: Low, rep: int, daemon: PrismDaemon | None) -> None:
        clients: list[Tool] = []
        started: list[Tool] = []
        low_run: dict[str, Any] = {"config": config, "low": low.name, "run": rep}
        cells: list[dict[str, Any]] = []
        try:
            rx0, window = self._low_packets(low), None
            if low.kind in ("tcp", "udp"):
                for i in range(low.flows):
                    port = workloads.LOW_PORT_BASE + i
                    srv = self.tools.start(f"iperf3-server-{i}", self.c_low.ns,
                                           self.p.placement.wrap(iperf.server_argv(self.c_low.ip, port)))
                    started.append(srv)
                    srv.wait_listening(port, tcp=True)
                window = Window(daemon)
                for i in range(low.flows):
                    argv = iperf.client_argv(self.c_low.ip, workloads.LOW_PORT_BASE + i, self.p.low_seconds(),
                                             low.payload if low.kind == "udp" else None, low.reverse)
                    clients.append(self.tools.start(f"iperf3-client-{i}", self.host.remote_ns,
                                                    self.p.placement.wrap(argv)))
                started += clients
                low_run["argv"] = [c.argv for c in clients]
            elif low.kind == "prism-gen":
                from prism_xdp.lab.inject import Flow, build

                frame = build(self.host, Flow("low", workloads.GEN_PORT, container=1), workloads.GEN_FRAME)
                window = Window(daemon)
                self.gen.start_for(frame, seconds=self.p.low_seconds(), cpu=self.p.placement.generator_cpu(),
                                   call_seconds=0.25)
                low_run["argv"] = [f"prism_gen (BPF_PROG_RUN live frames) {workloads.GEN_FRAME} B to "
                                   f"{self.c_low.ip}:{workloads.GEN_PORT}, thread on CPU "
                                   f"{self.p.placement.generator_cpu()}"]
            if window is not None:
                time.sleep(LEAD_S)
            low_end = time.monotonic() - LEAD_S + self.p.low_seconds()
            for h in self.p.high:
                progress(self.done + len(cells), self.total, f"run {rep + 1} {config} {low.name} {h.name}")
                cells.append(cell := self._high(config, h, low, rep, daemon))
                if window is not None and cell["ok"] and time.monotonic() > low_end:
                    cell.update(ok=False, error="the LOW load ended before this measurement did")
                if self.p.breakdown and rep == 0 and h.name == breakdown.HIGH:
                    self.breakdowns.append(self._breakdown(config, h, low, daemon, cell))
            if window is not None:
                low_run.update(self._low_result(low, clients, window, rx0))
            low_run["ok"] = True
        except Exception as exc:
            low_run.update(ok=False, error=f"{type(exc).__name__}: {exc}")
            cells += [self._high_failed(config, h, low, rep, low_run["error"]) for h in self.p.high[len(cells):]]
        finally:
            if self.gen is not None and low.kind == "prism-gen":
                try:
                    self.gen.stop()
                except Exception as exc:  # reported with the LOW run
                    low_run.update(ok=False, error=f"prism_gen: {exc}")
            for t in started:
                t.stop()
        for cell in cells:
            if cell["ok"] and not low_run["ok"]:
                # Measured, but not under the load its row names: kept, not summarised.
                cell.update(ok=False, error=f"the LOW load failed: {low_run['error']}")
            self._record(cell)
        self.low_runs.append(low_run)

    def _low_result(self, low: Low, clients: list[Tool], window: Window, rx0: int) -> dict[str, Any]:
        if low.kind == "prism-gen":
            self.gen.stop()  # its error, if any, fails the LOW run
            cpu = window.close(self.p.steal_max)
            rx = self.c_low.rx_packets() - rx0
            pps = rx / cpu["seconds"]
            return {"gbps": pps * workloads.GEN_FRAME * 8 / 1e9, "mpps": pps / 1e6, "loss_pct": None,
                    "bytes": rx * workloads.GEN_FRAME, "packets_from": "the container's interface (rx_packets)",
                    "cpu": cpu}
        flows = []
        for c in clients:
            rc = c.wait(self.p.low_seconds() + 20)
            try:
                flows.append(iperf.parse(c.stdout()))
            except ValueError as exc:
                raise ToolError(f"{c.name} (exit {rc}): {exc}") from None
        cpu = window.close(self.p.steal_max)
        rx = self._low_packets(low) - rx0
        secs = max(float(f["seconds"] or 0) for f in flows) or cpu["seconds"]
        out: dict[str, Any] = {"gbps": sum(float(f["gbps"] or 0) for f in flows),
                               "bytes": sum(int(f["bytes"] or 0) for f in flows), "flows": flows, "cpu": cpu}
        if low.kind == "udp":
            got, lost = sum(int(f["packets"] or 0) for f in flows), sum(int(f["lost"] or 0) for f in flows)
            out.update(mpps=got / secs / 1e6, loss_pct=100 * lost / max(1, got + lost),
                       packets_from="iperf3's receiver (datagrams received)")
        else:
            out.update(mpps=rx / cpu["seconds"] / 1e6, loss_pct=None,
                       packets_from=f"the container's interface ({'tx' if low.reverse else 'rx'}_packets; "
                                    "a GRO/GSO aggregate counts once)")
        return out

    def _low_packets(self, low: Low) -> int:
        """Where a LOW load's packets are counted: the container's interface, on the side they cross."""
        return self.c_low.tx_packets() if low.reverse else self.c_low.rx_packets()

    # ---- one HIGH measurement -------------------------------------------------------

    def _high_argv(self, h: High, out: Path) -> list[str]:
        ip, secs = self.c_high.ip, self.p.duration
        if h.name.startswith("sockperf"):
            return sockperf.client_argv(ip, h.port, h.proto == "tcp", secs, workloads.SOCKPERF_MSG, str(out),
                                        h.mps)
        if h.name == "memcached":
            return memcache.client_argv(self.memc, ip, h.port, secs, str(out))
        return webserve.client_argv(ip, h.port, secs, self.workdir / "nginx" / "done.lua")

    def _high(self, config: str, h: High, low: Low, rep: int, daemon: PrismDaemon | None) -> dict[str, Any]:
        cell: dict[str, Any] = {"config": config, "high": h.name, "low": low.name, "run": rep}
        out = self.workdir / f"{h.name}.log"
        try:
            self._ensure_server(h)
            out.unlink(missing_ok=True)
            argv = self.p.placement.wrap(self._high_argv(h, out))
            cell["argv"] = argv
            for attempt in range(2):
                window = Window(daemon)
                client = self.tools.start(f"{h.name}-client", self.host.remote_ns, argv)
                rc = client.wait(self.p.duration + 30)
                cell["cpu"] = window.close(self.p.steal_max)
                values, extra = self._parse(h, client, rc, out)
                # A UDP ping-pong whose one datagram in flight was lost waits for it to the end: a
                # stall before its warm-up ended leaves no samples. Run it once more and keep the
                # stalled run's counts in the cell (a loss is a result, not hidden).
                if values or attempt or not h.name.startswith("sockperf-udp") or not extra.get("sent", 0) > extra.get("received", 0):
                    break
                cell["stalled_run"] = {k: extra.get(k) for k in ("sent", "received")}
                out.unlink(missing_ok=True)
            if not values:
                why = extra.get("error") or client.stderr_tail() or f"client output: {client.stdout().strip()[-200:]!r}"
                raise ToolError(f"{h.name}: no requests completed ({why})")
            ordered = sorted(values)
            cell.update(ok=True, requests=len(values), requests_per_s=round(len(values) / self.p.duration, 1),
                        latency_us=summarize(ordered), cdf=cdf(ordered), latency_from=h.latency_from, tool=extra)
        except Exception as exc:
            cell.update(ok=False, error=f"{type(exc).__name__}: {exc}")
        finally:
            out.unlink(missing_ok=True)
        return cell

    def _breakdown(self, config: str, h: High, low: Low, daemon: PrismDaemon | None,
                   untraced: dict[str, Any]) -> dict[str, Any]:
        """One more sockperf run, traced: where its round trips' time goes (breakdown.py)."""
        self._ensure_server(h)
        return breakdown.measure(config, low.name, self.host, self.tools, self.servers[h.name], self.workdir,
                                 self.p.placement.wrap, daemon, untraced.get("latency_us"))

    def _parse(self, h: High, client: Tool, rc: int, out: Path) -> tuple[list[float], dict[str, Any]]:
        """Latencies in µs and what else the tool said."""
        if h.name.startswith("sockperf"):
            summary = sockperf.parse_summary(client.stdout())
            return sockperf.parse_full_log(out.read_text() if out.exists() else ""), summary
        if h.name == "memcached":
            if not out.exists():
                raise ToolError(f"prism-memc-rtt (exit {rc}): {client.stderr_tail()}")
            head, values = memcache.parse(out.read_text())
            return values, {"summary": head, "exit": rc, "error": client.stderr_tail() or None}
        from prism_xdp.lab.bench.samples import expand_histogram

        try:
            got = webserve.parse(client.stdout())
        except ValueError as exc:
            raise ToolError(f"wrk (exit {rc}): {exc} {client.stderr_tail()}") from None
        hist = got.pop("histogram")
        return expand_histogram(hist), got  # type: ignore[arg-type]

    def _high_failed(self, config: str, h: High, low: Low, rep: int, reason: str) -> dict[str, Any]:
        return {"config": config, "high": h.name, "low": low.name, "run": rep, "ok": False, "error": reason}

    @staticmethod
    def _low_failed(config: str, low: Low, rep: int, reason: str) -> dict[str, Any]:
        return {"config": config, "low": low.name, "run": rep, "ok": False, "error": reason}


def run(state: dict[str, Any], params: BenchParams, out_dir: Path) -> dict[str, Any]:
    """The whole bench on a topology that is up; writes and returns the report."""
    if len(state["host"]["containers"]) < 2:
        raise ToolError("the bench needs a topology with 2 containers (HIGH in c0, LOW in c1)")
    _, patch_note = abconfigs.kernel_configs(params.proc)
    # A bad --set is refused before anything runs, naming the key (as the daemon would).
    abconfigs.PrismDaemon.config_text(state, "/run/prism-xdp", settings=params.settings)
    params.extra["offloads"] = offload_state(topo.host_of(state))
    workdir = Path(tempfile.mkdtemp(prefix="pxd-bench-"))
    workdir.chmod(0o755)  # nginx's workers read the page as another user
    try:
        bench = Bench(state, params, workdir)
        held = bench.run()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    rep = abreport.build(bench.cells, bench.low_runs, bench.errors, params, held, patch_note, state)
    if params.breakdown:
        rep["breakdown"] = breakdown.report(bench.breakdowns)
    rep["files"] = abreport.write(rep, out_dir)
    return rep


def offload_state(host: OverlayHost) -> dict[str, dict[str, bool]]:
    """TX checksum and TSO as the topology has them (what `kernel` runs with), per interface."""
    out: dict[str, dict[str, bool]] = {}
    for ifname, ns in tx_checksum_interfaces(host):
        feats = read_features(ifname, ns)
        out[f"{ns}/{ifname}"] = {k: feats[k].active for k in TX_FEATURES if k in feats}
    return out
