"""ipop.ratelimit: one token bucket, and one per key in a bounded table."""

from __future__ import annotations

import pytest

from ipop.ratelimit import KeyedBuckets, TokenBucket


def test_keyed_buckets_burst_then_rate() -> None:
    b: KeyedBuckets[bytes] = KeyedBuckets(2.0, 3.0)
    assert [b.take(b"a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert b.take(b"b", 0.0)  # another key has its own bucket
    assert not b.take(b"a", 0.4)  # 0.8 of a token
    assert b.take(b"a", 0.5) and not b.take(b"a", 0.5)
    assert [b.take(b"a", 100.0) for _ in range(4)] == [True, True, True, False]  # capped


def test_keyed_buckets_are_bounded_lru() -> None:
    b: KeyedBuckets[int] = KeyedBuckets(1.0, 1.0, max_keys=3)
    for key in range(10):
        b.take(key, 0.0)
    assert len(b) == 3
    assert not b.take(9, 0.0)  # kept: the most recent
    assert b.take(0, 0.0)  # evicted long ago: a fresh bucket
    b.forget(9)
    assert b.take(9, 0.0)


def test_one_bucket_and_bad_parameters() -> None:
    t = TokenBucket(1.0, 2.0, 0.0)
    assert [t.take(0.0) for _ in range(3)] == [True, True, False]
    assert t.take(1.0) and not t.take(1.0)
    for rate, burst in ((0.0, 1.0), (1.0, 0.5)):
        with pytest.raises(ValueError):
            TokenBucket(rate, burst, 0.0)
        with pytest.raises(ValueError):
            KeyedBuckets(rate, burst)
    with pytest.raises(ValueError):
        KeyedBuckets(1.0, 1.0, max_keys=0)
