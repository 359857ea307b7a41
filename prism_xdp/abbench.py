"""abbench.py - `prism-xdp bench`: the A/B comparison on one test host — the kernel path (stock, and PRISM-batch/sync of the kernel patch when its knobs exist) next to prism_xdp in vanilla, batch and sync — with the same HIGH probe and LOW load, repeated and interleaved; JSON, a table and plots."""

from __future__ import annotations

import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from prism_xdp import cpuprof, topo
from prism_xdp.control import ControlClient
from prism_xdp.errors import ConfigError, PrismError
from prism_xdp.generator import LiveFrameGenerator
from prism_xdp.hist import Histogram
from prism_xdp.inject import Flow, build
from prism_xdp.netns import popen_in
from prism_xdp.probe import RttProbe, pm_qos_low_latency
from prism_xdp.topology import OverlayHost

KNOBS = ("port", "sync", "split")
PRISM_CONFIGS = ("prism-vanilla", "prism-batch", "prism-sync")
LOADS = ("idle", "loaded")


# ---- the PRISM kernel patch's knobs -----------------------------------------

def kernel_knobs(proc: str = "/proc") -> dict[str, Path] | None:
    """/proc/port, /proc/sync, /proc/split when the running kernel has the PRISM patch, else None."""
    paths = {k: Path(proc) / k for k in KNOBS}
    return paths if all(p.exists() for p in paths.values()) else None


def kernel_configs(proc: str = "/proc") -> tuple[list[str], str]:
    """Kernel configurations to run, and why the patched ones are in or out."""
    if kernel_knobs(proc) is None:
        return ["kernel"], f"PRISM kernel patch: absent (no {proc}/port, {proc}/sync, {proc}/split)"
    return ["kernel", "kernel-prism-batch", "kernel-prism-sync"], f"PRISM kernel patch: present ({proc}/port ...)"


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


# ---- measurement ------------------------------------------------------------

@dataclass
class Sample:
    config: str
    load: str
    run: int
    rtt_us: list[float]
    lost: int
    low_mpps: float
    cpu_busy_pct: float
    daemon_cpu_pct: float | None


@dataclass
class BenchParams:
    runs: int = 3
    probes: int = 500
    interval_ms: float = 1.0
    low_size: int = 64
    high_port: int = 7000
    low_port: int = 9
    configs: list[str] = field(default_factory=list)  # empty: every one available
    proc: str = "/proc"


def _proc_cpu_seconds(pid: int) -> float:
    parts = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], p: float) -> float:
    h = Histogram()
    for v in values:
        h.record(int(v * 1000))
    return round(h.percentile(p) / 1000, 1)


class PrismDaemon:
    """prism-xdp run on the topology, as users run it; started and stopped between configurations."""

    def __init__(self, state: dict[str, Any], workdir: Path, cpu: int) -> None:
        self.config = workdir / "prism.toml"
        text = topo.daemon_config(state, str(workdir))
        text = text.replace("[control]", f"[scheduler]\ncpus = {[cpu] * state['spec']['queues']}\n\n[control]")
        self.config.write_text(text)
        self.socket = workdir / f"{state['spec']['name']}.sock"
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        if self.proc is not None:
            return
        self.proc = subprocess.Popen([sys.executable, "-m", "prism_xdp.cli", "run", "--config", str(self.config)],
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
                raise PrismError(110, "prism-xdp run", str(self.config), "did not answer in 20 s")
            time.sleep(0.05)

    def call(self, cmd: str, **fields: Any) -> Any:
        with ControlClient(str(self.socket)) as c:
            return c.call(cmd, **fields)

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


def _progress(done: int, total: int, label: str) -> None:
    width = 30
    filled = int(width * done / total) if total else width
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {label:32}")
    sys.stderr.flush()
    if done == total:
        sys.stderr.write("\n")


def run(state: dict[str, Any], params: BenchParams, out_dir: Path) -> dict[str, Any]:
    """Every configuration x load, runs times, interleaved; returns the report (also written)."""
    host = topo.host_of(state)
    kernel, patch_note = kernel_configs(params.proc)
    configs = params.configs or kernel + list(PRISM_CONFIGS)
    unknown = [c for c in configs if c not in kernel + list(PRISM_CONFIGS)]
    if unknown:
        raise ConfigError(f"configs: {unknown[0]!r} is not available here; choose from {', '.join(kernel + list(PRISM_CONFIGS))}")
    cpus = sorted(os.sched_getaffinity(0))
    worker_cpu, side_cpu = cpus[-1], cpus[0]
    c = host.containers[0]
    samples: list[Sample] = []
    workdir = Path(tempfile.mkdtemp(prefix="pxd-bench-"))
    daemon = PrismDaemon(state, workdir, worker_cpu)
    patch = KernelPatch(params.proc) if len(kernel) > 1 else None
    gen = LiveFrameGenerator(host.uplink.remote_if, host.remote_ns)
    low = build(host, Flow("low", params.low_port), params.low_size)
    seconds = (params.probes * params.interval_ms / 1000 + 3) * len(configs) * len(LOADS) * params.runs + 120
    echo = popen_in(c.ns, [sys.executable, "-m", "prism_xdp.udpflows", "echo", "--bind", c.ip, "--ports",
                           str(params.high_port), "--seconds", str(int(seconds)), "--cpu", str(side_cpu)],
                    stdout=subprocess.PIPE, text=True)
    total, done = len(configs) * len(LOADS) * params.runs, 0
    # Everything but the data path's worker (this probe, the echo server, the
    # load generator, the kernel's softirqs for them) stays on the other CPU,
    # so that the worker's CPU runs the worker alone. Children inherit this.
    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {side_cpu})
    try:
        assert echo.stdout is not None and echo.stdout.readline().strip() == "ready"
        with pm_qos_low_latency() as pm_qos:
            probe = RttProbe(host, params.high_port)
            try:
                for rep in range(params.runs):
                    for config in configs:
                        if config.startswith("prism-"):
                            daemon.start()
                            daemon.call("mode-set", mode=config.split("-", 1)[1])
                            daemon.call("rule-add", kind="port", value=params.high_port)
                        else:
                            daemon.stop()
                            if patch is not None:
                                if config == "kernel":
                                    patch.reset()
                                else:
                                    patch.apply([params.high_port], sync=config.endswith("sync"))
                        probe.run(20, timeout=0.5)  # ARP, learning: settled before measuring
                        for load in LOADS:
                            _progress(done, total, f"run {rep + 1} {config} {load}")
                            samples.append(_measure(host, probe, gen, low, daemon, config, load, rep, params,
                                                    side_cpu, worker_cpu))
                            done += 1
                _progress(done, total, "done")
            finally:
                probe.close()
    finally:
        os.sched_setaffinity(0, affinity)
        daemon.stop()
        if patch is not None:
            patch.reset()
        gen.close()
        echo.kill()
        echo.wait()
        for f in workdir.iterdir():
            f.unlink()
        workdir.rmdir()
    return report(samples, configs, params, patch_note, pm_qos, out_dir)


def _measure(host: OverlayHost, probe: RttProbe, gen: LiveFrameGenerator, low: bytes, daemon: PrismDaemon,
             config: str, load: str, rep: int, params: BenchParams, side_cpu: int, worker_cpu: int) -> Sample:
    duration = params.probes * params.interval_ms / 1000
    if load == "loaded":
        # The load must saturate the path under test without taking the CPU its
        # own work needs. prism_xdp: the worker owns worker_cpu, so the generator
        # runs on the other CPU, yielding to everything there (SCHED_IDLE). The
        # kernel path does its work in the softirq of whoever hands it frames, so
        # the generator runs at normal priority on the CPU the kernel path leaves
        # idle (worker_cpu), and the kernel processes its frames there.
        if config.startswith("prism-"):
            gen.start_for(low, seconds=duration * 2 + 3, cpu=side_cpu, background=True, call_seconds=0.25)
        else:
            gen.start_for(low, seconds=duration * 2 + 3, cpu=worker_cpu, call_seconds=0.25)
        time.sleep(0.3)  # queues fill first
    cpu0 = cpuprof.read_cpu_times()
    pid = daemon.proc.pid if daemon.proc else None
    d0 = _proc_cpu_seconds(pid) if pid else 0.0
    rx0, t0 = host.containers[0].rx_packets(), time.monotonic()
    result = probe.run(params.probes, params.interval_ms / 1000)
    secs = time.monotonic() - t0
    rx = host.containers[0].rx_packets() - rx0
    cpu1 = cpuprof.read_cpu_times()
    d1 = _proc_cpu_seconds(pid) if pid else 0.0
    if load == "loaded":
        gen.stop()
    return Sample(config, load, rep, result.rtt_us, result.lost, rx / secs / 1e6 if load == "loaded" else 0.0,
                  round(100 * cpuprof.busy_fraction(cpu0, cpu1), 1),
                  round(100 * (d1 - d0) / secs, 1) if pid else None)


def report(samples: list[Sample], configs: list[str], params: BenchParams, patch_note: str, pm_qos: bool,
           out_dir: Path) -> dict[str, Any]:
    rows = []
    for config in configs:
        row: dict[str, Any] = {"config": config}
        for load in LOADS:
            mine = [s for s in samples if s.config == config and s.load == load]
            rtts = [r for s in mine for r in s.rtt_us]
            row[load] = {"p50_us": percentile(rtts, 50), "p99_us": percentile(rtts, 99),
                         "p99.9_us": percentile(rtts, 99.9), "samples": len(rtts), "lost": sum(s.lost for s in mine),
                         "cpu_busy_pct": round(statistics.mean(s.cpu_busy_pct for s in mine), 1) if mine else None,
                         "daemon_cpu_pct": (round(statistics.mean(s.daemon_cpu_pct for s in mine
                                                                  if s.daemon_cpu_pct is not None), 1)
                                            if any(s.daemon_cpu_pct is not None for s in mine) else None)}
        loaded = [s.low_mpps for s in samples if s.config == config and s.load == "loaded"]
        row["low_mpps"] = round(statistics.median(loaded), 4) if loaded else None
        row["low_mpps_runs"] = [round(x, 4) for x in loaded]
        rows.append(row)
    rep = {
        "benchmark": "A/B: kernel path vs prism_xdp, HIGH request/response under LOW load",
        "machine": {"kernel": platform.release(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "params": asdict(params) | {"pm_qos_held": pm_qos, "kernel_patch": patch_note,
                                    "probe": "raw VXLAN requests from the remote namespace, UDP echo in the container, "
                                             "replies timestamped by the remote kernel (SO_TIMESTAMPNS)",
                                    "low_load": "prism_gen at full speed; prism_xdp: on the CPU its worker does not "
                                                "use, SCHED_IDLE; kernel: at normal priority on the CPU the kernel path "
                                                "otherwise leaves idle, which then processes its frames in softirq"},
        "results": rows,
        "samples": [asdict(s) for s in samples],
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = out_dir / f"ab-{stamp}"
    base.with_suffix(".json").write_text(json.dumps(rep, indent=2))
    text = table(rows)
    base.with_suffix(".md").write_text(
        f"# A/B: kernel path vs prism_xdp\n\n{params.runs} runs x {params.probes} HIGH probes per configuration and "
        f"load, interleaved; kernel {platform.release()}; PM QoS held: {pm_qos}; {patch_note}\n\n{text}\n")
    plot(samples, configs, rows, str(base))
    rep["files"] = [str(base.with_suffix(s)) for s in (".json", ".md")] + [f"{base}-cdf.png", f"{base}-low.png"]
    rep["table"] = text
    return rep


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| configuration | idle p50 | idle p99 | loaded p50 | loaded p99 | loaded p99.9 | lost (loaded) | "
             "LOW Mpps | CPU busy % (loaded) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        i, lo = r["idle"], r["loaded"]
        lines.append(f"| {r['config']} | {i['p50_us']} | {i['p99_us']} | {lo['p50_us']} | {lo['p99_us']} | "
                     f"{lo['p99.9_us']} | {lo['lost']} | {r['low_mpps']} | {lo['cpu_busy_pct']} |")
    return "\n".join(lines) + "\n\nHIGH round trip in µs."


def plot_cdf(series: dict[str, dict[str, list[float]]], path: str) -> None:
    """One panel per load (idle, loaded), one HIGH round-trip CDF per configuration in it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(series), figsize=(11, 4), sharey=True, squeeze=False)
    for ax, (load, by_label) in zip(axes[0], series.items(), strict=True):
        for label, values in by_label.items():
            v = sorted(values)
            if v:
                ax.plot(v, [(i + 1) / len(v) for i in range(len(v))], label=label)
        ax.set_xscale("log")
        ax.set_xlabel("HIGH round trip (µs)")
        ax.set_title(f"LOW background: {load}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("fraction of probes")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot(samples: list[Sample], configs: list[str], rows: list[dict[str, Any]], base: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plot_cdf({load: {c: [r for s in samples if s.config == c and s.load == load for r in s.rtt_us]
                     for c in configs} for load in LOADS}, f"{base}-cdf.png")

    fig, ax = plt.subplots(figsize=(7, 3.5))
    names = [r["config"] for r in rows]
    ax.bar(names, [r["low_mpps"] or 0 for r in rows], color="tab:gray")
    ax.set_ylabel("LOW delivered (Mpps)")
    ax.set_title("LOW throughput under load")
    ax.tick_params(axis="x", labelrotation=20)
    fig.tight_layout()
    fig.savefig(f"{base}-low.png", dpi=120)
    plt.close(fig)
