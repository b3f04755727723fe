"""Relay links (Brunet's tunnel edges): choosing a relay, and the relay's forwarding rule.

When two near neighbours cannot link directly (both behind NATs that defeat punching), the
link layer keys a session over ``RelayPath(via=X, peer=T)``: its sealed datagrams travel as
RELAY_FORWARD to X, which passes them on as RELAY_DELIVER to T. X never sees inside them.

Rules, each with its reason:
- X relays only between two peers it holds *direct* links to: a relay over a relayed link
  would let tunnels nest and loop, and would hide a dead hop behind another.
- X refuses to relay back to the origin, and to itself (nonsense a peer can still send).
- The requester prefers relays that the target listed as directly linked (from its
  CTM_REPLY) and that we also hold directly; the node that handed us the answer is a last
  resort because it may not hold a link to the target at all.
- A link already up whose direct path died under a roam of ours (:class:`RelayFallbacks`)
  is keyed afresh through a relay: common neighbours first, then any direct peer nearest the
  target on the ring, one at a time (a refusal moves to the next).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from ipop.overlay.table import ConnectionTable
from ipop.types import NodeId, ring_distance


def relay_candidates(
    local: NodeId,
    target: NodeId,
    local_direct: Collection[NodeId],
    target_neighbours: Sequence[NodeId],
    *,
    fallback: NodeId | None = None,
) -> list[NodeId]:
    """Relays to try in order: common direct neighbours closest to the target first."""
    mine = set(local_direct)
    common = [n for n in dict.fromkeys(target_neighbours) if n in mine and n not in (local, target)]
    common.sort(key=lambda n: (ring_distance(n, target), n))
    usable = fallback is not None and fallback in mine and fallback not in (local, target)
    if usable and fallback not in common:
        assert fallback is not None
        common.append(fallback)
    return common


def forward_refusal(
    table: ConnectionTable, local: NodeId, origin: NodeId, target: NodeId
) -> str | None:
    """Why we would not relay ``origin`` → ``target`` (a drop reason), or None to forward."""
    if target in (origin, local):
        return "relay_loop"
    src = table.get(origin)
    dst = table.get(target)
    if src is None or not src.direct:
        return "relay_origin_not_direct"
    if dst is None:
        return "relay_no_link"
    if not dst.direct:
        return "relay_target_not_direct"
    return None


class RelayFallbacks:
    """Linked peers whose direct path died under a roam, being keyed afresh through a relay.

    Holds, per peer, the relays still to try and when its last fallback began. Only peers we
    hold a link to get one, and :meth:`forget` runs when the link goes, so the table is bounded
    by the connection table.
    """

    def __init__(self, retry_s: float) -> None:
        self.retry_s = retry_s
        self._left: dict[NodeId, list[NodeId]] = {}
        self._began: dict[NodeId, float] = {}

    def begin(self, peer: NodeId, candidates: Sequence[NodeId], *, now: float) -> bool:
        """Start a fallback for ``peer`` through ``candidates`` in order; False if one began
        less than ``retry_s`` ago (a restless host roams often; each try costs a handshake)."""
        began = self._began.get(peer)
        if began is not None and now - began < self.retry_s:
            return False
        self._began[peer] = now
        self._left[peer] = list(dict.fromkeys(c for c in candidates if c != peer))
        return True

    def trying(self, peer: NodeId) -> bool:
        return peer in self._left

    def next_via(self, peer: NodeId) -> NodeId | None:
        """The next relay to try for ``peer`` (None: none left, and the fallback is over)."""
        left = self._left.get(peer)
        if not left:
            self._left.pop(peer, None)
            return None
        return left.pop(0)

    def done(self, peer: NodeId) -> None:
        """``peer``'s session moved off its dead path: nothing more to try."""
        self._left.pop(peer, None)

    def forget(self, peer: NodeId) -> None:
        self._left.pop(peer, None)
        self._began.pop(peer, None)
