"""signals.py - SIGTERM ends a command the way ^C does: by an exception, so that its cleanup (finally blocks, ExitStacks) removes what it made."""

from __future__ import annotations

import os
import signal
from types import FrameType

_owner = 0  # the process that installed the handler


def _terminate(signum: int, frame: FrameType | None) -> None:
    if os.getpid() != _owner:
        # A forked helper (pyroute2 forks to create namespaces, and stops the
        # child with SIGTERM) inherits the handler: it must die as by default,
        # not run the parent's cleanup, which would remove the parent's namespaces.
        os._exit(128 + signum)
    raise SystemExit(128 + signum)


def cleanup_on_sigterm() -> None:
    """Make SIGTERM (kill, timeout, systemd stop) raise SystemExit in this process's main
    thread. Without this Python dies at once and leaves namespaces, links and XDP
    programs behind."""
    global _owner
    _owner = os.getpid()
    signal.signal(signal.SIGTERM, _terminate)
