"""The overlay connection table: which peers we hold an up link to, over which path, and why.

Theory of operation. A row exists exactly while the link layer says the link is up (LinkUp
adds it, LinkDown or our own close removes it). The reasons for keeping a link are *kinds*;
one peer can hold several at once (Brunet's ConnectionType), each with the time it was gained:

- NEAR: among the ``near_per_side`` closest linked peers on either side; recomputed on every
  table change and tick, never set by hand.
- FAR: a Symphony long link we asked for (``local``) or a peer asked us to hold (``remote``:
  the requester decides when it is no longer needed, so we never trim it).
- SHORTCUT: asked for by an upper layer (or by the peer, for its upper layer).
- RELAY: we forward relayed datagrams over this link; held while traffic flows.
- LEAF: a bootstrap link, or an unsolicited inbound one: kept for a grace period so join
  answers can travel over it.

Each row carries the round trip our own link layer measured in the link's handshake
(``rtt_s``; None: not measured, or the path changed since). Only we time it: a handshake's
answer needs our own message first, so a peer can make it look slower, never faster. The
far-link policy chooses by it (:func:`ipop.overlay.policies.decide_far`).

A row without any kind is *idle* since ``idle_since``; the trim policy closes it after a grace
period. Invariant: ``idle_since is None`` iff ``kinds`` is non-empty.
"""

from __future__ import annotations

import bisect
import enum
from collections.abc import Iterator
from dataclasses import dataclass, field

from ipop.types import NodeId, Path, RelayPath, is_direct


class ConnectionKind(enum.StrEnum):
    LEAF = "leaf"
    NEAR = "near"
    FAR = "far"
    SHORTCUT = "shortcut"
    RELAY = "relay"


@dataclass(slots=True)
class Connection:
    """A linked peer in the table: its path, since when, and the kinds we and it hold."""

    peer: NodeId
    path: Path
    since: float
    kinds: dict[ConnectionKind, float] = field(default_factory=dict)
    # Kinds the peer asked us to hold (far/shortcut it requested by CTM); never trimmed here.
    remote_kinds: set[ConnectionKind] = field(default_factory=set)
    idle_since: float | None = None
    last_relay: float = 0.0
    # The handshake's round trip as we measured it (seconds); None: unknown (see above).
    rtt_s: float | None = None
    # A stamp unique across rows, renewed by the table on every change of kinds, remote kinds
    # or idleness (not last_relay): lets the node reuse what it derived from the row.
    rev: int = 0

    @property
    def direct(self) -> bool:
        return is_direct(self.path)

    @property
    def relayed(self) -> bool:
        return isinstance(self.path, RelayPath)


class ConnectionTable:
    """Rows by peer; every kind change is reported back so the node can emit events."""

    def __init__(self) -> None:
        self._rows: dict[NodeId, Connection] = {}
        # Peer id values in ascending order, kept in step with ``_rows``: routing and the near
        # set bisect into it instead of scoring every peer on every message (the hot path).
        self._ring: list[int] = []
        self._by_value: dict[int, NodeId] = {}
        # Changes whenever a peer comes or goes (lets callers cache answers about the peers).
        self.version = 0
        # Changes with ``version`` and with every row's ``rev``: the last stamp handed out.
        self.stamp = 0

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, peer: object) -> bool:
        return peer in self._rows

    def __iter__(self) -> Iterator[Connection]:
        return iter(list(self._rows.values()))

    def get(self, peer: NodeId) -> Connection | None:
        return self._rows.get(peer)

    def peers(self) -> list[NodeId]:
        return list(self._rows)

    def ring(self) -> list[int]:
        """Peer id values, ascending (do not modify)."""
        return self._ring

    def peer_of(self, value: int) -> NodeId:
        return self._by_value[value]

    def direct_peers(self) -> list[NodeId]:
        return [p for p, c in self._rows.items() if c.direct]

    def with_kind(self, kind: ConnectionKind) -> list[Connection]:
        return [c for c in self._rows.values() if kind in c.kinds]

    def add(
        self, peer: NodeId, path: Path, *, now: float, rtt_s: float | None = None
    ) -> Connection:
        """The row of ``peer``'s up link over ``path``: made, or moved to ``path``.

        ``rtt_s``: the round trip our link layer measured over ``path`` (None: none). A row
        moved to another path forgets the old path's unless a new one comes with it.
        """
        row = self._rows.get(peer)
        if row is not None:
            if row.path != path or row.rtt_s is None:
                rtt = rtt_s  # a new path: the old one's round trip says nothing of it
            elif rtt_s is None:
                rtt = row.rtt_s
            else:
                rtt = min(row.rtt_s, rtt_s)  # the least sample: queueing only adds
            if rtt != row.rtt_s:
                row.rtt_s = rtt
                row.rev = self._bump()
            row.path = path  # the link layer moved the link to a better path
            return row
        row = Connection(peer, path, now, idle_since=now, rev=self._bump(), rtt_s=rtt_s)
        self._rows[peer] = row
        self.version += 1
        bisect.insort(self._ring, peer.value)
        self._by_value[peer.value] = peer
        return row

    def remove(self, peer: NodeId) -> Connection | None:
        row = self._rows.pop(peer, None)
        if row is not None:
            self.version += 1
            self._bump()
            del self._ring[bisect.bisect_left(self._ring, peer.value)]
            del self._by_value[peer.value]
        return row

    def _bump(self) -> int:
        self.stamp += 1
        return self.stamp

    def add_kind(self, peer: NodeId, kind: ConnectionKind, *, now: float) -> bool:
        """Give ``peer`` a kind; True if it is new."""
        row = self._rows.get(peer)
        if row is None or kind in row.kinds:
            return False
        row.kinds[kind] = now
        row.idle_since = None
        row.rev = self._bump()
        return True

    def mark_remote(self, peer: NodeId, kind: ConnectionKind) -> None:
        """Record that ``peer`` asked us to hold ``kind`` (so we never trim it ourselves)."""
        row = self._rows.get(peer)
        if row is not None and kind not in row.remote_kinds:
            row.remote_kinds.add(kind)
            row.rev = self._bump()

    def drop_kind(self, peer: NodeId, kind: ConnectionKind, *, now: float) -> bool:
        """Take a kind away; True if it was held."""
        row = self._rows.get(peer)
        if row is None or kind not in row.kinds:
            return False
        del row.kinds[kind]
        row.remote_kinds.discard(kind)
        if not row.kinds:
            row.idle_since = now
        row.rev = self._bump()
        return True

    def set_near(self, near: frozenset[NodeId], *, now: float) -> tuple[list[NodeId], list[NodeId]]:
        """Make exactly ``near`` hold NEAR; returns (gained, lost) in table order."""
        gained: list[NodeId] = []
        lost: list[NodeId] = []
        for peer, row in self._rows.items():
            has = ConnectionKind.NEAR in row.kinds
            if peer in near and not has:
                self.add_kind(peer, ConnectionKind.NEAR, now=now)
                gained.append(peer)
            elif peer not in near and has:
                self.drop_kind(peer, ConnectionKind.NEAR, now=now)
                lost.append(peer)
        return gained, lost
