"""Ids that proved themselves to this node: what a neighbour's word alone cannot make count.

A NEIGHBOURS list or a CTM_REPLY names ids nobody has checked: a member can list ids it made up
(issue 13, finding 2). Such news still tells a node whom to try (a made-up id never answers, and
the attempt backs off), but only an id that proved itself may hold the node back from declaring
itself routable: one that authenticated a link to us, or a routed message (its certificate and
signature or MAC checked, :mod:`ipop.overlay.origin`). Without this, one insider listing ids
between each of its peers and their neighbours kept a quarter of a 40-node ring unroutable
(tests/sim/test_overlay.py) and could keep a joining node from ever joining the DHT.
"""

from __future__ import annotations

import collections
from typing import Final

from ipop.types import NodeId

__all__ = ["ProvenIds"]

# Enough for every node a busy node hears from in a few minutes; the oldest proof goes first.
PROVEN_MAX: Final = 8192


class ProvenIds:
    """A bounded set (least recently proven out) with a version that moves when an id joins."""

    def __init__(self, max_entries: int = PROVEN_MAX) -> None:
        self._max = max_entries
        self._ids: collections.OrderedDict[NodeId, None] = collections.OrderedDict()
        self.version = 0

    def __contains__(self, node: object) -> bool:
        return node in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, node: NodeId) -> None:
        ids = self._ids
        if node in ids:
            ids.move_to_end(node)
            return
        ids[node] = None
        self.version += 1
        while len(ids) > self._max:
            ids.popitem(last=False)
