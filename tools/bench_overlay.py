#!/usr/bin/env python3
"""bench_overlay.py - overlay throughput on veth: UDP in VXLAN from the remote namespace to a container, packets per second through prism_xdp next to the kernel's own VXLAN + bridge path on the same topology, in the same run; JSON + table."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from prism_xdp.dataplane.datapath import Datapath, DatapathParams, Runner
from prism_xdp.lab import benchkit
from prism_xdp.lab.generator import LiveFrameGenerator
from prism_xdp.lab.packets import Outer, encapsulate
from prism_xdp.lab.testhost import OverlayHost, Testbed, add_kernel_overlay, create_overlay_host

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "pxo"


def frame_for(host: OverlayHost, inner_size: int) -> bytes:
    """A VXLAN packet from the remote VTEP carrying an inner frame of inner_size bytes to container 0."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    from scapy.packet import Raw

    up, c = host.uplink, host.containers[0]
    inner_hdr = Ether(src="02:00:00:00:ee:01", dst=c.mac) / IP(src=host.remote_overlay_ip, dst=c.ip) / UDP(
        sport=40000, dport=9)
    inner = inner_hdr / Raw(bytes(max(0, inner_size - len(inner_hdr))))
    outer = Outer(up.remote_mac, up.host_mac, up.remote_ip, up.host_ip)
    return encapsulate(outer, inner, host.vni)


def measure(host: OverlayHost, gen: LiveFrameGenerator, frame: bytes, count: int) -> tuple[int, float]:
    """(packets delivered to the container, seconds the generator took to send count)."""
    c = host.containers[0]
    before = c.rx_packets()
    t0 = time.monotonic()
    gen.send(frame, count)
    seconds = time.monotonic() - t0
    time.sleep(0.3)  # what is still in rings and queues arrives
    return c.rx_packets() - before, seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--packets", type=int, default=4_000_000, help="packets the generator sends per run")
    ap.add_argument("--sizes", default="64,1400", help="inner frame sizes in bytes, comma-separated")
    ap.add_argument("--runs", type=int, default=3, help="repetitions of each configuration")
    args = benchkit.parse_args(ap, ROOT)
    sizes = [int(s) for s in args.sizes.split(",")]

    results: dict[str, list[dict[str, float]]] = {}
    with Testbed() as tb:
        host = create_overlay_host(tb, PREFIX, containers=1)
        add_kernel_overlay(tb, host, PREFIX)
        gen = LiveFrameGenerator(host.uplink.remote_if, host.remote_ns)
        tb.defer(gen.close)
        for rep in range(args.runs):  # interleaved, so noise falls evenly
            for size in sizes:
                frame = frame_for(host, size)
                for path in ("kernel", "prism_xdp"):
                    if path == "kernel":
                        n, secs = measure(host, gen, frame, args.packets)
                    else:
                        with Datapath(DatapathParams(host.uplink.host_if), host.specs(), host.vteps()) as dp, \
                                Runner(dp):
                            n, secs = measure(host, gen, frame, args.packets)
                    mpps = n / secs / 1e6
                    results.setdefault(f"{path}/{size}", []).append(
                        {"delivered": n, "seconds": secs, "mpps": mpps, "sent_mpps": args.packets / secs / 1e6})
                    print(f"run {rep + 1}/{args.runs} {size:5} B {path:9} {n:>9} of {args.packets} delivered, "
                          f"{mpps:.3f} Mpps (offered {args.packets / secs / 1e6:.2f})", file=sys.stderr)

    rows = []
    for size in sizes:
        k = statistics.median(r["mpps"] for r in results[f"kernel/{size}"])
        p = statistics.median(r["mpps"] for r in results[f"prism_xdp/{size}"])
        rows.append({"inner_bytes": size, "kernel_mpps": round(k, 4), "prism_xdp_mpps": round(p, 4),
                     "kernel_gbps": round(k * size * 8 / 1e3, 3), "prism_xdp_gbps": round(p * size * 8 / 1e3, 3),
                     "ratio": round(p / k, 2) if k else None,
                     "runs": {path: results[f"{path}/{size}"] for path in ("kernel", "prism_xdp")}})
    report = {
        "benchmark": "overlay throughput: remote VXLAN -> container, veth, one queue",
        "params": {"packets_per_run": args.packets, "runs": args.runs, "statistic": "median",
                   "measured_at": "container interface rx_packets; rate = delivered / generator send time",
                   "kernel_path": "VXLAN device + bridge + veth, GRO on the uplink veth",
                   "prism_xdp": "batch 64, busy loop on one thread, copy mode"},
        "results": rows,
    }
    table = ["| inner frame | kernel Mpps | prism_xdp Mpps | kernel Gbit/s | prism_xdp Gbit/s | prism_xdp / kernel |",
             "|---|---|---|---|---|---|"]
    table += [f"| {r['inner_bytes']} B | {r['kernel_mpps']:.3f} | {r['prism_xdp_mpps']:.3f} | {r['kernel_gbps']:.2f} | "
              f"{r['prism_xdp_gbps']:.2f} | {r['ratio']:.2f}x |" for r in rows]
    benchkit.write(args.out, "overlay", report, "\n".join(table), "Overlay throughput",
                   f"{args.packets} packets per run, median of {args.runs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
