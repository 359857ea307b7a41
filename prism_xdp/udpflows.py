"""udpflows.py - paced, sequence-numbered UDP flows and a receiver that checks each flow arrived whole and in order (run inside a namespace: python -m prism_xdp.udpflows send|recv ...)."""

from __future__ import annotations

import argparse
import json
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m prism_xdp.udpflows", description=__doc__)
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
    a = ap.parse_args(argv)
    ports = [int(p) for p in a.ports.split(",")]
    if a.cmd == "send":
        out: dict = send(a.dst, ports, a.count, a.size, a.burst, a.gap_us)
    else:
        out = receive(a.bind, ports, a.expect, a.timeout)
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
