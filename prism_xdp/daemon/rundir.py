"""rundir.py - the daemon's runtime directories (control socket, pid file): made when missing, removed when found empty at stop."""

from __future__ import annotations

import contextlib
from pathlib import Path

OURS = "prism-xdp"  # a directory named so is ours even when a daemon that died made it


def ensure(directory: str | Path) -> bool:
    """Make the directory if missing; True if this call made it."""
    d = Path(directory)
    made = not d.is_dir()
    d.mkdir(mode=0o755, parents=True, exist_ok=True)
    return made


def remove_if_empty(directory: str | Path, made: bool) -> None:
    """At stop: remove the directory if it is empty and ours (made now, or named prism-xdp*).

    After a kill -9 the next daemon finds the directory already there, and
    still removes it at its own stop; a directory a user chose (/tmp, /run)
    and that we did not make is left alone.
    """
    d = Path(directory)
    if made or d.name.startswith(OURS):
        with contextlib.suppress(OSError):  # not empty, or already gone
            d.rmdir()
