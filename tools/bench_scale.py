#!/usr/bin/env python3
"""bench_scale.py - prism_xdp with 1, 16, 64 and 256 containers on one worker: the LOW rate delivered to the last container under a saturating load, then a HIGH flow's round trip to the first one under the same load; JSON + table (our own generator and probe: a component benchmark)."""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from prism_xdp.dataplane.datapath import Datapath, DatapathParams, Runner
from prism_xdp.dataplane.snooping import SnoopingParams
from prism_xdp.lab import benchkit, cpuprof
from prism_xdp.lab.benchkit import percentile
from prism_xdp.lab.generator import LiveFrameGenerator
from prism_xdp.lab.inject import Flow, build
from prism_xdp.lab.probe import pm_qos_low_latency
from prism_xdp.lab.testhost import Testbed, create_overlay_host

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "pxk"
HIGH_PORT = 7000
LOW_PORT = 9


def _profile_into(box: dict[str, object], seconds: float, datafile: Path) -> None:
    box["p"] = cpuprof.profile(seconds, datafile)


def wait_pruning(dp: Datapath, timeout: float = 10.0) -> None:
    """Measure as the daemon runs once started: with snooping, after its query was answered."""
    deadline = time.monotonic() + timeout
    while dp.snooping is not None and not dp.snooping.pruning(time.monotonic_ns()):
        if time.monotonic() > deadline:
            raise RuntimeError("MLD snooping did not start pruning")
        time.sleep(0.1)


def one_size(n: int, args: argparse.Namespace) -> dict[str, object]:
    """A fresh test host with n containers; HIGH probes to the first, LOW frames to the last."""
    t_setup = time.monotonic()
    with Testbed() as tb:
        host = create_overlay_host(tb, PREFIX, containers=n, container_ipv6=args.container_ipv6 == "on")
        first, last = host.containers[0], host.containers[-1]
        benchkit.udp_echo(tb, first, HIGH_PORT, 600)
        gen = LiveFrameGenerator(host.uplink.remote_if, host.remote_ns)
        tb.defer(gen.close)
        frame = build(host, Flow("low", LOW_PORT, container=n - 1), 64)
        params = DatapathParams(host.uplink.host_if, mode=args.mode, container_fill=args.container_fill,
                                cpu=args.worker_cpu, snooping=SnoopingParams() if args.snooping == "on" else None)
        with Datapath(params, host.specs(), host.vteps()) as dp, Runner(dp):
            setup_s = time.monotonic() - t_setup
            wait_pruning(dp)
            dp.set_port(HIGH_PORT)
            probe = benchkit.rtt_probe(tb, host, HIGH_PORT)
            rates, rtts, lost = [], [], 0
            profile = None
            for _ in range(args.runs):
                with benchkit.background_load(gen, frame, 2 * args.seconds + 2, args.gen_cpu):
                    # The rate first, with no probe running: the probe is Python in this process and
                    # would take the interpreter from the worker's thread.
                    before, t0 = last.rx_packets(), time.monotonic()
                    time.sleep(args.seconds)
                    rates.append((last.rx_packets() - before) / (time.monotonic() - t0) / 1e6)
                    if args.profile and not rates[1:]:  # once per size, during the first run's probes
                        box: dict[str, object] = {}
                        datafile = Path(tempfile.gettempdir()) / f"pxk-perf-{os.getpid()}.data"
                        prof = threading.Thread(target=functools.partial(_profile_into, box, args.profile, datafile))
                        prof.start()
                    result = probe.run(int(args.seconds * 1000 / args.interval_ms), args.interval_ms / 1000)
                    if args.profile and not rates[1:]:
                        prof.join()
                        profile = box.get("p")
                rtts.extend(result.rtt_us)
                lost += result.lost
    return {"containers": n, "sockets": 2 * (n + 1), "setup_s": round(setup_s, 1),
            "low_mpps": round(statistics.median(rates), 4), "low_mpps_runs": [round(r, 4) for r in rates],
            "high_p50_us": percentile(rtts, 50), "high_p99_us": percentile(rtts, 99),
            "high_samples": len(rtts), "high_lost": lost, "profile": profile}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", default="1,16,64,256", help="container counts")
    ap.add_argument("--mode", default="sync", choices=("vanilla", "batch", "sync"))
    ap.add_argument("--container-ipv6", default="on", choices=("on", "off"),
                    help="on: the kernel's default in every container namespace (link-local IPv6, whose "
                         "solicitations and MLD reports the VNI floods to every container); off: as Docker "
                         "leaves a container on an IPv4-only network")
    ap.add_argument("--snooping", default="on", choices=("on", "off"),
                    help="MLD snooping (the daemon's default: on): a group's frames to its members only; "
                         "off: flooded to every container of the VNI, as a bridge without snooping does")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=2.0, help="per run")
    ap.add_argument("--interval-ms", type=float, default=1.0, help="at most one HIGH probe per interval")
    ap.add_argument("--container-fill", type=int, default=64,
                    help="frames on each container veth's fill ring (64: 256 containers fit one UMEM)")
    ap.add_argument("--profile", type=float, default=0.0,
                    help="seconds of a system-wide perf profile during each size's first HIGH probes")
    args = benchkit.parse_args(ap, ROOT)
    cpus = sorted(os.sched_getaffinity(0))
    # The same placement for every size: the worker on the last CPU; the generator (yielding
    # to everything, SCHED_IDLE), the probe and the echo on the first.
    args.worker_cpu, args.gen_cpu = cpus[-1], cpus[0]
    os.sched_setaffinity(0, {args.gen_cpu})
    rows = []
    with pm_qos_low_latency() as pm_qos:
        for n in (int(s) for s in args.sizes.split(",")):
            rows.append(one_size(n, args))
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "profile"}), file=sys.stderr)
            if rows[-1]["profile"]:
                print("\n".join(cpuprof.format_profile(rows[-1]["profile"])), file=sys.stderr)  # type: ignore[arg-type]
    base = rows[0]
    for r in rows:
        r["rate_vs_first"] = round(float(r["low_mpps"]) / max(1e-9, float(base["low_mpps"])), 2)  # type: ignore[arg-type]
        r["p99_vs_first"] = round(float(r["high_p99_us"]) / max(1e-9, float(base["high_p99_us"])), 2)  # type: ignore[arg-type]
    report = {"benchmark": "scale: containers per worker, LOW rate to the last container and HIGH RTT to the first",
              "params": vars(args) | {"out": str(args.out), "pm_qos_held": pm_qos,
                                      "load": "prism_gen 64 B frames at full speed to the last container",
                                      "probe": "raw VXLAN UDP requests to a UDP echo in the first container"},
              "results": rows}
    lines = ["| containers | sockets | LOW Mpps (median) | vs first | HIGH p50 µs | HIGH p99 µs | p99 vs first | lost |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['containers']} | {r['sockets']} | {r['low_mpps']} | {r['rate_vs_first']} | {r['high_p50_us']} | "
              f"{r['high_p99_us']} | {r['p99_vs_first']} | {r['high_lost']} |" for r in rows]
    benchkit.write(args.out, "scale", report, "\n".join(lines), f"Scale: containers per worker ({args.mode}, container IPv6 {args.container_ipv6})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
