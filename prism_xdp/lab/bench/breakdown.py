"""breakdown.py - `bench --breakdown`: where one HIGH sockperf round trip's time goes, stage by stage (stages.py) from tracepoints recorded with perf (tracing.py), with the daemon's own stamps beside it; the run inside the bench and its table."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from prism_xdp.dataplane import native
from prism_xdp.dataplane.steer import xsk_slot
from prism_xdp.lab.bench.configs import KERNEL_HIGH
from prism_xdp.lab.bench.samples import summarize
from prism_xdp.lab.bench.stages import ALL_POINTS, SEGMENT_WHAT, Names, analyse, chain
from prism_xdp.lab.bench.tracing import Recording

SOCKPERF_S = 2  # sockperf -t of the traced run: ~40,000 round trips idle, hundreds to thousands under load


# ---- the report's part -------------------------------------------------------------

def _cell(s: dict[str, Any] | None, key: str) -> str:
    return "-" if not s or key not in s else f"{s[key]:.1f}"


def _seg(r: dict[str, Any], name: str) -> str:
    s = (r.get("trace") or {}).get("segments_us", {}).get(name)
    return "-" if not s else f"{_cell(s, 'p50')} / {_cell(s, 'p99')}"


def _rows(r: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, cell) of one configuration's column, in table order."""
    t = r.get("trace")
    daemon = r.get("daemon", {})
    out = [(f"{name}: {SEGMENT_WHAT[name]}", _seg(r, name)) for name in ALL_POINTS[1:]]
    out += [("**first to last event (span)**", _seg(r, "span")),
            ("sum of the stage medians", "-" if not t else f"{t['sum_of_medians_us']}"),
            ("sockperf round trip, traced run", _pair(r.get("sockperf_traced_us"))),
            ("sockperf round trip, untraced run", _pair(r.get("sockperf_untraced_us"))),
            ("of which server wakeup->running (share woken)", _woke(r, "server_wakeup")),
            ("of which client wakeup->running (share woken)", _woke(r, "client_wakeup")),
            ("daemon: HIGH XDP->TX kick", _pair(daemon.get("latency_us"))),
            ("daemon: HIGH poll->TX kick (pipeline)", _pair(daemon.get("pipeline_us"))),
            ("round trips paired / sends traced / sockperf sent (events)",
             "-" if not t else f"{t['round_trips']} / {t['sends']} / {r.get('sockperf_sent')} ({t['events']})"),
            ("perf CPU s / lost events", f"{r.get('perf_cpu_s', '-')} / {r.get('lost', '-')}")]
    return out


def table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown: per LOW load, one row per stage, p50 / p99 per configuration; then the span,
    sockperf's own round trip while traced and untraced, the daemon's stamps, and the cost."""
    out: list[str] = []
    for low in dict.fromkeys(r["low"] for r in rows):
        mine = [r for r in rows if r["low"] == low]
        cols = [_rows(r) for r in mine]
        out += ["", f"### LOW {low}: HIGH round trip by stage, µs (p50 / p99)", "",
                "| from the previous point to | " + " | ".join(r["config"] for r in mine) + " |",
                "|---|" + "---|" * len(mine)]
        for i, (label, _) in enumerate(cols[0]):
            out.append(f"| {label} | " + " | ".join(c[i][1] for c in cols) + " |")
        errs = [f"- {r['config']}: {r['error']}" for r in mine if r.get("error")]
        if errs:
            out += [""] + errs
    return "\n".join(out).lstrip("\n") + "\n"


def _pair(s: dict[str, Any] | None) -> str:
    return "-" if not s or not s.get("count", 1) else f"{_cell(s, 'p50')} / {_cell(s, 'p99')}"


def _woke(r: dict[str, Any], w: str) -> str:
    t = r.get("trace")
    if not t or not t["round_trips"]:
        return "-"
    s = t["segments_us"].get(f"{w}_to_run")
    # The count too: percentiles of a handful of wakeups (a process that rarely slept) are no tail.
    return f"{_pair(s)} ({t['woke'][w] / t['round_trips']:.0%}: {t['woke'][w]})"


def slot_of(config: str, queue: int = 0) -> int | None:
    """The XSKMAP slot of queue's HIGH socket in a prism configuration (vanilla: none)."""
    return None if config.partition("+")[0] == "prism-vanilla" or config.endswith(KERNEL_HIGH) else \
        xsk_slot(queue, native.PRISM_CLASS_HIGH)


# ---- one traced run inside the bench ------------------------------------------------

KEEP_ENV = "PRISM_XDP_BREAKDOWN_KEEP"  # a directory: each capture's `perf script` text is written there
HIGH = "sockperf-udp"  # the workload traced: one UDP message in flight makes the pairing sequential
COST_NOTE = ("--breakdown adds, per configuration x LOW (run 1 only), one sockperf-udp run (-t "
             f"{SOCKPERF_S}) traced from its start to its exit with perf record -a (in-kernel filters: "
             "only HIGH packets' events and the two sockperf processes reach perf); the untraced table above is "
             "measured without perf. The traced run's own sockperf round trip shows what tracing adds; perf's "
             "CPU time is given. Without --breakdown nothing is traced.")


def client_seconds() -> int:
    """sockperf -t of the traced run."""
    return SOCKPERF_S


def names_of(host: Any, client_pid: int, server_pid: int) -> Names:
    from prism_xdp.lab.testhost import link_index

    c = host.containers[0]
    return Names(host.uplink.remote_if, host.vxlan_if, host.uplink.host_if, c.host_if, c.cont_if,
                 link_index(host.uplink.host_if), link_index(c.host_if), client_pid, server_pid)


def measure(config: str, low: str, host: Any, tools: Any, server: Any, workdir: Path, wrap: Any,
            daemon: Any, untraced: dict[str, Any] | None) -> dict[str, Any]:
    """A sockperf-udp client run with perf recording its round trips' tracepoints; the row of the
    breakdown table for (config, low). Failures are recorded in the row, not raised."""
    from prism_xdp.lab.bench import sockperf, workloads

    row: dict[str, Any] = {"config": config, "low": low, "sockperf_untraced_us": untraced}
    h = workloads.HIGH[HIGH]
    log = workdir / "breakdown-sockperf.log"
    rec: Recording | None = None
    client = None
    try:
        log.unlink(missing_ok=True)
        argv = wrap(sockperf.client_argv(host.containers[0].ip, h.port, False, client_seconds(),
                                         workloads.SOCKPERF_MSG, str(log)))
        client = tools.start("breakdown-sockperf-client", host.remote_ns, argv)
        n = names_of(host, client.proc.pid, server.proc.pid)
        path = "kernel" if daemon is None else "kernel-high" if config.endswith(KERNEL_HIGH) else "prism"
        points = chain(path, n, slot_of(config) if daemon is not None else None)
        rec = Recording(points, n, workdir, config)
        row.update(path=path, perf_argv=rec.argv)
        # Traced from before the client's first message (sockperf sends nothing for its first
        # ~2 s, perf is set up well within that) to its exit: every round trip that sockperf
        # reports was traced, so the two can be compared.
        if daemon is not None:
            daemon.call("stats-reset")
        rec.start()
        rc = client.wait(client_seconds() + h.startup_s + 30)
        rec.stop()
        if daemon is not None:
            lat = daemon.call("stats")["totals"]["latency"]["high"]
            row["daemon"] = {"latency_us": lat["latency_us"], "pipeline_us": lat["pipeline_us"],
                             "note": "HIGH packets of both directions, over the traced run"}
        row.update(perf_cpu_s=round(rec.cpu_s, 3), lost=rec.lost())
        traced = sockperf.parse_full_log(log.read_text() if log.exists() else "")
        row["sockperf_traced_us"] = summarize(sorted(traced)) if traced else None
        row["sockperf_exit"] = rc
        row["sockperf_sent"] = sockperf.parse_summary(client.stdout()).get("sent")  # warm-up included
        text = rec.script()
        row["names"] = asdict(n)
        keep = os.environ.get(KEEP_ENV)
        if keep:  # the raw capture, for a look or a test's data
            Path(keep, f"breakdown-{config}-{low}.txt").write_text(text)
        row["trace"] = analyse(text, points, n)
        row["ok"] = row["trace"]["round_trips"] > 0
        if not row["ok"]:
            row["error"] = f"no round trip paired ({row['trace']['sends']} sends, {row['trace']['events']} events)"
    except Exception as exc:
        row.update(ok=False, error=f"{type(exc).__name__}: {exc}")
    finally:
        if rec is not None:
            rec.stop()
            rec.data.unlink(missing_ok=True)
        if client is not None:
            client.stop()
        log.unlink(missing_ok=True)
    return row


def report(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The breakdown part of the bench's report."""
    return {"rows": rows, "cost": COST_NOTE, "table": table(rows),
            "notes": ["Each stage is the time from the previous point of the chain to this one, per round trip "
                      "(p50 / p99 over the paired round trips); '-' where a configuration has no such point "
                      "(prism-vanilla: the uplink's one socket takes LOW too, so the host's first receive is "
                      "folded into the next stage). The stages of one round trip add up to its span exactly; "
                      "medians of stages need not add up to the median span.",
                      "Timestamps: perf with CLOCK_MONOTONIC; tracepoint events only, nothing sampled."]}
