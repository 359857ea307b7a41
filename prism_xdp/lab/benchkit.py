"""benchkit.py - the harness of the component benchmarks (tools/bench_*.py): options and output directory, the machine, nearest-rank percentiles, the C reference, a background load, a UDP echo and a probe on a test host, the result files (JSON + a markdown table) and a latency CDF plot; their RX loop is rx.rx_until_idle."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from prism_xdp.daemon.signals import cleanup_on_sigterm
from prism_xdp.dataplane import xdp
from prism_xdp.lab.bench.samples import nearest_rank
from prism_xdp.lab.generator import LiveFrameGenerator
from prism_xdp.lab.probe import RttProbe
from prism_xdp.lab.testhost import Container, OverlayHost, Testbed, popen_in

LOAD_CALL_S = 0.25  # a background load's BPF_PROG_RUN calls: short, so that stop() is prompt
LOAD_LEAD_S = 0.3  # a background load runs this long before anything is measured: rings full first


# ---- options, machine, results ---------------------------------------------------------

def parse_args(ap: argparse.ArgumentParser, root: Path) -> argparse.Namespace:
    """The bench's options with --out (default: bench-results/ in the checkout) added last;
    the output directory made. A bench killed with SIGTERM still removes its namespaces and
    programs (the Testbed's cleanup runs)."""
    ap.add_argument("--out", type=Path, default=root / "bench-results")
    args = ap.parse_args()
    cleanup_on_sigterm()
    args.out.mkdir(parents=True, exist_ok=True)
    return args


def machine() -> dict[str, Any]:
    """Where and when a result was measured."""
    return {"kernel": platform.release(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %z")}


def write(out: Path, kind: str, report: dict[str, Any], table: str, title: str, note: str = "") -> Path:
    """<out>/<kind>-<time>.json (the report, the machine after its "benchmark") and .md (title,
    note, machine, table); prints the table and the files. Returns the files' common stem, for
    more files beside them (a plot)."""
    m = machine()
    doc = {"benchmark": report.get("benchmark"), "machine": m, **{k: v for k, v in report.items() if k != "benchmark"}}
    base = out / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}"
    base.with_suffix(".json").write_text(json.dumps(doc, indent=2))
    lines = [f"# {title}", "", *([note, ""] if note else []),
             f"kernel {m['kernel']}, {m['cpus']} CPUs, {m['date']}", "", table]
    base.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(table)
    print(f"written: {base}.json and .md")
    return base


def percentile(values: Iterable[float], p: float) -> float:
    """The p-th nearest-rank percentile of raw samples (samples.nearest_rank: a sample, exact),
    to 0.1; 0 when there are none."""
    ordered = sorted(values)
    return round(nearest_rank(ordered, p), 1) if ordered else 0.0


def plot_cdf(panels: dict[str, dict[str, Sequence[float]]], path: Path, xlabel: str,
             title: str = "{}", ylabel: str = "fraction of probes") -> None:
    """One panel per key of panels (its title: title.format(key)), one CDF of raw samples per
    label in it, log x axis; a PNG at path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(11, 4), sharey=True, squeeze=False)
    for ax, (panel, by_label) in zip(axes[0], panels.items(), strict=True):
        for label, values in by_label.items():
            v = sorted(values)
            if v:
                ax.plot(v, [(i + 1) / len(v) for i in range(len(v))], label=label)
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_title(title.format(panel))
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel(ylabel)
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(str(path), dpi=120)
    plt.close(fig)


# ---- the C reference (tools/xsk_ref.c: libxdp, no Python) -------------------------------

def build_reference(root: Path, out: Path) -> Path:
    exe = out / "xsk_ref"
    subprocess.run(["gcc", "-O2", "-Wall", "-Werror", "-o", str(exe), str(root / "tools" / "xsk_ref.c"),
                    "-lxdp", "-lbpf"], check=True)
    return exe


def start_reference(exe: Path, mode: str, rx_if: str, tx_if: str, seconds: float, batch: int,
                    cpu: int | None = None) -> subprocess.Popen[str]:
    """The reference in `mode` (rxdrop, fwd, decap) from rx_if to tx_if, ready for packets when
    this returns; it stops 300 ms after its last packet or after `seconds` and prints its count
    as JSON on its last line."""
    pin = (lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None
    proc = subprocess.Popen([str(exe), mode, rx_if, tx_if, xdp.bpf_object_path("prism_redirect"), str(int(seconds)),
                             str(batch)], stdout=subprocess.PIPE, text=True, preexec_fn=pin)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        proc.kill()
        proc.wait()
        raise RuntimeError("C reference did not start")
    return proc


# ---- on a test host ----------------------------------------------------------------------

@contextlib.contextmanager
def background_load(gen: LiveFrameGenerator, frame: bytes, seconds: float, cpu: int) -> Iterator[None]:
    """prism_gen sending frame at full speed from a SCHED_IDLE thread on cpu (at most seconds),
    rings full before the body runs; stopped on the way out."""
    gen.start_for(frame, seconds=seconds, cpu=cpu, background=True, call_seconds=LOAD_CALL_S)
    try:
        time.sleep(LOAD_LEAD_S)
        yield
    finally:
        gen.stop()


def udp_echo(tb: Testbed, c: Container, port: int, seconds: float, cpu: int | None = None) -> None:
    """A UDP echo (udpflows echo) on c's address and port, answering when this returns; it goes
    with the testbed (or after seconds)."""
    argv = [sys.executable, "-m", "prism_xdp.lab.udpflows", "echo", "--bind", c.ip, "--ports", str(port),
            "--seconds", str(seconds)] + (["--cpu", str(cpu)] if cpu is not None else [])
    echo = popen_in(c.ns, argv, stdout=subprocess.PIPE, text=True)
    tb.defer(echo.wait)  # deferred calls run last-in first-out: kill, then reap
    tb.defer(echo.kill)
    if echo.stdout is None or echo.stdout.readline().strip() != "ready":
        raise RuntimeError(f"the UDP echo in {c.ns} did not start")


def rtt_probe(tb: Testbed, host: OverlayHost, port: int) -> RttProbe:
    """HIGH request/response probes from the remote host to container 0's port, after 20 probes
    that let ARP and learning settle; closed with the testbed."""
    probe = RttProbe(host, port)
    tb.defer(probe.close)
    probe.run(20)
    return probe
