"""Near upkeep of the overlay (sans-IO): what we heard of, who we want as near peers, whether
our neighbours on both sides are linked.

Owns :class:`SeenIds` (ids our peers told us about, by informer and by ring value, with a
``version``) and :class:`NearKeeper`: the pooling of neighbour lists, the near candidates we
want (:meth:`NearKeeper.wanted`), which of them to ask and when we last did, and the brackets
test behind ``routable`` (:meth:`NearKeeper.brackets_linked`), with the caches both answers keep.
It decides; :class:`ipop.overlay.upkeep.RingUpkeep` sends (the CTMs, the NEIGHBOURS lists) and
keeps the near set itself. The theory (ring stabilisation) is in :mod:`ipop.overlay.node`.
"""

from __future__ import annotations

import bisect
from collections.abc import ItemsView, Iterator, Sequence

from ipop.overlay.attempts import Attempts, Backoff
from ipop.overlay.proven import ProvenIds
from ipop.overlay.ring import ring_neighbours_sorted
from ipop.overlay.table import ConnectionTable
from ipop.types import RING, NodeId, ring_distance

__all__ = ["NearKeeper", "SeenIds"]

_INF = float("inf")


class SeenIds:
    """Ids heard from peers: who told us (holds a link to it) and until when we trust it.

    Indexed by informer as well, because every neighbour list replaces what its informer told
    us before; ``version`` changes whenever an id comes, goes or revives after expiring (not
    when news is merely renewed, nor when another informer repeats it), so answers computed
    from the ids can be cached. Why blind to informers: near peers gossip the same ids in turn,
    so an id's informer changes with almost every list, and the brackets test was recomputed
    each time (the biggest overlay cost at 1,000 nodes).
    """

    __slots__ = ("_by_informer", "_by_value", "_news", "_values", "version")

    def __init__(self) -> None:
        self._news: dict[NodeId, tuple[NodeId, float]] = {}
        self._by_informer: dict[NodeId, set[NodeId]] = {}
        # The ids' values, ascending, and each value's id (what the brackets test bisects).
        self._values: list[int] = []
        self._by_value: dict[int, NodeId] = {}
        self.version = 0

    def __iter__(self) -> Iterator[NodeId]:
        return iter(self._news)

    def __len__(self) -> int:
        return len(self._news)

    def __contains__(self, node: object) -> bool:
        return node in self._news

    def get(self, node: NodeId) -> tuple[NodeId, float] | None:
        return self._news.get(node)

    def items(self) -> ItemsView[NodeId, tuple[NodeId, float]]:
        return self._news.items()

    def put(self, node: NodeId, informer: NodeId, until: float, *, now: float) -> None:
        old = self._news.get(node)
        if old is None or old[0] != informer:
            if old is not None:
                self._unindex(node, old[0])
            else:
                bisect.insort(self._values, node.value)
                self._by_value[node.value] = node
            self._by_informer.setdefault(informer, set()).add(node)
        if old is None or old[1] <= now:
            self.version += 1  # a new id, or expired news come back to life
        self._news[node] = (informer, until)

    def discard(self, node: NodeId) -> None:
        old = self._news.pop(node, None)
        if old is not None:
            self._unindex(node, old[0])
            values = self._values
            del values[bisect.bisect_left(values, node.value)]
            del self._by_value[node.value]
            self.version += 1

    def between(self, low: int, high: int) -> list[tuple[NodeId, float]]:
        """(id, trusted until) of the ids whose values lie strictly inside the ring arc from
        ``low`` clockwise to ``high`` (both ring values; the arc may wrap past zero; low ==
        high: all but that point)."""
        values = self._values
        lo = bisect.bisect_right(values, low)
        if low < high:
            picked = values[lo : bisect.bisect_left(values, high)]
        else:
            picked = values[lo:] + values[: bisect.bisect_left(values, high)]
        by_value = self._by_value
        news = self._news
        return [(c, news[c][1]) for c in (by_value[v] for v in picked)]

    def values(self) -> list[int]:
        """The ids' ring values, ascending (do not modify)."""
        return self._values

    def told_by(self, informer: NodeId) -> list[NodeId]:
        return list(self._by_informer.get(informer, ()))

    def _unindex(self, node: NodeId, informer: NodeId) -> None:
        told = self._by_informer[informer]
        told.discard(node)
        if not told:
            del self._by_informer[informer]


class NearKeeper:
    """Near candidates: pooled from neighbour lists, judged once per tick, asked for at most
    once per CTM timeout; and the brackets test.

    Reads (never changes) the node's ``table``, ``attempts``, ``backoff`` and ``proven`` ids;
    their versions key the caches. ``seen`` is shared with the node's routing (hints).
    ``check_due``: news came in (or a backoff was lifted) and the next tick should judge the
    candidates again.
    """

    def __init__(
        self,
        local_id: NodeId,
        *,
        near_per_side: int,
        seen_ttl_s: float,
        table: ConnectionTable,
        attempts: Attempts,
        backoff: Backoff,
        proven: ProvenIds,
        seen: SeenIds | None = None,
    ) -> None:
        self.local_id = local_id
        self.near_per_side = near_per_side
        self.seen_ttl_s = seen_ttl_s
        self.table = table
        self.attempts = attempts
        self.backoff = backoff
        self.proven = proven
        # Ids heard from peers, with who told us, until when we trust the news.
        self.seen = SeenIds() if seen is None else seen
        self.check_due = False
        # Candidate -> until when our CTM to it is outstanding (not asked again before).
        self._asked: dict[NodeId, float] = {}
        # (versions, valid until, answer): see wanted.
        self._wanted_cache: tuple[tuple[int, int, int, int], float, list[NodeId]] | None = None
        # (seen version, table version, backoff version, proven version), answer, valid until:
        # see brackets_linked.
        self._brackets_cache: tuple[tuple[int, int, int, int], bool, float] | None = None

    def consider(self, ids: Sequence[NodeId], informer: NodeId, now: float) -> None:
        """Remember ids a peer told us about; the next tick asks the ones that would be near.

        Why not ask at once: lists arrive one by one, and judged against a half-filled table
        every id in the first list looks near; each later, closer list would then push those
        links out again (idle links, handshakes for nothing). Pooling everything heard within
        ``seen`` and judging once per tick asks only for the links we will keep.
        """
        until = now + self.seen_ttl_s
        # A list is the informer's whole current view: what it reported before and no longer
        # does is gone (typically dead), and must not keep hiding live nodes from our ranking.
        listed = set(ids)
        seen = self.seen
        for c in seen.told_by(informer):
            if c not in listed:
                seen.discard(c)
        for c in ids:
            if c != self.local_id:
                # ``informer`` holds a link to what it told us about: our CTM goes through it.
                seen.put(c, informer, until, now=now)
        self.check_due = True

    def forget(self, peer: NodeId) -> None:
        """``peer``'s link is gone: neither it nor what it told us is news any more."""
        self.seen.discard(peer)
        for c in self.seen.told_by(peer):
            self.seen.discard(c)

    def wanted(self, now: float) -> list[NodeId]:
        """The near_per_side nearest ids on each side among everything we know of: seen (not
        expired, not backed off), pending and linked; nearest first.

        Cached: the answer depends on the seen ids, the table's peers, the pending attempts,
        the backoff set and expiry. Why: near peers gossip every few seconds, so this was
        asked at almost every tick of every node, over hundreds of ids each time.
        """
        cached = self._wanted_cache
        if cached is not None and now < cached[1] and cached[0] == self._wanted_key():
            return cached[2]
        backoff = self.backoff
        seen = self.seen
        expiry = _INF
        gone = []
        for c, (_, t) in seen.items():
            if t <= now or (backoff and c in backoff):
                gone.append(c)
            elif t < expiry:
                expiry = t
        for c in gone:
            seen.discard(c)
        local = self.local_id.value
        # By value, not NodeId equality: this runs over hundreds of ids.
        pool = {c.value: c for c in seen}
        for c in self.attempts:
            pool[c.value] = c
        for v in self.table.ring():
            pool[v] = self.table.peer_of(v)
        pool.pop(local, None)
        wanted = sorted(
            {
                pool[v]
                for v in ring_neighbours_sorted(self.local_id, sorted(pool), self.near_per_side)
            },
            key=lambda c: (ring_distance(self.local_id, c), c),
        )
        # Renewed news only moves expiry later, so the earliest one seen now is a safe bound.
        self._wanted_cache = (self._wanted_key(), expiry, wanted)
        return wanted

    def _wanted_key(self) -> tuple[int, int, int, int]:
        return (self.seen.version, self.table.version, self.attempts.version, self.backoff.version)

    def to_ask(self, now: float) -> list[tuple[NodeId, NodeId | None]]:
        """The wanted candidates to send a NEAR CTM now, each with the linked peer that told us
        of it (the CTM goes through it) or None; clears ``check_due``. Call :meth:`asked` for
        each CTM that left."""
        self.check_due = False
        table = self.table
        attempts = self.attempts
        out = []
        for c in self.wanted(now):
            # A pending attempt that may not fall back to a relay (a far link, a connect-back)
            # fails for good between NATs that cannot punch: ask as a near peer too, whose
            # answer lets the attempt use a relay.
            if c in table or ((att := attempts.get(c)) is not None and att.relay_allowed):
                continue
            if self._asked.get(c, -_INF) > now:
                continue
            news = self.seen.get(c)
            out.append((c, news[0] if news is not None and news[0] in table else None))
        return out

    def asked(self, peer: NodeId, until: float) -> None:
        """Our NEAR CTM to ``peer`` left; not again before ``until``."""
        self._asked[peer] = until

    def expire(self, now: float) -> None:
        for peer in [peer for peer, t in self._asked.items() if t <= now]:
            del self._asked[peer]

    def brackets_linked(self, now: float) -> bool:
        """No live news of a node between us and our closest linked peer on either side.

        Only a node that proved itself to us counts (see :mod:`ipop.overlay.proven`): a
        neighbour's list alone cannot hold us back. Cached: the answer depends only on the
        table's peers, the seen ids, the backoff set, the proven ids and time. Time alone can
        only turn False into True (news expires, nothing new comes), so a False answer holds
        until its last blocking news expires, a True one until one of the four changes. Why:
        every node asks every tick, over hundreds of seen ids.
        """
        key = (self.seen.version, self.table.version, self.backoff.version, self.proven.version)
        cached = self._brackets_cache
        if cached is not None and cached[0] == key and now < cached[2]:
            return cached[1]
        ring = self.table.ring()
        n = len(ring)
        if not n:
            self._brackets_cache = (key, False, _INF)
            return False
        local = self.local_id.value
        i = bisect.bisect_right(ring, local)
        to_succ = (ring[i % n] - local) % RING
        to_pred = (local - ring[(i - 1) % n]) % RING
        table = self.table
        backoff = self.backoff
        seen = self.seen
        proven = self.proven
        blocked_until = -_INF
        # Only ids strictly between our closest linked peers and us can block (bisected).
        succ, pred = (local + to_succ) % RING, (local - to_pred) % RING
        for c, until in seen.between(local, succ) + seen.between(pred, local):
            if until <= now or c in backoff or c in table or c not in proven:
                continue
            blocked_until = max(blocked_until, until)
        linked = blocked_until == -_INF
        self._brackets_cache = (key, linked, _INF if linked else blocked_until)
        return linked
