#!/usr/bin/env python3
"""bench_perf.py - the performance benchmark of issue 8, one run on one test host: the kernel VXLAN + bridge path, prism_xdp in each mode (the daemon) and a C reference (libxdp, no Python) delivering the same inner frames; 64 and 1400 bytes, 1 and 2 queues; Mpps, Gbit/s, CPU seconds per million packets, ratios; the daemon's memory; JSON + table."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from prism_xdp import topo, xdp
from prism_xdp.abbench import PrismDaemon
from prism_xdp.generator import LiveFrameGenerator
from prism_xdp.inject import Flow, build
from prism_xdp.procinfo import pss_mb, rss_sum_mb
from prism_xdp.topology import OverlayHost, container_rx_packets, set_rps

ROOT = Path(__file__).resolve().parents[1]
NAME = "pxp"
CONFIGS = ("kernel", "prism-vanilla", "prism-batch", "prism-sync", "c-reference")


def cpu_busy_seconds() -> float:
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def measure(host: OverlayHost, gens: list[tuple[LiveFrameGenerator, int]], frame: bytes, seconds: float,
            warmup: float = 0.4) -> tuple[float, float]:
    """(delivered Mpps at the container, CPU seconds per million delivered) over a window of steady load."""
    for gen, cpu in gens:
        gen.start_for(frame, seconds=warmup + seconds + 1, cpu=cpu)
    time.sleep(warmup)
    rx0, cpu0, t0 = container_rx_packets(host.containers[0]), cpu_busy_seconds(), time.monotonic()
    time.sleep(seconds)
    rx1, cpu1, t1 = container_rx_packets(host.containers[0]), cpu_busy_seconds(), time.monotonic()
    for gen, _ in gens:
        gen.stop()
    delivered = rx1 - rx0
    return delivered / (t1 - t0) / 1e6, (cpu1 - cpu0) / max(1, delivered) * 1e6


def reference(exe: Path, host: OverlayHost, cpu: int, seconds: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen([str(exe), "decap", host.uplink.host_if, host.containers[0].host_if,
                             xdp.bpf_object_path("prism_redirect"), str(int(seconds + 5)), "64"],
                            stdout=subprocess.PIPE, text=True, preexec_fn=lambda: os.sched_setaffinity(0, {cpu}))
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        raise RuntimeError("C reference did not start")
    return proc


def measure_memory(cpu: int) -> dict[str, float]:
    """The daemon's resident size with 1 and 4 queues, and what a container adds."""
    out = {}
    for queues, containers in ((1, 1), (4, 1), (4, 4)):
        topo.down(NAME)
        state, _ = topo.up(topo.TopoSpec(NAME, containers=containers, queues=queues, kernel_path=False))
        workdir = Path(tempfile.mkdtemp(prefix="pxp-"))
        daemon = PrismDaemon(state, workdir, cpu)
        # Idle workers, as many as queues; blocking so that they do not fight over 2 CPUs.
        daemon.config.write_text(daemon.config.read_text().replace(f"cpus = {[cpu] * queues}",
                                                                   'poll = "blocking"'))
        try:
            daemon.start()
            time.sleep(1.0)
            key = f"queues={queues},containers={containers}"
            out[key] = round(pss_mb(daemon.proc.pid), 1)  # type: ignore[union-attr]
            out[key + ",rss_sum"] = round(rss_sum_mb(daemon.proc.pid), 1)  # type: ignore[union-attr]
        finally:
            daemon.stop()
            for f in workdir.iterdir():
                f.unlink()
            workdir.rmdir()
            topo.down(NAME)
    out["per_container"] = round((out["queues=4,containers=4"] - out["queues=4,containers=1"]) / 3, 1)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=2.0, help="measurement window per configuration")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--sizes", default="64,1400")
    ap.add_argument("--queues", default="1,2")
    ap.add_argument("--container-rps", default="0",
                    help="hex CPU mask for the container's receive processing (RPS), the same for every "
                         "configuration; 0 = off (stock)")
    ap.add_argument("--no-memory", action="store_true", help="skip the daemon memory measurement")
    ap.add_argument("--out", type=Path, default=ROOT / "bench-results")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    exe = args.out / "xsk_ref"
    subprocess.run(["gcc", "-O2", "-Wall", "-Werror", "-o", str(exe), str(ROOT / "tools" / "xsk_ref.c"), "-lxdp",
                    "-lbpf"], check=True)
    cpus = sorted(os.sched_getaffinity(0))
    worker_cpu, side_cpu = cpus[-1], cpus[0]
    sizes = [int(s) for s in args.sizes.split(",")]
    results: dict[str, list[tuple[float, float]]] = {}
    memory: dict[str, float] = {}
    os.sched_setaffinity(0, {side_cpu})  # this process and what it starts stay off the worker's CPU
    for queues in (int(q) for q in args.queues.split(",")):
        topo.down(NAME)
        state, _ = topo.up(topo.TopoSpec(NAME, containers=1, queues=queues))
        host = topo.host_of(state)
        set_rps(host.containers[0], args.container_rps)
        workdir = Path(tempfile.mkdtemp(prefix="pxp-"))
        # One generator per queue, each on its own CPU: veth hands a frame to the
        # receive queue of the CPU that sends it.
        gens = [(LiveFrameGenerator(host.uplink.remote_if, host.remote_ns), cpus[q % len(cpus)])
                for q in range(queues)]
        worker_cpus = [worker_cpu] if queues == 1 else [cpus[q % len(cpus)] for q in range(queues)]
        daemon = PrismDaemon(state, workdir, worker_cpu)
        daemon.config.write_text(daemon.config.read_text().replace(f"cpus = {[worker_cpu] * queues}",
                                                                   f"cpus = {worker_cpus}"))
        try:
            for rep in range(args.runs):
                for size in sizes:
                    frame = build(host, Flow("low", 9), size)
                    for config in CONFIGS:
                        ref = None
                        if config.startswith("prism-"):
                            daemon.start()
                            daemon.call("mode-set", mode=config.split("-", 1)[1])
                            if config == "prism-batch" and size == sizes[0] and rep == 0:
                                memory[f"queues={queues}"] = round(pss_mb(daemon.proc.pid), 1)  # type: ignore[union-attr]
                        else:
                            daemon.stop()
                            if config == "c-reference":
                                if queues > 1:
                                    continue  # the reference serves queue 0 only
                                ref = reference(exe, host, worker_cpu, args.seconds + 2)
                        mpps, cpu_per_m = measure(host, gens, frame, args.seconds)
                        if ref is not None:
                            ref.wait(15)  # it stops 300 ms after the last packet and detaches
                            xdp.detach_stale(host.uplink.host_if)
                        key = f"{config}/{size}/{queues}"
                        results.setdefault(key, []).append((mpps, cpu_per_m))
                        print(f"run {rep + 1}/{args.runs} q{queues} {size:5} B {config:14} {mpps:7.3f} Mpps "
                              f"{cpu_per_m:6.2f} CPU-s/Mpkt", file=sys.stderr)
        finally:
            daemon.stop()
            for gen, _ in gens:
                gen.close()
            for f in workdir.iterdir():
                f.unlink()
            workdir.rmdir()
            topo.down(NAME)

    rows = []
    for key, vals in results.items():
        config, size, queues = key.split("/")
        mpps = statistics.median(v[0] for v in vals)
        rows.append({"config": config, "bytes": int(size), "queues": int(queues), "mpps": round(mpps, 4),
                     "gbps": round(mpps * int(size) * 8 / 1e3, 3),
                     "cpu_s_per_mpkt": round(statistics.median(v[1] for v in vals), 3),
                     "runs_mpps": [round(v[0], 4) for v in vals]})
    by = {(r["config"], r["bytes"], r["queues"]): r for r in rows}
    for r in rows:
        ref = by.get(("c-reference", r["bytes"], 1))
        kern = by.get(("kernel", r["bytes"], r["queues"]))
        r["vs_c_reference"] = round(r["mpps"] / ref["mpps"], 2) if ref and ref["mpps"] else None
        r["vs_kernel"] = round(r["mpps"] / kern["mpps"], 2) if kern and kern["mpps"] else None
    if not args.no_memory:
        memory.update(measure_memory(side_cpu))
    report = {"benchmark": "issue 8: kernel path vs prism_xdp vs C reference, same topology, one run",
              "machine": {"kernel": platform.release(), "cpus": os.cpu_count(), "python": platform.python_version()},
              "params": {"seconds": args.seconds, "runs": args.runs, "statistic": "median",
                         "generator": "prism_gen (BPF_PROG_RUN live frames), one per queue, pinned",
                         "worker_cpu": worker_cpu, "measured_at": "container interface rx_packets",
                         "container_rps_mask": args.container_rps,
                         "c_reference": "tools/xsk_ref.c decap: uplink socket -> container veth socket, same UMEM, "
                                        "descriptor moved past the outer headers, libxdp, no Python"},
              "results": rows, "daemon_rss_mb": memory}
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (args.out / f"perf-{stamp}.json").write_text(json.dumps(report, indent=2))
    lines = ["| config | bytes | queues | Mpps | Gbit/s | CPU s / Mpkt | vs C ref | vs kernel |",
             "|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["queues"], r["bytes"], CONFIGS.index(r["config"]))):
        lines.append(f"| {r['config']} | {r['bytes']} | {r['queues']} | {r['mpps']:.3f} | {r['gbps']:.2f} | "
                     f"{r['cpu_s_per_mpkt']:.2f} | {r['vs_c_reference']} | {r['vs_kernel']} |")
    text = "\n".join(lines) + f"\n\ncontainer RPS mask: {args.container_rps}; daemon memory (MB): {memory}"
    (args.out / f"perf-{stamp}.md").write_text(f"# Performance\n\n{text}\n")
    print(text)
    print(f"written: {args.out}/perf-{stamp}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
