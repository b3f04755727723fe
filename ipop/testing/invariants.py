"""Whole-network invariants of the overlay, for the simulator and the fake link world.

Each checker takes plain data (node ids and what each node reports), so the same function
serves the fake link layer here and the full stack later: feed it every live node's
``OverlayNode.near_peers()`` (or the near ids of its status snapshot).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from ipop.overlay.ring import closest_node, route_key
from ipop.types import NodeId, clockwise


def true_near(node: NodeId, ring: Collection[NodeId], per_side: int) -> frozenset[NodeId]:
    """The ``per_side`` true successors and predecessors of ``node`` among ``ring``."""
    others = [n for n in ring if n != node]
    right = sorted(others, key=lambda n: clockwise(node, n))[:per_side]
    left = sorted(others, key=lambda n: clockwise(n, node))[:per_side]
    return frozenset(right) | frozenset(left)


def ring_violations(near: Mapping[NodeId, Collection[NodeId]], *, per_side: int) -> list[str]:
    """Every way the reported near sets differ from the true ring; empty means consistent.

    ``near`` maps each live node to the peers it holds as NEAR. A consistent ring has, at
    every node, exactly its ``per_side`` true neighbours on each side as near links: none
    missing (a gap greedy routing could fall into) and none extra (a dead or misplaced node).
    """
    # One sort of the whole ring, then each node's true neighbours by index: O(N log N), where
    # true_near per node is O(N log N) each (the simulator checks this every virtual second).
    ring = sorted(near)
    n = len(ring)
    out: list[str] = []
    for i, node in enumerate(ring):
        if n - 1 <= 2 * per_side:
            want = frozenset(ring[:i] + ring[i + 1 :])
        else:
            want = frozenset(ring[(i + k) % n] for k in range(1, per_side + 1)) | frozenset(
                ring[(i - k) % n] for k in range(1, per_side + 1)
            )
        have = frozenset(near[node])
        missing = sorted(want - have)
        extra = sorted(have - want)
        if missing:
            out.append(f"{node.short()} misses near {[m.short() for m in missing]}")
        if extra:
            out.append(f"{node.short()} holds extra near {[e.short() for e in extra]}")
    return out


def closest_owner(ring: Collection[NodeId], key: NodeId) -> NodeId:
    """The node closest delivery to ``key`` must reach (the overlay's own tie-break)."""
    owner = closest_node(ring, key)
    if owner is None:
        raise ValueError("empty ring")
    return owner


__all__ = ["closest_owner", "ring_violations", "route_key", "true_near"]
