"""samples.py - exact latency percentiles from raw samples (nearest rank), min/median/max over repetitions, and CDF points that plots and merged reports can pool."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence

PERCENTILES = (50.0, 90.0, 99.0, 99.9)


def _grid() -> tuple[float, ...]:
    """Quantiles at which a run's distribution is kept: even steps in the body, finer and
    finer towards the tail, where the A/B's differences are."""
    q = [i / 100 for i in range(90)]
    q += [0.9 + i / 1000 for i in range(90)]
    q += [0.99 + i / 10_000 for i in range(90)]
    q += [0.999 + i / 100_000 for i in range(100)]
    return tuple(round(x, 6) for x in q) + (1.0,)


CDF_GRID = _grid()


def nearest_rank(ordered: Sequence[float], p: float) -> float:
    """The p-th percentile of sorted samples by the nearest-rank method: the smallest sample
    with at least p% of all samples at or below it (p = 0: the minimum). Exact: a sample."""
    if not ordered:
        raise ValueError("no samples")
    if not 0 <= p <= 100:
        raise ValueError(f"percentile {p} is not in 0..100")
    # The small epsilon keeps p * n / 100 from rounding up past an exact rank (99.9 * 1000).
    rank = max(1, math.ceil(p * len(ordered) / 100 - 1e-9))
    return ordered[rank - 1]


def summarize(values: Iterable[float]) -> dict[str, float]:
    """count, min, mean, p50, p90, p99, p99.9 and max of one run's samples (µs)."""
    ordered = sorted(values)
    if not ordered:
        return {"count": 0}
    out = {"count": len(ordered), "min": ordered[0], "mean": round(statistics.fmean(ordered), 3)}
    for p in PERCENTILES:
        out[f"p{p:g}"] = nearest_rank(ordered, p)
    out["max"] = ordered[-1]
    return out


def expand_histogram(pairs: Iterable[tuple[float, int]]) -> list[float]:
    """(value, count) pairs as the samples they count, for tools that report a histogram."""
    return [v for v, c in pairs for _ in range(c)]


def spread(values: Iterable[float | None]) -> dict[str, float] | None:
    """min, median and max of one figure over repetitions (None where a run had none)."""
    got = [v for v in values if v is not None]
    if not got:
        return None
    return {"min": min(got), "median": statistics.median(got), "max": max(got), "n": len(got)}


def cdf(ordered: Sequence[float]) -> list[float]:
    """The sample at each quantile of CDF_GRID (nearest rank): a run's distribution in a few
    hundred numbers, exact at every point kept."""
    return [nearest_rank(ordered, q * 100) for q in CDF_GRID] if ordered else []


def pool_cdf(runs: Iterable[tuple[Sequence[float], int]]) -> tuple[list[float], list[float]]:
    """One distribution from several runs' cdf() points and sample counts: each point stands
    for the share of its run between it and the point before, weighted by the run's size.
    Returns (values, cumulative fractions) for a plot."""
    weighted: list[tuple[float, float]] = []
    for points, count in runs:
        prev = 0.0
        for q, v in zip(CDF_GRID, points, strict=True):
            weighted.append((v, (q - prev) * count))
            prev = q
    weighted.sort()
    total = sum(w for _, w in weighted)
    if not total:
        return [], []
    xs, ys, acc = [], [], 0.0
    for v, w in weighted:
        acc += w
        xs.append(v)
        ys.append(acc / total)
    return xs, ys
