"""What the overlay node tells about itself (:meth:`ipop.overlay.node.OverlayNode.snapshot`):
every connection with its kinds and path, for status and tests."""

from __future__ import annotations

from dataclasses import dataclass

from ipop.overlay.table import ConnectionKind
from ipop.types import NodeId, Path, RelayPath

__all__ = ["ConnectionInfo", "OverlaySnapshot"]


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    """One link in a snapshot: the peer, its path, the kinds held, and since when."""

    peer: NodeId
    path: Path
    kinds: tuple[ConnectionKind, ...]
    since: float


@dataclass(frozen=True, slots=True)
class OverlaySnapshot:
    """Status material: every connection with its kinds and path."""

    local_id: NodeId
    routable: bool
    n_estimate: float
    connections: tuple[ConnectionInfo, ...]
    drops: tuple[tuple[str, int], ...]

    def by_kind(self, kind: ConnectionKind) -> tuple[ConnectionInfo, ...]:
        return tuple(c for c in self.connections if kind in c.kinds)

    @property
    def near(self) -> tuple[ConnectionInfo, ...]:
        return self.by_kind(ConnectionKind.NEAR)

    @property
    def far(self) -> tuple[ConnectionInfo, ...]:
        return self.by_kind(ConnectionKind.FAR)

    @property
    def shortcut(self) -> tuple[ConnectionInfo, ...]:
        return self.by_kind(ConnectionKind.SHORTCUT)

    @property
    def relay(self) -> tuple[ConnectionInfo, ...]:
        return self.by_kind(ConnectionKind.RELAY)

    @property
    def relayed(self) -> tuple[ConnectionInfo, ...]:
        """Connections whose own path runs through a relay."""
        return tuple(c for c in self.connections if isinstance(c.path, RelayPath))
