"""Token buckets keyed by what peers send (requester ids, addresses they name), bounded (sans-IO).

:class:`Buckets` owns the rate limits that keep one member's messages from making a node send
without bound (issue 13, "bounded work"): each key has a bucket of ``burst`` tokens that
refills one token per ``refill_s``; :meth:`Buckets.take` spends one or says no. Keys are
attacker input, so the table holds at most ``max_keys``; past it the key touched longest ago
goes (an evicted key comes back with a full bucket, so evictions cost an attacker as many
keys' worth of messages as the table holds, each under its own limit).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

from ipop.errors import ConfigError

__all__ = ["Buckets"]

K = TypeVar("K", bound=Hashable)


class Buckets(Generic[K]):
    """Per-key token buckets; see the module docstring."""

    __slots__ = ("_burst", "_max_keys", "_refill_s", "_state")

    def __init__(self, *, burst: int, refill_s: float, max_keys: int = 4096) -> None:
        if burst < 1 or not refill_s > 0 or max_keys < 1:
            raise ConfigError("budget", "burst and max_keys >= 1, refill_s > 0")
        self._burst = float(burst)
        self._refill_s = refill_s
        self._max_keys = max_keys
        # key -> (tokens, when counted); insertion order is touch order (oldest first).
        self._state: dict[K, tuple[float, float]] = {}

    def take(self, key: K, now: float) -> bool:
        """Spend one of ``key``'s tokens; False (nothing spent) if it has none left."""
        state = self._state
        tokens, at = state.pop(key, (self._burst, now))
        tokens = min(self._burst, tokens + max(0.0, now - at) / self._refill_s)
        if len(state) >= self._max_keys:
            del state[next(iter(state))]
        ok = tokens >= 1.0
        state[key] = (tokens - 1.0 if ok else tokens, now)
        return ok

    def forget(self, key: K) -> None:
        self._state.pop(key, None)

    def __len__(self) -> int:
        return len(self._state)
