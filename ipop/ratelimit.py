"""Token buckets, alone and per source in a bounded table (sans-IO: every call takes ``now``).

Owns the rate limits of work that strangers can ask of a node: handshake verification
(:mod:`ipop.link.cookie`) and STUN answers (:mod:`ipop.stun`). A source's bucket lives in a
table of at most ``max_sources`` entries; when it is full the least recently used source is
forgotten, which only gives that source a full bucket again when it comes back, so an attacker
churning the table (spoofed sources) can neither grow memory nor lock an honest source out.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

__all__ = ["SourceBuckets", "TokenBucket"]


class TokenBucket:
    """``rate_per_s`` tokens a second, at most ``burst`` saved; starts full."""

    __slots__ = ("burst", "last", "rate_per_s", "tokens")

    def __init__(self, rate_per_s: float, burst: float, now: float) -> None:
        if not (rate_per_s > 0 and burst >= 1):
            raise ValueError("a token bucket needs a positive rate and a burst of at least 1")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.tokens = burst
        self.last = now

    def take(self, now: float) -> bool:
        """Spend one token if there is one."""
        if now > self.last:
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate_per_s)
            self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class SourceBuckets:
    """One :class:`TokenBucket` per source, at most ``max_sources`` of them (LRU eviction)."""

    def __init__(self, rate_per_s: float, burst: float, max_sources: int) -> None:
        if max_sources < 1:
            raise ValueError("max_sources must be at least 1")
        TokenBucket(rate_per_s, burst, 0.0)  # validates the parameters once
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.max_sources = max_sources
        self._buckets: OrderedDict[Hashable, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, source: Hashable, now: float) -> bool:
        """Spend one of ``source``'s tokens if it has one."""
        buckets = self._buckets
        bucket = buckets.get(source)
        if bucket is None:
            if len(buckets) >= self.max_sources:
                buckets.popitem(last=False)
            bucket = buckets[source] = TokenBucket(self.rate_per_s, self.burst, now)
        else:
            buckets.move_to_end(source)
        return bucket.take(now)
