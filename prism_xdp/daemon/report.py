"""report.py - the daemon's replies as readable text: statistics tables for `prism-xdp ctl stats` and `prism-xdp top`, status, rules."""

from __future__ import annotations

from typing import Any

from prism_xdp.dataplane.classes import CLASS_BY_NAME, class_name


def table(headers: list[str], rows: list[list[object]]) -> str:
    cells = [headers] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
             for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def fields(result: dict[str, Any]) -> str:
    """One line per key (`ctl status`); lists of records and dicts as key=value pairs."""
    lines = []
    for k, v in result.items():
        if isinstance(v, list) and v and isinstance(v[0], dict):
            lines.append(f"{k:12} " + "\n             ".join("  ".join(f"{a}={b}" for a, b in item.items())
                                                          for item in v))
        elif isinstance(v, dict):
            lines.append(f"{k:12} " + "  ".join(f"{a}={b}" for a, b in v.items()))
        else:
            lines.append(f"{k:12} {v}")
    return "\n".join(lines)


def rules(result: dict[str, dict[str, int]]) -> str:
    rows: list[list[object]] = [[k, v, class_name(c)] for k, m in result.items() for v, c in m.items()]
    return table(["kind", "value", "class"], rows) if rows else "no rules: every packet is LOW"


def rule(result: dict[str, Any]) -> str:
    """What a rule-add, rule-del or rules-clear did."""
    if "kind" not in result:
        return f"removed {result['removed']} rule(s)"
    if result.get("removed"):
        return f"{result['kind']} {result['value']}: rule removed"
    return f"{result['kind']} {result['value']}: {class_name(result['class'])}"


def _rate(now: int, before: int | None, seconds: float | None) -> str:
    if before is None or not seconds:
        return ""
    return f"{(now - before) / seconds:,.0f}/s"


def render(stats: dict[str, Any], previous: dict[str, Any] | None = None, seconds: float | None = None) -> str:
    """Stats as text; with previous and seconds, rates too."""
    t = stats["totals"]
    pt = previous["totals"] if previous else None
    out = [f"mode {stats['mode']}   uptime {stats['uptime_s']:.0f} s   queues {', '.join(stats['queues'])}", ""]

    steer = t["steer"]
    rows = []
    for cls in sorted(t["latency"], key=lambda c: -CLASS_BY_NAME.get(c, 0)):  # most urgent first
        before = pt["steer"]["steered"][cls] if pt else None
        lat = t["latency"][cls]["latency_us"]
        pipe = t["latency"][cls]["pipeline_us"]
        rows.append([cls, steer["steered"][cls], _rate(steer["steered"][cls], before, seconds),
                     lat.get("p50", "-"), lat.get("p99", "-"), lat.get("p99.9", "-"), lat.get("max", "-"),
                     pipe.get("p99", "-")])
    out.append(table(["class", "steered", "rate", "p50 ≤ µs", "p99 ≤ µs", "p99.9 ≤ µs", "max µs", "pipeline p99 ≤"],
                     rows))
    out.append(f"(latency: XDP to TX kick, both directions; pNN ≤: its histogram bucket's upper edge, at most "
               f"1/16 above the true value; passed to kernel {steer['passed']}, "
               f"malformed {sum(steer['malformed'].values())})")
    kernel = t.get("high_path", {})
    if kernel.get("high_path") == "kernel":
        out.append(f"kernel HIGH path: decap {kernel['decap']}, encap {kernel['encap']}, tunnels {kernel['tunnels']}; "
                   f"left to the kernel: no port {kernel['no_port']}, aggregates {kernel['aggregate']}; "
                   f"dropped: no tunnel {kernel['no_tunnel']}, too big {kernel['too_big']}, failed {kernel['failed']} "
                   "(HIGH on this path is not in the latency table)")
    up = t.get("uplink_delivery", {})
    if up.get("method") == "packet":
        st = t["stages"]
        out.append(f"to the uplink in GSO packets: {st['gso_out_segments']} segments merged into "
                   f"{st['gso_out_packets']}; prism_gso_encap encapsulated {up['encap']} "
                   f"({up['encap_bytes']} bytes), dropped: no VTEP {up['no_vtep']}, failed {up['failed']}")
    st = t["stages"]
    if st.get("hold_frames"):
        out.append(f"LOW segments held for the next batches (scheduler.low_gro_hold): {st['hold_frames']}; "
                   f"sent for: a packet's worth {st['hold_flush_full']}, PSH {st['hold_flush_psh']}, "
                   f"idle {st['hold_flush_idle']}, age {st['hold_flush_age']}, "
                   f"a frame that could not wait {st['hold_flush_other']}")
    mb = t.get("multi_buffer")
    if mb:
        out.append(f"multi-buffer packets from the uplink (xdp_mode skb): {mb['rx_multibuf']} in "
                   f"{mb['rx_multibuf_parts']} parts")
    out.append("")

    st = t["stages"]
    rows = [[k, v, _rate(v, pt["stages"][k] if pt else None, seconds)]
            for k, v in st.items() if not k.startswith("drop_")]
    out.append(table(["stage counter", "packets", "rate"], rows))
    out.append("")
    drops = [[k[len("drop_"):], v] for k, v in st.items() if k.startswith("drop_") and v]
    mal = [[f"malformed {k}", v] for k, v in steer["malformed"].items() if v]
    out.append(table(["drop reason", "packets"], drops + mal) if drops or mal else "drops: none")
    out.append("")
    rows = [[p, c["tx_packets"], _rate(c["tx_packets"], pt["ports"][p]["tx_packets"] if pt and p in pt["ports"] else None,
                                       seconds), c["tx_full"]] for p, c in t["ports"].items()]
    out.append(table(["port", "tx packets", "rate", "tx ring full"], rows))
    out.append("")
    rows = [[name, s["rx_dropped"], s["rx_ring_full"], s["rx_fill_ring_empty_descs"], s["tx_ring_empty_descs"]]
            for name, s in t["xsk"].items()]
    out.append(table(["socket (XDP_STATISTICS)", "rx_dropped", "rx_ring_full", "fill_empty", "tx_empty"], rows))
    return "\n".join(out)
