"""Token buckets, alone and per key in a bounded table (sans-IO: every call takes ``now``).

Owns every rate limit on work that others can ask of a node: handshake verification
(:mod:`ipop.link.cookie`), STUN answers (:mod:`ipop.nat.stun`), what one member's messages make the
overlay do (CONNECT_TO_ME per requester, connect-backs per named address, NEIGHBOURS pulls:
:mod:`ipop.overlay.node`), owner lookups caused by a peer's packets (:mod:`ipop.vnet.owners`)
and a router's per-MAC limits (:mod:`router.daemon`).

A bucket holds at most ``burst`` tokens, starts full and gains ``rate_per_s`` a second. Keys
are attacker input (addresses, ids, MACs), so :class:`KeyedBuckets` keeps at most ``max_keys``
of them; when it is full the key touched longest ago is forgotten. That only gives that key a
full bucket again when it comes back, so churning keys (spoofed sources, made-up MACs) can
neither grow memory nor lock an honest key out; every per-key limit whose keys an attacker
can mint freely has a global one behind it.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

__all__ = ["KeyedBuckets", "TokenBucket"]

K = TypeVar("K", bound=Hashable)


def _check(rate_per_s: float, burst: float) -> None:
    if not (rate_per_s > 0 and burst >= 1):
        raise ValueError("a token bucket needs a positive rate and a burst of at least 1")


class TokenBucket:
    """``rate_per_s`` tokens a second, at most ``burst`` saved; starts full."""

    __slots__ = ("burst", "last", "rate_per_s", "tokens")

    def __init__(self, rate_per_s: float, burst: float, now: float) -> None:
        _check(rate_per_s, burst)
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


class KeyedBuckets(Generic[K]):
    """One token bucket per key, at most ``max_keys`` of them (least recently used out)."""

    __slots__ = ("_state", "burst", "max_keys", "rate_per_s")

    def __init__(self, rate_per_s: float, burst: float, max_keys: int = 4096) -> None:
        _check(rate_per_s, burst)
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.rate_per_s = rate_per_s
        self.burst = float(burst)
        self.max_keys = max_keys
        # key -> (tokens, when counted); insertion order is touch order (oldest first).
        self._state: dict[K, tuple[float, float]] = {}

    def __len__(self) -> int:
        return len(self._state)

    def take(self, key: K, now: float) -> bool:
        """Spend one of ``key``'s tokens; False (nothing spent) if it has none left."""
        state = self._state
        entry = state.pop(key, None)
        if entry is None:
            tokens = self.burst
            if len(state) >= self.max_keys:
                del state[next(iter(state))]
        else:
            tokens = min(self.burst, entry[0] + max(0.0, now - entry[1]) * self.rate_per_s)
        ok = tokens >= 1.0
        state[key] = (tokens - 1.0 if ok else tokens, now)
        return ok

    def forget(self, key: K) -> None:
        self._state.pop(key, None)
