"""native.py - the one module that imports the compiled C helpers (lib, ffi) and turns their -errno returns into exceptions."""

from __future__ import annotations

import contextlib
import errno
import logging
from collections.abc import Iterator
from typing import Any

from prism_xdp.errors import NotSupported, PrismError

try:
    from prism_xdp._prism_ffi import ffi, lib
except ImportError as exc:  # pragma: no cover - only without a build
    raise ImportError(
        "prism_xdp's C helpers are not built: run tools/setup.sh "
        "(or pip install --no-build-isolation -e .) in the checkout"
    ) from exc

__all__ = ["ffi", "lib", "check_rc", "quiet_library", "string"]

log = logging.getLogger("prism_xdp.lib")

# libbpf/libxdp levels: 0 warn, 1 info, 2 debug.
_LEVELS = {0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG}

_UNSUPPORTED = {errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EAFNOSUPPORT}


_quiet = 0


@ffi.def_extern()  # type: ignore[misc]
def prism_log(level: int, msg: Any) -> None:
    """Library messages (libbpf, libxdp) into Python logging."""
    pylevel = logging.DEBUG if _quiet else _LEVELS.get(level, logging.DEBUG)
    log.log(pylevel, "%s", ffi.string(msg).decode(errors="replace").rstrip())


@contextlib.contextmanager
def quiet_library() -> Iterator[None]:
    """Library warnings that are expected (libxdp probing for its dispatcher and
    falling back to a single program) become debug messages; failures still
    surface as the call's -errno.
    """
    global _quiet
    _quiet += 1
    try:
        yield
    finally:
        _quiet -= 1


lib.prism_install_log(1 if log.isEnabledFor(logging.DEBUG) else 0)


def check_rc(rc: int, what: str, name: str | None = None, hint: str = "") -> int:
    """The single gate where a C helper's -errno becomes an exception."""
    if rc >= 0:
        return rc
    err = -rc
    if err in _UNSUPPORTED:
        raise NotSupported(what, name, hint)
    raise PrismError(err, what, name, hint)


def string(cdata: Any) -> str:
    return ffi.string(cdata).decode(errors="replace") if cdata != ffi.NULL else ""
