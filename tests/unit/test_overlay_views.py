"""The policy views of the connection table (ipop.overlay.views.ConnectionViews): cached
between ticks, yet always what a recomputation from scratch gives."""

from __future__ import annotations

from ipop.overlay.table import ConnectionKind, ConnectionTable
from ipop.overlay.views import ConnectionViews
from ipop.types import Endpoint, NodeId

A, B = NodeId(2000), NodeId(3000)


def _views() -> tuple[ConnectionTable, ConnectionViews, list[int]]:
    table = ConnectionTable()
    table.add(A, Endpoint("198.51.100.1", 4000), now=0.0)
    table.add(B, Endpoint("198.51.100.2", 4000), now=0.0)
    stamp = [0]
    return table, ConnectionViews(table, relay_stamp=lambda: stamp[0]), stamp


def test_nothing_changed_returns_the_last_answer_whole() -> None:
    _, views, _ = _views()
    first = views.current()
    assert first == views.from_scratch()
    assert views.current() is first


def test_a_changed_row_gets_a_new_view_and_the_others_are_reused() -> None:
    table, views, _ = _views()
    first = views.current()
    table.add_kind(A, ConnectionKind.FAR, now=1.0)
    second = views.current()
    assert second == views.from_scratch() != first
    by_peer = {v.peer: v for v in second}
    assert by_peer[A].local_far and by_peer[A].far_since == 1.0
    assert by_peer[B] is next(v for v in first if v.peer == B)


def test_a_relayed_datagram_moves_last_relay_without_a_row_rev() -> None:
    table, views, stamp = _views()
    views.current()
    row = table.get(B)
    assert row is not None
    row.last_relay = 5.0
    stamp[0] += 1  # what the relay role does with it
    assert {v.peer: v.last_relay for v in views.current()}[B] == 5.0
    assert views.current() == views.from_scratch()


def test_a_row_gone_leaves_no_view() -> None:
    table, views, _ = _views()
    views.current()
    table.remove(A)
    assert [v.peer for v in views.current()] == [B]
