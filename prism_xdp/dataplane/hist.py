"""hist.py - latency histograms as the C side records them (HDR-style log-linear buckets): percentile bounds, merging, summaries.

A bucket holds the values from bucket_low(i) to bucket_high(i); its width is at
most 1/16 of its values. Only the bucket of a sample is kept, so a percentile is
known to lie in one bucket and no closer. What is published (percentile(),
summary(), `ctl stats`, `top`) is that bucket's upper edge - HdrHistogram's
"highest equivalent value" - clamped to the exact maximum: a bound (the true
p99 is at most the published p99, and at most one bucket width, 1/16, below it),
never a point inside the bucket that was guessed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SUB_BITS = 4  # PRISM_HIST_SUB_BITS: 16 linear sub-buckets per power of two
NBUCKETS = 1024  # PRISM_HIST_BUCKETS
PERCENTILES = (50.0, 90.0, 99.0, 99.9)


def bucket_of(value: int) -> int:
    """Bucket index of a value, as prism_hist_bucket() computes it in C."""
    if value < 1 << SUB_BITS:
        return max(0, value)
    msb = value.bit_length() - 1
    return ((msb - SUB_BITS + 1) << SUB_BITS) + ((value >> (msb - SUB_BITS)) & ((1 << SUB_BITS) - 1))


def bucket_low(index: int) -> int:
    """Smallest value that falls into a bucket (prism_hist_bucket_low())."""
    if index < 1 << SUB_BITS:
        return index
    msb = (index >> SUB_BITS) + SUB_BITS - 1
    sub = index & ((1 << SUB_BITS) - 1)
    return ((1 << SUB_BITS) + sub) << (msb - SUB_BITS)


def bucket_high(index: int) -> int:
    """Largest value that falls into a bucket (HdrHistogram's "highest equivalent value")."""
    return bucket_low(index + 1) - 1


@dataclass
class Histogram:
    """Counts per bucket plus exact count, sum, min and max (nanoseconds)."""

    buckets: list[int] = field(default_factory=lambda: [0] * NBUCKETS)
    count: int = 0
    total: int = 0
    min: int = 0
    max: int = 0

    def record(self, value: int, times: int = 1) -> None:
        """Python-side recording (tests, simulated runs); the data path records in C."""
        self.buckets[bucket_of(value)] += times
        if not self.count or value < self.min:
            self.min = value
        self.count += times
        self.total += value * times
        self.max = max(self.max, value)

    def merge(self, other: Histogram) -> None:
        if not other.count:
            return
        self.min = other.min if not self.count else min(self.min, other.min)
        self.buckets = [a + b for a, b in zip(self.buckets, other.buckets, strict=True)]
        self.count += other.count
        self.total += other.total
        self.max = max(self.max, other.max)

    def percentile(self, p: float) -> int:
        """An upper bound of the value at percentile p (nearest rank): the upper edge of its
        bucket, clamped to the exact max. Never below the exact value, and above it by less
        than one bucket width (1/16 of the value)."""
        if not self.count:
            return 0
        if not 0 <= p <= 100:
            raise ValueError(f"percentile must be in 0..100, not {p}")
        rank = max(1, -(-self.count * p // 100))  # ceil: the rank-th smallest value
        seen = 0
        for index, n in enumerate(self.buckets):
            seen += n
            if seen >= rank:
                return min(self.max, bucket_high(index))
        return self.max

    def count_at_or_below(self, value: int) -> int:
        """Samples <= value; exact when value is a bucket's upper edge (bucket_high), as the
        Prometheus buckets' boundaries are."""
        if value < 0:
            return 0
        last = bucket_of(value)
        if bucket_high(last) != value:
            raise ValueError(f"{value} is not a bucket's upper edge: the count at or below it is not known")
        return sum(self.buckets[: last + 1])

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def summary(self, unit: float = 1e3) -> dict[str, float]:
        """count, mean, min, p50/p90/p99/p99.9, max; values divided by unit (default: microseconds).

        The mean, min and max are exact; each pNN is an upper bound (percentile()): "p99 <=".
        """
        out: dict[str, float] = {"count": self.count}
        if not self.count:
            return out
        out["mean"] = round(self.mean / unit, 2)
        out["min"] = round(self.min / unit, 2)
        for p in PERCENTILES:
            out[f"p{p:g}"] = round(self.percentile(p) / unit, 2)
        out["max"] = round(self.max / unit, 2)
        return out

    def cdf(self) -> list[tuple[int, float]]:
        """(upper value of bucket, fraction at or below) for every non-empty bucket."""
        points, seen = [], 0
        for index, n in enumerate(self.buckets):
            if n:
                seen += n
                points.append((bucket_high(index), seen / self.count))
        return points
