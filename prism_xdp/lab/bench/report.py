"""report.py - the A/B's results: the report (JSON) built from every cell, summaries over repetitions, the markdown tables, a latency CDF per scenario and a LOW throughput plot; and `bench merge` of two runs (e.g. two kernels) into one, refusing runs whose workloads differ."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prism_xdp.dataplane.errors import ConfigError
from prism_xdp.lab.bench import workloads
from prism_xdp.lab.bench.configs import DESCRIPTIONS
from prism_xdp.lab.bench.samples import CDF_GRID, PERCENTILES, pool_cdf, spread

if TYPE_CHECKING:
    from prism_xdp.lab.bench.runner import BenchParams

FORMAT = "prism-xdp bench A/B, format 2"
LAT_KEYS = [f"p{p:g}" for p in PERCENTILES] + ["max"]


def build(cells: list[dict[str, Any]], low_runs: list[dict[str, Any]], errors: list[str], params: BenchParams,
          pm_qos: bool, patch_note: str, state: dict[str, Any]) -> dict[str, Any]:
    """The report of one bench: what was measured how, every cell, and the summaries."""
    kernel = platform.release()
    for row in cells + low_runs:
        row["kernel"] = kernel
    rep: dict[str, Any] = {
        "format": FORMAT,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "command": params.command,
        "kernels": [kernel],
        "machine": {"kernel": kernel, "cpus": os.cpu_count(), "python": platform.python_version()},
        "workloads": workloads.record(params.high, params.low, params.duration),
        "placement": params.placement.record(),
        "daemon_settings": {f"{section}.{key}": value for section, keys in params.settings.items()
                            for key, value in keys.items()},
        "pm_qos_held": pm_qos,
        "kernel_patch": patch_note,
        "configs": [{"name": c, "description": DESCRIPTIONS[c]} for c in params.configs],
        "runs": params.runs,
        "steal_max": params.steal_max,
        "topology": {"name": state["spec"]["name"], "container_rps": state["spec"].get("container_rps", "0"),
                     "high_container": "c0", "low_container": "c1",
                     "offloads_at_start": params.extra.get("offloads", {})},
        "notes": ["Latency is each request's whole round trip as the client measured it, in µs. sockperf: "
                  "rxTime - txTime of every --full-log row (sockperf's own 'latency' is half of that); "
                  "memcached: prism-memc-rtt, every request; nginx: from wrk's own latency histogram (1 µs "
                  "buckets, printed whole by a Lua done() script), not raw samples. Percentiles are nearest-rank "
                  "on the sorted samples of one run; tables give the median over runs with [min-max].",
                  f"Runs in which the hypervisor stole more than {params.steal_max:.0%} of any CPU are flagged, "
                  "not left out."] + params.extra.get("notes", []),
        "errors": errors,
        "cdf_grid": list(CDF_GRID),
        "cells": cells,
        "low_runs": low_runs,
    }
    rep["summary"] = summarize(rep)
    return rep


def _configs_in_order(rep: dict[str, Any]) -> list[tuple[str, str]]:
    """(kernel, configuration) pairs in the order the report lists them."""
    seen: list[tuple[str, str]] = []
    for row in rep["cells"] + rep["low_runs"]:
        key = (row["kernel"], row["config"])
        if key not in seen:
            seen.append(key)
    return seen


def summarize(rep: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """min/median/max over runs, per kernel x configuration x HIGH x LOW (and per LOW for throughput)."""
    w = rep["workloads"]
    high_rows, low_rows = [], []
    for low in (lo["name"] for lo in w["low"]):
        for kernel, config in _configs_in_order(rep):
            for high in (h["name"] for h in w["high"]):
                mine = [c for c in rep["cells"] if (c["kernel"], c["config"], c["high"], c["low"]) ==
                        (kernel, config, high, low)]
                ok = [c for c in mine if c["ok"]]
                row: dict[str, Any] = {"kernel": kernel, "config": config, "high": high, "low": low,
                                       "runs_ok": len(ok), "runs_failed": len(mine) - len(ok),
                                       "steal_flagged": sum(1 for c in ok if c["cpu"]["steal_flagged"]),
                                       "stalled": sum(1 for c in mine if c.get("stalled_run")),
                                       "failures": sorted({c["error"] for c in mine if not c["ok"]})}
                for k in LAT_KEYS:
                    row[k] = spread(c["latency_us"][k] for c in ok)
                row["requests_per_s"] = spread(c["requests_per_s"] for c in ok)
                row["busy_cpus"] = spread(c["cpu"]["busy_cpus"] for c in ok)
                row["daemon_cpus"] = spread(c["cpu"]["daemon_cpus"] for c in ok)
                high_rows.append(row)
            runs = [r for r in rep["low_runs"] if (r["kernel"], r["config"], r["low"]) == (kernel, config, low)]
            ok_runs = [r for r in runs if r["ok"] and "gbps" in r]
            if low != "idle":
                low_rows.append({"kernel": kernel, "config": config, "low": low, "runs_ok": len(ok_runs),
                                 "runs_failed": len([r for r in runs if not r["ok"]]),
                                 "steal_flagged": sum(1 for r in ok_runs if r["cpu"]["steal_flagged"]),
                                 "gbps": spread(r["gbps"] for r in ok_runs),
                                 "mpps": spread(r["mpps"] for r in ok_runs),
                                 "loss_pct": spread(r["loss_pct"] for r in ok_runs),
                                 "busy_cpus": spread(r["cpu"]["busy_cpus"] for r in ok_runs),
                                 "daemon_cpus": spread(r["cpu"]["daemon_cpus"] for r in ok_runs),
                                 "seconds": spread(r["cpu"]["seconds"] for r in ok_runs),
                                 "failures": sorted({r["error"] for r in runs if not r["ok"]})})
    return {"high": high_rows, "low": low_rows}


# ---- markdown -----------------------------------------------------------------

def _fmt(s: dict[str, float] | None, digits: int = 1) -> str:
    if s is None:
        return "-"
    med = f"{s['median']:.{digits}f}"
    return med if s["n"] == 1 or s["min"] == s["max"] else f"{med} [{s['min']:.{digits}f}-{s['max']:.{digits}f}]"


def _runs(row: dict[str, Any]) -> str:
    text = f"{row['runs_ok']}" + (f" ({row['runs_failed']} failed)" if row["runs_failed"] else "")
    text += f", {row['steal_flagged']} steal" if row["steal_flagged"] else ""
    # A UDP ping-pong run that stalled on a lost datagram and was run again (runner._high).
    return text + (f", {row['stalled']} rerun after a loss" if row.get("stalled") else "")


def table(rep: dict[str, Any]) -> str:
    """The report as markdown: one latency table per HIGH workload, one LOW throughput table."""
    w, pl = rep["workloads"], rep["placement"]
    head = [f"# prism-xdp bench: real-tool A/B ({rep['date']})", "",
            f"Kernel(s) {', '.join(rep['kernels'])}; {rep['runs']} run(s) of {w['duration_s']} s per HIGH "
            f"measurement, interleaved across configurations; placement `{pl['name']}` ({pl['description']}); "
            f"PM QoS held: {rep['pm_qos_held']}; {rep['kernel_patch']}.", ""]
    if rep.get("daemon_settings"):
        head += ["Daemon settings for every prism-* configuration: "
                 + ", ".join(f"`{k} = {v}`" for k, v in rep["daemon_settings"].items()) + ".", ""]
    head += [f"- {n}" for n in rep["notes"]]
    by_high: dict[str, list[dict[str, Any]]] = {}
    for row in rep["summary"]["high"]:
        by_high.setdefault(row["high"], []).append(row)
    out = head
    for h in w["high"]:
        out += ["", f"## HIGH {h['name']}: request round trip, µs", "", f"{h['what']}.", "",
                "| LOW | kernel | configuration | p50 | p90 | p99 | p99.9 | max | requests/s | CPUs busy (daemon) | runs |",
                "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in by_high.get(h["name"], []):
            out.append(f"| {r['low']} | {r['kernel']} | {r['config']} | " +
                       " | ".join(_fmt(r[k]) for k in LAT_KEYS) + f" | {_fmt(r['requests_per_s'], 0)} | "
                       f"{_fmt(r['busy_cpus'], 2)} ({_fmt(r['daemon_cpus'], 2)}) | {_runs(r)} |")
    out += ["", "## LOW throughput (received)", "",
            "| LOW | kernel | configuration | Gbit/s | Mpps | UDP loss % | CPUs busy | daemon CPUs | runs |",
            "|---|---|---|---|---|---|---|---|---|"]
    for r in rep["summary"]["low"]:
        out.append(f"| {r['low']} | {r['kernel']} | {r['config']} | {_fmt(r['gbps'], 2)} | {_fmt(r['mpps'], 3)} | "
                   f"{_fmt(r['loss_pct'], 2)} | {_fmt(r['busy_cpus'], 2)} | {_fmt(r['daemon_cpus'], 2)} | "
                   f"{_runs(r)} |")
    out += ["", "CPUs busy: CPU time spent on all CPUs (not idle, not stolen by the hypervisor) per second "
            "while the LOW load ran (2 = both of 2 CPUs); daemon CPUs: the part the daemon and its workers used. TCP packets are counted at the container's interface, "
            "UDP datagrams by iperf3's receiver, prism_gen frames at the container's interface."]
    if rep.get("breakdown"):
        bd = rep["breakdown"]
        out += ["", "## Where a HIGH round trip's time goes (--breakdown)", "", bd["cost"], ""]
        out += [f"- {n}" for n in bd["notes"]] + ["", bd["table"].rstrip("\n")]
    failures = sorted({f for r in rep["summary"]["high"] + rep["summary"]["low"] for f in r["failures"]}
                      | set(rep.get("errors", [])))
    if failures:
        out += ["", "## Failed", ""] + [f"- {f}" for f in failures]
    return "\n".join(out) + "\n"


# ---- plots --------------------------------------------------------------------

def _label(kernel: str, config: str, kernels: list[str]) -> str:
    return config if len(kernels) == 1 else f"{kernel} {config}"


def plot_cdfs(rep: dict[str, Any], base: str) -> list[str]:
    """One PNG per HIGH workload x LOW load: the pooled latency CDF of every configuration,
    and its tail (1 - F, log scale), where the configurations differ."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    for h in rep["workloads"]["high"]:
        for lo in rep["workloads"]["low"]:
            fig, (ax, tail) = plt.subplots(1, 2, figsize=(11, 4))
            for kernel, config in _configs_in_order(rep):
                runs = [(c["cdf"], c["requests"]) for c in rep["cells"] if c["ok"] and c["high"] == h["name"]
                        and c["low"] == lo["name"] and (c["kernel"], c["config"]) == (kernel, config)]
                xs, ys = pool_cdf(runs)
                if xs:
                    label = _label(kernel, config, rep["kernels"])
                    ax.plot(xs, ys, label=label)
                    keep = [(x, 1 - y) for x, y in zip(xs, ys, strict=True) if y < 1]  # log scale: no zero
                    tail.plot([x for x, _ in keep], [y for _, y in keep], label=label)
            for a in (ax, tail):
                a.set_xscale("log")
                a.set_xlabel("request round trip (µs)")
                a.grid(True, which="both", alpha=0.3)
            tail.set_yscale("log")
            ax.set_ylabel("fraction of requests")
            tail.set_ylabel("fraction slower (1 - F)")
            src = " (wrk's histogram)" if h["latency_from"] == "histogram" else ""
            fig.suptitle(f"HIGH {h['name']}{src} under LOW {lo['name']}")
            ax.legend(fontsize=8)
            fig.tight_layout()
            path = f"{base}-cdf-{h['name']}-{lo['name']}.png"
            fig.savefig(path, dpi=110)
            plt.close(fig)
            files.append(path)
    return files


def plot_low(rep: dict[str, Any], base: str) -> str | None:
    """LOW throughput per load and configuration: median bars, min-max whiskers; Gbit/s and Mpps."""
    rows = rep["summary"]["low"]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lows = list(dict.fromkeys(r["low"] for r in rows))
    keys = _configs_in_order(rep)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    width = 0.8 / max(1, len(keys))
    for ax, metric, unit in ((axes[0], "gbps", "Gbit/s"), (axes[1], "mpps", "Mpps")):
        for i, (kernel, config) in enumerate(keys):
            xs, meds, lo_err, hi_err = [], [], [], []
            for j, low in enumerate(lows):
                s = next((r[metric] for r in rows if (r["kernel"], r["config"], r["low"]) == (kernel, config, low)),
                         None)
                if s:
                    xs.append(j + i * width)
                    meds.append(s["median"])
                    lo_err.append(s["median"] - s["min"])
                    hi_err.append(s["max"] - s["median"])
            ax.bar(xs, meds, width, yerr=[lo_err, hi_err], capsize=2, label=_label(kernel, config, rep["kernels"]))
        ax.set_xticks([j + width * (len(keys) - 1) / 2 for j in range(len(lows))], lows)
        ax.set_ylabel(f"LOW received ({unit})")
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("LOW throughput (median over runs, min-max whiskers)")
    fig.tight_layout()
    path = f"{base}-low.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write(rep: dict[str, Any], out_dir: Path, prefix: str = "ab") -> list[str]:
    """JSON, markdown and plots into out_dir; returns the files written. (Not benchkit.write: the
    A/B's report carries its own machine and placement record, and its table is the document.)"""
    out_dir.mkdir(parents=True, exist_ok=True)
    base = out_dir / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"
    rep["table"] = table(rep)
    base.with_suffix(".json").write_text(json.dumps(rep, indent=1))
    base.with_suffix(".md").write_text(rep["table"])
    files = [str(base.with_suffix(".json")), str(base.with_suffix(".md"))]
    files += plot_cdfs(rep, str(base))
    low = plot_low(rep, str(base))
    return files + ([low] if low else [])


# ---- merge --------------------------------------------------------------------

def load(path: str) -> dict[str, Any]:
    try:
        rep = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"bench merge: {path}: {exc}") from None
    if rep.get("format") != FORMAT:
        raise ConfigError(f"bench merge: {path} is not a result of this bench ({FORMAT})")
    return dict(rep)


def differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """What makes two results incomparable: their workloads (HIGH, LOW, duration) or placement."""
    out = []
    wa, wb = a["workloads"], b["workloads"]
    for key in sorted(set(wa) | set(wb)):
        if wa.get(key) != wb.get(key):
            if key in ("high", "low"):
                na, nb = [x["name"] for x in wa.get(key, [])], [x["name"] for x in wb.get(key, [])]
                detail = f"{na} vs {nb}" if na != nb else "same names, different settings"
                out.append(f"{key.upper()} workloads differ: {detail}")
            else:
                out.append(f"{key} differs: {wa.get(key)} vs {wb.get(key)}")
    if a["placement"]["name"] != b["placement"]["name"]:
        out.append(f"placement differs: {a['placement']['name']} vs {b['placement']['name']}")
    return out


def merge(paths: list[str]) -> dict[str, Any]:
    """One report from several (e.g. a PRISM-patched 5.4 kernel and a modern one), rows
    labelled by kernel; ConfigError naming what differs if they did not measure the same."""
    reps = [load(p) for p in paths]
    first = reps[0]
    for path, other in zip(paths[1:], reps[1:], strict=True):
        diff = differences(first, other)
        if diff:
            raise ConfigError(f"bench merge: {paths[0]} and {path} did not measure the same: " + "; ".join(diff))
    kernels = [r["kernels"][0] if len(r["kernels"]) == 1 else "+".join(r["kernels"]) for r in reps]
    if len(set(kernels)) < len(kernels):  # the same kernel twice: tell the files apart
        kernels = [f"{k} ({Path(p).stem})" for k, p in zip(kernels, paths, strict=True)]
    out = {k: v for k, v in first.items() if k not in ("cells", "low_runs", "summary", "table", "files", "breakdown")}
    out.update(kernels=kernels, command=" ; ".join(r["command"] for r in reps), merged_from=paths,
               machine=[r["machine"] for r in reps], pm_qos_held=all(r["pm_qos_held"] for r in reps),
               kernel_patch=" / ".join(f"{k}: {r['kernel_patch']}" for k, r in zip(kernels, reps, strict=True)),
               runs=max(r["runs"] for r in reps), errors=[e for r in reps for e in r.get("errors", [])],
               configs=[c for r in reps for c in r["configs"]], cells=[], low_runs=[])
    for kernel, r in zip(kernels, reps, strict=True):
        for key in ("cells", "low_runs"):
            out[key] += [{**row, "kernel": kernel} for row in r[key]]
    out["summary"] = summarize(out)
    return out
