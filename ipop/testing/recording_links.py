"""Hand-driven stand-ins for one overlay node's link layer, for unit tests of the overlay.

This module owns :class:`RecordingLinks`, which records what an
:class:`ipop.overlay.node.OverlayNode` asks of its links and lets every send succeed, and
:func:`fake_certificate`, the placeholder certificate a fake ``LinkUp`` carries. The simulated
many-node link world is :mod:`ipop.testing.fake_links`.
"""

from __future__ import annotations

from ipop.identity import NodeCertificate
from ipop.types import NodeId, Path

__all__ = ["RecordingLinks", "fake_certificate"]


class RecordingLinks:
    """A link layer for one overlay node driven by hand: records what the node asks of it
    (handshakes as (path, expected, retransmit), sends, closes, moves); every send succeeds."""

    def __init__(self, local_id: NodeId) -> None:
        self.local_id = local_id
        self.connects: list[tuple[Path, NodeId | None, bool]] = []
        self.sent: list[tuple[NodeId, bytes]] = []
        self.closed: list[NodeId] = []
        self.moved: list[NodeId] = []

    def connect(
        self,
        path: Path,
        *,
        now: float,
        expected: NodeId | None = None,
        retransmit: bool = True,
        timeout_s: float | None = None,
    ) -> None:
        self.connects.append((path, expected, retransmit))

    def send_run(
        self,
        peer: NodeId,
        payloads: list[bytes],
        *,
        now: float,
        head: bytes = b"",
        strip: bytes = b"",
    ) -> int:
        return 0  # no runs: the overlay sends one by one

    def send(self, peer: NodeId, payload: bytes, *, now: float) -> None:
        self.sent.append((peer, payload))

    def close(self, peer: NodeId, *, now: float) -> None:
        self.closed.append(peer)

    def is_up(self, peer: NodeId) -> bool:
        return True

    def peer_moved(self, peer: NodeId, *, now: float) -> None:
        self.moved.append(peer)


def fake_certificate(node_id: NodeId) -> NodeCertificate:
    """A placeholder certificate: the overlay never looks inside LinkUp.cert."""
    return NodeCertificate(
        der=b"",
        node_id=node_id,
        network="fake",
        name=node_id.short(),
        hostname=None,
        public_key_raw=b"",
        not_before=0.0,
        not_after=float("inf"),
    )
