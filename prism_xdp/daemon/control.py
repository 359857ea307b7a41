"""control.py - the runtime control protocol (one JSON object per line over a root-only Unix socket): request checking and dispatch, the server, and the client that `prism-xdp ctl` uses."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import socketserver
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from prism_xdp.daemon import report, rundir
from prism_xdp.dataplane.classes import CLASS_BY_NAME
from prism_xdp.dataplane.errors import ConfigError, PrismError
from prism_xdp.dataplane.sched import Mode

log = logging.getLogger("prism_xdp")
MAX_REQUEST = 64 * 1024  # a request line longer than this is refused
RULE_KINDS = {"port": (1, 65535), "dscp": (0, 63), "vni": (0, (1 << 24) - 1)}


class ControlApi(Protocol):
    """What the daemon offers to the control socket."""

    def status(self) -> dict[str, Any]: ...

    def rules(self) -> dict[str, dict[int, int]]: ...

    def set_rule(self, kind: str, value: int, cls: int) -> None: ...

    def clear_rules(self, kind: str | None) -> int: ...

    def mode(self) -> str: ...

    def set_mode(self, mode: str) -> None: ...

    def stats(self) -> dict[str, Any]: ...

    def reset_stats(self) -> None: ...

    def reload(self) -> dict[str, Any]: ...


class RequestError(ValueError):
    """A request that is not understood: the reply says why, nothing changes."""


def _field(req: dict[str, Any], name: str, kind: type) -> Any:
    if name not in req:
        raise RequestError(f"{req.get('cmd')}: missing field {name!r}")
    value = req[name]
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise RequestError(f"{req['cmd']}: {name} must be an integer, not {value!r}")
    if kind is str and not isinstance(value, str):
        raise RequestError(f"{req['cmd']}: {name} must be a string, not {value!r}")
    return value


def _kind(req: dict[str, Any]) -> str:
    kind = _field(req, "kind", str)
    if kind not in RULE_KINDS:
        raise RequestError(f"{req['cmd']}: kind must be one of {', '.join(RULE_KINDS)}, not {kind!r}")
    return str(kind)


def _value(req: dict[str, Any], kind: str) -> int:
    value = _field(req, "value", int)
    lo, hi = RULE_KINDS[kind]
    if not lo <= value <= hi:
        raise RequestError(f"{req['cmd']}: a {kind} must be in {lo}..{hi}, not {value}")
    return int(value)


def _class(req: dict[str, Any]) -> int:
    cls = req.get("class", "high")
    if isinstance(cls, str) and cls.lower() in CLASS_BY_NAME:
        return CLASS_BY_NAME[cls.lower()]
    raise RequestError(f"{req['cmd']}: class must be one of {', '.join(CLASS_BY_NAME)}, not {cls!r}")


@dataclass(frozen=True)
class Arg:
    """A request field, as `prism-xdp ctl` takes it: a positional argument."""

    field: str
    type: type = str
    choices: tuple[str, ...] | None = None
    required: bool = True
    default: Any = None
    help: str | None = None


@dataclass(frozen=True)
class Command:
    """One command of the protocol: what the daemon does, and how `prism-xdp ctl` spells and shows it."""

    help: str
    run: Callable[[ControlApi, dict[str, Any]], Any]
    words: tuple[str, ...]  # prism-xdp ctl WORDS ARGS
    args: tuple[Arg, ...] = ()
    show: Callable[[Any], str] | None = None  # readable output (without it, or with --json: JSON)


def _rule_add(api: ControlApi, req: dict[str, Any]) -> dict[str, Any]:
    kind = _kind(req)
    value, cls = _value(req, kind), _class(req)
    api.set_rule(kind, value, cls)
    return {"kind": kind, "value": value, "class": cls}


def _rule_del(api: ControlApi, req: dict[str, Any]) -> dict[str, Any]:
    kind = _kind(req)
    value = _value(req, kind)
    if value not in api.rules()[kind]:
        raise RequestError(f"rule-del: no {kind} rule for {value}")
    api.set_rule(kind, value, 0)
    return {"kind": kind, "value": value, "removed": True}


def _mode_set(api: ControlApi, req: dict[str, Any]) -> dict[str, Any]:
    mode = _field(req, "mode", str)
    if mode not in MODES:
        raise RequestError(f"mode-set: mode must be vanilla, batch or sync, not {mode!r}")
    api.set_mode(mode)
    return {"mode": api.mode()}


def _stats_reset(api: ControlApi, req: dict[str, Any]) -> dict[str, Any]:
    api.reset_stats()
    return {}


MODES = tuple(m.value for m in Mode)
_KIND = Arg("kind", choices=tuple(RULE_KINDS))
_VALUE = Arg("value", int)
# The protocol, one entry per command: adding a command here adds it to the daemon, to
# `prism-xdp ctl` (its words and arguments) and to `help`.
COMMANDS: dict[str, Command] = {
    "status": Command("daemon, uplink, queues, containers, mode, rules, reloads", lambda api, req: api.status(),
                      ("status",), show=report.fields),
    "rules": Command("the priority rules by kind",
                     lambda api, req: {k: {str(v): c for v, c in sorted(m.items())} for k, m in api.rules().items()},
                     ("rules",), show=report.rules),
    "rule-add": Command("kind (port|dscp|vni), value, class (default high): like writing /proc/port", _rule_add,
                        ("rule", "add"), (_KIND, _VALUE, Arg("class", required=False, default="high",
                                                             help="low, high, class2, class3 (default high)")),
                        show=report.rule),
    "rule-del": Command("kind, value", _rule_del, ("rule", "del"), (_KIND, _VALUE), show=report.rule),
    "rules-clear": Command("kind (optional: all kinds)",
                           lambda api, req: {"removed": api.clear_rules(_kind(req) if "kind" in req else None)},
                           ("rule", "clear"), (replace(_KIND, required=False),), show=report.rule),
    "mode": Command("the scheduling mode", lambda api, req: {"mode": api.mode()}, ("mode",),
                    show=lambda r: str(r["mode"])),
    "mode-set": Command("mode (vanilla|batch|sync): like writing /proc/sync", _mode_set, ("mode",),
                        (Arg("mode", choices=MODES),), show=lambda r: str(r["mode"])),
    "stats": Command("counters per class, stage and drop reason; latency; XDP statistics",
                     lambda api, req: api.stats(), ("stats",), show=report.render),
    "stats-reset": Command("clear latency histograms", _stats_reset, ("reset",)),
    "reload": Command("re-read the rules from the config file (as SIGHUP)", lambda api, req: api.reload(),
                      ("reload",)),
    "help": Command("this list", lambda api, req: {name: c.help for name, c in COMMANDS.items()}, ("help",)),
}


def dispatch(api: ControlApi, line: bytes | str) -> dict[str, Any]:
    """One request line -> one reply object. Never raises for bad input."""
    try:
        req = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        return {"ok": False, "error": f"not a JSON object: {exc}"}
    except RecursionError:
        return {"ok": False, "error": "not a JSON object: nested too deeply"}
    if not isinstance(req, dict):
        return {"ok": False, "error": "a request is a JSON object with a 'cmd' field"}
    cmd = req.get("cmd")
    if cmd is not None and not isinstance(cmd, str):
        return {"ok": False, "error": f"cmd must be a string naming a command, not {type(cmd).__name__}"}
    if cmd not in COMMANDS:
        return {"ok": False, "error": f"unknown cmd {cmd!r}; one of: {', '.join(COMMANDS)}"}
    try:
        result = COMMANDS[cmd].run(api, req)
    except (RequestError, ConfigError) as exc:
        return {"ok": False, "error": str(exc)}
    except PrismError as exc:
        return {"ok": False, "error": str(exc)}
    except Exception as exc:  # the daemon must outlive any request
        log.exception("control request %r failed", cmd)
        return {"ok": False, "error": f"{cmd}: internal error: {exc}"}
    return {"ok": True, "result": result}


def peer_uid(sock: socket.socket) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[1])


class ControlServer:
    """Serves the protocol on a Unix socket file (mode 0600, and SO_PEERCRED must say root)."""

    def __init__(self, path: str, api: ControlApi) -> None:
        self.path = path
        self._made_dir = rundir.ensure(os.path.dirname(path) or ".")
        if os.path.exists(path):
            # Left by a daemon that died: nobody answers on it any more.
            if _answers(path):
                raise PrismError(98, "control socket", path, "another prism-xdp daemon is running")
            os.unlink(path)

        outer = self

        class Server(socketserver.ThreadingUnixStreamServer):
            request_queue_size = 512  # listen backlog: a burst of clients waits, not EAGAIN
            daemon_threads = True

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                if peer_uid(self.request) != 0:
                    self.wfile.write(b'{"ok": false, "error": "the control socket is for root only"}\n')
                    return
                while True:
                    line = self.rfile.readline(MAX_REQUEST + 1)
                    if not line:
                        return
                    if len(line) > MAX_REQUEST:
                        reply: dict[str, Any] = {"ok": False, "error": f"request longer than {MAX_REQUEST} bytes"}
                    elif not line.strip():
                        continue
                    else:
                        reply = dispatch(outer.api, line)
                    self.wfile.write(json.dumps(reply, default=str).encode() + b"\n")
                    if len(line) > MAX_REQUEST:
                        return

        self.api = api
        old = os.umask(0o177)
        try:
            self._server = Server(path, Handler)
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        self._thread = threading.Thread(target=self._server.serve_forever, name="prism-control", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        rundir.remove_if_empty(os.path.dirname(self.path) or ".", self._made_dir)


def _answers(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1)
        try:
            s.connect(path)
            return True
        except OSError:
            return False


class ControlClient:
    """`prism-xdp ctl`'s side: one request, one reply."""

    def __init__(self, path: str, timeout: float = 10.0) -> None:
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(path)
        except FileNotFoundError:
            self._sock.close()
            raise PrismError(2, "control socket", path, "no daemon running (prism-xdp run --config FILE)") from None
        except PermissionError:
            self._sock.close()
            raise PrismError(13, "control socket", path, "root only") from None
        except OSError as exc:
            self._sock.close()
            raise PrismError(exc.errno or 111, "control socket", path, "is the daemon running?") from None
        self._file = self._sock.makefile("rb")

    def call(self, cmd: str, **fields: Any) -> Any:
        """The result, or PrismError with the daemon's message."""
        self._sock.sendall(json.dumps({"cmd": cmd, **fields}).encode() + b"\n")
        line = self._file.readline()
        if not line:
            raise PrismError(104, "control socket", self.path, "the daemon closed the connection")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise RequestError(reply.get("error", "error"))
        return reply["result"]

    def close(self) -> None:
        self._file.close()
        self._sock.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
