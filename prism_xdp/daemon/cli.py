"""cli.py - the prism-xdp command line: the daemon's subcommands (run, ctl, top) and the lab's when it is installed; one subcommand per job, each with --help and an example."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from prism_xdp import __version__
from prism_xdp.daemon.control import COMMANDS, Command, ControlClient, RequestError
from prism_xdp.daemon.signals import cleanup_on_sigterm
from prism_xdp.dataplane.errors import ConfigError

EPILOG = """examples:
  prism-xdp run --config /etc/prism-xdp/prism.toml   # the daemon
  prism-xdp ctl rule add port 11211                  # HIGH priority for memcached, now
  prism-xdp ctl mode sync                            # PRISM-sync, now
  prism-xdp ctl stats                                # counters, drops, latency
  prism-xdp top                                      # the same, live
  prism-xdp selfcheck                                # is this host able to run it?
"""
DEFAULT_SOCKET = "/run/prism-xdp/ctl.sock"
# Help of ctl words that group or share commands (the others' is the command's own).
CTL_HELP = {"rule": "add, delete or clear a priority rule", "mode": "show or set the scheduling mode"}
Handler = Callable[[argparse.Namespace], int]


def command(sub: Any, name: str, handler: Handler, what: str, description: str | None = None,
            examples: tuple[str, ...] = (), notes: str = "") -> argparse.ArgumentParser:
    """A subcommand with its one-line help (what), description, examples (and notes after them)
    and handler: argparse's boilerplate, once."""
    epilog = ("example:\n" if len(examples) == 1 else "examples:\n") + "".join(f"  {e}\n" for e in examples)
    p: argparse.ArgumentParser = sub.add_parser(name, help=what, description=description or what,
                                                epilog=(epilog if examples else "") + notes or None,
                                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(func=handler)
    return p


def _socket_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--socket", help=f"the daemon's control socket (default {DEFAULT_SOCKET})")
    p.add_argument("--config", help="read the control socket's path from this config file")


def _socket_path(args: argparse.Namespace) -> str:
    if args.socket:
        return str(args.socket)
    if args.config:
        from prism_xdp.daemon.config import load

        return load(args.config).control_socket
    return DEFAULT_SOCKET


def _run(args: argparse.Namespace) -> int:
    from prism_xdp.daemon import service

    if args.log_level:
        logging.getLogger("prism_xdp").setLevel(args.log_level.upper())
    return service.run(args.config)


def _chosen(args: argparse.Namespace) -> tuple[str, Command] | None:
    """The command of the ctl words given whose required arguments are all there (most first)."""
    names = sorted(args.ctl_commands, key=lambda n: -sum(a.required for a in COMMANDS[n].args))
    for name in names:
        if all(getattr(args, a.field) is not None for a in COMMANDS[name].args if a.required):
            return name, COMMANDS[name]
    return None


def _ctl(args: argparse.Namespace) -> int:
    chosen = _chosen(args)
    if chosen is None:
        args.ctl_parser.print_usage(sys.stderr)
        return 2
    name, cmd = chosen
    fields = {a.field: getattr(args, a.field) for a in cmd.args if getattr(args, a.field) is not None}
    with ControlClient(_socket_path(args)) as client:
        try:
            result = client.call(name, **fields)
        except RequestError as exc:
            print(f"prism-xdp ctl {' '.join(cmd.words)}: {exc}", file=sys.stderr)
            return 1
    print(json.dumps(result, indent=2) if args.json or cmd.show is None else cmd.show(result))
    return 0


def _top(args: argparse.Namespace) -> int:
    from prism_xdp.daemon.report import render

    previous, shown = None, 0
    with ControlClient(_socket_path(args)) as client:
        while args.count == 0 or shown < args.count:
            t0 = time.monotonic()
            stats = client.call("stats")
            text = render(stats, previous, args.interval if previous else None)
            if sys.stdout.isatty():
                sys.stdout.write("\x1b[H\x1b[2J")
            print(text, flush=True)
            previous, shown = stats, shown + 1
            if args.count and shown >= args.count:
                break
            time.sleep(max(0.0, args.interval - (time.monotonic() - t0)))
    return 0


def _add_ctl_commands(ctl: argparse.ArgumentParser) -> None:
    """`ctl WORDS ARGS` for every entry of control.COMMANDS. Commands that share their words
    (mode, mode-set) share a parser whose arguments are all optional: the arguments given choose."""
    by_words: dict[tuple[str, ...], list[str]] = {}
    for name, cmd in COMMANDS.items():
        by_words.setdefault(cmd.words, []).append(name)
    parsers: dict[tuple[str, ...], argparse.ArgumentParser] = {(): ctl}
    subs: dict[tuple[str, ...], Any] = {}
    for words, names in by_words.items():
        for depth in range(1, len(words) + 1):
            path, parent = words[:depth], words[: depth - 1]
            if path in parsers:
                continue
            if parent not in subs:
                subs[parent] = parsers[parent].add_subparsers(dest=f"ctl_word{depth}", required=True)
            own = COMMANDS[names[0]].help if path == words and len(names) == 1 else path[-1]
            parsers[path] = subs[parent].add_parser(path[-1], help=CTL_HELP.get(" ".join(path), own))
        leaf_parser = parsers[words]
        shared = len(names) > 1
        seen: set[str] = set()
        for a in (a for n in names for a in COMMANDS[n].args):
            if a.field in seen:
                continue
            seen.add(a.field)
            leaf_parser.add_argument(a.field, nargs="?" if shared or not a.required else None, type=a.type,
                                     choices=a.choices, default=a.default, metavar=a.field.upper(),
                                     help=a.help or (", ".join(a.choices) if a.choices else None))
        leaf_parser.set_defaults(ctl_commands=names, ctl_parser=leaf_parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prism-xdp",
        description="PRISM flow prioritization for container overlays, in user space over AF_XDP.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"prism-xdp {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output (-vv: libbpf/libxdp debug)")
    sub = parser.add_subparsers(dest="command", required=True)

    run = command(
        sub, "run", _run, "the daemon: attach, forward, prioritize until SIGINT/SIGTERM",
        "Loads the config (every mistake is reported with its key before anything is "
        "touched), checks this host, attaches the classifier to the uplink and prism_egress to every "
        "container veth, runs one worker per queue, and serves the control socket. SIGINT/SIGTERM: "
        "detach and free everything, in reverse order. SIGHUP: reload the rules from the config "
        "(ctl status counts reloads done and refused). After a crash, the next start replaces what "
        "the dead daemon left.",
        ("prism-xdp run --config docs/prism.example.toml", "systemd: see tools/prism-xdp.service"))
    run.add_argument("--config", required=True, help="TOML config file (annotated example: docs/prism.example.toml)")
    run.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                     help="override the config's log.level")

    ctl = command(
        sub, "ctl", _ctl, "talk to the running daemon: rules, mode, statistics",
        "The runtime control of a running daemon over its root-only Unix socket. "
        "'rule add port N' is the equivalent of writing /proc/port (without its limit of 10 "
        "ports), 'mode sync|batch' of writing /proc/sync. Latency percentiles are upper bounds "
        "(p99 <=: the upper edge of the histogram bucket that holds the p99).",
        ("prism-xdp ctl status", "prism-xdp ctl rule add port 11211", "prism-xdp ctl rule add dscp 46 high",
         "prism-xdp ctl rule del port 11211", "prism-xdp ctl rule clear", "prism-xdp ctl rules",
         "prism-xdp ctl mode sync", "prism-xdp ctl stats --json", "prism-xdp ctl reset", "prism-xdp ctl reload"))
    _socket_options(ctl)
    ctl.add_argument("--json", action="store_true", help="print the daemon's JSON reply")
    _add_ctl_commands(ctl)

    top = command(sub, "top", _top, "live statistics of the running daemon",
                  "Shows 'ctl stats' every interval, with rates.", ("prism-xdp top --interval 2",))
    _socket_options(top)
    top.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    top.add_argument("--count", type=int, default=0, help="stop after this many refreshes (0: until ^C)")

    try:  # the lab's subcommands (selfcheck, topo, inject, bench), when the package has the lab
        from prism_xdp.lab import cli as lab_cli
    except ImportError:
        pass
    else:
        lab_cli.add_commands(sub)
    return parser


def is_root(args: argparse.Namespace) -> bool:
    """Every subcommand needs root; otherwise one line says so."""
    if os.geteuid() == 0:
        return True
    print(f"prism-xdp {args.command}: needs root (XDP, AF_XDP, network namespaces)", file=sys.stderr)
    return False


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    fmt = "%(asctime)s %(levelname)s %(message)s" if args.command == "run" else "%(levelname)s %(name)s: %(message)s"
    if args.command == "run":
        level = min(level, logging.INFO)  # the daemon's own level comes from its config
    logging.basicConfig(level=level, format=fmt)
    # pyroute2 is chatty at debug level; keep it quiet unless asked twice.
    logging.getLogger("pyroute2").setLevel(logging.WARNING if args.verbose < 2 else logging.DEBUG)
    # A lab command checks its extra first and then root itself (lab/cli.py: needs_lab).
    if not getattr(args.func, "preflight", False) and not is_root(args):
        return 2
    if args.command != "run":  # the daemon handles its own signals
        cleanup_on_sigterm()
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except (OSError, ConfigError) as exc:
        print(f"prism-xdp {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
