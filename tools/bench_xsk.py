#!/usr/bin/env python3
"""bench_xsk.py - benchmark of the AF_XDP layer on veth: rx-drop and forward Mpps of the Python-driven layer next to a C reference using libxdp directly; JSON + table."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from prism_xdp.daemon.signals import cleanup_on_sigterm
from prism_xdp.dataplane import xdp
from prism_xdp.dataplane.batch import Batch
from prism_xdp.dataplane.umem import Umem
from prism_xdp.dataplane.xsk import XskSocket
from prism_xdp.lab.generator import LiveFrameGenerator
from prism_xdp.lab.packets import vxlan_packet
from prism_xdp.lab.testhost import Testbed, Uplink

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "pxb"
IDLE_STOP = 0.3  # a run ends this long after its last packet


def build_reference(out: Path) -> Path:
    exe = out / "xsk_ref"
    subprocess.run(["gcc", "-O2", "-Wall", "-Werror", "-o", str(exe), str(ROOT / "tools" / "xsk_ref.c"),
                    "-lxdp", "-lbpf"], check=True)
    return exe


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
            batch = Batch(batch_size)
            packets, first, last = 0, 0.0, 0.0
            gen.start(frame, count)
            deadline = time.monotonic() + max_s
            now = time.monotonic
            while True:
                t = now()
                if t > deadline or (last and t - last > IDLE_STOP):
                    break
                batch.clear()
                n = rx.rx(batch)
                if not n:
                    if tx is not None:
                        tx.complete()
                    continue
                if not first:
                    first = t
                last = t
                if tx is not None:
                    sent = tx.tx(batch)
                    packets += sent  # forward counts what went out
                    if sent < n:
                        batch.free(umem, sent, n - sent)
                    tx.complete()
                else:
                    packets += n
                    batch.free(umem)
                rx.fill(n)
            gen.join()
        finally:
            if tx is not None:
                tx.close()
            rx.close()
    return packets, last - first


def run_reference(exe: Path, mode: str, up: Uplink, tx_if: str, gen: LiveFrameGenerator, frame: bytes,
                  count: int, batch_size: int, max_s: float) -> tuple[int, float]:
    proc = subprocess.Popen([str(exe), mode, up.host_if, tx_if, xdp.bpf_object_path("prism_redirect"),
                             str(int(max_s)), str(batch_size)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("C reference did not start")
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
    ap.add_argument("--out", type=Path, default=ROOT / "bench-results")
    args = ap.parse_args()
    cleanup_on_sigterm()  # a killed bench still removes its namespaces and programs
    args.out.mkdir(parents=True, exist_ok=True)
    exe = build_reference(args.out)

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
                    if impl == "python":
                        n, secs = run_python(mode, up, host_c, gen, frame, args.packets, args.batch,
                                             args.max_seconds)
                    else:
                        n, secs = run_reference(exe, mode, up, host_c, gen, frame, args.packets,
                                                args.batch, args.max_seconds)
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
        "machine": {"kernel": platform.release(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "params": {"packets_per_run": args.packets, "frame_bytes": len(frame), "batch": args.batch,
                   "runs": args.runs, "statistic": "median"},
        "results": rows,
    }
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (args.out / f"xsk-{stamp}.json").write_text(json.dumps(report, indent=2))
    table = ["| test | prism_xdp (Python-driven) Mpps | C reference Mpps | ratio |", "|---|---|---|---|"]
    table += [f"| {r['test']} | {r['python_mpps']:.3f} | {r['c_reference_mpps']:.3f} | {r['ratio']:.0%} |"
              for r in rows]
    text = "\n".join(table)
    (args.out / f"xsk-{stamp}.md").write_text(
        f"# AF_XDP layer benchmark\n\n{len(frame)} B frames, batch {args.batch}, "
        f"{args.packets} packets per run, median of {args.runs}, kernel {platform.release()}\n\n{text}\n")
    print(text)
    print(f"written: {args.out}/xsk-{stamp}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
