"""The relay role (ipop.overlay.relay.RelayRole) on its own, without an overlay node: relaying
between two direct peers, each refusal, wrapping and delivering datagrams, refusals of our
relayed links, and a roam's fallback through relays, and a failover when the relay falls silent."""

from __future__ import annotations

import collections

import pytest

from ipop.errors import LocalProtocolError
from ipop.overlay import relay as relay_module
from ipop.overlay.attempts import Action, Attempts
from ipop.overlay.events import RelayDatagram
from ipop.overlay.messages import RelayDeliver, RelayForward, RelayRefused, decode_message
from ipop.overlay.near import SeenIds
from ipop.overlay.relay import RELAY_DROPS, RelayRole
from ipop.overlay.suspect import SUSPECT_RTOS, SilentHops
from ipop.overlay.table import ConnectionKind, ConnectionTable
from ipop.types import Endpoint, NodeId, Path, RelayPath

L = NodeId(1000)  # us
A, B, C, D = NodeId(2000), NodeId(3000), NodeId(4000), NodeId(9000)


class FakeLinks:
    def __init__(self) -> None:
        self.connected: list[tuple[Path, NodeId | None]] = []
        self.closed: list[NodeId] = []

    def connect(self, path: Path, *, now: float, expected: NodeId | None = None) -> None:
        self.connected.append((path, expected))

    def close(self, peer: NodeId, *, now: float) -> None:
        self.closed.append(peer)


class World:
    def __init__(self, direct: tuple[NodeId, ...], relayed: dict[NodeId, NodeId] | None = None):
        self.table = ConnectionTable()
        for i, p in enumerate(direct):
            self.table.add(p, Endpoint("198.51.100.1", 4000 + i), now=0.0)
        for p, via in (relayed or {}).items():
            self.table.add(p, RelayPath(via=via, peer=p), now=0.0)
        self.links = FakeLinks()
        self.seen = SeenIds()
        self.drops: collections.Counter[str] = collections.Counter()
        self.stats: collections.Counter[str] = collections.Counter()
        self.sent: list[tuple[NodeId, object]] = []
        self.events: list[RelayDatagram] = []
        self.forgotten: list[NodeId] = []
        self.actions: list[Action] = []
        self.silent = SilentHops(rto_min_s=0.2, rto_max_s=1.0, rto_initial_s=0.5)
        attempts = Attempts(
            L,
            direct=lambda p: (row := self.table.get(p)) is not None and row.direct,
            stats=self.stats,
            connect_timeout_s=5.0,
            connect_back_timeout_s=2.0,
            relay_after_s=1.0,
            relay_yield_s=0.5,
            failed_backoff_s=30.0,
            near_retry_s=3.0,
        )
        self.role = RelayRole(
            L,
            table=self.table,
            links=self.links,
            attempts=attempts,
            seen=self.seen,
            drops=self.drops,
            stats=self.stats,
            send=self.send,
            add_kind=lambda p, k, now: (self.table.add_kind(p, k, now=now), None)[1],
            emit=self.events.append,
            connect=lambda actions, now: self.actions.extend(actions),
            forget=self.forget,
            fallback_retry_s=10.0,
            silent=self.silent,
        )

    def send(self, peer: NodeId, data: bytes, now: float) -> bool:
        self.sent.append((peer, decode_message(data)))
        return True

    def forget(self, peer: NodeId, now: float) -> bool:
        self.forgotten.append(peer)
        return self.table.remove(peer) is not None

    def kinds(self, peer: NodeId) -> set[ConnectionKind]:
        row = self.table.get(peer)
        assert row is not None
        return set(row.kinds)

    def checked_drops(self) -> collections.Counter[str]:
        assert set(self.drops) <= RELAY_DROPS
        return self.drops


def test_a_relay_passes_a_datagram_on_between_two_direct_peers_and_holds_both() -> None:
    w = World((A, B))
    w.role.on_forward(RelayForward(B, b"sealed"), A, 1.0)
    assert w.sent == [(B, RelayDeliver(A, b"sealed"))]
    assert w.stats["relayed"] == 1
    assert w.stats["relayed_bytes"] == len(RelayDeliver(A, b"sealed").encode())
    assert ConnectionKind.RELAY in w.kinds(A) and ConnectionKind.RELAY in w.kinds(B)
    for p in (A, B):
        row = w.table.get(p)
        assert row is not None and row.last_relay == 1.0
    assert w.role.stamp == 2
    assert not w.checked_drops()


@pytest.mark.parametrize(
    ("frm", "target", "reason", "told"),
    [
        (A, A, "relay_loop", False),
        (A, L, "relay_loop", False),
        (C, B, "relay_origin_not_direct", False),
        (A, D, "relay_no_link", True),
        (A, C, "relay_target_not_direct", True),
    ],
)
def test_each_refusal_of_a_relay_is_counted_and_the_origin_told_when_useful(
    frm: NodeId, target: NodeId, reason: str, told: bool
) -> None:
    w = World((A, B), relayed={C: A})
    w.role.on_forward(RelayForward(target, b"sealed"), frm, 1.0)
    assert w.checked_drops() == {reason: 1}
    assert w.sent == ([(frm, RelayRefused(target))] if told else [])
    assert w.role.stamp == 0


def test_our_datagram_for_a_relayed_link_goes_to_the_relay_which_we_then_hold() -> None:
    w = World((A,))
    w.role.wrap(b"sealed", RelayPath(via=A, peer=B), now=1.0)
    assert w.sent == [(A, RelayForward(B, b"sealed"))]
    assert ConnectionKind.RELAY in w.kinds(A)
    w.role.wrap(b"sealed", RelayPath(via=C, peer=B), now=1.0)
    assert w.checked_drops() == {"relay_via_down": 1}
    with pytest.raises(LocalProtocolError):
        w.role.wrap(b"sealed", Endpoint("198.51.100.9", 1), now=1.0)  # type: ignore[arg-type]


def test_what_a_relay_delivers_comes_out_as_a_datagram_of_the_relayed_path() -> None:
    w = World((A,), relayed={C: A})
    w.role.on_deliver(RelayDeliver(B, b"sealed"), A, 1.0)
    assert w.events == [RelayDatagram(b"sealed", RelayPath(via=A, peer=B))]
    assert ConnectionKind.RELAY in w.kinds(A)
    for origin, frm in ((L, A), (A, A), (B, C), (B, D)):
        w.role.on_deliver(RelayDeliver(origin, b"x"), frm, 1.0)
    assert w.checked_drops() == {"relay_bad_deliver": 4}
    assert len(w.events) == 1


def test_a_refusal_of_our_relayed_link_drops_it_and_a_stale_one_is_counted() -> None:
    w = World((A, B), relayed={C: A})
    w.role.on_refused(RelayRefused(C), B, 1.0)  # C's link does not run through B
    w.role.on_refused(RelayRefused(D), A, 1.0)  # no link to D at all
    assert w.checked_drops() == {"relay_refused_stale": 2}
    w.role.on_refused(RelayRefused(C), A, 1.0)
    assert w.forgotten == [C] and w.links.closed == [C]
    assert w.stats["relay_refused"] == 1


def test_a_fallback_tries_the_informer_then_the_direct_peers_nearest_the_peer() -> None:
    w = World((A, B, C, D))
    w.seen.put(B, D, 100.0, now=0.0)  # D told us of B: it holds a link to B
    assert w.role.fallback(B, now=1.0)
    assert w.links.connected == [(RelayPath(via=D, peer=B), B)]
    # A refusal moves to the next relay: the direct peers nearest B, in ring order.
    w.role.on_refused(RelayRefused(B), D, 1.1)
    w.role.on_refused(RelayRefused(B), A, 1.2)
    assert [p for p, _ in w.links.connected] == [
        RelayPath(via=D, peer=B),
        RelayPath(via=A, peer=B),
        RelayPath(via=C, peer=B),
    ]
    assert w.stats["relay_fallbacks"] == 1 and w.stats["relay_fallback_refused"] == 2
    # Not again within the retry time; a path change to a relay ends it.
    assert not w.role.fallback(B, now=5.0)
    w.role.path_changed(B, RelayPath(via=C, peer=B))
    w.role.on_refused(RelayRefused(B), C, 5.1)
    assert w.checked_drops() == {"relay_refused_stale": 1}
    assert w.role.fallback(B, now=11.5, relays={A})
    assert w.links.connected[-1] == (RelayPath(via=A, peer=B), B)


def test_no_fallback_without_a_direct_link_or_a_relay_to_try() -> None:
    w = World((A,), relayed={C: A})
    assert not w.role.fallback(C, now=1.0)  # not direct
    assert not w.role.fallback(A, now=1.0)  # nobody else to relay through
    assert not w.links.connected


def test_a_relay_that_falls_silent_hands_its_relayed_link_to_another_relay() -> None:
    w = World(direct=(A, B, C), relayed={D: A})
    path = RelayPath(via=A, peer=D)
    w.role.wrap(b"first", path, now=0.0)  # an episode starts: we wait to hear from A
    assert w.links.connected == []
    late = SUSPECT_RTOS * w.silent.rto(A)
    w.role.wrap(b"meanwhile", path, now=late / 2)
    assert w.links.connected == []  # not suspect yet
    w.role.wrap(b"still nothing", path, now=late)
    # Another relay, the direct peer nearest D first; never A, which fell silent.
    assert w.links.connected == [(RelayPath(via=C, peer=D), D)]
    assert w.stats["relay_failovers"] == 1
    w.role.wrap(b"again", path, now=late + 0.1)
    assert len(w.links.connected) == 1  # one failover at a time
    # A relay that answers never causes one.
    w2 = World(direct=(A, B, C), relayed={D: A})
    w2.role.wrap(b"first", path, now=0.0)
    w2.silent.heard(A, 0.1)
    w2.role.wrap(b"later", path, now=late)
    assert w2.links.connected == []


def test_a_run_of_forwards_takes_each_targets_verdict_once_and_counts_every_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    w = World((A, B), relayed={C: A})
    asked: list[NodeId] = []
    refusal = relay_module.forward_refusal

    def counted(table: ConnectionTable, local: NodeId, origin: NodeId, target: NodeId) -> object:
        asked.append(target)
        return refusal(table, local, origin, target)

    monkeypatch.setattr(relay_module, "forward_refusal", counted)
    run = [RelayForward(t, bytes([k])) for k, t in enumerate((B, D, B, D, B, C))]
    w.role.on_forward_run(run, A, 1.0)
    assert asked == [B, D, C]  # once per target, not per message
    assert w.checked_drops() == {"relay_no_link": 2, "relay_target_not_direct": 1}
    assert w.sent == [
        (A, RelayRefused(D)),
        (A, RelayRefused(D)),
        (A, RelayRefused(C)),
        *((B, RelayDeliver(A, bytes([k]))) for k in (0, 2, 4)),
    ]
    assert w.stats["relayed"] == 3


def test_a_run_of_deliveries_checks_each_origin_and_drops_every_spoofed_one() -> None:
    w = World((A, B))
    run = [RelayDeliver(o, bytes([k])) for k, o in enumerate((B, L, B, A, L))]
    got = w.role.on_deliver_run(run, A, 1.0)
    assert [(d.data, d.path) for d in got] == [
        (bytes([k]), RelayPath(via=A, peer=B)) for k in (0, 2)
    ]
    assert w.checked_drops() == {"relay_bad_deliver": 3}  # L twice, A (the relay) once
