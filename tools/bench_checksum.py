#!/usr/bin/env python3
"""bench_checksum.py - what finishing a container's TCP/UDP checksum costs per packet: writing the pseudo-header seed for the kernel's offload against summing the packet in software, next to only finding the checksum; JSON + table."""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Any

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from prism_xdp.dataplane import native
from prism_xdp.dataplane.batch import Batch
from prism_xdp.dataplane.umem import Umem, UmemParams
from prism_xdp.lab import benchkit

ROOT = Path(__file__).resolve().parents[1]
METHODS = {"find only": 0, "offload (seed)": native.CSUM_OFFLOAD, "software (sum)": native.CSUM_SOFTWARE}


def frame(proto: str, size: int) -> bytes:
    """An Ethernet frame of `size` bytes carrying IPv4 TCP or UDP."""
    l4 = TCP(sport=40000, dport=5201) if proto == "tcp" else UDP(sport=40000, dport=5201)
    head = Ether() / IP(src="10.42.0.1", dst="10.42.0.100") / l4
    return bytes(head / Raw(os.urandom(max(0, size - len(head)))))


def ns_per_packet(umem: Umem, batch: Batch, how: int, seconds: float) -> float:
    """Calls of one batch each until `seconds` pass; the batch's frames are rewritten in place."""
    csum_batch = native.csum_batch
    calls, t0 = 0, time.perf_counter()
    while True:
        for _ in range(200):
            csum_batch(umem.ptr, batch.ptr, how)
        calls += 200
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            return elapsed / (calls * batch.n) * 1e9


def run(sizes: list[int], runs: int, seconds: float, batch_size: int) -> dict:
    rows = []
    with Umem(UmemParams(frame_count=batch_size * 2, frame_size=2048), register=False) as umem:
        for proto in ("udp", "tcp"):
            for size in sizes:
                batch = Batch(batch_size)
                batch.alloc(umem, batch_size, size)
                batch.fill_with(umem, frame(proto, size))
                per: dict[str, list[float]] = {name: [] for name in METHODS}
                for _ in range(runs):  # interleaved, so drift hits every method alike
                    for name, how in METHODS.items():
                        per[name].append(ns_per_packet(umem, batch, how, seconds))
                row: dict[str, Any] = {"proto": proto, "frame_bytes": size}
                for name, values in per.items():
                    row[name] = {"median_ns": round(statistics.median(values), 1),
                                 "runs_ns": [round(v, 1) for v in values]}
                rows.append(row)
                batch.drop_all(umem)
    return {"benchmark": "checksum cost per packet (C, one batch per call, frames in memory)",
            "params": {"runs": runs, "seconds_per_run": seconds, "batch": batch_size},
            "results": rows}


def table(rep: dict) -> str:
    names = list(METHODS)
    lines = ["| packet | " + " | ".join(f"{n} ns" for n in names) + " | offload over find | software over find |",
             "|---|" + "---|" * (len(names) + 2)]
    for r in rep["results"]:
        base = r["find only"]["median_ns"]
        cells = [str(r[n]["median_ns"]) for n in names]
        lines.append(f"| {r['proto']} {r['frame_bytes']} B | " + " | ".join(cells) +
                     f" | {r['offload (seed)']['median_ns'] - base:+.1f} | {r['software (sum)']['median_ns'] - base:+.1f} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", default="64,512,1400,1464", help="frame sizes in bytes")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=0.2, help="per run and method")
    ap.add_argument("--batch", type=int, default=64)
    args = benchkit.parse_args(ap, ROOT)
    rep = run([int(s) for s in args.sizes.split(",")], args.runs, args.seconds, args.batch)
    benchkit.write(args.out, "checksum", rep, table(rep), "Checksum cost per packet")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
