"""signals.py - SIGTERM ends a command the way ^C does: by an exception, so that its cleanup (finally blocks, ExitStacks) removes what it made."""

from __future__ import annotations

import signal
from types import FrameType


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def cleanup_on_sigterm() -> None:
    """Make SIGTERM (kill, timeout, systemd stop) raise SystemExit in the main thread.
    Without this Python dies at once and leaves namespaces, links and XDP programs behind."""
    signal.signal(signal.SIGTERM, _terminate)
