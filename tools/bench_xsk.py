#!/usr/bin/env python3
"""bench_xsk.py - benchmark of the AF_XDP layer on veth: rx-drop and forward Mpps of the Python-driven layer next to a C reference using libxdp directly; JSON + table."""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
from pathlib import Path

from prism_xdp.dataplane import xdp
from prism_xdp.dataplane.batch import Batch
from prism_xdp.dataplane.umem import Umem
from prism_xdp.dataplane.xsk import XskSocket
from prism_xdp.lab import benchkit
from prism_xdp.lab.generator import LiveFrameGenerator
from prism_xdp.lab.packets import vxlan_packet
from prism_xdp.lab.rx import rx_until_idle
from prism_xdp.lab.testhost import Testbed, Uplink

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "pxb"


def run_python(mode: str, up: Uplink, tx_if: str, gen: LiveFrameGenerator, frame: bytes, count: int,
               batch_size: int, max_s: float) -> tuple[int, float]:
    """The layer driven from Python: one call per stage per batch."""
    with Umem() as umem, xdp.XdpProgram("prism_redirect") as prog:
        prog.attach(up.host_if)
        rx = XskSocket(umem, up.host_if, 0)
        tx = XskSocket(umem, tx_if, 0) if mode == "fwd" else None
        try:
            rx.insert_into(prog.map_fd("xsks"), 0)
            rx.fill(2048)
            gen.start(frame, count)
            result = rx_until_idle(rx, Batch(batch_size), max_s, tx=tx)
            gen.join()
        finally:
            if tx is not None:
                tx.close()
            rx.close()
    return result


def run_reference(exe: Path, mode: str, up: Uplink, tx_if: str, gen: LiveFrameGenerator, frame: bytes,
                  count: int, batch_size: int, max_s: float) -> tuple[int, float]:
    proc = benchkit.start_reference(exe, mode, up.host_if, tx_if, max_s, batch_size)
    try:
        gen.start(frame, count)
        out, _ = proc.communicate(timeout=max_s + 10)
        gen.join()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        xdp.detach_stale(up.host_if)  # in case it died before detaching
    result = json.loads(out.strip().splitlines()[-1])
    return int(result["packets"]), float(result["seconds"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--packets", type=int, default=5_000_000, help="packets the generator sends per run")
    ap.add_argument("--size", type=int, default=64, help="frame size in bytes")
    ap.add_argument("--batch", type=int, default=64, help="descriptors per batch")
    ap.add_argument("--runs", type=int, default=3, help="repetitions of each configuration")
    ap.add_argument("--max-seconds", type=float, default=20.0, help="upper bound of one run")
    args = benchkit.parse_args(ap, ROOT)
    exe = benchkit.build_reference(ROOT, args.out)

    results: dict[str, list[float]] = {}
    with Testbed() as tb:
        up = Uplink.create(tb, PREFIX)
        cns = tb.add_netns(tb.name(PREFIX, "c"))
        host_c, cont_c = tb.name(PREFIX, "h"), tb.name(PREFIX, "k")
        tb.add_veth(host_c, cont_c, None, cns)
        gen = LiveFrameGenerator(up.remote_if, up.remote_ns)
        tb.defer(gen.close)
        base = vxlan_packet(up.outer, 42, 1000, 2000)
        frame = (base + bytes(max(0, args.size - len(base))))[: max(args.size, 60)]
        # Interleave configurations so that noise falls evenly on all of them.
        for rep in range(args.runs):
            for mode in ("rxdrop", "fwd"):
                for impl in ("python", "c"):
                    run = run_python if impl == "python" else functools.partial(run_reference, exe)
                    n, secs = run(mode, up, host_c, gen, frame, args.packets, args.batch, args.max_seconds)
                    mpps = n / secs / 1e6 if secs > 0 else 0.0
                    results.setdefault(f"{mode}/{impl}", []).append(mpps)
                    print(f"run {rep + 1}/{args.runs} {mode:6} {impl:6} {n:>9} pkts in {secs:.3f} s "
                          f"= {mpps:.3f} Mpps", file=sys.stderr)

    rows = []
    for mode in ("rxdrop", "fwd"):
        py = statistics.median(results[f"{mode}/python"])
        c = statistics.median(results[f"{mode}/c"])
        rows.append({"test": mode, "python_mpps": round(py, 4), "c_reference_mpps": round(c, 4),
                     "ratio": round(py / c, 3) if c else None,
                     "python_runs": [round(x, 4) for x in results[f"{mode}/python"]],
                     "c_runs": [round(x, 4) for x in results[f"{mode}/c"]]})
    report = {
        "benchmark": "AF_XDP layer on veth (copy mode), queue 0",
        "params": {"packets_per_run": args.packets, "frame_bytes": len(frame), "batch": args.batch,
                   "runs": args.runs, "statistic": "median"},
        "results": rows,
    }
    table = ["| test | prism_xdp (Python-driven) Mpps | C reference Mpps | ratio |", "|---|---|---|---|"]
    table += [f"| {r['test']} | {r['python_mpps']:.3f} | {r['c_reference_mpps']:.3f} | {r['ratio']:.0%} |"
              for r in rows]
    benchkit.write(args.out, "xsk", report, "\n".join(table), "AF_XDP layer benchmark",
                   f"{len(frame)} B frames, batch {args.batch}, {args.packets} packets per run, median of {args.runs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
