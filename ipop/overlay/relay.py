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
