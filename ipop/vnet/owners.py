"""The data plane's vIP → owner table and the bookkeeping of its DHT lookups; sans-IO.

Owns: which node holds each virtual IP as far as this node knows (answers of the DHT, cached
with an expiry; this node's own addresses, pinned), the lookups in flight and the packets
held while they run. The lookups themselves (DHT gets) are the adapter's
(:class:`ipop.aio.dataplane.DataPlane`): it asks :meth:`OwnerTable.hold` whether to start
one, and reports each outcome with :meth:`OwnerTable.answer` or :meth:`OwnerTable.abandon`.

Every address in here can come from an attacker: a member's packets name any inner source,
a local program any destination. So every table is bounded, with an eviction rule:

* answers: at most :data:`MAX_ENTRIES`; a new answer beyond that evicts the oldest answer
  (insertion order; an answer looked up again moves to the back). A member that floods
  random addresses adds at most :data:`LOOKUP_RATE_PER_S` answers a second (the rate limit
  below), so an honest entry, refreshed every :data:`ipop.timing.OWNER_TTL_S`, is not pushed
  out by one attacker. Pinned entries (this node's addresses) are never evicted and do not count.
* absence is cached too (:data:`ipop.timing.OWNER_NEGATIVE_TTL_S`): a flood of one unknown
  address costs one lookup per TTL, not one per packet.
* lookups in flight: at most one per address and :data:`MAX_IN_FLIGHT` in all.
* lookups caused by one peer's packets (their inner source), or by the local side (their
  destination): a token bucket per cause, :data:`LOOKUP_RATE_PER_S` with a burst of
  :data:`LOOKUP_BURST`; at most :data:`MAX_CAUSES` buckets, oldest dropped first.
* held packets: at most :data:`PENDING_MAX` per address in flight and :data:`HELD_MAX_BYTES`
  in all.

Refusals are returned as :class:`LookupDrop` reasons for the caller to count; nothing raises.

Hot path: :attr:`OwnerTable.entries` is a plain dict ``vIP (4 bytes) -> (owner, expires)``
that :mod:`ipop.vnet.filter` reads with one ``get``; owner None means "known absent".
"""

from __future__ import annotations

from enum import Enum, StrEnum

from ipop import timing
from ipop.ratelimit import KeyedBuckets
from ipop.types import NodeId

__all__ = [
    "HELD_MAX_BYTES",
    "LOOKUP_BURST",
    "LOOKUP_RATE_PER_S",
    "MAX_CAUSES",
    "MAX_ENTRIES",
    "MAX_IN_FLIGHT",
    "PENDING_MAX",
    "Held",
    "LookupDrop",
    "OwnerTable",
]

# Answers kept (not counting pinned ones): far more than the peers one node talks to.
MAX_ENTRIES = 16384
# DHT lookups running at once, whatever caused them: each costs a few routed messages.
MAX_IN_FLIGHT = 128
# Lookups one cause (a peer, or the local side) may start: a router peer's hosts all starting
# to talk at once fit in the burst; a flood of random addresses gets 20 a second.
LOOKUP_RATE_PER_S = 20.0
LOOKUP_BURST = 64.0
MAX_CAUSES = 4096
# Packets held per address while its owner is looked up, and bytes held in all.
PENDING_MAX = 32
HELD_MAX_BYTES = 4 << 20

_INF = float("inf")


class LookupDrop(StrEnum):
    """Why :meth:`OwnerTable.hold` refused a packet (the counter names)."""

    PENDING_FULL = "pending_full"
    HELD_BYTES_FULL = "held_bytes_full"
    LOOKUPS_BUSY = "lookups_busy"
    LOOKUP_RATE_LIMITED = "lookup_rate_limited"


class Held(Enum):
    """A packet :meth:`OwnerTable.hold` kept: START a lookup for its address, or QUEUED behind
    the one that is running."""

    START = "start"
    QUEUED = "queued"


class OwnerTable:
    """vIP → owner answers, lookups in flight and held packets; see the module docstring."""

    def __init__(
        self,
        *,
        max_entries: int = MAX_ENTRIES,
        max_in_flight: int = MAX_IN_FLIGHT,
        rate_per_s: float = LOOKUP_RATE_PER_S,
        burst: float = LOOKUP_BURST,
    ) -> None:
        self.max_entries = max_entries
        self.max_in_flight = max_in_flight
        self.rate_per_s = rate_per_s
        self.burst = burst
        # vIP -> (owner or None for "absent", trusted until); read directly by the filter.
        self.entries: dict[bytes, tuple[NodeId | None, float]] = {}
        # The learned (evictable) keys of ``entries``, oldest answer first.
        self._learned: dict[bytes, None] = {}
        # vIP -> held packets: outbound (the IP packet) and inbound (its sender, the packet).
        self._held_out: dict[bytes, list[bytes]] = {}
        self._held_in: dict[bytes, list[tuple[NodeId, bytes]]] = {}
        self._in_flight: set[bytes] = set()
        self.held_bytes = 0
        # Per cause (a peer's NodeId value; None: the local side).
        self._buckets: KeyedBuckets[int | None] = KeyedBuckets(rate_per_s, burst, MAX_CAUSES)

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def held_packets(self) -> int:
        return sum(map(len, self._held_out.values())) + sum(map(len, self._held_in.values()))

    # --- pinned entries: this node's own addresses --------------------------------------------

    def pin(self, vip: bytes, owner: NodeId) -> None:
        """``vip`` is held by ``owner`` for good (this node's vIP, a router's LAN host)."""
        self._learned.pop(vip, None)
        self.entries[vip] = (owner, _INF)

    def unpin(self, vip: bytes) -> None:
        entry = self.entries.get(vip)
        if entry is not None and entry[1] == _INF:
            del self.entries[vip]

    def owner_of(self, vip: bytes) -> NodeId | None:
        entry = self.entries.get(vip)
        return entry[0] if entry is not None else None

    def holder(self, vip: bytes, *, now: float) -> NodeId | None:
        """The node holding ``vip`` by an answer still fresh at ``now`` (or a pin); None if
        the answer is absence, stale or missing."""
        entry = self.entries.get(vip)
        return entry[0] if entry is not None and entry[1] > now else None

    # --- lookups ------------------------------------------------------------------------------

    def hold_out(self, vip: bytes, packet: bytes, *, now: float) -> Held | LookupDrop:
        """Hold a packet from the local side for ``vip`` until its owner is known."""
        got = self._admit(vip, len(packet), None, now)
        if got is not Held.START and got is not Held.QUEUED:
            return got
        self._held_out.setdefault(vip, []).append(packet)
        return got

    def hold_in(self, vip: bytes, src: NodeId, packet: bytes, *, now: float) -> Held | LookupDrop:
        """Hold a packet from ``src`` whose inner source is ``vip`` until its owner is known."""
        got = self._admit(vip, len(packet), src.value, now)
        if got is not Held.START and got is not Held.QUEUED:
            return got
        self._held_in.setdefault(vip, []).append((src, packet))
        return got

    def _admit(self, vip: bytes, size: int, cause: int | None, now: float) -> Held | LookupDrop:
        if self.held_bytes + size > HELD_MAX_BYTES:
            return LookupDrop.HELD_BYTES_FULL
        if vip in self._in_flight:
            held = len(self._held_out.get(vip, ())) + len(self._held_in.get(vip, ()))
            if held >= PENDING_MAX:
                return LookupDrop.PENDING_FULL
            self.held_bytes += size
            return Held.QUEUED
        if len(self._in_flight) >= self.max_in_flight:
            return LookupDrop.LOOKUPS_BUSY
        if not self._buckets.take(cause, now):
            return LookupDrop.LOOKUP_RATE_LIMITED
        self._in_flight.add(vip)
        self.held_bytes += size
        return Held.START

    def answer(
        self, vip: bytes, owner: NodeId | None, *, now: float
    ) -> tuple[list[bytes], list[tuple[NodeId, bytes]]]:
        """The lookup for ``vip`` ended (``owner`` None: nobody holds it). Returns the packets
        held for it, outbound and inbound, for the caller to check again and send or drop."""
        self._in_flight.discard(vip)
        if self.entries.get(vip, (None, 0.0))[1] != _INF:  # a pinned entry is never replaced
            self._learned.pop(vip, None)
            self.entries.pop(vip, None)
            while len(self._learned) >= self.max_entries:
                oldest = next(iter(self._learned))
                del self._learned[oldest]
                del self.entries[oldest]
            ttl = timing.OWNER_TTL_S if owner is not None else timing.OWNER_NEGATIVE_TTL_S
            self.entries[vip] = (owner, now + ttl)
            self._learned[vip] = None
        return self._release(vip)

    def abandon(self, vip: bytes) -> tuple[list[bytes], list[tuple[NodeId, bytes]]]:
        """The lookup for ``vip`` failed or was cancelled: nothing learned; the held packets
        are returned (to be dropped) and the next packet may start a new lookup."""
        self._in_flight.discard(vip)
        return self._release(vip)

    def _release(self, vip: bytes) -> tuple[list[bytes], list[tuple[NodeId, bytes]]]:
        out = self._held_out.pop(vip, [])
        held = self._held_in.pop(vip, [])
        self.held_bytes -= sum(map(len, out)) + sum(len(p) for _, p in held)
        return out, held

    def known(self) -> dict[NodeId, bytes]:
        """Each node with an address here (the last one listed, if several)."""
        return {n: ip for ip, (n, _) in self.entries.items() if n is not None}
