"""test_hist.py - the latency histogram: buckets agree with the C recorder, percentiles are within the bucket error, merging and summaries."""

from __future__ import annotations

import random

import pytest

from prism_xdp.dataplane.hist import NBUCKETS, Histogram, bucket_low, bucket_of
from prism_xdp.dataplane.native import lib


def test_buckets_match_the_c_recorder() -> None:
    rng = random.Random(1)
    values = list(range(0, 300)) + [rng.randrange(1 << rng.randrange(1, 62)) for _ in range(3000)]
    for v in values:
        assert bucket_of(v) == lib.prism_hist_bucket(v), v
        assert bucket_low(bucket_of(v)) == lib.prism_hist_bucket_low(bucket_of(v))
        assert bucket_low(bucket_of(v)) <= v < bucket_low(bucket_of(v) + 1)
    assert lib.PRISM_HIST_BUCKETS == NBUCKETS
    assert bucket_of((1 << 63) - 1) < NBUCKETS


@pytest.mark.parametrize("p", [50, 90, 99, 99.9])
def test_percentiles_are_within_the_bucket_error(p: float) -> None:
    rng = random.Random(2)
    samples = [int(rng.lognormvariate(10, 1.5)) for _ in range(20000)]
    h = Histogram()
    for v in samples:
        h.record(v)
    exact = sorted(samples)[max(0, int(-(-len(samples) * p // 100)) - 1)]
    assert abs(h.percentile(p) - exact) <= exact / 16 + 1
    assert h.count == len(samples) and h.max == max(samples) and h.min == min(samples)


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
