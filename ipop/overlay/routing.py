"""Routing decisions (sans-IO): where one routed message goes next, and why not.

:class:`Router` owns the choice for a routed message, ours or one a peer handed us, and
answers with a verdict: :class:`Forward` (the hop and the message as it leaves, its hop count
raised), :class:`Deliver` (it is ours, or ours to settle as the closest node) or
:class:`Drop` (a reason from :data:`ROUTE_DROPS`). It sends nothing and emits nothing: the
overlay node applies the verdict (sends the forward, counts the drop, delivers the message).
It counts only the facts of how it chose a hop (``routed_*`` in the stats counter it is given).

The rules (DESIGN.md §5; the node's theory of operation tells why):

- Greedy over every up link (:func:`ipop.overlay.ring.next_hop_sorted`): strictly closer at
  each hop, so a message cannot loop. Exact delivery drops at a local minimum (``no_route``),
  closest delivery delivers there.
- A suspect next hop (:mod:`ipop.overlay.suspect`) is skipped when another one makes
  progress, and used when none does: suspicion may lengthen a route, never drop or loop it.
- Proximity (``proximity``, Gummadi et al.'s proximity route selection, with the cost
  estimate of Dabek et al., NSDI 2004): among the links strictly nearer the target than we
  are, the one with the least *estimated route cost*: its round trip (as our link layer
  measured it) plus ``_PRS_BIT_S`` for each bit of ring distance it leaves to the target
  (``log2`` of the distance: about a fixed share of a hop is left per halving). Greedy
  alone ignores latency; the fastest hop alone (the former rule: any link under half the
  greedy hop's round trip) buys a small saving now with many hops later. Every hop still
  makes progress, so routes cannot loop and end where greedy routing ends (a local
  minimum); the links are read from the sorted ring outward from the target, at most
  ``_PRS_READ`` a side (bounded work per message; a node holds about 40 links at 1,000
  nodes). Measured on the latency map at 1,000 nodes (60 s settled, the links of the run
  frozen and 2,000 pairs routed both ways, seeds 1 / 2): the former rule gave stretch p50
  1.58 / 1.59, p90 3.79 / 3.92, 4.36 / 4.42 hops; 5 ms a bit 1.51 / 1.51, 3.60 / 3.56,
  3.79 / 3.89 hops (``ipop.timing.OVERLAY_PRS_BIT_S``). The tail left is pairs of one
  region (a sixth of all pairs, direct 2-15 ms) whose route leaves the region for its last
  hop or two: no link of ours tells which of our peers holds a link to the target.
- Link hints (``hints``, :mod:`ipop.overlay.linkhints`): when one of our peers that we
  measured within ``OVERLAY_LINK_HINT_RTT_S`` says (LINK_IDS) it holds a link to the target
  itself, the fastest such peer takes the message instead of the hop our own links chose; it
  hands it to the target at once. That peer may be no nearer the target than we are: a
  *sideways* step, allowed once per message and marked in it (FLAG_SIDEWAYS). Every other
  hop is strictly nearer, so a false or stale claim costs one hop, never a loop; our own
  message back after its sideways step goes on (every hop nearer from here) instead of being
  dropped. A hint never points back to the peer that handed us the message. Our own link to
  the target itself yields to a hint only when it is relayed and we timed the hinted peer
  faster than it: a relayed near link (two NATs that cannot meet) crosses its relay, a ring
  neighbour usually in another region, and such a last hop was on a third of the pairs at or
  over stretch p90 (300 nodes, default NAT mix, seed 2; half at 100 nodes); the hinted
  peer's link is direct (lists name direct links only, :mod:`ipop.overlay.linkhints`). Only
  the target itself counts: hints toward nodes merely near a key (DHT gets, far-link CTMs),
  taken as progress steps weighed by the cost estimate above, lost routed pings and DHT
  requests on an 80-node map run (first-try answers 300/300 -> 298/300, link datagrams under
  unknown indices 26 -> 105) for a smaller gain, so they are not used. Measured with the
  links of a 1,000-node run frozen (2,000 pairs): stretch p90 2.90 -> 2.02, p50 1.42 ->
  1.22, hops 3.81 -> 2.85; without the sideways step p90 2.33.
- At a local minimum an exact message may take one detour, bounded by its TTL: to the peer
  that told us it holds a link to the target (:class:`ipop.overlay.near.SeenIds`), else back
  the way the target's own last routed message came (:class:`ipop.overlay.hints.ReverseHints`,
  owned here), but never to the peer that just handed it to us (``routed_hint_bounced``),
  else, at the message's source only, to our peer nearest the target with EXCLUDE_SRC set so
  that no hop hands it back to us.
- A message a peer hands us with ``hops == 0`` must come from its source (``spoofed_src``),
  and one of ours that comes back is dropped (``own_src_returned``) unless it made its
  sideways step (see the link hints above).

The forward path runs for every routed message a node carries, so :meth:`Router.decide` keeps
it flat: one greedy lookup and the one :class:`Forward` it returns.
"""

from __future__ import annotations

import bisect
import collections
import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Final

from ipop import timing
from ipop.overlay.hints import ReverseHints
from ipop.overlay.linkhints import LinkHints
from ipop.overlay.messages import FLAG_EXCLUDE_SRC, FLAG_SIDEWAYS, FLAG_VIA, Routed
from ipop.overlay.near import SeenIds
from ipop.overlay.ring import next_hop_sorted, route_key
from ipop.overlay.suspect import SilentHops
from ipop.overlay.table import ConnectionTable
from ipop.types import NodeId, ring_distance

__all__ = ["ROUTE_DROPS", "Deliver", "Drop", "Forward", "Router", "Verdict"]

# Every reason a routing decision drops a message for (counted by the node in ``drops``).
ROUTE_DROPS: Final = frozenset({"spoofed_src", "own_src_returned", "no_route", "ttl_expired"})

_INF = float("inf")
# Proximity route selection: entries read on each side of the target (bounded work), and the
# round trip a hop is worth per bit of ring distance it leaves to the target (module docstring).
_PRS_READ = 24
_PRS_BIT_S = timing.OVERLAY_PRS_BIT_S


@dataclass(frozen=True, slots=True)
class Forward:
    """Send ``msg`` (its hop count already raised) to the linked peer ``hop``."""

    hop: NodeId
    msg: Routed


@dataclass(frozen=True, slots=True)
class Deliver:
    """``msg`` ends here, after ``hops`` links (0: our own message, delivered to ourselves)."""

    msg: Routed
    hops: int


@dataclass(frozen=True, slots=True)
class Drop:
    """``msg`` goes no further, for ``reason`` (one of :data:`ROUTE_DROPS`).

    ``pull``: for ``no_route``, the target whose part of the ring we should pull neighbour
    lists around (:meth:`Router.pull_peers`).
    """

    reason: str
    pull: NodeId | None = None

    def __post_init__(self) -> None:
        if self.reason not in ROUTE_DROPS:
            raise ValueError(f"not a routing drop reason: {self.reason!r}")


Verdict = Forward | Deliver | Drop


class Router:
    """The routing decision over a node's table; see the module docstring.

    Reads the node's connection table, silent hops and ids heard of; owns the reverse-path
    hints and the rate of no-route pulls.
    """

    def __init__(
        self,
        local_id: NodeId,
        *,
        table: ConnectionTable,
        silent: SilentHops,
        seen: SeenIds,
        check: Callable[[Routed, float], str | None],
        stats: collections.Counter[str],
        pull_min_s: float,
        proximity: bool = False,
        hints: LinkHints | None = None,
    ) -> None:
        self.local_id = local_id
        self._proximity = proximity
        self._hints = hints
        self._table = table
        self._silent = silent
        self._seen = seen
        self._stats = stats
        self._pull_min_s = pull_min_s
        # Source of a routed message we do not hold a link to -> the peer that handed it to us
        # (for answers at a local minimum, see decide).
        self._reverse = ReverseHints(check)
        self._no_route_pull_at = -_INF  # see pull_peers

    @property
    def reverse(self) -> ReverseHints:
        """The reverse-path hints, noted from messages handed to us."""
        return self._reverse

    def decide(self, msg: Routed, frm: NodeId | None, now: float) -> Verdict:
        """Where ``msg`` goes: handed to us by the peer ``frm``, or ours (``frm`` None)."""
        received = frm is not None
        if frm is not None:
            if msg.hops == 0 and msg.src != frm:
                return Drop("spoofed_src")
            if msg.src == self.local_id:
                if not msg.flags & FLAG_SIDEWAYS:
                    return Drop("own_src_returned")
                # Our own message, back after its sideways step: the peer we handed it to
                # holds no link to the target any more (or lied). It goes on from here, every
                # hop strictly nearer, so it cannot come back again through honest peers.
                self._stats["routed_sideways_returned"] += 1
            if msg.src not in self._table:
                self._reverse.note(msg, frm, now)
        if msg.via is not None and msg.via == self.local_id:
            msg = replace(msg, flags=msg.flags & ~FLAG_VIA, via=None)
        exclude: NodeId | None = None
        if msg.via is not None:
            target, exact = msg.via, True
        else:
            target, exact = msg.dst, msg.exact
            if msg.flags & FLAG_EXCLUDE_SRC:
                exclude = msg.src
        hop = self.next_hop(target, now, exact=exact, exclude=exclude)
        hops_so_far = msg.hops + 1 if received else 0
        sideways = 0
        if (
            hop is not None
            and self._hints is not None
            and msg.via is None
            and exclude is None
            and (hop.value != target.value or self._relayed(hop))
        ):
            hinted = self._hinted_hop(target, hop, frm, not msg.flags & FLAG_SIDEWAYS, now)
            if hinted is not None:
                hop = hinted[0]
                sideways = FLAG_SIDEWAYS if hinted[1] else 0
        if hop is None and exact and target != self.local_id:
            # A local minimum for an exact destination: the ring around ``target`` is still
            # forming (a near link being set up, a relay link not up yet). A near peer that
            # told us it holds a link to ``target`` can take it the last hop; the TTL bounds
            # any detour this makes. Never back to the peer that handed it to us: it holds
            # no link to the target either (else it had delivered), and it hands the message
            # straight back (we are nearer), so the two bounced it until its TTL ran out.
            hint = self._seen.get(target)
            hop = None if hint is None or hint[1] < now else hint[0]
            hop = self._detour(hop, frm, "routed_via_informer")
            if hop is None:
                hop = self._detour(self._reverse.hop(target, now), frm, "routed_via_reverse")
            if hop is None and not received:
                # Our own message, and none of our peers is closer to the target than we
                # are: a node that joined a moment ago holds one or two links, and the node
                # that told it about the target (a DHT contact, say) is usually one of them
                # and linked to it. Only the source detours (see detour_hop).
                hop = self.detour_hop(target, now)
                if hop is not None:
                    self._stats["routed_source_detour"] += 1
                    if msg.via is None:
                        msg = replace(msg, flags=msg.flags | FLAG_EXCLUDE_SRC)
        if hop is None:
            if (
                msg.via is not None
                or (exact and msg.dst != self.local_id)
                or (exclude == self.local_id)
            ):
                return Drop("no_route", target)
            return Deliver(msg, hops_so_far)
        if hops_so_far >= msg.ttl:
            return Drop("ttl_expired")
        if hops_so_far == msg.hops and not sideways:
            # Ours (hops 0 both): frozen, so the message itself goes, no copy to make.
            return Forward(hop, msg)
        return Forward(hop, msg.copy_with(flags=msg.flags | sideways, hops=hops_so_far))

    def next_hop(
        self, target: NodeId, now: float, *, exact: bool, exclude: NodeId | None = None
    ) -> NodeId | None:
        """Greedy next hop; a suspect one (ipop.overlay.suspect) only if no other makes
        progress: suspicion may lengthen a route, never drop a message or loop it (every hop
        is still strictly closer to the target)."""
        table = self._table
        v = next_hop_sorted(self.local_id, target, table.ring(), exact=exact, exclude=exclude)
        if v is None:
            return None
        hop = table.peer_of(v)
        silent = self._silent
        if self._proximity and v != target.value:
            near = self._nearby_hop(target, hop, exclude, now)
            if near is not None:
                self._stats["routed_nearby"] += 1
                return near
        if not len(silent) or not silent.suspect(hop, now):
            return hop
        alt = next_hop_sorted(
            self.local_id,
            target,
            table.ring(),
            exact=exact,
            exclude=exclude,
            avoid=lambda x: silent.suspect(table.peer_of(x), now),
        )
        if alt is None:
            self._stats["routed_via_suspect"] += 1
            return hop
        self._stats["routed_around_suspect"] += 1
        return table.peer_of(alt)

    def _nearby_hop(
        self, target: NodeId, greedy: NodeId, exclude: NodeId | None, now: float
    ) -> NodeId | None:
        """The link strictly nearer ``target`` than we are with the least estimated route
        cost (measured round trip plus ``_PRS_BIT_S`` per bit of distance left), not suspect,
        if it beats ``greedy``; None: keep ``greedy`` (module docstring)."""
        table = self._table
        row = table.get(greedy)
        if row is None or row.rtt_s is None:
            # Unknown counts as slow, but we must know what we save: keep the greedy hop.
            return None
        d = target.value
        bar = row.rtt_s + _PRS_BIT_S * math.log2(ring_distance(greedy, target) or 1)
        ring = table.ring()
        n = len(ring)
        ours = route_key(self.local_id, target)
        i = bisect.bisect_left(ring, d)
        best: NodeId | None = None
        silent = self._silent
        for step in (1, -1):
            k = i if step == 1 else i - 1
            for _ in range(min(n, _PRS_READ)):
                v = ring[k % n]
                k += step
                peer = table.peer_of(v)
                key = route_key(peer, target)
                if key >= ours:
                    break  # read outward from the target: the rest of this side is no nearer
                if peer in (exclude, greedy):
                    continue
                c = table.get(peer)
                if c is None or c.rtt_s is None or c.rtt_s >= bar:
                    continue
                cost = c.rtt_s + _PRS_BIT_S * math.log2(key[0] or 1)
                if cost >= bar or (len(silent) and silent.suspect(peer, now)):
                    continue
                best, bar = peer, cost
        return best

    def _hinted_hop(
        self, target: NodeId, hop: NodeId, back: NodeId | None, sideways_ok: bool, now: float
    ) -> tuple[NodeId, bool] | None:
        """The fastest of our fast peers that says it holds a link to ``target``, instead of
        ``hop`` (the hop our own links chose), and whether that step is sideways (the peer is
        no nearer ``target`` than we are: allowed only while ``sideways_ok``); None: keep
        ``hop`` (module docstring)."""
        hints = self._hints
        assert hints is not None
        held = hints.holder(target, now)
        if held is None:
            return None
        peer = held[1]
        if peer in (hop, back):
            return None  # our hop already; or it handed us the message, so it has no link
        if hop.value == target.value:
            # Our own link to the target is relayed (decide): the peer's is direct (lists
            # name direct links only), and it takes the message if we timed it faster than
            # our relayed path, whose round trip crosses the relay.
            row = self._table.get(hop)
            if row is not None and row.rtt_s is not None and held[0] >= row.rtt_s:
                return None
        sideways = route_key(peer, target) >= route_key(self.local_id, target)
        if sideways and not sideways_ok:
            self._stats["routed_sideways_spent"] += 1
            return None
        if len(self._silent) and self._silent.suspect(peer, now):
            return None
        self._stats["routed_hinted_sideways" if sideways else "routed_hinted"] += 1
        if hop.value == target.value:
            self._stats["routed_hinted_past_relay"] += 1
        return peer, sideways

    def _relayed(self, peer: NodeId) -> bool:
        """Whether our link to ``peer`` runs through a relay."""
        row = self._table.get(peer)
        return row is not None and row.relayed

    def detour_hop(self, target: NodeId, now: float) -> NodeId | None:
        """Our peer nearest ``target`` although we are nearer: the first hop of a detour.

        For our own exact message when no peer is closer to the target than we are. The
        message must carry EXCLUDE_SRC, so that no hop hands it back to us (greedy routing
        would: we are nearer the target than that peer); the nodes around the target hold
        links to it.
        """
        return self.next_hop(target, now, exact=False, exclude=self.local_id)

    def _detour(self, hop: NodeId | None, back: NodeId | None, stat: str) -> NodeId | None:
        """``hop``, a detour a hint names, if we are linked to it and it is not ``back`` (the
        peer the message came from); counted under ``stat`` when taken."""
        if hop is None or hop not in self._table:
            return None
        if hop == back:
            self._stats["routed_hint_bounced"] += 1
            return None
        self._stats[stat] += 1
        return hop

    def pull_peers(self, target: NodeId, now: float) -> list[NodeId]:
        """Whom to pull neighbour lists from after a ``no_route`` toward ``target``.

        No hop toward ``target``: nobody we know is nearer to it than we are, yet it is not
        ours, so our view of the ring around it misses the node that links to it (a ring
        still forming at a cold start, where such messages died until the next gossip, up to
        OVERLAY_GOSSIP_INTERVAL_S later). Our two direct peers nearest it: what they know
        becomes a routing hint (the informer hop above) and a near candidate at the next
        tick. Nobody more often than once per ``pull_min_s``.
        """
        if now - self._no_route_pull_at < self._pull_min_s:
            return []
        self._no_route_pull_at = now
        return heapq.nsmallest(
            2, self._table.direct_peers(), key=lambda p: (ring_distance(p, target), p)
        )
