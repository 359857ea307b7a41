"""breakdown.py - `bench --breakdown`: where one HIGH sockperf round trip's time goes, from kernel tracepoints recorded with perf (filtered to the HIGH packets) and paired into round trips, with the daemon's own stamps beside it."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from prism_xdp.dataplane import native
from prism_xdp.dataplane.steer import xsk_slot
from prism_xdp.lab.bench.samples import summarize

SOCKPERF_S = 2  # sockperf -t of the traced run: ~40,000 round trips idle, hundreds to thousands under load
MMAP_PAGES = 2048  # perf's ring per CPU (8 MiB): no lost events at ~400,000 events/s
OPTIONAL_WAKEUP = ("server_wakeup", "client_wakeup")

# Sizes of one 64 B sockperf message on this overlay: the tracepoints' skb->len is the
# frame with its Ethernet header on transmit and without it on receive.
INNER_RX, INNER_TX = 20 + 8 + 64, 14 + 20 + 8 + 64  # 92, 106
OUTER_RX, OUTER_TX = INNER_TX + 20 + 8 + 8, INNER_TX + 50  # 142, 156


@dataclass(frozen=True)
class Point:
    """One place a HIGH packet passes, as a tracepoint event that only it produces."""

    name: str
    event: str  # perf event name, e.g. net:netif_rx
    what: str
    match: tuple[tuple[str, str], ...] = ()  # (field, value) the event's fields must have
    pid_role: str = ""  # "client" / "server": the event's own pid must be that process's
    same_skb_as: str = ""  # the point whose event carried the same skb (skbaddr)


@dataclass(frozen=True)
class Names:
    """The test host's interfaces and the HIGH workload's processes, as the trace names them."""

    remote_if: str
    vxlan_if: str
    uplink_if: str
    host_if: str  # container c0's host-side veth
    cont_if: str  # container c0's interface
    uplink_index: int = 0
    host_index: int = 0
    client_pid: int = 0
    server_pid: int = 0


def chain(path: str, n: Names, high_slot: int | None) -> list[Point]:
    """The points of one round trip in the order a HIGH request and its reply pass them.

    path "kernel": the VXLAN device + bridge; "prism": the daemon, whose XDP redirects to the
    HIGH socket (high_slot) are the host's receive points - except in vanilla (high_slot None),
    where the uplink's single socket takes LOW too and only the container's egress (c0's
    traffic only) can be told apart.
    """
    d = str
    head = [
        Point("send", "syscalls:sys_enter_sendto", "client sendto()", pid_role="client"),
        Point("remote_vxlan_xmit", "net:net_dev_start_xmit", "remote VXLAN device transmits",
              (("name", n.vxlan_if), ("len", d(INNER_TX)))),
        Point("remote_uplink_xmit", "net:net_dev_start_xmit", "remote uplink transmits (encapsulated)",
              (("name", n.remote_if), ("len", d(OUTER_TX))), same_skb_as="remote_vxlan_xmit"),
    ]
    if path == "kernel":
        host_in = [Point("host_rx", "net:netif_receive_skb", "host uplink: backlog hands it to the stack",
                         (("name", n.uplink_if), ("len", d(OUTER_RX))), same_skb_as="remote_uplink_xmit")]
    elif high_slot is not None:
        host_in = [Point("host_rx", "xdp:xdp_redirect", "host uplink: XDP redirects to the HIGH socket",
                         (("ifindex", d(n.uplink_index)), ("map_index", d(high_slot))))]
    else:
        host_in = []
    mid = [
        Point("cont_in", "net:netif_rx", "container veth gets it (bridge / daemon's TX kick)",
              (("name", n.cont_if), ("len", d(INNER_RX)))),
        Point("cont_rx", "net:netif_receive_skb", "container: backlog hands it to the stack",
              (("name", n.cont_if), ("len", d(INNER_RX))), same_skb_as="cont_in"),
        Point("server_recv", "syscalls:sys_exit_recvfrom", "server's recvfrom() returns", pid_role="server"),
        Point("server_send", "syscalls:sys_enter_sendto", "server sendto()", pid_role="server"),
        Point("cont_xmit", "net:net_dev_start_xmit", "container interface transmits the reply",
              (("name", n.cont_if), ("len", d(INNER_TX)))),
    ]
    if path == "kernel":
        host_back = [Point("host_back", "net:netif_receive_skb", "host-side veth: backlog hands it to the bridge",
                           (("name", n.host_if), ("len", d(INNER_RX))), same_skb_as="cont_xmit")]
    else:
        host_back = [Point("host_back", "xdp:xdp_redirect", "host-side veth: egress XDP redirects to its socket",
                           (("ifindex", d(n.host_index)), ("map_index", d(high_slot or 0))))]
    tail = [
        Point("remote_in", "net:netif_rx", "remote uplink gets it (bridge+VXLAN / daemon's TX kick)",
              (("name", n.remote_if), ("len", d(OUTER_RX)))),
        Point("remote_rx", "net:netif_receive_skb", "remote VXLAN device hands the decapsulated reply up",
              (("name", n.vxlan_if), ("len", d(INNER_RX))), same_skb_as="remote_in"),
        Point("client_recv", "syscalls:sys_exit_recvfrom", "client's recvfrom() returns", pid_role="client"),
    ]
    return head + host_in + mid + host_back + tail


ALL_POINTS = ("send", "remote_vxlan_xmit", "remote_uplink_xmit", "host_rx", "cont_in", "cont_rx", "server_recv",
              "server_send", "cont_xmit", "host_back", "remote_in", "remote_rx", "client_recv")
SEGMENT_WHAT = {
    "remote_vxlan_xmit": "client's send path to the remote VXLAN device",
    "remote_uplink_xmit": "remote VXLAN encapsulation",
    "host_rx": "uplink veth to the host's first receive (XDP redirect / backlog)",
    "cont_in": "host: decap and delivery to the container's veth (daemon / VXLAN + bridge)",
    "cont_rx": "container's backlog (softirq) until its stack takes the request",
    "server_recv": "socket to the server's recvfrom() return (wakeup, run queue)",
    "server_send": "server application",
    "cont_xmit": "container's send path",
    "host_back": "container veth to the host's first receive (egress XDP / backlog)",
    "remote_in": "host: encap and uplink TX (daemon / bridge + VXLAN) to the remote",
    "remote_rx": "remote's backlog and VXLAN decapsulation",
    "client_recv": "socket to the client's recvfrom() return (wakeup, run queue)",
}


# ---- perf record's event list ------------------------------------------------

def _filter(conds: Iterable[str]) -> str:
    return " || ".join(sorted(set(conds)))


def perf_events(points: Sequence[Point], n: Names) -> list[str]:
    """perf record arguments: every tracepoint the chain uses, filtered in the kernel so that only
    HIGH packets and the two sockperf processes are recorded (plus their wakeups)."""
    pids = {"client": n.client_pid, "server": n.server_pid}
    by_event: dict[str, list[str]] = {}
    for p in points:
        if p.pid_role:
            cond = f"common_pid == {pids[p.pid_role]}"
        else:
            cond = "(" + " && ".join(f'{k} == "{v}"' if k == "name" else f"{k} == {v}" for k, v in p.match) + ")"
        by_event.setdefault(p.event, []).append(cond)
    by_event["sched:sched_wakeup"] = [f"pid == {n.client_pid}", f"pid == {n.server_pid}"]
    args: list[str] = []
    for event, conds in by_event.items():
        args += ["-e", event, "--filter", _filter(conds)]
    return args


# ---- perf script's text ------------------------------------------------------------

_LINE = re.compile(r"^\s*(?P<tid>\d+)\s+\[(?P<cpu>\d+)\]\s+(?P<s>\d+)\.(?P<ns>\d{9}):\s+(?P<event>[\w:]+):\s?(?P<rest>.*)$")
_FIELD = re.compile(r"(\w+)=(\S+)")
SCRIPT_FIELDS = "tid,cpu,time,event,trace"


@dataclass(frozen=True)
class Event:
    t_ns: int
    cpu: int
    tid: int
    event: str
    fields: dict[str, str] = field(default_factory=dict, compare=False)


def parse_script(text: str) -> list[Event]:
    """Events from `perf script -F tid,cpu,time,event,trace --ns`, in time order."""
    out = []
    for line in text.splitlines():
        m = _LINE.match(line)
        if m:
            out.append(Event(int(m["s"]) * 1_000_000_000 + int(m["ns"]), int(m["cpu"]), int(m["tid"]), m["event"],
                             dict(_FIELD.findall(m["rest"]))))
    out.sort(key=lambda e: e.t_ns)
    return out


def _matches(p: Point, e: Event, n: Names) -> bool:
    if e.event != p.event:
        return False
    if p.pid_role:
        return e.tid == (n.client_pid if p.pid_role == "client" else n.server_pid)
    return all(e.fields.get("dev" if k == "name" else k) == v for k, v in p.match)


@dataclass
class Pairing:
    trips: list[dict[str, int]]  # point name -> time (ns); wakeups when they happened
    started: int = 0  # client sends seen
    incomplete: int = 0  # sends whose chain did not reach the client's receive


def pair(events: Sequence[Event], points: Sequence[Point], n: Names) -> Pairing:
    """Round trips, in time order: each client send opens one, and the next event of each point
    in turn (the same skb where a point says so) fills it; one message is in flight, so a send
    before the chain's end means a point was missed (that round trip is counted incomplete).
    A wakeup of the server (client) between the container's (remote's) receive and its
    recvfrom() return is kept beside the chain: a process that did not sleep has none."""
    res = Pairing([])
    cur: dict[str, int] | None = None
    skb: dict[str, str] = {}
    k = 0
    for e in events:
        if _matches(points[0], e, n):
            if cur is not None:
                res.incomplete += 1
            res.started += 1
            cur, skb, k = {points[0].name: e.t_ns}, {}, 1
            continue
        if cur is None:
            continue
        if e.event == "sched:sched_wakeup":
            woken = int(e.fields.get("pid", "0"))
            if woken == n.server_pid and "cont_rx" in cur and "server_recv" not in cur:
                cur.setdefault("server_wakeup", e.t_ns)
            elif woken == n.client_pid and "remote_rx" in cur and "client_recv" not in cur:
                cur.setdefault("client_wakeup", e.t_ns)
            continue
        p = points[k]
        if not _matches(p, e, n):
            continue
        if p.same_skb_as and e.fields.get("skbaddr") != skb.get(p.same_skb_as):
            continue
        cur[p.name] = e.t_ns
        skb[p.name] = e.fields.get("skbaddr", "")
        k += 1
        if k == len(points):
            res.trips.append(cur)
            cur = None
    if cur is not None:
        res.incomplete += 1
    return res


def segments(trips: Sequence[dict[str, int]], points: Sequence[Point]) -> dict[str, list[float]]:
    """µs from the previous point of the chain to each point, per round trip; 'span': first to
    last; wakeup->recvfrom() return where the process slept."""
    out: dict[str, list[float]] = {p.name: [] for p in points[1:]}
    out["span"] = []
    for w in OPTIONAL_WAKEUP:
        out[f"{w}_to_run"] = []
    for t in trips:
        for a, b in zip(points, points[1:], strict=False):
            out[b.name].append((t[b.name] - t[a.name]) / 1000)
        out["span"].append((t[points[-1].name] - t[points[0].name]) / 1000)
        for w, done in (("server_wakeup", "server_recv"), ("client_wakeup", "client_recv")):
            if w in t:
                out[f"{w}_to_run"].append((t[done] - t[w]) / 1000)
    return out


def analyse(text: str, points: Sequence[Point], n: Names) -> dict[str, Any]:
    """One capture: per segment count/p50/p99 (µs), the span, and how many round trips paired."""
    events = parse_script(text)
    pairing = pair(events, points, n)
    segs = segments(pairing.trips, points)
    stats = {k: summarize(sorted(v)) if v else None for k, v in segs.items()}
    woke = {w: len(segs[f"{w}_to_run"]) for w in OPTIONAL_WAKEUP}
    meds = [s["p50"] for p in points[1:] if (s := stats[p.name])]
    return {"events": len(events), "sends": pairing.started, "round_trips": len(pairing.trips),
            "incomplete": pairing.incomplete, "chain": [p.name for p in points],
            "points": {p.name: f"{p.event} ({p.what})" for p in points},
            "segments_us": stats, "woke": woke,
            "sum_of_medians_us": round(sum(meds), 2) if pairing.trips else None,
            "sum_of_means_us": round(sum(sum(segs[p.name]) / len(segs[p.name]) for p in points[1:]), 2)
            if pairing.trips else None}


# ---- recording (privileged) ---------------------------------------------------------

def perf_available() -> str | None:
    """None if perf can record tracepoints here, else why not."""
    try:
        r = subprocess.run(["perf", "list", "tracepoint"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"perf: {exc}"
    missing = [e for e in ("net:netif_rx", "net:netif_receive_skb", "net:net_dev_start_xmit", "xdp:xdp_redirect",
                           "sched:sched_wakeup", "syscalls:sys_enter_sendto", "syscalls:sys_exit_recvfrom")
               if e not in r.stdout]
    return f"perf lists no tracepoint {', '.join(missing)}" if missing else None


class Recording:
    """perf record -a of the chain's tracepoints (filtered) for a bounded time, then perf script."""

    def __init__(self, points: Sequence[Point], n: Names, workdir: Path, tag: str) -> None:
        self.data = workdir / f"breakdown-{tag}.data"
        self.argv = ["perf", "record", "-a", "-k", "CLOCK_MONOTONIC", "-m", str(MMAP_PAGES), "-o", str(self.data),
                     *perf_events(points, n)]
        self.proc: subprocess.Popen[str] | None = None
        self.cpu_s = 0.0
        self.stderr = ""

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)

    def stop(self) -> None:
        """SIGINT (perf writes its file and exits); what it used in CPU time is kept."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGINT)
        try:
            _, status, usage = os.wait4(self.proc.pid, 0)
            self.proc.returncode = os.waitstatus_to_exitcode(status)
            self.cpu_s = usage.ru_utime + usage.ru_stime
        except ChildProcessError:
            pass
        except BaseException:
            self.proc.kill()
            self.proc.wait()
            raise
        self.stderr = self.proc.stderr.read() if self.proc.stderr else ""
        if self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    def script(self) -> str:
        """The events as text; the perf data file is removed."""
        try:
            r = subprocess.run(["perf", "script", "-i", str(self.data), "-F", SCRIPT_FIELDS, "--ns"],
                               capture_output=True, text=True, timeout=300)
        finally:
            self.data.unlink(missing_ok=True)
            Path(f"{self.data}.old").unlink(missing_ok=True)
        if r.returncode != 0:
            raise OSError(f"perf script failed ({r.returncode}): {r.stderr.strip()[-300:]}")
        return r.stdout

    def lost(self) -> int:
        m = re.search(r"(\d+)\s+(?:lost|LOST)", self.stderr)
        return int(m.group(1)) if m else 0


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
    return f"{_pair(s)} ({t['woke'][w] / t['round_trips']:.0%})"


def slot_of(config: str, queue: int = 0) -> int | None:
    """The XSKMAP slot of queue's HIGH socket in a prism configuration (vanilla: none)."""
    return None if config == "prism-vanilla" else xsk_slot(queue, native.PRISM_CLASS_HIGH)


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
        path = "kernel" if daemon is None else "prism"
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
