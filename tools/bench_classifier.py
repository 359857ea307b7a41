#!/usr/bin/env python3
"""bench_classifier.py - the classifier's cost: prism_steer with 1/100/10 000 port rules next to prism_redirect (no parsing), as ns per packet in the kernel and as packets per second through XDP -> XSK; JSON + table."""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from prism_xdp.dataplane import native, xdp
from prism_xdp.dataplane.batch import Batch
from prism_xdp.dataplane.steer import Steering
from prism_xdp.dataplane.umem import Umem
from prism_xdp.dataplane.xsk import XskSocket
from prism_xdp.lab import benchkit
from prism_xdp.lab.generator import LiveFrameGenerator
from prism_xdp.lab.packets import vxlan_packet
from prism_xdp.lab.rx import rx_until_idle
from prism_xdp.lab.testhost import Testbed, Uplink

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "pxc"
HIGH_PORT = 5001  # the probe's port, always among the rules


def rule_ports(n: int) -> list[int]:
    """n distinct ports including HIGH_PORT, spread over the port space."""
    ports = {HIGH_PORT}
    step = max(1, 60000 // n)
    p = 1024
    while len(ports) < n:
        ports.add(p)
        p += step
    return sorted(ports)


def make_program(config: str) -> tuple[xdp.XdpProgram, Steering | None]:
    if config == "redirect":
        return xdp.XdpProgram("prism_redirect"), None
    steer = Steering()
    for port in rule_ports(int(config.split("-")[1])):
        steer.set_port(port, native.PRISM_CLASS_HIGH)
    return steer.prog, steer


def program_ns(prog: xdp.XdpProgram, frame: bytes, repeat: int) -> float:
    """Average run time of the program over the frame, measured by the kernel."""
    duration, _verdict = native.prog_run_test(prog.fd, frame, repeat)
    return float(duration)


def rxdrop_mpps(config: str, up: Uplink, gen: LiveFrameGenerator, frame: bytes, count: int,
                max_s: float) -> float:
    """Frames the generator sends through the program into one socket, received and dropped."""
    prog, steer = make_program(config)
    with Umem() as umem:
        try:
            prog.attach(up.host_if)
            rx = XskSocket(umem, up.host_if, 0)
            try:
                if steer is not None:
                    steer.add_socket(rx, native.PRISM_CLASS_LOW)
                    steer.add_socket(rx, native.PRISM_CLASS_HIGH)
                else:
                    rx.insert_into(prog.map_fd("xsks"), 0)
                rx.fill(2048)
                gen.start(frame, count)
                packets, seconds = rx_until_idle(rx, Batch(64), max_s)
                gen.join()
            finally:
                rx.close()
        finally:
            prog.close()
    return packets / seconds / 1e6 if seconds > 0 else 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--packets", type=int, default=3_000_000, help="packets per end-to-end run")
    ap.add_argument("--repeat", type=int, default=2_000_000, help="program runs per in-kernel timing")
    ap.add_argument("--runs", type=int, default=3, help="repetitions of each configuration")
    ap.add_argument("--max-seconds", type=float, default=20.0, help="upper bound of one run")
    args = benchkit.parse_args(ap, ROOT)
    configs = ["redirect", "ports-1", "ports-100", "ports-10000"]

    ns_low: dict[str, list[float]] = {c: [] for c in configs}
    ns_high: dict[str, list[float]] = {c: [] for c in configs}
    mpps: dict[str, list[float]] = {c: [] for c in configs}
    with Testbed() as tb:
        up = Uplink.create(tb, PREFIX)
        gen = LiveFrameGenerator(up.remote_if, up.remote_ns)
        tb.defer(gen.close)
        low = vxlan_packet(up.outer, 42, 40000, 2000)
        high = vxlan_packet(up.outer, 42, 40000, HIGH_PORT)
        for rep in range(args.runs):  # interleaved, so noise falls on all configurations
            for config in configs:
                prog, _ = make_program(config)
                try:
                    ns_low[config].append(program_ns(prog, low, args.repeat))
                    ns_high[config].append(program_ns(prog, high, args.repeat))
                finally:
                    prog.close()
                mpps[config].append(rxdrop_mpps(config, up, gen, low, args.packets, args.max_seconds))
                print(f"run {rep + 1}/{args.runs} {config:12} {ns_low[config][-1]:6.1f} ns low "
                      f"{ns_high[config][-1]:6.1f} ns high {mpps[config][-1]:7.3f} Mpps", file=sys.stderr)

    base_ns = statistics.median(ns_low["redirect"])
    base_mpps = statistics.median(mpps["redirect"])
    rows = []
    for c in configs:
        lo, hi, m = statistics.median(ns_low[c]), statistics.median(ns_high[c]), statistics.median(mpps[c])
        rows.append({"program": c, "ns_per_packet_low": round(lo, 1), "ns_per_packet_high": round(hi, 1),
                     "extra_ns_vs_redirect": round(lo - base_ns, 1), "rxdrop_mpps": round(m, 3),
                     "mpps_ratio_vs_redirect": round(m / base_mpps, 3) if base_mpps else None,
                     "runs_ns_low": ns_low[c], "runs_mpps": [round(x, 3) for x in mpps[c]]})
    report = {
        "benchmark": "classifier cost: prism_steer vs prism_redirect on veth, queue 0",
        "params": {"frame_bytes": len(low), "packets_per_run": args.packets, "repeat": args.repeat,
                   "runs": args.runs, "statistic": "median"},
        "results": rows,
    }
    table = ["| program | ns/packet LOW | ns/packet HIGH | extra ns vs redirect | XDP->XSK Mpps | vs redirect |",
             "|---|---|---|---|---|---|"]
    table += [f"| {r['program']} | {r['ns_per_packet_low']:.1f} | {r['ns_per_packet_high']:.1f} | "
              f"{r['extra_ns_vs_redirect']:+.1f} | {r['rxdrop_mpps']:.3f} | {r['mpps_ratio_vs_redirect']:.0%} |"
              for r in rows]
    benchkit.write(args.out, "classifier", report, "\n".join(table), "Classifier cost",
                   f"{len(low)} B VXLAN frames, median of {args.runs}. ns/packet: BPF_PROG_RUN average over "
                   f"{args.repeat} runs (no redirect done). Mpps: live frames through XDP into one AF_XDP socket, "
                   "received and dropped.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
