"""Bounds on the work LAN hosts can make the router do: rate limits and the ARP lookup gate.

Sans-IO (every method takes ``now``). Everything here is keyed by what a LAN host chooses (its
MAC, the addresses it asks about), so every table has a size bound and evicts its least
recently used entry beyond it (a dict's order is its recency: an entry is re-inserted on use).

* :class:`TokenBuckets`: a token bucket per key (a source MAC; ``b""`` for a global one).
* :class:`OwnerLookups`: the answers of "does some node hold this vIP" for proxy ARP, cached
  with a TTL (positive and negative), at most one lookup in flight per address, at most
  ``max_in_flight`` in all, and a few waiting replies per lookup.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from ipop.errors import LocalProtocolError

__all__ = ["OwnerLookups", "TokenBuckets", "lru_put"]

K = TypeVar("K")
V = TypeVar("V")
W = TypeVar("W")


def lru_put(table: dict[K, V], key: K, value: V, cap: int) -> None:
    """Insert ``key`` as the most recent entry of ``table``, evicting the oldest beyond ``cap``."""
    table.pop(key, None)
    while len(table) >= cap:
        del table[next(iter(table))]
    table[key] = value


class TokenBuckets(Generic[K]):
    """``burst`` events at once per key, then ``rate`` per second; at most ``max_keys`` keys.

    Evicting a key forgets its debt: a host cycling through more MACs than ``max_keys`` gets
    fresh buckets, which is why every per-MAC limit here has a global one behind it.
    """

    def __init__(self, *, rate: float, burst: float, max_keys: int = 4096) -> None:
        if rate <= 0 or burst < 1 or max_keys < 1:
            raise LocalProtocolError("rate > 0, burst >= 1 and max_keys >= 1 are required")
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: dict[K, tuple[float, float]] = {}

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, key: K, now: float) -> bool:
        """Take one token from ``key``'s bucket; False (nothing taken) if it is empty."""
        entry = self._buckets.get(key)
        if entry is None:
            tokens = self.burst
        else:
            tokens = min(self.burst, entry[0] + max(now - entry[1], 0.0) * self.rate)
        ok = tokens >= 1.0
        lru_put(self._buckets, key, (tokens - 1.0 if ok else tokens, now), self.max_keys)
        return ok


class OwnerLookups(Generic[W]):
    """Which vIPs are live, as far as proxy ARP needs to know; see the module docstring.

    The caller asks :meth:`answer` first (a cached verdict), then :meth:`wait` (join the lookup
    in flight for that address), then, if its rate limits allow, :meth:`start`; when the lookup
    ends it calls :meth:`finish`, which caches the verdict and hands back the waiters.
    """

    def __init__(
        self,
        *,
        max_in_flight: int = 32,
        max_waiters: int = 4,
        max_cached: int = 4096,
        live_ttl_s: float = 30.0,
        dead_ttl_s: float = 5.0,
    ) -> None:
        self.max_in_flight = max_in_flight
        self.max_waiters = max_waiters
        self.max_cached = max_cached
        self.live_ttl_s = live_ttl_s
        self.dead_ttl_s = dead_ttl_s
        self.started = 0
        self._cache: dict[bytes, tuple[bool, float]] = {}
        self._in_flight: dict[bytes, list[W]] = {}

    def in_flight(self) -> int:
        return len(self._in_flight)

    def answer(self, vip: bytes, now: float) -> bool | None:
        """The cached verdict for ``vip`` (True: live), None if there is none (or it expired)."""
        entry = self._cache.get(vip)
        if entry is None:
            return None
        if entry[1] <= now:
            del self._cache[vip]
            return None
        return entry[0]

    def wait(self, vip: bytes, waiter: W) -> bool | None:
        """Join the lookup in flight for ``vip``: True joined, False too many waiters, None
        no lookup is in flight."""
        waiters = self._in_flight.get(vip)
        if waiters is None:
            return None
        if len(waiters) >= self.max_waiters:
            return False
        waiters.append(waiter)
        return True

    def start(self, vip: bytes, waiter: W) -> bool:
        """Begin a lookup for ``vip`` with its first waiter; False if ``max_in_flight`` are."""
        if vip in self._in_flight:
            raise LocalProtocolError("a lookup for this address is in flight: wait() on it")
        if len(self._in_flight) >= self.max_in_flight:
            return False
        self._in_flight[vip] = [waiter]
        self.started += 1
        return True

    def finish(self, vip: bytes, live: bool, now: float) -> list[W]:
        """Record the verdict of ``vip``'s lookup; its waiters (the caller answers them)."""
        ttl = self.live_ttl_s if live else self.dead_ttl_s
        lru_put(self._cache, vip, (live, now + ttl), self.max_cached)
        return self._in_flight.pop(vip, [])
