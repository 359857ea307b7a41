"""cli.py - the prism-xdp command line: one subcommand per job, each with --help and an example."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import TYPE_CHECKING

from prism_xdp import __version__
from prism_xdp.daemon.signals import cleanup_on_sigterm
from prism_xdp.dataplane.classes import class_name
from prism_xdp.dataplane.errors import ConfigError

if TYPE_CHECKING:
    from prism_xdp.lab.bench.runner import BenchParams

EPILOG = """examples:
  prism-xdp run --config /etc/prism-xdp/prism.toml   # the daemon
  prism-xdp ctl rule add port 11211                  # HIGH priority for memcached, now
  prism-xdp ctl mode sync                            # PRISM-sync, now
  prism-xdp ctl stats                                # counters, drops, latency
  prism-xdp top                                      # the same, live
  prism-xdp selfcheck                                # is this host able to run it?
"""
DEFAULT_SOCKET = "/run/prism-xdp/ctl.sock"


def _selfcheck(args: argparse.Namespace) -> int:
    from prism_xdp.lab import selfcheck

    return 0 if selfcheck.run(count=args.count) else 1


def _run(args: argparse.Namespace) -> int:
    from prism_xdp.daemon import service as daemon

    if args.log_level:
        logging.getLogger("prism_xdp").setLevel(args.log_level.upper())
    return daemon.run(args.config)


def _socket_path(args: argparse.Namespace) -> str:
    if args.socket:
        return str(args.socket)
    if args.config:
        from prism_xdp.daemon.config import load

        return load(args.config).control_socket
    return DEFAULT_SOCKET


def _ctl(args: argparse.Namespace) -> int:
    import json

    from prism_xdp.daemon.control import ControlClient, RequestError
    from prism_xdp.daemon.report import render, table

    what = args.what
    with ControlClient(_socket_path(args)) as client:
        try:
            if what == "status":
                result = client.call("status")
            elif what == "rules":
                result = client.call("rules")
            elif what == "rule":
                if args.action == "clear":
                    result = client.call("rules-clear", **({"kind": args.kind} if args.kind else {}))
                else:
                    if args.kind is None or args.value is None:
                        print("prism-xdp ctl rule add|del KIND VALUE [CLASS]", file=sys.stderr)
                        return 2
                    fields = {"kind": args.kind, "value": args.value}
                    if args.action == "add":
                        fields["class"] = args.cls
                    result = client.call("rule-add" if args.action == "add" else "rule-del", **fields)
            elif what == "mode":
                result = client.call("mode-set", mode=args.mode) if args.mode else client.call("mode")
            elif what == "stats":
                result = client.call("stats")
            elif what == "reset":
                result = client.call("stats-reset")
            elif what == "reload":
                result = client.call("reload")
            else:
                result = client.call("help")
        except RequestError as exc:
            print(f"prism-xdp ctl {what}: {exc}", file=sys.stderr)
            return 1
    if args.json or what not in ("stats", "rules", "status", "mode", "rule"):
        print(json.dumps(result, indent=2))
    elif what == "rule":
        if "removed" in result and "kind" not in result:
            print(f"removed {result['removed']} rule(s)")
        elif result.get("removed"):
            print(f"{result['kind']} {result['value']}: rule removed")
        else:
            print(f"{result['kind']} {result['value']}: {class_name(result['class'])}")
    elif what == "stats":
        print(render(result))
    elif what == "rules":
        rows = [[k, v, class_name(c)] for k, m in result.items() for v, c in m.items()]
        print(table(["kind", "value", "class"], rows) if rows else "no rules: every packet is LOW")
    elif what == "mode":
        print(result["mode"])
    else:
        for k, v in result.items():
            if isinstance(v, list) and v and isinstance(v[0], dict):
                print(f"{k:12} " + "\n             ".join("  ".join(f"{a}={b}" for a, b in item.items()) for item in v))
            elif isinstance(v, dict):
                print(f"{k:12} " + "  ".join(f"{a}={b}" for a, b in v.items()))
            else:
                print(f"{k:12} {v}")
    return 0


def _top(args: argparse.Namespace) -> int:
    import time

    from prism_xdp.daemon.control import ControlClient
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


def _topo(args: argparse.Namespace) -> int:
    from prism_xdp.lab.testhost import topo

    if args.action == "up":
        spec = topo.TopoSpec(args.name, args.containers, args.queues, args.vni, args.vxlan_port,
                             not args.no_kernel_path, args.container_rps)
        _, created = topo.up(spec)
        print(("created" if created else "already up") + "\n" + topo.show(args.name))
    elif args.action == "down":
        state = topo.down(args.name)
        print(f"topology {args.name}: " + (f"removed {len(state['made']['namespaces'])} namespaces and "
                                           f"{len(state['made']['links'])} links" if state else "was not up"))
    elif args.action == "config":
        state = topo.load_state(args.name)
        if state is None:
            print(f"topology {args.name} is not up", file=sys.stderr)
            return 1
        print(topo.daemon_config(state), end="")
    else:
        print(topo.show(args.name))
    return 0


def _inject(args: argparse.Namespace) -> int:
    from prism_xdp.lab import inject
    from prism_xdp.lab.testhost import topo

    state = topo.load_state(args.topo)
    if state is None:
        print(f"prism-xdp inject: topology {args.topo} is not up (prism-xdp topo up --name {args.topo})",
              file=sys.stderr)
        return 1
    host = topo.host_of(state)
    flows = [inject.Flow("high", p, container=args.container) for p in args.high] + [
        inject.Flow("low", p, container=args.container) for p in args.low]
    if not flows:
        print("prism-xdp inject: give --high and/or --low ports", file=sys.stderr)
        return 2
    if args.pcap:
        result = inject.write_pcap(args.pcap, host, flows, args.count, args.size)
    else:
        result = inject.send(host, flows, args.count, args.rate, args.size)
    for k, v in result.items():
        print(f"{k:17} {v}")
    return 0


QUICK = {"high": "sockperf-udp", "low": "idle,tcp1", "configs": "kernel,prism-vanilla,prism-batch,prism-sync",
         "duration": 5, "runs": 2}


def bench_params(args: argparse.Namespace) -> BenchParams:
    """The bench's options checked, before anything is brought up; ConfigError names what is wrong."""
    from prism_xdp.lab.bench import configs as abconfigs
    from prism_xdp.lab.bench import runner as abbench
    from prism_xdp.lab.bench import workloads
    from prism_xdp.lab.bench.placement import policy

    if args.quick:
        for key, value in QUICK.items():
            if getattr(args, key) is None:
                setattr(args, key, value)
    duration = 10 if args.duration is None else args.duration
    runs = 3 if args.runs is None else args.runs
    if not 1 <= duration <= 3600:
        raise ConfigError(f"--duration: must be 1..3600 seconds, not {duration}")
    if not 1 <= runs <= 100:
        raise ConfigError(f"--runs: must be 1..100, not {runs}")
    if not 0 < args.steal_max <= 1:
        raise ConfigError(f"--steal-max: a fraction of a CPU in (0, 1], not {args.steal_max}")
    if getattr(args, "breakdown", False):
        from prism_xdp.lab.bench import breakdown, tracing

        if breakdown.HIGH not in (args.high or workloads.HIGH_DEFAULT).split(","):
            raise ConfigError(f"--breakdown traces {breakdown.HIGH}: add it to --high")
        why = tracing.perf_available()
        if why:
            raise ConfigError(f"--breakdown: {why} (tools/setup.sh installs linux-perf)")
    return abbench.BenchParams(
        high=workloads.parse_high_list(args.high or workloads.HIGH_DEFAULT),
        low=workloads.parse_low_list(args.low or workloads.LOW_DEFAULT),
        configs=abconfigs.choose(args.configs, args.proc), placement=policy(args.placement),
        duration=duration, runs=runs, steal_max=args.steal_max, proc=args.proc,
        command="prism-xdp " + " ".join(sys.argv[1:]), breakdown=getattr(args, "breakdown", False))


def _bench_merge(args: argparse.Namespace) -> int:
    from pathlib import Path

    from prism_xdp.lab.bench import report as abreport

    if len(args.what) < 3:
        raise ConfigError("bench merge: give two or more result files (bench merge A.json B.json)")
    rep = abreport.merge(args.what[1:])
    rep["files"] = abreport.write(rep, Path(args.out), prefix="ab-merged")
    print(rep["table"])
    print("written: " + ", ".join(rep["files"]))
    return 0


def _bench(args: argparse.Namespace) -> int:
    from pathlib import Path

    from prism_xdp.lab.bench import runner as abbench
    from prism_xdp.lab.testhost import topo

    if args.what:
        if args.what[0] != "merge":
            raise ConfigError(f"bench: unknown action {args.what[0]!r} (the only one is: merge A.json B.json)")
        return _bench_merge(args)
    params = bench_params(args)
    print(f"bench: {len(params.configs)} configurations x {len(params.low)} LOW x {len(params.high)} HIGH x "
          f"{params.runs} runs, about {params.estimate_s() / 60:.0f} min", file=sys.stderr)
    existing = topo.load_state(args.topo)
    made_here = existing is None
    if existing is None:
        print(f"bringing up test host {args.topo} (removed afterwards)", file=sys.stderr)
        state, _ = topo.up(topo.TopoSpec(args.topo, containers=2))
    else:
        state = existing
    try:
        rep = abbench.run(state, params, Path(args.out))
    finally:
        if made_here and not args.keep:
            topo.down(args.topo)
    print(rep["table"])
    print("written: " + ", ".join(rep["files"]))
    return 0


def _add_socket_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--socket", help=f"the daemon's control socket (default {DEFAULT_SOCKET})")
    p.add_argument("--config", help="read the control socket's path from this config file")


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
    check = sub.add_parser(
        "selfcheck",
        help="check this host end to end on a throwaway test host (root)",
        description="Builds a throwaway test host in a network namespace (names start with "
        "'pxs'), attaches the VXLAN classifier to its uplink veth, opens HIGH and LOW AF_XDP "
        "sockets on one queue, sends VXLAN from scapy and from a kernel VXLAN device plus "
        "malformed frames, prints what arrived where, and removes everything.",
        epilog="example:\n  prism-xdp selfcheck -n 500",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("-n", "--count", type=int, default=300,
                       help="VXLAN packets to send from scapy (default 300)")
    check.set_defaults(func=_selfcheck)

    run = sub.add_parser(
        "run", help="the daemon: attach, forward, prioritize until SIGINT/SIGTERM",
        description="Loads the config (every mistake is reported with its key before anything is "
        "touched), checks this host, attaches the classifier to the uplink and prism_egress to every "
        "container veth, runs one worker per queue, and serves the control socket. SIGINT/SIGTERM: "
        "detach and free everything, in reverse order. SIGHUP: reload the rules from the config. "
        "After a crash, the next start replaces what the dead daemon left.",
        epilog="example:\n  prism-xdp run --config docs/prism.example.toml\n"
        "  systemd: see tools/prism-xdp.service",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("--config", required=True, help="TOML config file (annotated example: docs/prism.example.toml)")
    run.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                     help="override the config's log.level")
    run.set_defaults(func=_run)

    ctl = sub.add_parser(
        "ctl", help="talk to the running daemon: rules, mode, statistics",
        description="The runtime control of a running daemon over its root-only Unix socket. "
        "'rule add port N' is the equivalent of writing /proc/port (without its limit of 10 "
        "ports), 'mode sync|batch' of writing /proc/sync.",
        epilog="examples:\n  prism-xdp ctl status\n  prism-xdp ctl rule add port 11211\n"
        "  prism-xdp ctl rule add dscp 46 high\n  prism-xdp ctl rule del port 11211\n"
        "  prism-xdp ctl rule clear\n  prism-xdp ctl rules\n  prism-xdp ctl mode sync\n"
        "  prism-xdp ctl stats --json\n  prism-xdp ctl reset\n  prism-xdp ctl reload",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_socket_args(ctl)
    ctl.add_argument("--json", action="store_true", help="print the daemon's JSON reply")
    csub = ctl.add_subparsers(dest="what", required=True)
    csub.add_parser("status", help="daemon, uplink, queues, containers, mode")
    csub.add_parser("rules", help="list the priority rules")
    rule = csub.add_parser("rule", help="add, delete or clear a priority rule",
                           epilog="example: prism-xdp ctl rule add port 6379 high")
    rule.add_argument("action", choices=["add", "del", "clear"])
    rule.add_argument("kind", nargs="?", choices=["port", "dscp", "vni"])
    rule.add_argument("value", nargs="?", type=int)
    rule.add_argument("cls", nargs="?", default="high", metavar="CLASS",
                      help="low, high, class2, class3 (default high)")
    mode = csub.add_parser("mode", help="show or set the scheduling mode",
                           epilog="example: prism-xdp ctl mode vanilla")
    mode.add_argument("mode", nargs="?", choices=["vanilla", "batch", "sync"])
    csub.add_parser("stats", help="counters per class, stage, drop reason; latency; XDP statistics")
    csub.add_parser("reset", help="clear the latency histograms")
    csub.add_parser("reload", help="re-read the rules from the config file (as SIGHUP)")
    ctl.set_defaults(func=_ctl)

    top = sub.add_parser("top", help="live statistics of the running daemon",
                         description="Shows 'ctl stats' every interval, with rates.",
                         epilog="example:\n  prism-xdp top --interval 2", formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_socket_args(top)
    top.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    top.add_argument("--count", type=int, default=0, help="stop after this many refreshes (0: until ^C)")
    top.set_defaults(func=_top)

    tp = sub.add_parser(
        "topo", help="a test host in network namespaces: up, down, show, config",
        description="A remote host (netns with a kernel VXLAN device, dstport 4789), an uplink veth pair as "
        "the host's NIC, N containers as namespaces on veth pairs, and the stock kernel overlay (VXLAN "
        "device + bridge) on the host for A/B runs. Every name starts with the topology's name; 'down' "
        "removes exactly what 'up' made (recorded under /run/prism-xdp/topo). 'up' again is a no-op.",
        epilog="examples:\n  prism-xdp topo up --containers 2\n  prism-xdp topo show\n"
        "  prism-xdp topo config > prism.toml && prism-xdp run --config prism.toml\n  prism-xdp topo down",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    tp.add_argument("action", choices=["up", "down", "show", "config"])
    tp.add_argument("--name", default="pxd", help="topology name and name prefix (default pxd)")
    tp.add_argument("--containers", type=int, default=2)
    tp.add_argument("--queues", type=int, default=1, help="queues of the uplink and container veths")
    tp.add_argument("--vni", type=int, default=42)
    tp.add_argument("--vxlan-port", type=int, default=4789)
    tp.add_argument("--no-kernel-path", action="store_true", help="without the host's VXLAN device + bridge")
    tp.add_argument("--container-rps", default="0", metavar="MASK",
                    help="hex CPU mask for the containers' receive processing (RPS); 0 = off. A poll-mode "
                         "data path transmits from its worker's CPU: e.g. 1 keeps the containers' stacks on CPU 0")
    tp.set_defaults(func=_topo)

    inj = sub.add_parser(
        "inject", help="send VXLAN-encapsulated HIGH and LOW UDP flows from a topology's remote host",
        description="Builds VXLAN packets with scapy (inner UDP from the remote host's overlay address to a "
        "container) and sends them from the remote namespace at a bounded rate, or writes them to a pcap.",
        epilog="examples:\n  prism-xdp inject --high 7000 --low 9000 --count 1000 --rate 10000\n"
        "  prism-xdp inject --high 7000 --count 10 --pcap high.pcap",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    inj.add_argument("--topo", default="pxd", help="topology name (default pxd)")
    inj.add_argument("--high", type=int, action="append", default=[], help="a HIGH flow's destination port")
    inj.add_argument("--low", type=int, action="append", default=[], help="a LOW flow's destination port")
    inj.add_argument("--count", type=int, default=100, help="packets per flow")
    inj.add_argument("--rate", type=float, default=10000, help="packets per second, all flows together")
    inj.add_argument("--size", type=int, default=64, help="inner frame bytes (60..1450)")
    inj.add_argument("--container", type=int, default=0, help="destination container index")
    inj.add_argument("--pcap", help="write a pcap file instead of sending")
    inj.set_defaults(func=_inject)

    b = sub.add_parser(
        "bench", help="A/B with real tools: the kernel path against prism_xdp in each mode, same host, same traffic",
        description="HIGH request/response applications (sockperf UDP and TCP, memcached with prism-memc-rtt, nginx "
        "with wrk) in container c0, each idle and under LOW bulk loads (iperf3 TCP and UDP, prism_gen) to container "
        "c1, all driven from the remote host, through every configuration: kernel (stock VXLAN + bridge), "
        "kernel-txoff (TX checksum offload off), kernel-prism-batch/-sync when the running kernel has the PRISM "
        "patch's /proc/port, /proc/sync, /proc/split, and prism-vanilla/-batch/-sync (the daemon, as users start "
        "it, with the HIGH ports as priority rules). One placement policy for all, PM QoS held, runs interleaved. "
        "Writes JSON, a markdown table, a latency CDF per HIGH x LOW and a LOW throughput plot. "
        "'bench merge A.json B.json' puts two results (e.g. two kernels) into one table.",
        epilog="examples:\n  prism-xdp bench --quick\n"
        "  prism-xdp bench --runs 3 --duration 10\n"
        "  prism-xdp bench --high sockperf-udp,memcached --low idle,tcp2,udp64x2 --configs kernel,prism-sync\n"
        "  prism-xdp bench --placement split\n"
        "  prism-xdp bench --breakdown --high sockperf-udp --low idle,tcp1   (per-stage HIGH round trip, perf)\n"
        "  prism-xdp bench merge prism-5.4.json modern.json\n"
        "HIGH workloads: sockperf-udp, sockperf-tcp, memcached, nginx\n"
        "LOW loads: idle, tcp<N> (N iperf3 flows, separate processes), udp<payload>[x<N>] (iperf3 -u -b 0), "
        "prism-gen",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("what", nargs="*", metavar="merge A.json B.json", help="merge result files instead of measuring")
    b.add_argument("--topo", default="pxd", help="topology (brought up and removed if not up)")
    b.add_argument("--high", help="comma-separated HIGH workloads (default: all four)")
    b.add_argument("--low", help="comma-separated LOW loads (default idle,tcp1,tcp2,udp64x2,udp1400)")
    b.add_argument("--configs", help="comma-separated subset of the configurations (default: all available)")
    b.add_argument("--duration", type=int, help="seconds of each HIGH measurement (default 10)")
    b.add_argument("--runs", type=int, help="repetitions, interleaved across configurations (default 3)")
    b.add_argument("--placement", default="default",
                   help="default (nothing pinned) or split (daemon worker on the last CPU, every tool on CPU 0)")
    b.add_argument("--steal-max", type=float, default=0.05,
                   help="flag runs in which the hypervisor stole more than this share of a CPU (default 0.05)")
    b.add_argument("--breakdown", action="store_true",
                   help="also trace one sockperf-udp run per configuration x LOW with perf (run 1 only): where a "
                   "HIGH round trip's time goes, stage by stage (off by default: nothing is traced without it)")
    b.add_argument("--quick", action="store_true",
                   help="the demo: sockperf-udp idle and under 1 TCP flow, kernel vs the three modes, 2 x 5 s")
    b.add_argument("--keep", action="store_true", help="keep a topology the bench brought up")
    b.add_argument("--out", default="bench-results", help="directory for the results")
    b.add_argument("--proc", default="/proc", help="where to look for the kernel patch's knobs")
    b.set_defaults(func=_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    fmt = "%(asctime)s %(levelname)s %(message)s" if args.command == "run" else "%(levelname)s %(name)s: %(message)s"
    if args.command == "run":
        level = min(level, logging.INFO)  # the daemon's own level comes from its config
    logging.basicConfig(level=level, format=fmt)
    # pyroute2 is chatty at debug level; keep it quiet unless asked twice.
    logging.getLogger("pyroute2").setLevel(logging.WARNING if args.verbose < 2 else logging.DEBUG)
    if os.geteuid() != 0:
        print(f"prism-xdp {args.command}: needs root (XDP, AF_XDP, network namespaces)",
              file=sys.stderr)
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
