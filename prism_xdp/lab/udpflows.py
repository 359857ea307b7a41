"""udpflows.py - paced, sequence-numbered UDP flows, a receiver that checks each flow arrived whole and in order, and a bounded UDP echo (run inside a namespace: python -m prism_xdp.lab.udpflows send|recv|echo ...)."""

from __future__ import annotations

import argparse
import json
import os
import selectors
import socket
import struct
import sys
import time

HEADER = struct.Struct("!IQ")  # flow (destination port), sequence number


def send(dst: str, ports: list[int], count: int, size: int, burst: int, gap_us: int) -> dict[str, float]:
    """count datagrams per port, interleaved across ports, in bursts with a gap between them."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    pad = bytes(max(0, size - HEADER.size))
    sent = 0
    start = time.monotonic()
    for seq in range(count):
        for port in ports:
            sock.sendto(HEADER.pack(port, seq) + pad, (dst, port))
            sent += 1
        if sent % burst < len(ports):
            time.sleep(gap_us / 1e6)
    sock.close()
    return {"sent": sent, "seconds": round(time.monotonic() - start, 3)}


def receive(bind: str, ports: list[int], expect: int, timeout: float) -> dict:
    """Until `expect` datagrams came in total, or `timeout` seconds passed without any."""
    sel = selectors.DefaultSelector()
    for port in ports:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        s.bind((bind, port))
        sel.register(s, selectors.EVENT_READ)
    stats = {p: {"received": 0, "out_of_order": 0, "last": -1} for p in ports}
    total = 0
    samples: list[tuple[int, int, int]] = []
    print("ready", flush=True)
    while total < expect:
        events = sel.select(timeout)
        if not events:
            break
        for key, _ in events:
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            while True:
                try:
                    data = sock.recv(65535, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    break
                port, seq = HEADER.unpack_from(data)
                st = stats[port]
                if seq <= st["last"]:
                    st["out_of_order"] += 1
                    if len(samples) < 20:
                        samples.append((port, seq, st["last"]))
                st["last"] = max(st["last"], seq)
                st["received"] += 1
                total += 1
    out: dict = {str(p): {"received": st["received"], "out_of_order": st["out_of_order"],
                          "in_order": st["out_of_order"] == 0} for p, st in stats.items()}
    if samples:
        out["late"] = [{"port": p, "seq": s, "after": a} for p, s, a in samples]
    return out


def echo(bind: str, port: int, seconds: float) -> dict[str, int]:
    """Send every datagram back to where it came from, for `seconds` at most."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((bind, port))
    deadline = time.monotonic() + seconds
    echoed = 0
    print("ready", flush=True)
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data, peer = sock.recvfrom(65535)
        except TimeoutError:
            break
        sock.sendto(data, peer)
        echoed += 1
    return {"echoed": echoed}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m prism_xdp.lab.udpflows", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("send", help="send sequence-numbered flows, one per destination port")
    s.add_argument("--dst", required=True)
    s.add_argument("--ports", required=True, help="comma-separated destination ports, one flow each")
    s.add_argument("--count", type=int, default=1000, help="datagrams per flow")
    s.add_argument("--size", type=int, default=64, help="UDP payload bytes")
    s.add_argument("--burst", type=int, default=64, help="datagrams between two pauses")
    s.add_argument("--gap-us", type=int, default=500, help="pause between bursts")
    r = sub.add_parser("recv", help="receive the flows and report loss and order as JSON")
    r.add_argument("--bind", required=True)
    r.add_argument("--ports", required=True)
    r.add_argument("--expect", type=int, required=True, help="stop after this many datagrams")
    r.add_argument("--timeout", type=float, default=2.0, help="stop after this long without a datagram")
    e = sub.add_parser("echo", help="echo datagrams back to their sender for a bounded time")
    e.add_argument("--bind", required=True)
    e.add_argument("--ports", required=True, help="the port to listen on")
    e.add_argument("--seconds", type=float, default=60.0)
    e.add_argument("--cpu", type=int, help="pin to this CPU (keep it off the data path's CPU)")
    a = ap.parse_args(argv)
    ports = [int(p) for p in a.ports.split(",")]
    if a.cmd == "echo":
        if a.cpu is not None:
            os.sched_setaffinity(0, {a.cpu})
        out: dict = echo(a.bind, ports[0], a.seconds)
    elif a.cmd == "send":
        out = send(a.dst, ports, a.count, a.size, a.burst, a.gap_us)
    else:
        out = receive(a.bind, ports, a.expect, a.timeout)
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
