"""iperf.py - iperf3 as the A/B's LOW bulk load: one-off servers, clients (TCP, or UDP of a payload size at unlimited rate), and the receiver's figures from --json."""

from __future__ import annotations

import json


def server_argv(ip: str, port: int) -> list[str]:
    """One test, then it exits: every LOW run starts from a fresh server."""
    return ["iperf3", "-s", "-1", "-B", ip, "-p", str(port)]


def client_argv(ip: str, port: int, seconds: int, udp_payload: int | None, reverse: bool = False) -> list[str]:
    """reverse: the server (in the container) sends, the client receives (-R)."""
    argv = ["iperf3", "-c", ip, "-p", str(port), "-t", str(seconds), "--json"] + (["-R"] if reverse else [])
    if udp_payload is not None:
        argv += ["-u", "-b", "0", "-l", str(udp_payload)]  # -b 0: as fast as it can send
    return argv


def parse(text: str) -> dict[str, float | int | None]:
    """The receiver's side of one client's --json: bytes, seconds, Gbit/s; for UDP also the
    datagrams received and lost. Raises ValueError with iperf3's own error."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"iperf3 printed no JSON ({exc.msg}): {text.strip()[-200:]!r}") from None
    if doc.get("error"):
        raise ValueError(f"iperf3: {doc['error']}")
    rx = doc.get("end", {}).get("sum_received")
    if not rx:
        raise ValueError("iperf3: no receiver summary in its JSON")
    udp = doc["start"]["test_start"]["protocol"] == "UDP"
    secs = float(rx["seconds"])
    out: dict[str, float | int | None] = {"bytes": int(rx["bytes"]), "seconds": secs,
                                          "gbps": rx["bytes"] * 8 / secs / 1e9 if secs else 0.0,
                                          "packets": None, "lost": None}
    if udp:
        out["packets"] = int(rx["packets"]) - int(rx["lost_packets"])
        out["lost"] = int(rx["lost_packets"])
    return out
