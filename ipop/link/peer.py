"""One peer's session state (:class:`Peer`): its keys (current, previous, older, pending,
spare), its path and the hysteresis of path choice, counters, liveness and the NAT-rebinding
echo bookkeeping, and its place in the deadline heap. Also what the layer shares with the
sub-machines it owns (:class:`Shared`, bound once by :class:`LinkPart`).

A plain record with slots: :class:`ipop.link.layer.LinkLayer` owns the table of them (keyed by
the node id a certificate proved) and its sub-machines (:mod:`ipop.link.handshakes`,
:mod:`ipop.link.rebind`, :mod:`ipop.link.probing`) read and write the fields they own; the
module docstring of :mod:`ipop.link.layer` says what each set of keys means.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from ipop.identity import NodeCertificate
from ipop.link.config import LinkConfig
from ipop.link.events import LinkEvent
from ipop.link.keys import IndexTable, Keypair
from ipop.types import Endpoint, NodeId, Path

__all__ = ["LinkPart", "Peer", "Shared"]

_INF: Final = float("inf")


class Peer:
    """One peer's session state (see the module docstring)."""

    __slots__ = (
        "cert",
        "current",
        "due",
        "due_seq",
        "echo_at",
        "echo_id",
        "echo_misses",
        "echo_witness",
        "established_at",
        "last_rx",
        "last_tx",
        "node_id",
        "observed",
        "older",
        "path",
        "path_rtt",
        "path_rx",
        "pending",
        "previous",
        "probe_after",
        "rekeyed_stale_at",
        "rekeys",
        "roam_candidate",
        "rtt",
        "rx_bytes",
        "rx_gap",
        "rx_packets",
        "rx_streak",
        "spare",
        "spare_until",
        "tx_bytes",
        "tx_first",
        "tx_packets",
        "unlinked_check",
        "up",
        "watched",
    )

    def __init__(self, node_id: NodeId, cert: NodeCertificate, path: Path) -> None:
        self.node_id = node_id
        self.probe_after = 0.0
        self.cert = cert
        self.path: Path = path
        # The handshake RTT measured on ``path`` (inf: not measured, we answered) and when an
        # authenticated packet last came in on it: path choice and roaming hysteresis.
        self.path_rtt = _INF
        self.path_rx = 0.0
        # (path, when): the direct path the newest authenticated DATA came from while roaming
        # onto it was held (see _maybe_roam); None once the session moved, or never held.
        self.roam_candidate: tuple[Path, float] | None = None
        # The last handshake's round trip from either side, for status only (path choice keeps
        # to path_rtt): Init -> Resp as initiator, Resp -> key confirmation as responder.
        # None until a handshake completed.
        self.rtt: float | None = None
        self.up = False
        self.current: Keypair[Peer] | None = None
        self.previous: Keypair[Peer] | None = None
        # Keys ``previous`` held before, still in their grace period (see _install).
        self.older: dict[int, Keypair[Peer]] = {}
        self.pending: dict[int, Keypair[Peer]] = {}
        # Pending keys a sibling's confirmation left unconfirmed, kept until ``spare_until``
        # (see Handshakes._confirm).
        self.spare: dict[int, Keypair[Peer]] = {}
        self.spare_until = _INF
        self.observed: Endpoint | None = None
        self.established_at = 0.0
        self.last_rx = 0.0
        self.last_tx = 0.0
        self.rx_bytes = self.rx_packets = self.tx_bytes = self.tx_packets = 0
        # NAT rebinding (ipop.link.echo): the gap before the last authenticated packet, how
        # many packets in a row came within REBIND_QUIET_S of the one before (the peer is
        # busy), our first message since the last one (inf: none), and the echo outstanding
        # (its id, None: none; when it left; whether it asks a witness).
        self.rx_gap = _INF
        self.rx_streak = 0
        self.watched = False  # upper-layer traffic flows to it: see LinkLayer.watch
        self.tx_first = _INF
        self.echo_id: int | None = None
        self.echo_at = -_INF
        self.echo_witness = False
        # Our echoes in a row that went unanswered, nothing else heard since (two: the path
        # is silent, LinkPathSilent).
        self.echo_misses = 0
        self.rekeys = 0
        self.rekeyed_stale_at = -_INF
        # (since, until) while peer_unlinked checks whether the peer still holds the session.
        self.unlinked_check: tuple[float, float] | None = None
        # The deadline and seq of this peer's live heap entry (see ipop.link.timers).
        self.due = _INF
        self.due_seq = 0


@dataclass(frozen=True, slots=True)
class Shared:
    """What :class:`ipop.link.layer.LinkLayer` shares with the sub-machines it owns: its tables
    and outputs (the very objects, never rebound) and the services they need of it."""

    config: LinkConfig
    # Sessions by the node id a certificate proved, and our local indices -> keys.
    peers: dict[NodeId, Peer]
    keys: IndexTable[Peer]
    # Datagrams to send and events to yield, and the counters (ipop.link.config's reasons).
    outbox: list[tuple[bytes, Path]]
    events: collections.deque[LinkEvent]
    drops: collections.Counter[str]
    stats: collections.Counter[str]
    # Seal one DATA payload with these keys (counters, rekey trigger included).
    seal: Callable[[Peer, Keypair[Peer], bytes, float], bytes]
    # A peer's deadline may have moved earlier: re-push it into the heap.
    touch: Callable[[Peer], None]
    # Something moved a deadline outside the heap: recompute the timer.
    wake: Callable[[], None]
    # A session's authenticated traffic now comes from this path: others lose it (displaced).
    claim: Callable[[Peer, Path], None]


class LinkPart:
    """Base of the layer's sub-machines: binds what they share (:class:`Shared`) once, to the
    attribute names the layer itself uses, so code moved out of it reads the same."""

    def __init__(self, shared: Shared) -> None:
        self.config = shared.config
        self._peers = shared.peers
        self._keys = shared.keys
        self._outbox = shared.outbox
        self._events = shared.events
        self.drops = shared.drops
        self.stats = shared.stats
        self._seal = shared.seal
        self._touch = shared.touch
        self._wake = shared.wake
        self._claim = shared.claim
