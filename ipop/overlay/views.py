"""The connection table as the policies see it (:class:`ipop.overlay.policies.ConnectionView`),
cached between ticks (sans-IO).

Why a cache: every node builds the views every tick, and most rows change far less often; most
ticks nothing changed at all and the last answer is returned whole. A row's view is reused
while its ``rev`` and ``last_relay`` stand (``last_relay`` is not part of the row's rev: the
relay role's stamp says when any of them moved); the whole answer while the table's stamp and
that relay stamp stand. Bounds: one entry per row of the table, rebuilt on every change.
"""

from __future__ import annotations

from collections.abc import Callable

from ipop.overlay.policies import ConnectionView
from ipop.overlay.table import Connection, ConnectionKind, ConnectionTable
from ipop.types import NodeId

__all__ = ["ConnectionViews"]


class ConnectionViews:
    """Every row's policy view, reusing last tick's where the row did not change."""

    def __init__(self, table: ConnectionTable, *, relay_stamp: Callable[[], int]) -> None:
        self._table = table
        self._relay_stamp = relay_stamp
        # Peer -> (row rev, its policy view), and the whole answer with the (table stamp,
        # relay stamp) it was built at.
        self._views: dict[NodeId, tuple[int, ConnectionView]] = {}
        self._views_all: tuple[tuple[int, int], tuple[ConnectionView, ...]] | None = None

    def current(self) -> tuple[ConnectionView, ...]:
        """Every row's view, in table order (cached: see the module docstring)."""
        key = (self._table.stamp, self._relay_stamp())
        whole = self._views_all
        if whole is not None and whole[0] == key:
            return whole[1]
        cache = self._views
        fresh: dict[NodeId, tuple[int, ConnectionView]] = {}
        out = []
        for c in self._table:
            hit = cache.get(c.peer)
            if hit is not None and hit[0] == c.rev and hit[1].last_relay == c.last_relay:
                view = hit[1]
            else:
                view = self.view(c)
            fresh[c.peer] = (c.rev, view)
            out.append(view)
        self._views = fresh
        views = tuple(out)
        self._views_all = (key, views)
        return views

    def from_scratch(self) -> tuple[ConnectionView, ...]:
        """Every row's view computed afresh (what :meth:`current` must equal)."""
        return tuple(self.view(c) for c in self._table)

    @staticmethod
    def view(c: Connection) -> ConnectionView:
        far = ConnectionKind.FAR in c.kinds and ConnectionKind.FAR not in c.remote_kinds
        return ConnectionView(
            peer=c.peer,
            kinds=frozenset(c.kinds),
            local_far=far,
            far_since=c.kinds.get(ConnectionKind.FAR),
            leaf_since=c.kinds.get(ConnectionKind.LEAF),
            last_relay=c.last_relay,
            idle_since=c.idle_since,
            rtt_s=c.rtt_s,
        )
