"""cli.py - the prism-xdp command line: one subcommand per job, each with --help and an example."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from prism_xdp import __version__

EPILOG = """examples:
  prism-xdp selfcheck            # load the classifier on a throwaway veth, move packets, report
  prism-xdp selfcheck -n 1000    # the same with more packets
"""


def _selfcheck(args: argparse.Namespace) -> int:
    from prism_xdp import selfcheck

    return 0 if selfcheck.run(count=args.count) else 1


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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    # pyroute2 is chatty at debug level; keep it quiet unless asked twice.
    logging.getLogger("pyroute2").setLevel(logging.WARNING if args.verbose < 2 else logging.DEBUG)
    if os.geteuid() != 0:
        print(f"prism-xdp {args.command}: needs root (XDP, AF_XDP, network namespaces)",
              file=sys.stderr)
        return 2
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        print(f"prism-xdp {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
