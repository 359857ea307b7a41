"""native.py - the one module that imports the compiled C helpers (lib, ffi): their constants, the -errno gate, the wrappers the rest of the package calls."""

from __future__ import annotations

import contextlib
import errno
import logging
from collections.abc import Iterator
from typing import Any

from prism_xdp.dataplane.errors import NotSupported, PrismError

try:
    from prism_xdp._prism_ffi import ffi, lib
except ImportError as exc:  # pragma: no cover - only without a build
    raise ImportError(
        "prism_xdp's C helpers are not built: run tools/setup.sh "
        "(or pip install --no-build-isolation -e .) in the checkout"
    ) from exc

# The constants of xdp_progs/prism_common.h, as the compiler saw them (the cdef
# declares each as "#define NAME ...", so there is no hand copy to drift).
PRISM_NCLASS: int = lib.PRISM_NCLASS
PRISM_CLASS_LOW: int = lib.PRISM_CLASS_LOW
PRISM_CLASS_HIGH: int = lib.PRISM_CLASS_HIGH
PRISM_MAX_QUEUES: int = lib.PRISM_MAX_QUEUES
PRISM_XSKMAP_SIZE: int = lib.PRISM_XSKMAP_SIZE
PRISM_NPORTS: int = lib.PRISM_NPORTS
PRISM_NDSCP: int = lib.PRISM_NDSCP
PRISM_MAX_VNI_RULES: int = lib.PRISM_MAX_VNI_RULES
PRISM_VXLAN_PORT_DEFAULT: int = lib.PRISM_VXLAN_PORT_DEFAULT
PRISM_ETH_HLEN: int = lib.PRISM_ETH_HLEN
PRISM_VXLAN_HLEN: int = lib.PRISM_VXLAN_HLEN
PRISM_ENCAP_LEN: int = lib.PRISM_ENCAP_LEN
PRISM_STEER_CLASSIFY: int = lib.PRISM_STEER_CLASSIFY
PRISM_STEER_VANILLA: int = lib.PRISM_STEER_VANILLA
PRISM_STEER_F_TIMESTAMP: int = lib.PRISM_STEER_F_TIMESTAMP
PRISM_STEER_F_META: int = lib.PRISM_STEER_F_META
PRISM_TS_LEN: int = lib.PRISM_TS_LEN
PRISM_META_CLASS_SHIFT: int = lib.PRISM_META_CLASS_SHIFT
PRISM_MAL_VXLAN_TRUNC: int = lib.PRISM_MAL_VXLAN_TRUNC
PRISM_MAL_VXLAN_FLAGS: int = lib.PRISM_MAL_VXLAN_FLAGS
PRISM_MAL_INNER_ETH: int = lib.PRISM_MAL_INNER_ETH
PRISM_MAL_INNER_IP: int = lib.PRISM_MAL_INNER_IP
PRISM_MAL_INNER_L4: int = lib.PRISM_MAL_INNER_L4
PRISM_MAL_MAX: int = lib.PRISM_MAL_MAX
PRISM_COUNTER_WORDS: int = lib.PRISM_COUNTER_WORDS

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
