"""Hand-driven stand-ins for one overlay node's link layer, for unit tests of the overlay.

This module owns :class:`RecordingLinks`, which records what an
:class:`ipop.overlay.node.OverlayNode` asks of its links and lets every send succeed,
:func:`fake_certificate`, the placeholder certificate a fake ``LinkUp`` carries, and
:func:`node_by_hand` / :func:`timed_link_up`, a started node on such links and a link of it
coming up with a round trip. The simulated many-node link world is
:mod:`ipop.testing.fake_links`.
"""

from __future__ import annotations

import random
from typing import TypeVar

from ipop.errors import RemoteProtocolError
from ipop.identity import NodeCertificate
from ipop.link.events import LinkUp
from ipop.overlay.config import OverlayConfig
from ipop.overlay.messages import OverlayMessage, decode_message
from ipop.overlay.node import OverlayNode
from ipop.testing.fake_origin import FakeKeyring, FakeOrigin
from ipop.types import Endpoint, NodeId, Path

__all__ = ["RecordingLinks", "fake_certificate", "node_by_hand", "timed_link_up"]

_T = TypeVar("_T", bound=OverlayMessage)


class RecordingLinks:
    """A link layer for one overlay node driven by hand: records what the node asks of it
    (handshakes as (path, expected, retransmit), sends, closes, moves); every send succeeds."""

    def __init__(self, local_id: NodeId) -> None:
        self.local_id = local_id
        self.connects: list[tuple[Path, NodeId | None, bool]] = []
        self.sent: list[tuple[NodeId, bytes]] = []
        self.closed: list[NodeId] = []
        self.moved: list[NodeId] = []
        # Probed payload sizes a test sets: peer -> bytes (none: not probed).
        self.limits: dict[NodeId, int] = {}

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

    def payload_limit(self, peer: NodeId) -> int | None:
        return self.limits.get(peer)

    def peer_moved(self, peer: NodeId, *, now: float) -> None:
        self.moved.append(peer)

    def sent_of(self, kind: type[_T]) -> list[tuple[NodeId, _T]]:
        """(peer, message) of every overlay message of type ``kind`` sent, in order (DIRECT
        payloads and CRL gossip, which :func:`decode_message` does not parse, are skipped)."""
        out: list[tuple[NodeId, _T]] = []
        for peer, data in self.sent:
            try:
                msg = decode_message(data)
            except RemoteProtocolError:
                continue
            if isinstance(msg, kind):
                out.append((peer, msg))
        return out


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


def node_by_hand(local_id: NodeId, keyring: FakeKeyring) -> tuple[OverlayNode, RecordingLinks]:
    """A started overlay node (one near peer a side, no bootstrap) on :class:`RecordingLinks`."""
    links = RecordingLinks(local_id)
    node = OverlayNode(
        local_id,
        links,
        rng=random.Random(1),
        config=OverlayConfig(near_per_side=1),
        bootstrap=[],
        origin=FakeOrigin(local_id, keyring),
    )
    node.start(now=0.0)
    return node, links


def timed_link_up(node: OverlayNode, peer: NodeId, k: int, rtt: float | None) -> None:
    """``peer``'s link comes up at time 1 (at the ``k``-th test endpoint), ``rtt`` measured."""
    ep = Endpoint("203.0.113.9", 5800 + k)
    node.on_link_event(LinkUp(peer, fake_certificate(peer), ep, None, rtt_s=rtt), now=1.0)
