"""Pure ring arithmetic for the overlay: greedy next hop, near sets, size estimate, far targets.

Everything here is a function of its arguments (randomness comes in as a ``random.Random``),
so routing decisions can be tested exhaustively and reproduced from a seed.

Ordering: nodes are compared by :func:`route_key` ``(ring_distance(n, dst), clockwise(dst, n))``.
The second component breaks the only possible tie (two nodes equally far on either side of
``dst``) the same way at every node, so "the node closest to dst" is one well-defined node on
the whole ring and greedy routing strictly decreases the key at every hop: it cannot loop.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Callable, Iterable, Sequence

from ipop.types import RING, NodeId, clockwise, ring_distance

__all__ = [
    "RING",
    "clockwise",
    "closest_node",
    "estimate_size",
    "far_target_count",
    "next_hop",
    "next_hop_sorted",
    "ring_distance",
    "ring_neighbours",
    "ring_neighbours_sorted",
    "route_key",
    "sample_far_target",
]


def route_key(node: NodeId, dst: NodeId) -> tuple[int, int]:
    """Total order of nodes by closeness to ``dst`` (smaller is closer), the same everywhere."""
    return ring_distance(node, dst), clockwise(dst, node)


def closest_node(nodes: Iterable[NodeId], dst: NodeId) -> NodeId | None:
    """The node of ``nodes`` that closest delivery to ``dst`` must reach (None if empty)."""
    return min(nodes, key=lambda n: route_key(n, dst), default=None)


def next_hop(
    local: NodeId,
    dst: NodeId,
    neighbours: Iterable[NodeId],
    *,
    exact: bool,
    exclude: NodeId | None = None,
) -> NodeId | None:
    """Greedy routing: the neighbour closest to ``dst``, or None to deliver here.

    Never returns a neighbour farther from ``dst`` than ``local`` (so every hop makes progress).
    ``exclude`` is treated as absent from the ring, including when it is ``local`` itself: a
    JOIN leaves its source through its closest neighbour and is delivered at the node closest
    to the source's address among the others. With ``exact`` a neighbour equal to ``dst`` is
    taken directly; otherwise None means "we are the closest we know of" and the caller decides
    whether that is a delivery (closest mode, or local == dst) or a drop (exact mode).
    """
    best: NodeId | None = None
    best_key: tuple[int, int] | None = None
    if local != exclude:
        best_key = route_key(local, dst)
    for n in neighbours:
        if n in (exclude, local):
            continue
        if exact and n == dst:
            return n
        k = route_key(n, dst)
        if best_key is None or k < best_key:
            best, best_key = n, k
    return best


def next_hop_sorted(
    local: NodeId,
    dst: NodeId,
    ring: Sequence[int],
    *,
    exact: bool,
    exclude: NodeId | None = None,
    avoid: Callable[[int], bool] | None = None,
) -> int | None:
    """:func:`next_hop` over ``ring``, the neighbours' id values sorted ascending (O(log n)).

    Returns the chosen neighbour's value. Why it is enough to look at the two neighbours that
    bracket ``dst`` in ring order: the node nearest ``dst`` on the ring is its nearest
    successor or its nearest predecessor, and :func:`route_key` breaks the tie between the
    two. ``local`` and ``exclude`` are skipped, so at most two more entries per side are read.
    Returns exactly what :func:`next_hop` returns for the same set (tested against it).

    ``avoid``: neighbours (values) for which it is true count as absent too (suspect next hops,
    :mod:`ipop.overlay.suspect`); each side then reads every avoided entry in its way, O(links)
    at worst, and the caller asks only when the plain answer was an avoided one.
    """
    n = len(ring)
    if not n:
        return None
    lv = local.value
    xv = -1 if exclude is None else exclude.value
    d = dst.value
    i = bisect.bisect_left(ring, d)
    best: int | None = None
    best_key: tuple[int, int] | None = None
    if lv != xv:
        best_key = route_key(local, dst)
    reach = min(n, 3) if avoid is None else n
    # Successor side: the first entries at or after ``dst`` (wrapping), skipping local/exclude.
    for k in range(reach):
        v = ring[(i + k) % n]
        if v in (lv, xv) or (avoid is not None and avoid(v)):
            continue
        if exact and v == d:
            return v
        key = _key(v, d)
        if best_key is None or key < best_key:
            best, best_key = v, key
        break
    # Predecessor side: the last entries before ``dst`` (wrapping).
    for k in range(1, reach + 1):
        v = ring[(i - k) % n]
        if v in (lv, xv) or (avoid is not None and avoid(v)):
            continue
        key = _key(v, d)
        if best_key is None or key < best_key:
            best, best_key = v, key
        break
    return best


def _key(v: int, d: int) -> tuple[int, int]:
    """:func:`route_key` on raw values."""
    cw = (v - d) % RING
    return min(cw, RING - cw), cw


def ring_neighbours_sorted(local: NodeId, ring: Sequence[int], per_side: int) -> list[int]:
    """:func:`ring_neighbours` over ``ring`` (sorted id values, ``local`` absent): values."""
    n = len(ring)
    if n <= 2 * per_side:
        return list(ring)
    i = bisect.bisect_right(ring, local.value)
    out = {ring[(i + k) % n] for k in range(per_side)}
    out.update(ring[(i - 1 - k) % n] for k in range(per_side))
    return list(out)


def ring_neighbours(local: NodeId, peers: Iterable[NodeId], per_side: int) -> frozenset[NodeId]:
    """The ``per_side`` peers closest clockwise plus the ``per_side`` closest counter-clockwise.

    On a ring with fewer than ``2 * per_side`` other nodes the two sides overlap and every peer
    is near. On a fully linked ring the relation is symmetric: if B is A's k-th successor, A is
    B's k-th predecessor, so both ends agree that a near link is near.
    """
    others = [p for p in set(peers) if p != local]
    right = sorted(others, key=lambda p: clockwise(local, p))[:per_side]
    left = sorted(others, key=lambda p: clockwise(p, local))[:per_side]
    return frozenset(right) | frozenset(left)


def estimate_size(local: NodeId, near: Iterable[NodeId]) -> float:
    """Estimate N from the spacing of near neighbours (Symphony's estimator).

    The ``k`` near nodes plus ``local`` span ``span`` of the ring with ``k`` gaps between
    them, so the mean gap is ``span / k`` and N is about ``RING * k / span``.
    """
    others = [n for n in set(near) if n != local]
    if not others:
        return 1.0
    right = [clockwise(local, n) for n in others if clockwise(local, n) <= clockwise(n, local)]
    left = [clockwise(n, local) for n in others if clockwise(local, n) > clockwise(n, local)]
    span = max(right, default=0) + max(left, default=0)
    return max(float(len(others) + 1), RING * len(others) / max(span, 1))


def far_target_count(n_estimate: float, per_side: int, cap: int) -> int:
    """How many far links to hold: about log2 N (Symphony), none while near links cover all."""
    if n_estimate <= 2 * per_side + 1:
        return 0
    return max(1, min(cap, round(math.log2(n_estimate))))


def sample_far_target(local: NodeId, n_estimate: float, rng: random.Random) -> NodeId:
    """A far-link target drawn from Symphony's harmonic distribution.

    Symphony draws the clockwise distance x (a fraction of the ring) with density 1/(x ln n)
    on [1/n, 1). Greedy routing here moves both ways, so we draw the *ring* distance with
    density proportional to 1/x on [1/n, 1/2] (as ``(n/2) ** u / n`` for uniform u) and pick
    the direction at random. About log2 N such links give O(log N) expected hops.
    """
    n = max(4.0, n_estimate)
    x = (n / 2) ** rng.random() / n
    dist = min(RING // 2, max(1, int(x * RING)))
    if rng.random() < 0.5:
        dist = RING - dist
    return NodeId((local.value + dist) % RING)
