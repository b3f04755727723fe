"""Two hosts behind one NAT, one port toward us (ipop.link.paths.displaced): when one of them
proves an endpoint its own, the session the other held there loses it, and the overlay keys
that peer through a relay. Before, such a pair lost every datagram until the link timeout."""

from __future__ import annotations

import random

from ipop.link.events import LinkEvent, LinkPathChanged, LinkPathDisplaced, LinkUp
from ipop.link.layer import LinkLayer
from ipop.link.paths import displaced
from ipop.overlay.node import OverlayConfig, OverlayNode
from ipop.testing.clock import SIM_EPOCH
from ipop.testing.fake_links import fake_certificate
from ipop.testing.fake_origin import FakeKeyring, FakeOrigin
from ipop.testing.identities import make_identity, make_network
from ipop.testing.recording_links import RecordingLinks
from ipop.types import Endpoint, NodeId, RelayPath, SocketPath

NOW = SIM_EPOCH
NAT_PORT = Endpoint("198.51.100.1", 5800)  # the port both hosts behind the NAT bind
CAROL_FIRST = Endpoint("198.51.100.1", 40000)  # carol's first mapping (alice held 5800)
ALICE_ELSEWHERE = Endpoint("198.51.100.9", 7000)
BOB = Endpoint("203.0.113.2", 5800)


def _drain(ep: LinkLayer) -> list[LinkEvent]:
    out = []
    while (ev := ep.next_event()) is not None:
        out.append(ev)
    return out


class OneNat:
    """Bob on the internet; alice and carol behind one NAT, whose mappings toward bob the
    test sets (``mapped``): what bob sends to an endpoint reaches whoever holds it."""

    def __init__(self) -> None:
        ca = make_network(now=NOW - 60)
        ids = {n: make_identity(ca, n, now=NOW - 60) for n in ("alice", "bob", "carol")}
        self.id = ids
        self.ep = {n: LinkLayer(i, rng=random.Random(k)) for k, (n, i) in enumerate(ids.items())}
        self.mapped = {"alice": NAT_PORT, "carol": CAROL_FIRST}
        self.now = NOW

    def pump(self) -> None:
        for _ in range(10):
            moved = False
            for name, ep in self.ep.items():
                for data, path in ep.datagrams_to_send(now=self.now):
                    moved = True
                    if name == "bob":
                        owner = next((n for n, m in self.mapped.items() if m == path), None)
                        if owner is not None:
                            self.ep[owner].receive_datagram(data, BOB, now=self.now)
                    else:
                        self.ep["bob"].receive_datagram(data, self.mapped[name], now=self.now)
            if not moved:
                return

    def up(self) -> None:
        bob = self.id["bob"].node_id
        for name in ("alice", "carol"):
            self.ep[name].connect(BOB, now=NOW, expected=bob)
            self.pump()
            assert self.ep["bob"].is_up(self.id[name].node_id)
        _drain(self.ep["bob"])

    def data(self, frm: str) -> None:
        data, _ = self.ep[frm].seal(self.id["bob"].node_id, b"hello", now=NOW)
        self.ep["bob"].receive_datagram(data, self.mapped[frm], now=NOW)


def test_a_peer_proving_an_endpoint_its_own_displaces_the_session_that_held_it() -> None:
    net = OneNat()
    net.up()
    bob = net.ep["bob"]
    alice, carol = net.id["alice"].node_id, net.id["carol"].node_id
    assert bob.path_of(alice) == NAT_PORT and bob.path_of(carol) == CAROL_FIRST
    # The NAT lost its table and carol sent to bob first: 5800 toward bob is carol's now.
    net.mapped = {"alice": Endpoint("198.51.100.1", 61000), "carol": NAT_PORT}
    net.data("carol")
    evs = _drain(bob)
    assert LinkPathChanged(carol, NAT_PORT, "roamed") in evs
    assert LinkPathDisplaced(alice, NAT_PORT) in evs
    assert bob.stats["path_displaced"] == 1
    # Alice's session no longer holds on to the dead path: her DATA from another address
    # moves it at once (a held path would make it wait out PATH_SILENT_S, roam_held).
    net.mapped["alice"] = ALICE_ELSEWHERE
    net.data("alice")
    assert bob.path_of(alice) == ALICE_ELSEWHERE and bob.stats["roam_held"] == 0


def test_without_a_claim_a_move_to_another_address_is_held() -> None:
    # The control for the test above: the same move by alice with nobody displacing her.
    net = OneNat()
    net.up()
    bob, alice = net.ep["bob"], net.id["alice"].node_id
    net.mapped["alice"] = ALICE_ELSEWHERE
    net.data("alice")
    assert bob.path_of(alice) == NAT_PORT and bob.stats["roam_held"] == 1
    assert not any(isinstance(e, LinkPathDisplaced) for e in _drain(bob))


def test_a_handshake_completing_on_the_endpoint_displaces_too() -> None:
    net = OneNat()
    net.up()
    bob = net.ep["bob"]
    alice, carol = net.id["alice"].node_id, net.id["carol"].node_id
    net.mapped = {"alice": Endpoint("198.51.100.1", 61000), "carol": NAT_PORT}
    # Carol advertised the port a witness saw (5800): bob keys her session there.
    bob.connect(NAT_PORT, now=NOW, expected=carol)
    net.pump()
    assert bob.path_of(carol) == NAT_PORT
    assert LinkPathDisplaced(alice, NAT_PORT) in _drain(bob)


def test_only_other_sessions_on_that_very_main_socket_endpoint_are_displaced() -> None:
    a, b, c = NodeId(1), NodeId(2), NodeId(3)
    ep = Endpoint("198.51.100.1", 5800)
    sessions = [(a, ep), (b, Endpoint("198.51.100.1", 5801)), (c, RelayPath(via=b, peer=c))]
    assert displaced(ep, b, sessions) == [a]
    assert displaced(ep, a, sessions) == []  # its own session is no rival
    assert displaced(SocketPath(3, ep), b, [(a, SocketPath(3, ep))]) == []
    assert displaced(RelayPath(via=b, peer=a), c, [(a, RelayPath(via=b, peer=a))]) == []


def test_the_overlay_keys_a_displaced_peer_through_a_relay() -> None:
    me, p, q = NodeId(10), NodeId(20), NodeId(30)
    links = RecordingLinks(me)
    node = OverlayNode(
        me,
        links,
        rng=random.Random(1),
        config=OverlayConfig(local_endpoints=(Endpoint("198.18.0.5", 5800),), far_links=False),
        bootstrap=[],
        origin=FakeOrigin(me, FakeKeyring()),
    )
    node.start(now=0.0)
    node.on_link_event(LinkUp(p, fake_certificate(p), NAT_PORT, None), now=1.0)
    node.on_link_event(LinkUp(q, fake_certificate(q), BOB, None), now=1.0)
    links.connects.clear()
    node.on_link_event(LinkPathDisplaced(p, NAT_PORT), now=2.0)
    assert (RelayPath(via=q, peer=p), p) in [(path, exp) for path, exp, _ in links.connects]
    assert node.stats["displaced_relay_fallbacks"] == 1
