"""errors.py - the exceptions of prism_xdp: errno and the object's name kept together."""

from __future__ import annotations

import errno as _errno
import os


class PrismError(OSError):
    """A failed operation on a named object (interface, map, program, file).

    Keeps the errno (so callers can test it) and says which object failed.
    """

    def __init__(self, err: int, what: str, name: str | None = None, hint: str = "") -> None:
        self.what = what
        self.name = name
        self.hint = hint
        text = f"{what}: {os.strerror(err)}"
        if name:
            text = f"{what} ({name}): {os.strerror(err)}"
        if hint:
            text += f" -- {hint}"
        super().__init__(err, text)

    def __str__(self) -> str:
        return self.strerror or super().__str__()


class NotSupported(PrismError):
    """The running kernel or device lacks a feature; tests turn this into a skip."""

    def __init__(self, what: str, name: str | None = None, hint: str = "") -> None:
        super().__init__(_errno.EOPNOTSUPP, what, name, hint)


class ConfigError(ValueError):
    """A configuration or control request that is refused; the message names the key."""
