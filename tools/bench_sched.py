#!/usr/bin/env python3
"""bench_sched.py - the scheduling modes compared: HIGH round-trip latency (p50/p99/p99.9) with and without saturating LOW background, and LOW throughput, for vanilla, batch and sync; JSON, a table and a latency CDF plot."""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import statistics
import sys
import time
from pathlib import Path

from prism_xdp.dataplane.datapath import Datapath, DatapathParams, Runner
from prism_xdp.lab import benchkit
from prism_xdp.lab.benchkit import percentile
from prism_xdp.lab.generator import LiveFrameGenerator
from prism_xdp.lab.inject import Flow, build
from prism_xdp.lab.probe import pm_qos_low_latency
from prism_xdp.lab.testhost import Testbed, create_overlay_host

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "pxm"
HIGH_PORT = 7000
MODES = ("vanilla", "batch", "sync")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--probes", type=int, default=1000, help="HIGH ping-pongs per measurement")
    ap.add_argument("--interval-ms", type=float, default=1.0, help="at most one probe per interval")
    ap.add_argument("--low-size", type=int, default=64, help="LOW background frame size (inner bytes)")
    ap.add_argument("--runs", type=int, default=3, help="repetitions, interleaved")
    args = benchkit.parse_args(ap, ROOT)
    cpus = sorted(os.sched_getaffinity(0))
    worker_cpu, gen_cpu = cpus[-1], cpus[0]

    os.sched_setaffinity(0, {gen_cpu})  # all but the worker thread (which pins itself) on the other CPU
    rtts: dict[str, list[float]] = {}
    lost: dict[str, int] = {}
    low_mpps: dict[str, list[float]] = {}
    with Testbed() as tb, pm_qos_low_latency() as pm_qos:
        host = create_overlay_host(tb, PREFIX, containers=1)
        c = host.containers[0]
        seconds = args.probes * args.interval_ms / 1000 * 3 * len(MODES) * args.runs + 60
        benchkit.udp_echo(tb, c, HIGH_PORT, seconds, cpu=gen_cpu)
        gen = LiveFrameGenerator(host.uplink.remote_if, host.remote_ns)
        tb.defer(gen.close)
        frame = build(host, Flow("low", 9), args.low_size)
        params = DatapathParams(host.uplink.host_if, mode="vanilla", cpu=worker_cpu)
        with Datapath(params, host.specs(), host.vteps()) as dp, Runner(dp):
            dp.set_port(HIGH_PORT)
            probe = benchkit.rtt_probe(tb, host, HIGH_PORT)
            for rep in range(args.runs):
                for load in ("idle", "loaded"):
                    for mode in MODES:
                        key = f"{mode}/{load}"
                        dp.run_on_worker(functools.partial(dp.switch_mode, mode))
                        background = benchkit.background_load(
                            gen, frame, args.probes * args.interval_ms / 1000 * 2 + 2, gen_cpu) \
                            if load == "loaded" else contextlib.nullcontext()
                        with background:
                            before, t0 = c.rx_packets(), time.monotonic()
                            result = probe.run(args.probes, args.interval_ms / 1000)
                            delivered, secs = c.rx_packets() - before, time.monotonic() - t0
                        if load == "loaded":
                            low_mpps.setdefault(mode, []).append(delivered / secs / 1e6)
                        rtts.setdefault(key, []).extend(result.rtt_us)
                        lost[key] = lost.get(key, 0) + result.lost
                        print(f"run {rep + 1}/{args.runs} {key:15} p50 {percentile(result.rtt_us, 50):8.1f} µs  "
                              f"p99 {percentile(result.rtt_us, 99):8.1f} µs  lost {result.lost:4}  "
                              f"LOW {delivered / secs / 1e6:.3f} Mpps", file=sys.stderr)

    rows = []
    for mode in MODES:
        row: dict[str, object] = {"mode": mode}
        for load in ("idle", "loaded"):
            v = rtts.get(f"{mode}/{load}", [])
            row[load] = {"p50_us": percentile(v, 50), "p99_us": percentile(v, 99), "p99.9_us": percentile(v, 99.9),
                         "samples": len(v), "lost": lost.get(f"{mode}/{load}", 0)}
        row["low_mpps"] = round(statistics.median(low_mpps[mode]), 4)
        row["low_mpps_runs"] = [round(x, 4) for x in low_mpps[mode]]
        rows.append(row)
    by = {r["mode"]: r for r in rows}

    def p99(mode: str, load: str) -> float:
        return float(by[mode][load]["p99_us"])  # type: ignore[index]

    targets = {
        "sync_loaded_p99_le_2x_idle": p99("sync", "loaded") <= 2 * p99("sync", "idle"),
        "sync_loaded_p99_le_half_vanilla": p99("sync", "loaded") <= 0.5 * p99("vanilla", "loaded"),
        "batch_low_throughput_ge_90pct_vanilla": float(by["batch"]["low_mpps"]) >= 0.9 * float(by["vanilla"]["low_mpps"]),  # type: ignore[arg-type]
    }
    report = {
        "benchmark": "scheduling modes: HIGH RTT with/without saturating LOW, LOW throughput",
        "params": {"probes": args.probes, "interval_ms": args.interval_ms, "low_frame_bytes": args.low_size,
                   "low_load": "prism_gen at full speed on its own CPU, SCHED_IDLE",
                   "runs": args.runs, "pm_qos_held": pm_qos, "worker_cpu": worker_cpu, "generator_cpu": gen_cpu,
                   "probe": "raw VXLAN request from the remote namespace, UDP echo in the container, "
                            "reply timestamped by the remote kernel"},
        "results": rows,
        "targets": targets,
    }
    table = ["| mode | idle p50 | idle p99 | idle p99.9 | loaded p50 | loaded p99 | loaded p99.9 | LOW Mpps |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        i, lo = r["idle"], r["loaded"]
        table.append(f"| {r['mode']} | {i['p50_us']} | {i['p99_us']} | {i['p99.9_us']} | {lo['p50_us']} | "  # type: ignore[index]
                     f"{lo['p99_us']} | {lo['p99.9_us']} | {r['low_mpps']:.3f} |")  # type: ignore[index]
    text = "\n".join(table) + "\n\nTargets: " + ", ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in targets.items())
    base = benchkit.write(args.out, "sched", report, text, "Scheduling modes",
                          f"HIGH round trip in µs, {args.runs} runs x {args.probes} probes")
    benchkit.plot_cdf({load: {m: rtts.get(f"{m}/{load}", []) for m in MODES} for load in ("idle", "loaded")},
                      base.with_suffix(".png"), "HIGH round trip (µs)", "LOW background: {}")
    print(f"written: {base}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
