"""test_signals.py - SIGTERM runs a command's cleanup in the command itself, never in a forked helper."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent("""
    import os, sys, time
    from prism_xdp.daemon.signals import cleanup_on_sigterm
    marker = sys.argv[1]
    cleanup_on_sigterm()
    try:
        inside, said = os.pipe()
        pid = os.fork()
        if pid == 0:  # a helper, like pyroute2's namespace creator
            os.write(said, b"in")
            time.sleep(30)
            os._exit(0)
        assert os.read(inside, 2) == b"in"  # the helper runs its own code
        os.kill(pid, 15)
        _, status = os.waitpid(pid, 0)
        open(marker + ".child", "w").write(str(status))
        print("ready", flush=True)
        time.sleep(30)
    finally:
        open(marker + "." + str(os.getpid()), "w").write("cleaned")
""")


def test_sigterm_runs_cleanup_in_the_command_but_not_in_a_forked_helper(tmp_path: Path) -> None:
    marker = str(tmp_path / "m")
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, marker], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 128 + signal.SIGTERM
    cleaned = sorted(p.name for p in tmp_path.glob("m.*") if p.suffix != ".child")
    assert cleaned == [f"m.{proc.pid}"]  # the command cleaned up; the helper did not
    status = int((tmp_path / "m.child").read_text())
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 128 + signal.SIGTERM
