"""procinfo.py - what /proc says about processes: a daemon's worker processes, their memory and their CPU time."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def children(pid: int) -> list[int]:
    """Processes whose parent is pid (a daemon's workers)."""
    out = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and f"PPid:\t{pid}\n" in (entry / "status").read_text():
                out.append(int(entry.name))
        except OSError:
            pass  # gone meanwhile
    return out


def _field_kb(path: Path, name: str) -> int:
    for line in path.read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    return 0


def pss_mb(pid: int) -> float:
    """Memory of pid and its children: the sum of proportional set sizes (shared pages once), MB."""
    return sum(_field_kb(Path(f"/proc/{p}/smaps_rollup"), "Pss") for p in [pid, *children(pid)]) / 1024


def rss_sum_mb(pid: int) -> float:
    """The same as a sum of resident sizes (pages shared after fork counted in every process), MB."""
    return sum(_field_kb(Path(f"/proc/{p}/status"), "VmRSS") for p in [pid, *children(pid)]) / 1024


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) of one process so far, from /proc/<pid>/stat."""
    # The command name (field 2) may hold spaces and parentheses: count fields after its ")".
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and its children (a daemon and its workers); one gone meanwhile counts 0."""
    total = 0.0
    for p in [pid, *children(pid)]:
        with contextlib.suppress(OSError):
            total += cpu_seconds(p)
    return total
