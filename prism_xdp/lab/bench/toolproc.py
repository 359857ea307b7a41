"""toolproc.py - the A/B's tools as processes: started in a namespace under the placement policy, each in its own process group, waited for with a bound, always stopped, output kept in files."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from prism_xdp.lab.testhost import popen_in


class ToolError(OSError):
    """A tool failed, hung or said something unusable: the cell it belongs to fails with this reason."""


def listening(proc_net: str, port: int, tcp: bool) -> bool:
    """Whether /proc/<pid>/net/tcp (or udp) of a namespace shows a socket bound to port
    (for TCP: listening)."""
    for line in proc_net.splitlines()[1:]:
        f = line.split()
        if len(f) > 3 and int(f[1].rsplit(":", 1)[1], 16) == port and (not tcp or f[3] == "0A"):
            return True
    return False


class Tool:
    """One started program; its stdout and stderr go to files in the bench's work directory."""

    def __init__(self, name: str, ns: str | None, argv: Sequence[str], workdir: Path) -> None:
        self.name, self.argv = name, list(argv)
        self.out, self.err = workdir / f"{name}.out", workdir / f"{name}.err"
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            # Its own session: stop() reaches every process it forks (nginx's workers).
            self.proc = popen_in(ns, self.argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                 start_new_session=True)

    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    def stderr_tail(self, chars: int = 300) -> str:
        return self.err.read_text(errors="replace").strip()[-chars:]

    def wait(self, timeout: float) -> int:
        """Its exit status; a tool still running after timeout is stopped and is an error."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise ToolError(f"{self.name} did not finish within {timeout:.0f} s") from None

    def wait_listening(self, port: int, tcp: bool, timeout: float = 10.0) -> None:
        """Until the server's socket is there (read in its own namespace, through its /proc)."""
        deadline = time.monotonic() + timeout
        table = Path(f"/proc/{self.proc.pid}/net/{'tcp' if tcp else 'udp'}")
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ToolError(f"{self.name} exited ({self.proc.returncode}): {self.stderr_tail()}")
            with contextlib.suppress(OSError):
                if listening(table.read_text(), port, tcp):
                    return
            time.sleep(0.02)
        self.stop()
        raise ToolError(f"{self.name} did not listen on port {port} within {timeout:.0f} s")

    def stop(self) -> None:
        """SIGTERM to its process group, SIGKILL if it lingers; what is gone already is fine."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # what it forked may outlive it


class Tools:
    """Every tool the bench started, so that all are stopped on every way out."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._all: list[Tool] = []

    def start(self, name: str, ns: str | None, argv: Sequence[str]) -> Tool:
        tool = Tool(name, ns, argv, self.workdir)
        self._all.append(tool)
        return tool

    def stop_all(self) -> None:
        for tool in reversed(self._all):
            tool.stop()
        self._all = []
