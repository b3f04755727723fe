"""Proximity neighbour selection for far links (sans-IO): distance buckets and exploration.

Why it works on a ring. Greedy routing needs a far link at each scale of ring distance,
not a particular node: Symphony draws the distance from a harmonic distribution, and any
node at about that distance serves as well (Gummadi et al., "The impact of DHT routing
geometry on resilience and proximity", SIGCOMM 2003: the ring has the freedom in neighbour
choice that makes PNS work, as Pastry's prefix table does). So the ring's distances are cut
into *buckets*, bucket ``b`` holding distances in ``(2**(158-b), 2**(159-b)]`` (half the
ring, ``2**159``, down to ever closer arcs), and within a bucket the far link with the least
round trip wins. Near links are not touched: they are the ring's, exactly.

How candidates are found: once a node holds its far-link target, it *explores*: it asks for
one more far link, to a point drawn in the bucket whose far link is slowest
(:func:`sample_in_bucket`, then the usual FAR CONNECT_TO_ME to the node owning that point).
With two of ours in one bucket and one over the target, the slower loses its FAR kind and
is trimmed like any idle link (:func:`ipop.overlay.policies.decide_far`). A bucket is
explored at most ``per_bucket`` times per ``epoch_s``, one exploration at a time and at
most one per ``interval_s``: a bounded number of extra links, all of them our own requests.

Whose numbers: the round trip of each link as our own link layer measured it in the
handshake (:attr:`ipop.overlay.table.Connection.rtt_s`). No peer reports a latency to us,
and a handshake's answer needs our own message first, so a peer can look slower than it
is, never faster; the point explored is drawn by us, and its owner is wherever the ring
puts it (addresses come from key hashes). A link whose round trip we did not measure never
wins a bucket, and one that holds a bucket is the first to be challenged.

Where the points come from: a random point of a bucket owns a node of our region only as
often as the region is large (one in six on the simulator's map), so four draws miss it
half the time. Pastry seeds its table from the tables of nodes near it; so do we
(:class:`FastPeerPool`): we ask our fastest peers, a few per epoch, for *their* fastest links
(FAST_PEERS, :class:`ipop.overlay.messages.FastPeers`), and an exploration of a bucket goes to
such a listed node when one lies in it, to a random point when none does. A list is only a
list of points: the exploration budget above is the same, the CTM goes to the point like any
other, and the node that answers is weighed by the round trip our own handshake measures.
A lying peer can make us explore a node of its choosing instead of a random one (as anyone
whose key hashes there can), never explore more, never see a slow node win a bucket; lists
come only from peers we asked, once per question, and hold at most ``MAX_FAST_PEERS`` ids.
"""

from __future__ import annotations

import random
from collections.abc import Container, Iterable

from ipop.types import ID_BITS, RING, NodeId, ring_distance

__all__ = ["FarExplorer", "FastPeerPool", "far_bucket", "sample_in_bucket"]


def far_bucket(local: NodeId, peer: NodeId) -> int:
    """The distance bucket of ``peer`` seen from ``local``: 0 for up to half the ring away,
    one more for each halving of the distance (``ID_BITS - 1`` for the next id)."""
    d = ring_distance(local, peer)
    return ID_BITS if d == 0 else ID_BITS - 1 - (d - 1).bit_length()


def sample_in_bucket(local: NodeId, bucket: int, rng: random.Random) -> NodeId:
    """A point of the ring in ``bucket`` seen from ``local``: the distance log-uniform within
    the bucket (as Symphony's harmonic draw is), either side at random."""
    if not 0 <= bucket < ID_BITS:
        raise ValueError(f"bucket {bucket} not in 0..{ID_BITS - 1}")
    if bucket == ID_BITS - 1:
        dist = 1
    else:
        low = 1 << (ID_BITS - 2 - bucket)
        dist = 1 + min(2 * low - 1, max(low, int(low * 2.0 ** rng.random())))
    if rng.random() < 0.5:
        dist = RING - dist
    return NodeId((local.value + dist) % RING)


class FarExplorer:
    """What exploration has done: buckets explored this epoch, and when the next may go."""

    def __init__(self, *, per_bucket: int, interval_s: float, epoch_s: float) -> None:
        self._per_bucket = per_bucket
        self._interval_s = interval_s
        self._epoch_s = epoch_s
        self._epoch_start = -float("inf")
        self._counts: dict[int, int] = {}
        self.next_at = -float("inf")

    def spent(self, now: float) -> frozenset[int]:
        """Buckets explored ``per_bucket`` times this epoch (a new epoch forgets them all:
        churn replaces far links, and a better node may have joined)."""
        if now - self._epoch_start >= self._epoch_s:
            self._epoch_start = now
            self._counts.clear()
        return frozenset(b for b, n in self._counts.items() if n >= self._per_bucket)

    def explored(self, bucket: int, now: float) -> None:
        """One exploration of ``bucket`` left now."""
        self._counts[bucket] = self._counts.get(bucket, 0) + 1
        self.next_at = now + self._interval_s


class FastPeerPool:
    """Far-link candidates learned from our fastest peers' FAST_PEERS answers (sans-IO).

    Bounds: ``per_epoch`` questions per ``epoch_s``, one per ``interval_s``, each to a peer
    not asked yet this epoch; one answer per question, accepted within ``timeout_s``; at
    most ``size`` candidates held (the first kept: they come from our fastest peers, fastest
    first). A new epoch forgets the candidates and who was asked: tables change.
    """

    def __init__(
        self, *, per_epoch: int, interval_s: float, epoch_s: float, timeout_s: float, size: int
    ) -> None:
        self._per_epoch = per_epoch
        self._interval_s = interval_s
        self._epoch_s = epoch_s
        self._timeout_s = timeout_s
        self._size = size
        self._epoch_start = -float("inf")
        self._asked: set[NodeId] = set()
        self._waiting: dict[NodeId, float] = {}  # peer -> answer accepted until
        self._next_at = -float("inf")
        self._candidates: dict[NodeId, None] = {}  # insertion-ordered set

    def __len__(self) -> int:
        return len(self._candidates)

    def _roll(self, now: float) -> None:
        if now - self._epoch_start >= self._epoch_s:
            self._epoch_start = now
            self._asked.clear()
            self._candidates.clear()
        if self._waiting:
            self._waiting = {p: t for p, t in self._waiting.items() if t >= now}

    def due(self, now: float) -> bool:
        """Whether a question may go now (the caller then ranks its peers: :meth:`to_ask`)."""
        self._roll(now)
        return now >= self._next_at and len(self._asked) < self._per_epoch

    def to_ask(self, fastest: Iterable[NodeId], now: float) -> NodeId | None:
        """Whom to ask now, given our peers fastest first (None: nobody, not yet); the
        caller sends the question and the answer is awaited from then on."""
        if not self.due(now):
            return None
        for peer in fastest:
            if peer not in self._asked:
                self._asked.add(peer)
                self._waiting[peer] = now + self._timeout_s
                self._next_at = now + self._interval_s
                return peer
        return None

    def answered(
        self,
        peer: NodeId,
        ids: Iterable[NodeId],
        local: NodeId,
        linked: Container[NodeId],
        now: float,
    ) -> bool:
        """``peer``'s answer: False (and nothing learned) unless it answers our question in
        time; ourselves and peers we hold links to are no candidates."""
        until = self._waiting.pop(peer, None)
        if until is None or now > until:
            return False
        for c in ids:
            if len(self._candidates) >= self._size:
                break
            if c != local and c not in linked:
                self._candidates[c] = None
        return True

    def take(self, local: NodeId, bucket: int, linked: Container[NodeId]) -> NodeId | None:
        """The first candidate in ``bucket`` we hold no link to, gone from the pool."""
        for c in self._candidates:
            if far_bucket(local, c) == bucket and c not in linked:
                del self._candidates[c]
                return c
        return None

    def forget(self, peer: NodeId) -> None:
        """``peer``'s link is gone: an answer from it is no longer awaited."""
        self._waiting.pop(peer, None)
