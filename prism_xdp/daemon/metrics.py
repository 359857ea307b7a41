"""metrics.py - the daemon's statistics in Prometheus text format, served over HTTP when configured (off by default)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PREFIX = "prism_xdp"


def _labels(**labels: object) -> str:
    if not labels:
        return ""
    body = ",".join(f'{k}="{str(v).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
                    for k, v in labels.items())
    return "{" + body + "}"


def render(stats: dict[str, Any]) -> str:
    """Prometheus exposition text of Daemon.stats()."""
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[dict[str, object], float]]) -> None:
        full = f"{PREFIX}_{name}"
        lines.append(f"# HELP {full} {help_text}")
        lines.append(f"# TYPE {full} {kind}")
        lines.extend(f"{full}{_labels(**labels)} {value}" for labels, value in samples)

    t = stats["totals"]
    stage = [({"counter": k}, v) for k, v in t["stages"].items() if not k.startswith("drop_")]
    drops = [({"reason": k[len("drop_"):]}, v) for k, v in t["stages"].items() if k.startswith("drop_")]
    metric("stage_packets_total", "counter", "Packets per pipeline stage counter.", stage)
    metric("drops_total", "counter", "Packets dropped by the pipeline, by reason.", drops)
    steer = t["steer"]
    metric("steered_packets_total", "counter", "Packets the uplink classifier steered, by class.",
           [({"class": c}, v) for c, v in steer["steered"].items()])
    metric("passed_packets_total", "counter", "Non-VXLAN packets passed to the kernel.", [({}, steer["passed"])])
    metric("malformed_packets_total", "counter", "Malformed VXLAN packets dropped by the classifier, by reason.",
           [({"reason": r}, v) for r, v in steer["malformed"].items()])
    metric("port_tx_packets_total", "counter", "Packets transmitted per port.",
           [({"port": p}, c["tx_packets"]) for p, c in t["ports"].items()])
    metric("port_tx_full_total", "counter", "Packets dropped on a full TX ring, per port.",
           [({"port": p}, c["tx_full"]) for p, c in t["ports"].items()])
    xsk = []
    for name, st in t["xsk"].items():
        xsk += [({"socket": name, "stat": k}, v) for k, v in st.items()]
    metric("xsk_statistics", "counter", "XDP_STATISTICS of every AF_XDP socket.", xsk)
    lat = []
    for cls, d in t["latency"].items():
        for which in ("latency_us", "pipeline_us"):
            for q, v in d[which].items():
                if q.startswith("p"):
                    lat.append(({"class": cls, "from": "xdp" if which == "latency_us" else "poll",
                                 "quantile": str(float(q[1:]) / 100)}, v))
    metric("latency_microseconds", "gauge", "In-pipeline latency percentiles to the TX kick, by class.", lat)
    metric("uptime_seconds", "gauge", "Seconds since the daemon started.", [({}, stats["uptime_s"])])
    metric("mode_info", "gauge", "The scheduling mode (1 for the current one).",
           [({"mode": m}, 1 if stats["mode"] == m else 0) for m in ("vanilla", "batch", "sync")])
    return "\n".join(lines) + "\n"


class MetricsServer:
    """GET /metrics on host:port, in a thread."""

    def __init__(self, host: str, port: int, source: Callable[[], dict[str, Any]]) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404, "only /metrics here")
                    return
                body = render(source()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.address = self._server.server_address
        self._thread = threading.Thread(target=self._server.serve_forever, name="prism-metrics", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
