"""tracing.py - recording a HIGH round trip's chain with perf: the tracepoints it needs, filtered in the kernel to the HIGH packets and the two sockperf processes, recorded for a bounded time and printed as text."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

from prism_xdp.lab.bench.stages import SCRIPT_FIELDS, Names, Point

MMAP_PAGES = 2048  # perf's ring per CPU (8 MiB): no lost events at ~400,000 events/s


def _filter(conds: Iterable[str]) -> str:
    return " || ".join(sorted(set(conds)))


def perf_events(points: Sequence[Point], n: Names) -> list[str]:
    """perf record arguments: every tracepoint the chain uses, filtered in the kernel so that only
    HIGH packets and the two sockperf processes are recorded (plus their wakeups)."""
    pids = {"client": n.client_pid, "server": n.server_pid}
    by_event: dict[str, list[str]] = {}
    for p in points:
        if p.pid_role:
            cond = f"common_pid == {pids[p.pid_role]}"
        else:
            cond = "(" + " && ".join(f'{k} == "{v}"' if k == "name" else f"{k} == {v}" for k, v in p.match) + ")"
        by_event.setdefault(p.event, []).append(cond)
    by_event["sched:sched_wakeup"] = [f"pid == {n.client_pid}", f"pid == {n.server_pid}"]
    args: list[str] = []
    for event, conds in by_event.items():
        args += ["-e", event, "--filter", _filter(conds)]
    return args


def perf_available() -> str | None:
    """None if perf can record tracepoints here, else why not."""
    try:
        r = subprocess.run(["perf", "list", "tracepoint"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"perf: {exc}"
    missing = [e for e in ("net:netif_rx", "net:netif_receive_skb", "net:net_dev_start_xmit", "xdp:xdp_redirect",
                           "sched:sched_wakeup", "syscalls:sys_enter_sendto", "syscalls:sys_exit_recvfrom")
               if e not in r.stdout]
    return f"perf lists no tracepoint {', '.join(missing)}" if missing else None


class Recording:
    """perf record -a of the chain's tracepoints (filtered) for a bounded time, then perf script."""

    def __init__(self, points: Sequence[Point], n: Names, workdir: Path, tag: str) -> None:
        self.data = workdir / f"breakdown-{tag}.data"
        self.argv = ["perf", "record", "-a", "-k", "CLOCK_MONOTONIC", "-m", str(MMAP_PAGES), "-o", str(self.data),
                     *perf_events(points, n)]
        self.proc: subprocess.Popen[str] | None = None
        self.cpu_s = 0.0
        self.stderr = ""

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)

    def stop(self) -> None:
        """SIGINT (perf writes its file and exits); what it used in CPU time is kept."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGINT)
        try:
            _, status, usage = os.wait4(self.proc.pid, 0)
            self.proc.returncode = os.waitstatus_to_exitcode(status)
            self.cpu_s = usage.ru_utime + usage.ru_stime
        except ChildProcessError:
            pass
        except BaseException:
            self.proc.kill()
            self.proc.wait()
            raise
        self.stderr = self.proc.stderr.read() if self.proc.stderr else ""
        if self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    def script(self) -> str:
        """The events as text; the perf data file is removed."""
        try:
            r = subprocess.run(["perf", "script", "-i", str(self.data), "-F", SCRIPT_FIELDS, "--ns"],
                               capture_output=True, text=True, timeout=300)
        finally:
            self.data.unlink(missing_ok=True)
            Path(f"{self.data}.old").unlink(missing_ok=True)
        if r.returncode != 0:
            raise OSError(f"perf script failed ({r.returncode}): {r.stderr.strip()[-300:]}")
        return r.stdout

    def lost(self) -> int:
        m = re.search(r"(\d+)\s+(?:lost|LOST)", self.stderr)
        return int(m.group(1)) if m else 0
