"""Bounds on the work LAN hosts can make the router do: rate limits and the ARP lookup gate.

Sans-IO (every method takes ``now``). Everything here is keyed by what a LAN host chooses (its
MAC, the addresses it asks about), so every table has a size bound and evicts its least
recently used entry beyond it (a dict's order is its recency: an entry is re-inserted on use).

* :class:`OwnerLookups`: the answers of "does some node hold this vIP" for proxy ARP, cached
  with a TTL (positive and negative), at most one lookup in flight per address, at most
  ``max_in_flight`` in all, and a few waiting replies per lookup.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from ipop.errors import LocalProtocolError

__all__ = ["OwnerLookups", "lru_put"]

K = TypeVar("K")
V = TypeVar("V")
W = TypeVar("W")


def lru_put(table: dict[K, V], key: K, value: V, cap: int) -> None:
    """Insert ``key`` as the most recent entry of ``table``, evicting the oldest beyond ``cap``."""
    table.pop(key, None)
    while len(table) >= cap:
        del table[next(iter(table))]
    table[key] = value


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

    def finish(self, vip: bytes, live: bool | None, now: float) -> list[W]:
        """Record the verdict of ``vip``'s lookup (None: the lookup failed or timed out, which
        says nothing of the address and is not cached); its waiters (the caller answers them)."""
        if live is not None:
            ttl = self.live_ttl_s if live else self.dead_ttl_s
            lru_put(self._cache, vip, (live, now + ttl), self.max_cached)
        return self._in_flight.pop(vip, [])
