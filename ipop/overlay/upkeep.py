"""Upkeep of the overlay node's ring (sans-IO): the near set, the join, neighbour-list gossip,
silent near peers, ``routable``, and the connection policies of each tick.

Owns :class:`RingUpkeep`, which carries out ring stabilisation (theory in
:mod:`ipop.overlay.node`): it recomputes the near set on every change (the ``near_per_side``
closest linked peers on each side), routes a JOIN to our own address and pulls our near peers'
lists (:meth:`RingUpkeep.probe`), asks the candidates :class:`ipop.overlay.near.NearKeeper`
names with a NEAR CONNECT_TO_ME (:meth:`RingUpkeep.ask`), swaps NEIGHBOURS lists with the near
peers every gossip interval and whenever the near set changes (:meth:`RingUpkeep.gossip`),
answers peers' pulls within a per-peer budget (:meth:`RingUpkeep.on_neighbours`), and judges
``routable`` (:meth:`RingUpkeep.update_routable`). Each tick it also carries out the
connection policies (:func:`ipop.overlay.policies.decide`: near probes due, far links wanted,
kinds expired, useless links trimmed), whose view of us is the near set, the join and the
last probe it keeps (:meth:`RingUpkeep.run_policies`).

Silent near peers: every overlay message from a peer counts as hearing from it (the node
writes :attr:`RingUpkeep.heard` itself, on its packet path); a near peer silent for
``near_suspect_s`` (its gossip is late) is pulled every tick, and one silent for
``near_dead_s`` is closed as dead (:meth:`RingUpkeep.check_silent`), so a crashed neighbour
is replaced in seconds rather than at the link layer's keepalive timeout. A peer that becomes
near after a long silence (a far link: keepalives only) is suspect at once.

:class:`ipop.overlay.node.OverlayNode` owns one, and calls it from its link events, its tick
and its forgetting of a peer; the CTM agent tells it when our JOIN was answered. It counts into
the node's ``drops`` (the reasons of :data:`NEAR_DROPS`) and ``stats``, as before it was cut
out. Bounds: :attr:`heard` and the pull budgets hold linked peers only (forgotten with the
link, :meth:`RingUpkeep.forget`).
"""

from __future__ import annotations

import collections
import random
from collections.abc import Callable, Iterable
from typing import Final

from ipop import timing
from ipop.overlay.attempts import Attempts
from ipop.overlay.config import OverlayConfig
from ipop.overlay.ctm import CtmAgent
from ipop.overlay.events import ConnectionAdded, ConnectionRemoved, Joined, OverlayEvent, Routable
from ipop.overlay.messages import MAX_FAST_PEERS, MAX_NEIGHBOURS, FastPeers, Neighbours, Purpose
from ipop.overlay.near import NearKeeper
from ipop.overlay.policies import (
    Action,
    FarExplore,
    FarLinkWanted,
    KindExpired,
    LinkUseless,
    NearProbeDue,
    PolicyView,
    decide,
)
from ipop.overlay.proximity import FarExplorer, FastPeerPool, sample_in_bucket
from ipop.overlay.ring import estimate_size, ring_neighbours_sorted, sample_far_target
from ipop.overlay.table import ConnectionKind, ConnectionTable
from ipop.overlay.views import ConnectionViews
from ipop.ratelimit import KeyedBuckets
from ipop.types import NodeId

__all__ = ["NEAR_DROPS", "RingUpkeep"]

# What near upkeep counts in the node's ``drops`` (part of OVERLAY_DROPS).
NEAR_DROPS: Final = frozenset(
    {"neighbours_pull_too_often", "fast_peers_too_often", "fast_peers_unasked"}
)

_INF = float("inf")
# NEIGHBOURS pulls a peer gets answered at once before the per-peer rate applies.
_PULL_BURST = 4
# FAST_PEERS questions a peer gets answered at once before the per-peer rate applies.
_FAST_PEERS_BURST = 2
# Far-link candidates held from FAST_PEERS answers: four answers' worth.
_FAST_PEERS_POOL = 4 * MAX_FAST_PEERS


class RingUpkeep:
    """The near set and everything that keeps it true, and the policies (module docstring)."""

    def __init__(
        self,
        local_id: NodeId,
        *,
        config: OverlayConfig,
        rng: random.Random,
        table: ConnectionTable,
        keeper: NearKeeper,
        ctm: CtmAgent,
        attempts: Attempts,
        views: ConnectionViews,
        heard: dict[NodeId, float],
        drops: collections.Counter[str],
        stats: collections.Counter[str],
        emit: Callable[[OverlayEvent], None],
        send: Callable[[NodeId, bytes, float], bool],
        close_link: Callable[[NodeId, float], None],
        drop_kind: Callable[[NodeId, ConnectionKind, float], None],
    ) -> None:
        self.local_id = local_id
        self.config = config
        self._rng = rng  # the node's: gossip jitter draws in the node's order
        self._table = table
        self._keeper = keeper
        self._ctm = ctm
        self._attempts = attempts
        self._views = views
        # Peer -> when we last got an overlay message from it (or it became near / linked).
        # The node's own dict: its packet path writes it without a call.
        self.heard = heard
        self.drops = drops
        self.stats = stats
        self._emit = emit
        self._send = send
        self._close_link = close_link
        self._drop_kind = drop_kind
        self.near: frozenset[NodeId] = frozenset()
        self.joined = False
        self.routable = False
        self.last_probe = -_INF  # when we last probed (JOIN to our own address, pulls)
        self._next_gossip = 0.0
        self._gossip_due = False
        # When we last answered each linked peer's NEIGHBOURS pull (ipop.ratelimit; the CTM
        # agent holds the budgets of what CTMs make us do).
        self._pull_budget: KeyedBuckets[NodeId] = KeyedBuckets(
            1 / config.neighbours_reply_min_s, _PULL_BURST
        )
        # Far links chosen by round trip: what exploration has done (ipop.overlay.proximity).
        self._explorer = FarExplorer(
            per_bucket=config.far_explore_per_bucket,
            interval_s=config.far_explore_s,
            epoch_s=config.far_explore_epoch_s,
        )
        # Points to explore learned from our fastest peers (ipop.overlay.proximity), and the
        # budget of FAST_PEERS questions we answer per peer.
        self._fast = FastPeerPool(
            per_epoch=timing.OVERLAY_FAST_PEERS_PER_EPOCH,
            interval_s=timing.OVERLAY_FAST_PEERS_ASK_S,
            epoch_s=config.far_explore_epoch_s,
            timeout_s=timing.OVERLAY_FAST_PEERS_TIMEOUT_S,
            size=_FAST_PEERS_POOL,
        )
        self._fast_budget: KeyedBuckets[NodeId] = KeyedBuckets(
            1 / timing.OVERLAY_FAST_PEERS_REPLY_MIN_S, _FAST_PEERS_BURST
        )

    def start(self, now: float) -> None:
        """The node started: the first gossip is one interval away."""
        self._next_gossip = now + self.config.gossip_interval_s

    def ask(self, now: float) -> None:
        """Send a NEAR CTM to each candidate the near keeper names now."""
        keeper = self._keeper
        for c, via in keeper.to_ask(now):
            if self._ctm.send(c, Purpose.NEAR, exact=True, now=now, via=via):
                keeper.asked(c, now + self.config.ctm_timeout_s)

    def probe(self, now: float) -> None:
        """Route a JOIN to our own address and pull neighbour lists from our near peers."""
        self.last_probe = now
        self._ctm.send(self.local_id, Purpose.JOIN, exact=False, now=now)
        pull = self.neighbours_message(reply_wanted=True)
        for p in sorted(self.near):
            self._send(p, pull, now)

    def linked(self, now: float) -> None:
        """A link came up: until we joined, probe unless a JOIN is already in flight."""
        if not self.joined and not self._ctm.join_outstanding(now):
            self.probe(now)

    def on_joined(self) -> None:
        """Our JOIN was answered (the first answer counts)."""
        if not self.joined:
            self.joined = True
            self._emit(Joined())

    def refresh(self, now: float) -> None:
        """Recompute the near set from the table; a change is told and gossiped."""
        table = self._table
        near = frozenset(
            table.peer_of(v)
            for v in ring_neighbours_sorted(self.local_id, table.ring(), self.config.near_per_side)
        )
        if near == self.near:
            return
        gained, lost = table.set_near(near, now=now)
        self.near = near
        suspect = now - self.config.near_suspect_s
        for p in gained:
            # A peer we have not heard from lately is suspect at once: pulled at the next tick,
            # closed if it stays silent past near_dead_s. Why not count its silence from now:
            # after churn the dead run behind a dead near peer moves into the near set one by
            # one, and a fresh silence clock for each cost a full near_dead_s per dead node
            # (150 nodes, 30% churn: repair took 35-48 s, most of it dead far links turned
            # near). A live one answers the pull within a round trip.
            last = self.heard.get(p)
            self.heard[p] = suspect if last is None or last < suspect else last
            self._emit(ConnectionAdded(p, ConnectionKind.NEAR))
        for p in lost:
            self._emit(ConnectionRemoved(p, ConnectionKind.NEAR))
        self._gossip_due = True
        self.update_routable(now)

    def update_routable(self, now: float) -> None:
        """Judge ``routable`` afresh; becoming routable is told (Routable)."""
        # Routable means: our JOIN was answered AND we hold links to our immediate neighbours
        # on both sides, as far as anyone told us (a node we heard of, not backed off, that
        # lies between us and our closest linked peer on a side means that side is not yet
        # linked). A mere "some link exists" would count a node as routable while messages
        # for its address still end at a neighbour that does not know it.
        routable = self.joined and self._keeper.brackets_linked(now)
        if routable and not self.routable:
            self._emit(Routable())
        self.routable = routable

    def neighbours_message(self, *, reply_wanted: bool) -> bytes:
        """Our NEIGHBOURS list (a pull when ``reply_wanted``), encoded."""
        ids = tuple(sorted(self.near))[:MAX_NEIGHBOURS]
        return Neighbours(reply_wanted, ids).encode()

    def on_neighbours(self, msg: Neighbours, peer: NodeId, now: float) -> None:
        """A peer's NEIGHBOURS list: the keeper weighs its ids; a pull is answered in budget."""
        self._keeper.consider(msg.ids, peer, now)
        if msg.reply_wanted:
            # Our list is larger than the pull (up to 48 ids for 3 bytes): a peer's pulls are
            # answered within a small burst (a repair pulls, and a tick may pull again), then
            # one per neighbours_reply_min_s, so a pull loop gains a peer nothing.
            if not self._pull_budget.take(peer, now):
                self.drops["neighbours_pull_too_often"] += 1
                return
            self._send(peer, self.neighbours_message(reply_wanted=False), now)

    def on_fast_peers(self, msg: FastPeers, peer: NodeId, now: float) -> None:
        """A FAST_PEERS question (answered within a per-peer budget) or the answer to ours
        (its ids become points to explore, nothing more: ipop.overlay.proximity)."""
        if msg.reply_wanted:
            if not self._fast_budget.take(peer, now):
                self.drops["fast_peers_too_often"] += 1
                return
            ids = tuple(p for p in self.fastest() if p != peer)[:MAX_FAST_PEERS]
            self._send(peer, FastPeers(False, ids).encode(), now)
            self.stats["fast_peers_answered"] += 1
        elif self._fast.answered(peer, msg.ids, self.local_id, self._table, now):
            self.stats["fast_peers_learned"] += 1
        else:
            self.drops["fast_peers_unasked"] += 1

    def fastest(self) -> list[NodeId]:
        """Our peers whose round trip we measured, fastest first."""
        timed = [(c.rtt_s, c.peer) for c in self._table if c.rtt_s is not None]
        timed.sort()
        return [p for _, p in timed]

    def ask_fast_peers(self, now: float) -> None:
        """With proximity, once joined: ask the next of our fastest peers for its list."""
        if not (self.joined and self.config.proximity and self.config.far_links):
            return
        if not self._fast.due(now):
            return  # most ticks: no need to rank our links
        peer = self._fast.to_ask(self.fastest(), now)
        if peer is not None:
            self._send(peer, FastPeers(True).encode(), now)
            self.stats["fast_peers_asked"] += 1

    def pull(self, peers: Iterable[NodeId], now: float) -> None:
        """Pull the neighbour lists of ``peers`` (routing found no hop: see Router.pull_peers)."""
        pull = self.neighbours_message(reply_wanted=True)
        for p in peers:
            self._send(p, pull, now)
        self.stats["no_route_pulled"] += 1

    def check_silent(self, now: float) -> None:
        """Pull near peers whose gossip is late; close those silent past near_dead_s."""
        cfg = self.config
        pull: bytes | None = None
        for p in sorted(self.near):
            silent = now - self.heard.setdefault(p, now)
            if silent >= cfg.near_dead_s:
                self.stats["near_silent_closed"] += 1
                self._close_link(p, now)
            elif silent >= cfg.near_suspect_s:
                if pull is None:
                    pull = self.neighbours_message(reply_wanted=True)
                self.stats["near_silent_pulled"] += 1
                self._send(p, pull, now)

    def gossip(self, now: float) -> None:
        """Our list to every near peer, every gossip interval and after a near-set change."""
        if now >= self._next_gossip or self._gossip_due:
            self._gossip_due = False
            cfg = self.config
            self._next_gossip = now + cfg.gossip_interval_s * self._rng.uniform(0.8, 1.2)
            msg = self.neighbours_message(reply_wanted=False)
            for p in sorted(self.near):
                self._send(p, msg, now)

    def run_policies(self, now: float) -> None:
        """Carry out what the connection policies decide now (ipop.overlay.policies)."""
        for action in decide(self._policy_view(now), now):
            self._apply(action, now)

    def _policy_view(self, now: float) -> PolicyView:
        cfg = self.config
        proximity = cfg.proximity and cfg.far_links
        pending_far = self._ctm.pending(Purpose.FAR)
        pending_far += self._attempts.wanting(ConnectionKind.FAR)
        return PolicyView(
            local=self.local_id,
            joined=self.joined and cfg.far_links,
            n_estimate=estimate_size(self.local_id, self.near),
            connections=self._views.current(),
            pending_far=pending_far,
            last_near_probe=self.last_probe,
            near_per_side=cfg.near_per_side,
            far_cap=cfg.far_cap if cfg.far_links else 0,
            leaf_hold_s=cfg.leaf_hold_s,
            trim_grace_s=cfg.trim_grace_s,
            relay_hold_s=cfg.relay_hold_s,
            near_retry_s=cfg.near_retry_s,
            near_probe_s=cfg.near_probe_s,
            proximity=proximity,
            explore_spent=self._explorer.spent(now) if proximity else frozenset(),
            explore_at=self._explorer.next_at if proximity else _INF,
        )

    def _apply(self, action: Action, now: float) -> None:
        if isinstance(action, NearProbeDue):
            self.probe(now)
        elif isinstance(action, FarLinkWanted):
            target = sample_far_target(
                self.local_id, estimate_size(self.local_id, self.near), self._rng
            )
            self._ctm.send(target, Purpose.FAR, exact=False, now=now)
        elif isinstance(action, FarExplore):
            self.stats["far_explored"] += 1
            self._explorer.explored(action.bucket, now)
            # A node one of our fastest peers listed, if one lies in the bucket (a point like
            # any other: who answers there is weighed by our own handshake).
            listed = self._fast.take(self.local_id, action.bucket, self._table)
            if listed is not None:
                self.stats["far_explored_listed"] += 1
                self._ctm.send(listed, Purpose.FAR, exact=False, now=now)
            else:
                target = sample_in_bucket(self.local_id, action.bucket, self._rng)
                self._ctm.send(target, Purpose.FAR, exact=False, now=now)
        elif isinstance(action, KindExpired):
            if action.kind is ConnectionKind.FAR:
                self.stats["far_shed"] += 1
            self._drop_kind(action.peer, action.kind, now)
        elif isinstance(action, LinkUseless):
            self.stats["trimmed"] += 1
            self._close_link(action.peer, now)

    def woke(self, now: float) -> None:
        """We did not run for a while: peers fell silent only in our eyes, so none is closed
        as dead for the gap; near peers are suspect (pulled at once, closed at near_dead_s if
        still silent)."""
        suspect = now - self.config.near_suspect_s
        for p, t in self.heard.items():
            if t < suspect:
                self.heard[p] = suspect

    def forget(self, peer: NodeId) -> None:
        """``peer``'s link is gone: its silence clock and pull budget go with it."""
        self._pull_budget.forget(peer)
        self._fast_budget.forget(peer)
        self._fast.forget(peer)
        self.heard.pop(peer, None)

    def removed(self, peer: NodeId, *, was_near: bool, now: float) -> None:
        """``peer``'s row left the table: the near set follows; repair if it was near."""
        if was_near:
            self.near = self.near - {peer}
            # Repair at the next tick: a JOIN to our own address finds whoever is now closest,
            # and pulling our remaining near peers' lists finds their replacements.
            self.last_probe = -_INF
        self.refresh(now)
        if not self.near:
            self.update_routable(now)
