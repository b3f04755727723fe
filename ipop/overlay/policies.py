"""Connection policies as pure functions: a snapshot of the table in, a list of actions out.

The node builds a :class:`PolicyView` each tick, calls :func:`decide`, and carries out the
actions; nothing here keeps state or reads a clock, so each rule is testable on hand-made
views (DESIGN.md §12.6). Near-set membership itself is computed by
:func:`ipop.overlay.ring.ring_neighbours`; the policies below decide what to *do* about it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ipop.overlay.proximity import far_bucket
from ipop.overlay.ring import far_target_count
from ipop.overlay.table import ConnectionKind
from ipop.types import NodeId

# Far-link hysteresis: we only shed far links once we hold this many more than the target.
# The target is round(log2 N_est) and N_est moves with every join near us; without the band a
# node would drop and re-request a far link each time the estimate crosses a rounding edge.
FAR_HYSTERESIS = 2


@dataclass(frozen=True, slots=True)
class ConnectionView:
    """One link as the policies see it: its kinds, ages and use."""

    peer: NodeId
    kinds: frozenset[ConnectionKind]
    local_far: bool  # FAR held because *we* asked for it (only those may be shed by us)
    far_since: float | None
    leaf_since: float | None
    last_relay: float
    idle_since: float | None
    # The link's round trip as our link layer measured it (None: unknown; see table.py).
    rtt_s: float | None = None


@dataclass(frozen=True, slots=True)
class PolicyView:
    """What the policies decide on: our links, the ring's size estimate and the caps."""

    local: NodeId
    joined: bool
    n_estimate: float
    connections: tuple[ConnectionView, ...]
    pending_far: int
    last_near_probe: float
    near_per_side: int
    far_cap: int
    leaf_hold_s: float
    trim_grace_s: float
    relay_hold_s: float
    near_retry_s: float
    near_probe_s: float
    # Proximity neighbour selection (ipop.overlay.proximity): on or off, buckets explored
    # enough this epoch, and the time before which no exploration starts.
    proximity: bool = False
    explore_spent: frozenset[int] = frozenset()
    explore_at: float = float("inf")


@dataclass(frozen=True, slots=True)
class NearProbeDue:
    """Route a JOIN-like probe to our own address and pull neighbour lists."""


@dataclass(frozen=True, slots=True)
class FarLinkWanted:
    """Ask for one more Symphony far link."""


@dataclass(frozen=True, slots=True)
class FarExplore:
    """Ask for one more far link, at a point of ``bucket`` (ipop.overlay.proximity)."""

    bucket: int


@dataclass(frozen=True, slots=True)
class KindExpired:
    """Drop ``kind`` from the link to ``peer``: its reason to be held has lapsed."""

    peer: NodeId
    kind: ConnectionKind


@dataclass(frozen=True, slots=True)
class LinkUseless:
    """Close the link to ``peer``: it has had no reason to exist for the trim grace."""

    peer: NodeId


Action = NearProbeDue | FarLinkWanted | FarExplore | KindExpired | LinkUseless


def decide_near(view: PolicyView, now: float) -> list[Action]:
    # With fewer than 2 * per_side links a side may be short, so probe at the fast retry rate;
    # a full table can still hold the wrong nodes (after a partition), so probe slowly anyway.
    short = len(view.connections) < 2 * view.near_per_side or not view.joined
    interval = view.near_retry_s if short else view.near_probe_s
    if view.connections and now - view.last_near_probe >= interval:
        return [NearProbeDue()]
    return []


def _rtt(c: ConnectionView) -> float:
    """A link's round trip for comparison: unknown counts as the slowest."""
    return _INF if c.rtt_s is None else c.rtt_s


_INF = float("inf")


def decide_far(view: PolicyView, now: float) -> list[Action]:
    """Symphony's count of far links, and with ``proximity`` the fastest in each bucket.

    Proximity (ipop.overlay.proximity): over the target, a link that shares its distance
    bucket with a faster one of ours loses its FAR kind, slowest first; with nothing pending,
    one exploration of the bucket whose far link is slowest. Only our own
    far links are weighed (a peer's request is its own business), and only by round trips
    we measured; near links are never touched.
    """
    if not view.joined:
        return []
    target = far_target_count(view.n_estimate, view.near_per_side, view.far_cap)
    mine = [c for c in view.connections if c.local_far]
    if len(mine) + view.pending_far < target:
        # One request per tick: a burst after join would land many on the same region
        # before the size estimate has settled.
        return [FarLinkWanted()]
    if view.proximity and len(mine) > target:
        losers = _bucket_losers(view.local, mine)[: len(mine) - target]
        if losers:
            return [KindExpired(c.peer, ConnectionKind.FAR) for c in losers]
    if len(mine) > target + FAR_HYSTERESIS:
        newest = sorted(mine, key=lambda c: (c.far_since or 0.0, c.peer), reverse=True)
        return [KindExpired(c.peer, ConnectionKind.FAR) for c in newest[: len(mine) - target]]
    # An exploration that lands in a bucket of its own is kept (one more far link is no
    # harm); the band keeps such links from ever being shed for count alone.
    explore = view.proximity and mine and len(mine) < target + FAR_HYSTERESIS
    if explore and not view.pending_far and now >= view.explore_at:
        open_ = [c for c in mine if far_bucket(view.local, c.peer) not in view.explore_spent]
        if open_:
            slowest = max(open_, key=lambda c: (_rtt(c), c.peer))
            return [FarExplore(far_bucket(view.local, slowest.peer))]
    return []


def _bucket_losers(local: NodeId, mine: list[ConnectionView]) -> list[ConnectionView]:
    """Our far links that share a distance bucket with a faster one of ours, slowest first."""
    buckets: dict[int, list[ConnectionView]] = {}
    for c in mine:
        buckets.setdefault(far_bucket(local, c.peer), []).append(c)
    losers = []
    for links in buckets.values():
        if len(links) > 1:
            losers.extend(sorted(links, key=lambda c: (_rtt(c), c.peer))[1:])
    return sorted(losers, key=lambda c: (-_rtt(c), c.peer))


def decide_trim(view: PolicyView, now: float) -> list[Action]:
    out: list[Action] = []
    for c in view.connections:
        if c.leaf_since is not None and now - c.leaf_since >= view.leaf_hold_s:
            out.append(KindExpired(c.peer, ConnectionKind.LEAF))
        if ConnectionKind.RELAY in c.kinds and now - c.last_relay >= view.relay_hold_s:
            out.append(KindExpired(c.peer, ConnectionKind.RELAY))
        # Hysteresis: near membership flaps while nodes join around us (a link is near, then
        # pushed out by a closer joiner, then near again when that one leaves). Closing at
        # once would turn each flap into a teardown plus a new handshake, so an idle link
        # lives trim_grace_s before it goes.
        if not c.kinds and c.idle_since is not None and now - c.idle_since >= view.trim_grace_s:
            out.append(LinkUseless(c.peer))
    return out


def decide(view: PolicyView, now: float) -> list[Action]:
    """All policy actions for this tick, near first (ring consistency outranks the rest)."""
    return decide_near(view, now) + decide_far(view, now) + decide_trim(view, now)
