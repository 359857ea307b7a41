"""cli.py - the lab's prism-xdp subcommands (selfcheck, topo, inject, bench): their options, and handlers that import the lab only when run, so that a daemon without the lab extra still starts and says what is missing."""

from __future__ import annotations

import argparse
import functools
import importlib.util
import sys
from typing import TYPE_CHECKING, Any

from prism_xdp.daemon.cli import Handler, command, is_root
from prism_xdp.dataplane.errors import ConfigError

if TYPE_CHECKING:
    from prism_xdp.lab.bench.runner import BenchParams

EXTRA = ("scapy", "matplotlib", "pyroute2")  # what pip install prism_xdp[lab] brings


def needs_lab(handler: Handler) -> Handler:
    """The handler, or one clear line and exit 2 when a package of the lab extra is missing."""

    def refuse(args: argparse.Namespace, missing: str) -> int:
        print(f"prism-xdp {args.command}: needs the lab extra: pip install prism_xdp[lab] (missing: {missing})",
              file=sys.stderr)
        return 2

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        # Checked before anything else (the root check too): a missing extra is the first thing to fix.
        for name in EXTRA:
            if importlib.util.find_spec(name) is None:
                return refuse(args, name)
        if not is_root(args):
            return 2
        try:
            return handler(args)
        except ModuleNotFoundError as exc:
            missing = (exc.name or "").partition(".")[0]
            if missing not in EXTRA:
                raise
            return refuse(args, missing)

    run.preflight = True  # type: ignore[attr-defined]
    return run


def _selfcheck(args: argparse.Namespace) -> int:
    from prism_xdp.lab import selfcheck

    return 0 if selfcheck.run(count=args.count) else 1


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
        command="prism-xdp " + " ".join(sys.argv[1:]), breakdown=getattr(args, "breakdown", False),
        settings=abconfigs.parse_settings(getattr(args, "set", None) or []))


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


def add_commands(sub: Any) -> None:
    """The lab's subcommands, on the prism-xdp parser's subparsers."""
    check = command(
        sub, "selfcheck", needs_lab(_selfcheck), "check this host end to end on a throwaway test host (root)",
        "Builds a throwaway test host in a network namespace (names start with "
        "'pxs'), attaches the VXLAN classifier to its uplink veth, opens HIGH and LOW AF_XDP "
        "sockets on one queue, sends VXLAN from scapy and from a kernel VXLAN device plus "
        "malformed frames, prints what arrived where, and removes everything.",
        ("prism-xdp selfcheck -n 500",))
    check.add_argument("-n", "--count", type=int, default=300,
                       help="VXLAN packets to send from scapy (default 300)")

    tp = command(
        sub, "topo", needs_lab(_topo), "a test host in network namespaces: up, down, show, config",
        "A remote host (netns with a kernel VXLAN device, dstport 4789), an uplink veth pair as "
        "the host's NIC, N containers as namespaces on veth pairs, and the stock kernel overlay (VXLAN "
        "device + bridge) on the host for A/B runs. Every name starts with the topology's name; 'down' "
        "removes exactly what 'up' made (recorded under /run/prism-xdp/topo). 'up' again is a no-op.",
        ("prism-xdp topo up --containers 2", "prism-xdp topo show",
         "prism-xdp topo config > prism.toml && prism-xdp run --config prism.toml", "prism-xdp topo down"))
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

    inj = command(
        sub, "inject", needs_lab(_inject), "send VXLAN-encapsulated HIGH and LOW UDP flows from a topology's remote host",
        "Builds VXLAN packets with scapy (inner UDP from the remote host's overlay address to a "
        "container) and sends them from the remote namespace at a bounded rate, or writes them to a pcap.",
        ("prism-xdp inject --high 7000 --low 9000 --count 1000 --rate 10000",
         "prism-xdp inject --high 7000 --count 10 --pcap high.pcap"))
    inj.add_argument("--topo", default="pxd", help="topology name (default pxd)")
    inj.add_argument("--high", type=int, action="append", default=[], help="a HIGH flow's destination port")
    inj.add_argument("--low", type=int, action="append", default=[], help="a LOW flow's destination port")
    inj.add_argument("--count", type=int, default=100, help="packets per flow")
    inj.add_argument("--rate", type=float, default=10000, help="packets per second, all flows together")
    inj.add_argument("--size", type=int, default=64, help="inner frame bytes (60..1450)")
    inj.add_argument("--container", type=int, default=0, help="destination container index")
    inj.add_argument("--pcap", help="write a pcap file instead of sending")

    b = command(
        sub, "bench", needs_lab(_bench),
        "A/B with real tools: the kernel path against prism_xdp in each mode, same host, same traffic",
        "HIGH request/response applications (sockperf UDP and TCP, memcached with prism-memc-rtt, nginx "
        "with wrk) in container c0, each idle and under LOW bulk loads (iperf3 TCP and UDP, prism_gen) to container "
        "c1, all driven from the remote host, through every configuration: kernel (stock VXLAN + bridge), "
        "kernel-txoff (TX checksum offload off), kernel-prism-batch/-sync when the running kernel has the PRISM "
        "patch's /proc/port, /proc/sync, /proc/split, and prism-vanilla/-batch/-sync (the daemon, as users start "
        "it, with the HIGH ports as priority rules). One placement policy for all, PM QoS held, runs interleaved. "
        "Writes JSON, a markdown table, a latency CDF per HIGH x LOW and a LOW throughput plot. "
        "'bench merge A.json B.json' puts two results (e.g. two kernels) into one table.",
        ("prism-xdp bench --quick", "prism-xdp bench --runs 3 --duration 10",
         "prism-xdp bench --high sockperf-udp,memcached --low idle,tcp2,udp64x2 --configs kernel,prism-sync",
         "prism-xdp bench --placement split",
         "prism-xdp bench --breakdown --high sockperf-udp --low idle,tcp1   (per-stage HIGH round trip, perf)",
         "prism-xdp bench merge prism-5.4.json modern.json"),
        "HIGH workloads: sockperf-udp, sockperf-tcp, memcached, nginx\n"
        "LOW loads: idle, tcp<N> (N iperf3 flows, separate processes), udp<payload>[x<N>] (iperf3 -u -b 0), "
        "prism-gen")
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
    b.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                   help="a daemon setting for every prism-* configuration alike, recorded in the results "
                   "(repeatable; e.g. scheduler.low_batch_with_high=16, snooping.enabled=false)")
    b.add_argument("--keep", action="store_true", help="keep a topology the bench brought up")
    b.add_argument("--out", default="bench-results", help="directory for the results")
    b.add_argument("--proc", default="/proc", help="where to look for the kernel patch's knobs")
