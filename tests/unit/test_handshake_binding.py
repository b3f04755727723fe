"""An Init is bound to its responder: replayed or forwarded copies cannot block a handshake.

The attack (issue 13, finding 11b): an observer of A's Init to B replays it to C. C used to
accept it (valid certificate, signature, fresh timestamp) and remember its timestamp as A's
newest, so A's own Init to C, signed a moment earlier, was refused as stale on every
retransmission: the A-C handshake was blocked for the whole handshake timeout (20 s).
"""

from __future__ import annotations

import random

import pytest

import ipop.link.handshakes as handshakes_module
from ipop.link.layer import LinkLayer
from ipop.testing.clock import SIM_EPOCH
from ipop.testing.identities import make_identity, make_network
from ipop.types import Endpoint, NodeId, Path

NOW = SIM_EPOCH
A_EP = Endpoint("198.51.100.1", 5800)
B_EP = Endpoint("203.0.113.2", 5800)
C_EP = Endpoint("203.0.113.3", 5800)
MALLORY_EP = Endpoint("198.51.100.66", 4000)


class Trio:
    """A, B and C, plus a hand-driven wire (datagrams are moved by the test)."""

    def __init__(self) -> None:
        ca = make_network(now=NOW - 60)
        self.ids = {n: make_identity(ca, n, now=NOW - 60) for n in ("alice", "bob", "carol")}
        self.a = LinkLayer(self.ids["alice"], rng=random.Random(1))
        self.b = LinkLayer(self.ids["bob"], rng=random.Random(2))
        self.c = LinkLayer(self.ids["carol"], rng=random.Random(3))
        self.at = {A_EP: self.a, B_EP: self.b, C_EP: self.c}
        self.addr = {id(self.a): A_EP, id(self.b): B_EP, id(self.c): C_EP}

    def node(self, name: str) -> NodeId:
        return self.ids[name].node_id

    def out(self, ep: LinkLayer, now: float) -> list[tuple[bytes, Path]]:
        return ep.datagrams_to_send(now=now)

    def run(self, until: float, step: float = 0.05) -> None:
        """Deliver every datagram (to A, B, C; others are lost) and fire timers."""
        t = NOW
        while t <= until:
            for _ in range(6):
                moved = False
                for ep in (self.a, self.b, self.c):
                    for data, path in self.out(ep, t):
                        dst = self.at.get(path) if isinstance(path, Endpoint) else None
                        if dst is not None:
                            dst.receive_datagram(data, self.addr[id(ep)], now=t)
                            moved = True
                if not moved:
                    break
            for ep in (self.a, self.b, self.c):
                timer = ep.get_timer()
                if timer is not None and timer <= t:
                    ep.handle_timer(now=t)
            t += step


def _replay_then_original(bound_by_id: bool) -> Trio:
    w = Trio()
    exp_c = w.node("carol") if bound_by_id else None
    exp_b = w.node("bob") if bound_by_id else None
    w.a.connect(C_EP, now=NOW, expected=exp_c)  # in flight (slow path to C)
    ((init_ac, _),) = w.out(w.a, NOW)
    w.a.connect(B_EP, now=NOW + 0.001, expected=exp_b)  # a newer timestamp
    ((init_ab, _),) = w.out(w.a, NOW + 0.001)
    w.b.receive_datagram(init_ab, A_EP, now=NOW + 0.01)
    # Mallory saw A's Init to B and replays it to C, from her own address and from A's.
    w.c.receive_datagram(init_ab, MALLORY_EP, now=NOW + 0.01)
    w.c.receive_datagram(init_ab, A_EP, now=NOW + 0.01)
    w.out(w.c, NOW + 0.01)  # whatever C said goes to Mallory / is lost
    w.c.receive_datagram(init_ac, A_EP, now=NOW + 0.02)  # the genuine Init arrives
    w.run(NOW + 1.0)
    return w


def test_init_replayed_to_another_node_does_not_block_the_real_handshake() -> None:
    w = _replay_then_original(bound_by_id=True)
    assert w.a.is_up(w.node("carol")) and w.c.is_up(w.node("alice"))
    assert w.a.is_up(w.node("bob"))
    # C refused the copies for free: they name Bob.
    assert w.c.drops["not_for_us"] == 2 and w.c.drops["stale_handshake"] == 0


def test_bootstrap_init_bound_to_an_endpoint_replayed_elsewhere_does_not_block() -> None:
    # No node id expected (a bootstrap link): the Init names the endpoint it went to.
    w = _replay_then_original(bound_by_id=False)
    assert w.a.is_up(w.node("carol")) and w.c.is_up(w.node("alice"))
    assert w.c.drops["stale_handshake"] == 0


def test_copy_raced_ahead_of_the_original_does_not_block_it() -> None:
    # An observer forwards A's Init to C from another address, faster than A's own copy.
    w = Trio()
    w.a.connect(C_EP, now=NOW, expected=w.node("carol"))
    ((init_ac, _),) = w.out(w.a, NOW)
    w.c.receive_datagram(init_ac, MALLORY_EP, now=NOW + 0.005)
    ((_, to),) = w.out(w.c, NOW + 0.005)
    assert to == MALLORY_EP  # Mallory gets a Resp she cannot use
    w.c.receive_datagram(init_ac, A_EP, now=NOW + 0.01)
    w.run(NOW + 1.0)
    assert w.a.is_up(w.node("carol")) and w.c.is_up(w.node("alice"))
    assert w.c.path_of(w.node("alice")) == A_EP
    assert w.c.drops["stale_handshake"] == 0


def test_freshness_table_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    # An insider can name any endpoint as responder: each verified Init adds a freshness
    # entry (initiator, endpoint), so the table has a bound and forgets the oldest.
    monkeypatch.setattr(handshakes_module, "LAST_INIT_MAX", 3)
    w = Trio()
    for i in range(6):
        target = Endpoint("203.0.113.3", 6000 + i)  # Carol's, as far as Alice can tell
        w.a.connect(target, now=NOW + i)
        ((init, _),) = w.out(w.a, NOW + i)
        w.c.receive_datagram(init, A_EP, now=NOW + i)
    assert w.c.stats["handshake_answered"] == 6
    assert w.c.handshakes.freshness_entries() == 3
