"""test_hist.py - the latency histogram: buckets agree with the C recorder, published percentiles are upper bounds within one bucket, merging and summaries."""

from __future__ import annotations

import random

import pytest

from prism_xdp.dataplane import native
from prism_xdp.dataplane.hist import NBUCKETS, Histogram, bucket_high, bucket_low, bucket_of


def test_buckets_match_the_c_recorder() -> None:
    rng = random.Random(1)
    values = list(range(0, 300)) + [rng.randrange(1 << rng.randrange(1, 62)) for _ in range(3000)]
    for v in values:
        assert bucket_of(v) == native.hist_bucket(v), v
        assert bucket_low(bucket_of(v)) == native.hist_bucket_low(bucket_of(v))
        assert bucket_low(bucket_of(v)) <= v <= bucket_high(bucket_of(v)) < bucket_low(bucket_of(v) + 1)
    assert native.HIST_BUCKETS == NBUCKETS
    assert bucket_of((1 << 63) - 1) < NBUCKETS


@pytest.mark.parametrize("p", [0, 1, 50, 90, 99, 99.9, 100])
def test_published_percentiles_are_upper_bounds_within_one_bucket(p: float) -> None:
    rng = random.Random(2)
    samples = [int(rng.lognormvariate(10, 1.5)) for _ in range(20000)]
    h = Histogram()
    for v in samples:
        h.record(v)
    exact = sorted(samples)[max(0, int(-(-len(samples) * p // 100)) - 1)]
    published = h.percentile(p)
    width = bucket_high(bucket_of(exact)) - bucket_low(bucket_of(exact)) + 1
    assert exact <= published < exact + width  # a bound: never below, less than one bucket above
    assert published - exact <= exact / 16
    assert published <= h.max
    assert h.count == len(samples) and h.max == max(samples) and h.min == min(samples)


def test_published_p99_of_known_data() -> None:
    """1..10000 µs, one of each: the exact p99 is 9900 µs, in the bucket [9437184, 9961471] ns."""
    h = Histogram()
    for us in range(1, 10001):
        h.record(us * 1000)
    assert h.percentile(99) == bucket_high(bucket_of(9_900_000)) == 9_961_471
    s = h.summary()
    assert s["p99"] == 9961.47 and 9900 <= s["p99"] <= 9900 + 524.288 and s["max"] == 10000.0
    assert h.percentile(99.99) == 10_000_000  # the top bucket's edge [9961472, 10485759] clamped to the exact max
    assert h.percentile(50) == bucket_high(bucket_of(5_000_000)) >= 5_000_000


def test_counts_at_bucket_edges_are_exact() -> None:
    h = Histogram()
    values = [5, 15, 16, 1023, 1024, 1087, 1088, 5000]
    for v in values:
        h.record(v)
    for edge in (15, 1023, 1087, bucket_high(bucket_of(5000))):
        assert h.count_at_or_below(edge) == sum(v <= edge for v in values)
    with pytest.raises(ValueError):
        h.count_at_or_below(1024)  # inside a bucket: not known


def test_merge_and_summary() -> None:
    a, b = Histogram(), Histogram()
    for v in (1000, 2000, 3000):
        a.record(v)
    b.record(1_000_000)
    a.merge(b)
    s = a.summary()
    assert s["count"] == 4 and s["max"] == 1000.0 and s["min"] == 1.0
    assert s["p50"] == pytest.approx(2.0, rel=1 / 16)
    assert a.cdf()[-1][1] == 1.0
    assert Histogram().summary() == {"count": 0}
    with pytest.raises(ValueError):
        a.percentile(101)
