"""webserve.py - nginx + wrk as the A/B's web-serving HIGH workload: a small nginx config of ours, wrk's command line with a Lua done() that prints its whole latency histogram, and its parser."""

from __future__ import annotations

import re
from pathlib import Path

PAGE_BYTES = 1024

# wrk keeps every request's latency in a histogram of 1 µs buckets; done() can read it
# bucket by bucket (latency(i) -> value, count). Printing it all lets percentiles be
# taken as from samples, at wrk's 1 µs resolution, instead of only the four wrk prints.
WRK_LUA = """-- prism-xdp bench: print wrk's whole latency histogram (µs, count) after the run
done = function(summary, latency, requests)
  io.write("PRISM-WRK-BEGIN\\n")
  io.write(string.format("requests %d\\nduration_us %d\\nbytes %d\\n", summary.requests, summary.duration, summary.bytes))
  local e = summary.errors
  io.write(string.format("errors connect %d read %d write %d status %d timeout %d\\n",
                         e.connect, e.read, e.write, e.status, e.timeout))
  for i = 1, #latency do
    local v, c = latency(i)
    io.write(string.format("%d %d\\n", v, c))
  end
  io.write("PRISM-WRK-END\\n")
end
"""
_PCT = re.compile(r"^\s+(\d+(?:\.\d+)?)%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_UNIT = {"us": 1.0, "ms": 1000.0, "s": 1e6}


def nginx_conf(root: Path, ip: str, port: int) -> str:
    """nginx as Debian runs it (worker_processes auto), serving one static page; every
    path it writes is inside root, so that nothing of ours is left elsewhere."""
    return f"""# prism-xdp bench: nginx for the web-serving workload
worker_processes auto;
user root;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    server {{
        listen {ip}:{port};
        root {root}/www;
    }}
}}
"""


def prepare(root: Path, ip: str, port: int) -> Path:
    """Writes the config, the page and wrk's script into root; returns the config."""
    (root / "www").mkdir(parents=True, exist_ok=True)
    (root / "www" / "index.html").write_bytes(b"x" * PAGE_BYTES)
    (root / "done.lua").write_text(WRK_LUA)
    conf = root / "nginx.conf"
    conf.write_text(nginx_conf(root, ip, port))
    return conf


def server_argv(conf: Path, root: Path) -> list[str]:
    return ["nginx", "-c", str(conf), "-p", str(root), "-g", "daemon off;"]


def client_argv(ip: str, port: int, seconds: int, script: Path) -> list[str]:
    """One thread, one connection: one request in flight, like the other HIGH workloads."""
    return ["wrk", "-t1", "-c1", f"-d{seconds}s", "--latency", "-s", str(script),
            f"http://{ip}:{port}/index.html"]


def parse(text: str) -> dict[str, object]:
    """requests, errors, the histogram as (µs, count) pairs, and the percentiles wrk printed."""
    if "PRISM-WRK-BEGIN" not in text or "PRISM-WRK-END" not in text:
        raise ValueError("no latency histogram in wrk's output: " + text.strip()[-300:])
    body = text.split("PRISM-WRK-BEGIN", 1)[1].split("PRISM-WRK-END", 1)[0].strip().splitlines()
    head = {line.split()[0]: line.split()[1:] for line in body[:4]}
    errs = head["errors"]
    pairs = [(float(v), int(c)) for v, c in (line.split() for line in body[4:])]
    printed = {f"p{float(p):g}": float(v) * _UNIT[u] for p, v, u in _PCT.findall(text)}
    return {"requests": int(head["requests"][0]), "duration_us": int(head["duration_us"][0]),
            "errors": {errs[i]: int(errs[i + 1]) for i in range(0, len(errs), 2)},
            "histogram": pairs, "wrk_percentiles": printed}
