"""cpuprof.py - where a benchmark's CPU time goes: per-CPU busy/softirq shares from /proc/stat, and a system-wide perf profile's top symbols per CPU."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

# /proc/stat columns after the cpu name (proc(5)).
_USER, _NICE, _SYSTEM, _IDLE, _IOWAIT, _IRQ, _SOFTIRQ, _STEAL = range(8)


@dataclass(frozen=True)
class CpuTimes:
    """Cumulative jiffies of one CPU, as /proc/stat gives them."""

    user: int
    system: int
    softirq: int
    idle: int
    steal: int  # taken by the hypervisor for other guests: neither ours nor idle
    total: int


def parse_proc_stat(text: str) -> dict[int, CpuTimes]:
    """The per-CPU lines of /proc/stat (not the "cpu" sum line), keyed by CPU number."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"cpu(\d+)\s+(.*)", line)
        if not m:
            continue
        f = [int(x) for x in m.group(2).split()]
        f += [0] * (8 - len(f))
        # guest time is already inside user time; total is the first 8 columns.
        out[int(m.group(1))] = CpuTimes(user=f[_USER] + f[_NICE], system=f[_SYSTEM] + f[_IRQ],
                                        softirq=f[_SOFTIRQ], idle=f[_IDLE] + f[_IOWAIT], steal=f[_STEAL],
                                        total=sum(f[:8]))
    return out


def read_cpu_times() -> dict[int, CpuTimes]:
    return parse_proc_stat(Path("/proc/stat").read_text())


def busy_seconds(times: dict[int, CpuTimes]) -> float:
    """CPU time spent here (not idle, not stolen by the hypervisor), summed over all CPUs, in seconds."""
    return sum(t.total - t.idle - t.steal for t in times.values()) / os.sysconf("SC_CLK_TCK")


def busy_fraction(before: dict[int, CpuTimes], after: dict[int, CpuTimes]) -> float:
    """The share of all CPUs' time in an interval that was spent here (not idle, not stolen)."""
    def busy(t: CpuTimes) -> int:
        return t.total - t.idle - t.steal
    total = sum(a.total - before[c].total for c, a in after.items() if c in before)
    return sum(busy(a) - busy(before[c]) for c, a in after.items() if c in before) / max(1, total)


def shares(before: dict[int, CpuTimes], after: dict[int, CpuTimes]) -> dict[int, dict[str, float]]:
    """Per CPU, the fraction of the interval spent in user space, kernel (system + irq),
    softirq, idle and stolen by the hypervisor: shows which CPU was the bottleneck of a
    run, and whether the machine was taken from under it."""
    out = {}
    for cpu, a in after.items():
        b = before.get(cpu)
        if b is None:
            continue
        span = a.total - b.total
        if span <= 0:
            continue
        out[cpu] = {"user": round((a.user - b.user) / span, 3), "kernel": round((a.system - b.system) / span, 3),
                    "softirq": round((a.softirq - b.softirq) / span, 3), "idle": round((a.idle - b.idle) / span, 3),
                    "steal": round((a.steal - b.steal) / span, 3)}
    return out


# One row of `perf report --stdio --no-children --sort cpu,dso,sym -g none`:
#     16.14%  001  libpython3.11.so.1.0   [.] _PyEval_EvalFrameDefault
_ROW = re.compile(r"^\s*(\d+\.\d+)%\s+(\d+)\s+(\S+)\s+\[([.k])\]\s+(.+?)\s*$")


def parse_perf_report(text: str, top: int = 10) -> dict[int, list[dict[str, object]]]:
    """The `top` hottest symbols of each CPU, with their share of all samples and
    whether they are kernel ([k]) or user space ([.]) code."""
    out: dict[int, list[dict[str, object]]] = {}
    for line in text.splitlines():
        m = _ROW.match(line)
        if not m:
            continue
        rows = out.setdefault(int(m.group(2)), [])
        if len(rows) < top:
            rows.append({"percent": float(m.group(1)), "dso": m.group(3),
                         "space": "kernel" if m.group(4) == "k" else "user", "symbol": m.group(5)})
    return out


def perf_available() -> bool:
    """perf can sample the whole system here (the cpu-clock software event works even in VMs
    without hardware counters)."""
    if shutil.which("perf") is None:
        return False
    r = subprocess.run(["perf", "record", "-a", "-e", "cpu-clock", "-o", "/dev/null", "--", "true"],
                       capture_output=True)
    return r.returncode == 0


def profile(seconds: float, datafile: Path, top: int = 10) -> dict[int, list[dict[str, object]]]:
    """Sample every CPU for `seconds` (cpu-clock, no call graphs: a light touch on the
    run being profiled), then the top symbols per CPU. The data file is removed."""
    try:
        subprocess.run(["perf", "record", "-a", "-e", "cpu-clock", "-q", "-o", str(datafile), "--", "sleep",
                        str(seconds)], check=True, capture_output=True, timeout=seconds + 30)
        report = subprocess.run(["perf", "report", "-i", str(datafile), "--stdio", "--no-children",
                                 "--sort", "cpu,dso,sym", "-g", "none"], check=True, capture_output=True,
                                text=True, timeout=120)
    finally:
        datafile.unlink(missing_ok=True)
        Path(str(datafile) + ".old").unlink(missing_ok=True)
    return parse_perf_report(report.stdout, top)


def format_profile(profile_rows: dict[int, list[dict[str, object]]], top: int = 6) -> list[str]:
    """Readable lines: per CPU, its hottest symbols."""
    lines = []
    for cpu in sorted(profile_rows):
        syms = ", ".join(f"{r['symbol']} {r['percent']:.1f}%" for r in profile_rows[cpu][:top])
        lines.append(f"CPU {cpu}: {syms}")
    return lines
