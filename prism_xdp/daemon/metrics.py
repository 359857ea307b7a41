"""metrics.py - /metrics for Prometheus (off by default): a collector that turns the daemon's statistics into counters, gauges and histograms at scrape time, served by prometheus_client on the configured address."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, generate_latest, make_wsgi_app
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from prism_xdp.dataplane.hist import Histogram, bucket_of
from prism_xdp.dataplane.sched import Mode

PREFIX = "prism_xdp"
MODES = tuple(m.value for m in Mode)
GAUGE_STAGES = frozenset({"fdb_entries"})  # a level among the overlay's counters: a gauge of its own
# The latency histogram's `le` boundaries: 2^k - 1 ns for k = 10..30 (1.023 µs to 1.07 s), each
# the upper edge of one of the C histogram's buckets, so every cumulative count is exact, not
# interpolated (samples are whole nanoseconds: none lies between 2^k - 1 and 2^k).
LATENCY_LE_NS = tuple((1 << k) - 1 for k in range(10, 31))
Source = Callable[[], dict[str, Any]]


def _name(name: str) -> str:
    return f"{PREFIX}_{name}"


def _counter(name: str, doc: str, labels: list[str], samples: Iterable[tuple[list[str], float]]) -> Metric:
    m = CounterMetricFamily(_name(name), doc, labels=labels)  # exposed as <name>_total
    for values, v in samples:
        m.add_metric(values, v)
    return m


def _gauge(name: str, doc: str, labels: list[str], samples: Iterable[tuple[list[str], float]]) -> Metric:
    m = GaugeMetricFamily(_name(name), doc, labels=labels)
    for values, v in samples:
        m.add_metric(values, v)
    return m


def latency_buckets(h: Histogram) -> list[tuple[str, float]]:
    """Cumulative (le in seconds, count) at LATENCY_LE_NS, then +Inf: exact sums of whole buckets."""
    out, seen, index = [], 0, 0
    for edge in LATENCY_LE_NS:
        last = bucket_of(edge)  # edge is this bucket's upper edge (tests/unit/test_control.py checks)
        seen += sum(h.buckets[index : last + 1])
        index = last + 1
        out.append((floatToGoString(edge / 1e9), float(seen)))
    out.append(("+Inf", float(h.count)))
    return out


def families(stats: dict[str, Any]) -> Iterator[Metric]:
    """The metric families of one Daemon.stats(histograms=True) snapshot."""
    t = stats["totals"]
    stages = t["stages"]
    yield _counter("stage_packets", "Packets per pipeline stage counter.", ["counter"],
                   (([k], v) for k, v in stages.items() if not k.startswith("drop_") and k not in GAUGE_STAGES))
    yield _counter("drops", "Packets dropped by the pipeline, by reason.", ["reason"],
                   (([k[len("drop_"):]], v) for k, v in stages.items() if k.startswith("drop_")))
    yield _gauge("fdb_entries", "Forwarding-table entries, over every queue's table.", [],
                 [([], stages.get("fdb_entries", 0))])
    mld = t.get("mld", {})
    if mld.get("enabled"):
        yield _gauge("mld_memberships", "MLD snooping: live (group, container) memberships.", [],
                     [([], mld["groups"])])
        yield _counter("mld_events", "MLD snooping: reports read, memberships made, ended, expired, refused, "
                       "malformed reports, queries sent.", ["event"],
                       (([k], mld[k]) for k in ("reports", "joins", "leaves", "expired", "refused", "malformed",
                                                "queries")))
    steer = t["steer"]
    yield _counter("steered_packets", "Packets the uplink classifier steered, by class.", ["class"],
                   (([c], v) for c, v in steer["steered"].items()))
    yield _counter("steered_bytes", "Bytes the uplink classifier steered, by class.", ["class"],
                   (([c], v) for c, v in steer.get("steered_bytes", {}).items()))
    yield _counter("passed_packets", "Non-VXLAN packets passed to the kernel.", [], [([], steer["passed"])])
    yield _counter("malformed_packets", "Malformed VXLAN packets dropped by the classifier, by reason.", ["reason"],
                   (([r], v) for r, v in steer["malformed"].items()))
    yield _counter("egress_steered_packets", "Packets the containers' egress programs steered, by container and class.",
                   ["container", "class"],
                   (([name, c], v) for name, e in t.get("egress", {}).items() for c, v in e["steered"].items()))
    kernel = t.get("high_path", {})
    if kernel.get("high_path") == "kernel":  # forwarding.high_path = "kernel": HIGH never reached a worker
        yield _counter("kernel_high_packets", "HIGH frames the kernel HIGH path finished, by direction.",
                       ["direction"], (([d], kernel[d]) for d in ("decap", "encap")))
        yield _counter("kernel_high_bytes", "Bytes of the frames the kernel HIGH path finished, by direction.",
                       ["direction"], (([d], kernel[f"{d}_bytes"]) for d in ("decap", "encap")))
        yield _counter("kernel_high_events", "Kernel HIGH path: frames left to the kernel (no_port, aggregate) "
                       "or dropped (no_tunnel, too_big, failed).", ["event"],
                       (([e], kernel[e]) for e in ("no_port", "aggregate", "no_tunnel", "too_big", "failed")))
        yield _gauge("kernel_high_tunnels", "Kernel HIGH path: tunnels back to remote MACs learned.", [],
                     [([], kernel["tunnels"])])
    up = t.get("uplink_delivery", {})
    if up.get("method") == "packet":  # forwarding.uplink_delivery: prism_gso_encap on the uplink's egress
        yield _counter("uplink_gso_events", "prism_gso_encap: GSO packets encapsulated (encap), their bytes "
                       "(encap_bytes), dropped (no_vtep, failed).", ["event"],
                       (([e], up[e]) for e in ("encap", "encap_bytes", "no_vtep", "failed")))
    mb = t.get("multi_buffer")
    if mb:  # uplink.xdp_mode = "skb"
        yield _counter("multibuf_events", "Multi-buffer packets from the uplink (packets) and their parts.",
                       ["event"],
                       (([k.removeprefix("rx_")], v) for k, v in mb.items()))
    ports = t["ports"]
    yield _counter("port_tx_packets", "Packets transmitted per port.", ["port"],
                   (([p], c["tx_packets"]) for p, c in ports.items()))
    yield _counter("port_tx_bytes", "Bytes transmitted per port.", ["port"],
                   (([p], c["tx_bytes"]) for p, c in ports.items() if "tx_bytes" in c))
    yield _counter("port_tx_full", "Packets dropped on a full TX ring, per port.", ["port"],
                   (([p], c["tx_full"]) for p, c in ports.items()))
    yield _counter("xsk_statistics", "XDP_STATISTICS of every AF_XDP socket.", ["socket", "stat"],
                   (([name, k], v) for name, st in t["xsk"].items() for k, v in st.items()))
    yield _gauge("frames", "Where each queue's UMEM frames are (place=frames: how many there are).",
                 ["queue", "place"],
                 (([q, k], v) for q, qs in stats["queues"].items() for k, v in qs.get("frames", {}).items()))
    hists = stats.get("histograms", {})
    lat = HistogramMetricFamily(_name("latency_seconds"), "In-pipeline latency of each packet to its TX kick, by "
                                "class, from the XDP program (from=xdp) or from the RX poll (from=poll).",
                                labels=["class", "from"])
    for key, h in sorted(hists.items()):
        cls, _, where = key.partition("/")
        lat.add_metric([cls, where], latency_buckets(h), h.total / 1e9)
    yield lat
    yield _gauge("uptime_seconds", "Seconds since the daemon started.", [], [([], stats["uptime_s"])])
    yield _gauge("mode_info", "The scheduling mode (1 for the current one).", ["mode"],
                 (([m], 1 if stats["mode"] == m else 0) for m in MODES))


class DaemonCollector(Collector):
    """Reads the daemon's statistics once per scrape."""

    def __init__(self, source: Source) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        return families(self._source())


def registry(source: Source) -> CollectorRegistry:
    """A registry of our metrics alone (no process or platform collectors)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(DaemonCollector(source))
    return reg


def render(stats: dict[str, Any]) -> str:
    """The exposition text of one statistics snapshot."""
    return generate_latest(registry(lambda: stats)).decode()


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


class MetricsServer:
    """GET /metrics on host:port, in a thread; every other path is 404."""

    def __init__(self, host: str, port: int, source: Source) -> None:
        app = make_wsgi_app(registry(source))

        def only_metrics(environ: dict[str, Any], start_response: Any) -> Any:
            if environ.get("PATH_INFO") != "/metrics":
                start_response("404 Not Found", [("Content-Type", "text/plain")])
                return [b"only /metrics here\n"]
            return app(environ, start_response)

        self._server = make_server(host, port, only_metrics, server_class=_Server, handler_class=_Quiet)
        self.address = self._server.server_address
        self._thread = threading.Thread(target=self._server.serve_forever, name="prism-metrics", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
