"""Link hints (sans-IO): which nodes our fast peers hold links to, and telling them ours.

Why: greedy routing with proximity (:mod:`ipop.overlay.routing`) weighs only our own links, so
a message between two nodes of one region often leaves the region for its last hop or two: a
peer 5 ms away may hold a link to the target, and nothing told us. Measured on the simulator's
map (1,000 nodes, links frozen, 2,000 pairs), that tail held stretch p90 at 3.6-3.9. So linked
peers that measured each other fast tell each other which nodes they hold direct links to
(LINK_IDS, :class:`ipop.overlay.messages.LinkIds`), and the router hands a message to the
fastest such peer that says it holds a link to the target itself (:mod:`ipop.overlay.routing`
says why only the target itself, and what it measured). Direct links only: the peer hands the
message to the target at once, and over a relayed link that hop crosses the relay too, a ring
neighbour usually in another region; a relayed link of our own to the target yields to such
a peer when we timed the peer faster.

:class:`LinkHints` keeps what each peer said: one entry per linked peer (forgotten with the
link), at most ``MAX_LINK_IDS`` prefixes each, aged out ``hint_s`` after it was said, and at
most ``max_peers`` entries (the oldest out), and only from a peer we measured within
``rtt_max_s`` ourselves. A new list replaces the peer's old one whole. Each LINK_IDS costs one
sort of at most 64 integers and sends nothing back: a peer that repeats it gains nothing
(tools/bench/amplification.py: 0 bytes caused).

:class:`LinkIdsTeller` says when to tell whom: a linked peer whose round trip we measured at
most ``rtt_max_s`` (the router uses hints only from such peers, by its own measurement, and
round trips are about symmetric) gets our list when the link is new to the teller (the node
offers it a link only OVERLAY_LINK_IDS_SETTLE_S after it came up), again when our links
changed and ``min_s`` has passed since the last list we sent it, and again every
``refresh_s`` (which keeps the entry alive at the peer: ``hint_s`` is a few refreshes).

What a liar can do: claim links it does not hold, and so draw messages for those nodes from
peers that timed it fast. Routing takes a hop that does not get nearer the target (a
*sideways* step) at most once per message, marked in it (FLAG_SIDEWAYS): every other hop is
strictly nearer the target, so a false claim costs one hop and the liar's own forwarding
(which it controls for anything handed to it anyway), never a loop among honest nodes
(tests/unit/test_overlay_linkhints.py routes every pair of a network around such a liar,
and shows the loops without the bound). A forwarder may clear the flag as it may rewrite
the hop count: each message it hands back costs one forward, never more.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from dataclasses import dataclass

from ipop.overlay.messages import MAX_LINK_IDS, id_prefix
from ipop.overlay.table import ConnectionTable
from ipop.types import NodeId

__all__ = ["LinkHints", "LinkIdsTeller"]

_INF = float("inf")


@dataclass(slots=True)
class _Said:
    """One peer's list: its prefixes ascending, and until when we believe it."""

    prefixes: list[int]
    until: float


class LinkHints:
    """What our fast linked peers said they hold links to (module docstring).

    Lookups go through an index: every prefix any fast peer listed, with the fastest peer that
    listed it (by our table's round trip now). It is rebuilt on first use after a list came
    or went, our table changed (:attr:`ConnectionTable.stamp`) or a list aged out: at most
    ``max_peers * MAX_LINK_IDS`` entries, so a lookup is one dict probe.
    """

    def __init__(
        self, table: ConnectionTable, *, rtt_max_s: float, hint_s: float, max_peers: int
    ) -> None:
        self._table = table
        self.rtt_max_s = rtt_max_s
        self._hint_s = hint_s
        self._max = max_peers
        self._said: collections.OrderedDict[NodeId, _Said] = collections.OrderedDict()
        self._version = 0
        # The index (class docstring) and what it was built from.
        self._index: dict[int, tuple[float, NodeId]] = {}
        self._built: tuple[int, int] | None = None
        self._stale_at = _INF
        self.rebuilt = 0

    def __len__(self) -> int:
        return len(self._said)

    def put(self, peer: NodeId, prefixes: Iterable[int], now: float) -> bool:
        """``peer`` says it holds links to the nodes of ``prefixes`` (its LINK_IDS): kept
        if it is linked and we measured it within ``rtt_max_s`` (else False: its list would
        never steer a hop of ours)."""
        row = self._table.get(peer)
        if row is None or row.rtt_s is None or row.rtt_s > self.rtt_max_s:
            self.forget(peer)
            return False
        said = sorted(set(prefixes))[:MAX_LINK_IDS]
        self._said[peer] = _Said(said, now + self._hint_s)
        self._said.move_to_end(peer)
        while len(self._said) > self._max:
            self._said.popitem(last=False)
        self._version += 1
        return True

    def forget(self, peer: NodeId) -> None:
        """``peer``'s link is gone: so is what it said."""
        if self._said.pop(peer, None) is not None:
            self._version += 1

    def holder(self, target: NodeId, now: float) -> tuple[float, NodeId] | None:
        """(round trip, peer): the fastest of our fast peers that says it holds a link to
        ``target``; None if none does (as far as we still believe)."""
        if not self._said:
            return None
        if (self._table.stamp, self._version) != self._built or now >= self._stale_at:
            self._rebuild(now)
        return self._index.get(id_prefix(target))

    def _rebuild(self, now: float) -> None:
        self.rebuilt += 1
        table = self._table
        index: dict[int, tuple[float, NodeId]] = {}
        stale_at = _INF
        for peer, said in list(self._said.items()):
            if said.until <= now:
                del self._said[peer]
                continue
            row = table.get(peer)
            if row is None or row.rtt_s is None or row.rtt_s > self.rtt_max_s:
                continue  # a new path we have not timed, or slower now: not used meanwhile
            stale_at = min(stale_at, said.until)
            owner = (row.rtt_s, peer)
            for p in said.prefixes:
                old = index.get(p)
                if old is None or owner < old:
                    index[p] = owner
        self._index = index
        self._built = (table.stamp, self._version)
        self._stale_at = stale_at


class LinkIdsTeller:
    """When to tell which linked peer our LINK_IDS list (module docstring)."""

    def __init__(self, *, rtt_max_s: float, min_s: float, refresh_s: float) -> None:
        self.rtt_max_s = rtt_max_s
        self._min_s = min_s
        self._refresh_s = refresh_s
        self._told: dict[NodeId, tuple[float, int]] = {}  # peer -> (when, our list's version)

    def due(
        self, peers: Iterable[tuple[NodeId, float | None]], version: int, now: float
    ) -> list[NodeId]:
        """Of ``peers`` (linked, with the round trip we measured), whom to send our list to
        now, given ``version`` of our links (it changes whenever a link comes or goes); the
        caller sends it to each one returned."""
        out = []
        told = self._told
        for peer, rtt in peers:
            if rtt is None or rtt > self.rtt_max_s:
                continue
            last = told.get(peer)
            if last is not None:
                since = now - last[0]
                if since < self._min_s or (last[1] == version and since < self._refresh_s):
                    continue
            told[peer] = (now, version)
            out.append(peer)
        return out

    def forget(self, peer: NodeId) -> None:
        """``peer``'s link is gone: a new link to it is told at once."""
        self._told.pop(peer, None)
