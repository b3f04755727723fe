"""The overlay's events: facts :class:`ipop.overlay.node.OverlayNode` reports to its owner.

Owns the frozen dataclasses drained through ``OverlayNode.next_event()`` and their union
:data:`OverlayEvent`; nothing here has behaviour. ``ipop.overlay.node`` re-exports them for code
written against the old path.
"""

from __future__ import annotations

from dataclasses import dataclass

from ipop.overlay.table import ConnectionKind
from ipop.types import NodeId, RelayPath

__all__ = [
    "ConnectionAdded",
    "ConnectionRemoved",
    "Delivered",
    "Joined",
    "OverlayEvent",
    "PeerHidden",
    "RelayDatagram",
    "Roamed",
    "Routable",
]


@dataclass(frozen=True, slots=True)
class Delivered:
    """A routed message of an upper-layer ``kind`` arrived here (``hops`` links crossed)."""

    src: NodeId
    dst: NodeId
    kind: int
    payload: bytes
    hops: int
    exact: bool


@dataclass(frozen=True, slots=True)
class Routable:
    """We joined and hold near links on both sides: routed traffic can reach us."""


@dataclass(frozen=True, slots=True)
class Joined:
    """Our JOIN was answered: we have a place on the ring and can route (near links to both
    sides may still be forming; :class:`Routable` follows when they are up)."""


@dataclass(frozen=True, slots=True)
class ConnectionAdded:
    """``peer`` gained ``kind`` (one link can hold several kinds)."""

    peer: NodeId
    kind: ConnectionKind


@dataclass(frozen=True, slots=True)
class ConnectionRemoved:
    """``peer`` lost ``kind`` (or its link went down while holding it)."""

    peer: NodeId
    kind: ConnectionKind


@dataclass(frozen=True, slots=True)
class RelayDatagram:
    """A relayed link datagram for our link layer: feed to ``receive_datagram(data, path)``."""

    data: bytes
    path: RelayPath


@dataclass(frozen=True, slots=True)
class Roamed:
    """Our underlay address changed ("local": the I/O layer said so) or our NAT gave us a new
    mapping ("rebound": a peer now sees us elsewhere), or we did not run for a while ("woke":
    the process was stopped, the machine slept); what we learned about our old address
    (observed endpoints, backoffs) is forgotten and our endpoints are being re-advertised."""

    reason: str


@dataclass(frozen=True, slots=True)
class PeerHidden:
    """A linked ``peer`` moved and named an endpoint another peer's traffic comes from (a host
    behind its NAT holds that port toward us): its port toward us is unknown, and only port
    guessing with the peer as the opening side finds it (:meth:`ipop.nat.portguess.
    PortGuessing.hidden`). Its link is keyed through a relay meanwhile."""

    peer: NodeId


OverlayEvent = (
    Delivered
    | Joined
    | Routable
    | ConnectionAdded
    | ConnectionRemoved
    | RelayDatagram
    | Roamed
    | PeerHidden
)
