"""The overlay's roaming reactions, driven by hand (sans-IO): our address changed or our NAT
rebound -> stale knowledge forgotten, a CTM with our endpoints to every linked peer through a
peer that hears us; a linked peer re-advertising other endpoints -> its path is let go and we
punch back to where it is now, once."""

from __future__ import annotations

import dataclasses
import random

import pytest

from ipop import timing
from ipop.errors import LocalProtocolError
from ipop.link.events import LinkMessage, LinkUp, ObservedEndpoint
from ipop.overlay.events import PeerHidden, Roamed
from ipop.overlay.messages import (
    FLAG_EXACT,
    FLAG_EXCLUDE_SRC,
    KIND_CTM,
    MAX_ENDPOINTS,
    ConnectToMe,
    Purpose,
    Routed,
    decode_message,
)
from ipop.overlay.node import OverlayConfig, OverlayNode
from ipop.testing.fake_links import RecordingLinks, fake_certificate
from ipop.testing.fake_origin import FakeKeyring, FakeOrigin
from ipop.types import Endpoint, NodeId, RelayPath

ME = NodeId(1 << 150)
P, B = NodeId(3 << 150), NodeId(5 << 150)
P_EP, B_EP = Endpoint("203.0.113.9", 5800), Endpoint("203.0.113.30", 41000)
OLD, NEW = Endpoint("198.18.0.2", 5800), Endpoint("198.18.0.9", 5800)
KEYRING = FakeKeyring()


def _node() -> tuple[OverlayNode, RecordingLinks]:
    links = RecordingLinks(ME)
    cfg = OverlayConfig(local_endpoints=(OLD,), far_links=False)
    node = OverlayNode(
        ME, links, rng=random.Random(1), config=cfg, bootstrap=[], origin=FakeOrigin(ME, KEYRING)
    )
    node.start(now=0.0)
    node.on_link_event(
        LinkUp(P, fake_certificate(P), P_EP, Endpoint("203.0.113.50", 1024)), now=1.0
    )
    node.on_link_event(LinkUp(B, fake_certificate(B), B_EP, None), now=1.0)
    while node.next_event() is not None:
        pass
    links.sent.clear()
    return node, links


def _ctms(links: RecordingLinks) -> list[tuple[NodeId, Routed, ConnectToMe]]:
    out = []
    for peer, data in links.sent:
        msg = decode_message(data)
        if isinstance(msg, Routed) and msg.kind == KIND_CTM:
            out.append((peer, msg, ConnectToMe.decode(msg.payload)))
    return out


def _events(node: OverlayNode) -> list[object]:
    out = []
    while (ev := node.next_event()) is not None:
        out.append(ev)
    return out


def test_a_local_change_readvertises_through_the_peer_that_heard_us() -> None:
    node, links = _node()
    node.local_endpoints_changed([NEW], now=10.0)
    assert node.local_endpoints == (NEW,)
    assert node.observed_endpoints() == ()  # the old address's public endpoint is forgotten
    assert Roamed("local") in _events(node)
    assert _ctms(links) == []  # our new public endpoint is not known yet
    # P answers a handshake from the new address: it sees us at a new public endpoint.
    seen = Endpoint("203.0.113.50", 1033)
    node.on_link_event(ObservedEndpoint(seen, P), now=10.05)
    ctms = _ctms(links)
    # Both go to P: its own, and B's with P as the first hop (our link to B is dead).
    assert [peer for peer, _, _ in ctms] == [P, P]
    assert {m.dst for _, m, _ in ctms} == {P, B}
    to_b = next(m for _, m, _ in ctms if m.dst == B)
    assert to_b.via == P and to_b.flags & FLAG_EXCLUDE_SRC
    assert all(c.endpoints == (NEW, seen) for _, _, c in ctms)
    assert node.stats["roam_ctm_sent"] == 2
    # Once: later observations do not re-advertise again.
    links.sent.clear()
    node.on_link_event(ObservedEndpoint(Endpoint("203.0.113.50", 1034), P), now=11.0)
    assert _ctms(links) == []


def test_without_an_answer_the_tick_readvertises_what_we_know() -> None:
    node, links = _node()
    node.local_endpoints_changed([NEW], now=10.0)
    node.handle_timer(now=12.0)
    # (the tick may probe our own address too: only the re-advertisement is counted here)
    assert {m.dst for _, m, _ in _ctms(links)} >= {P, B}
    assert node.stats["roam_ctm_sent"] == 2


def test_a_peer_seeing_us_elsewhere_is_a_nat_rebinding_at_most_every_10s() -> None:
    node, links = _node()
    first = Endpoint("203.0.113.50", 1024)
    rebound = Endpoint("203.0.113.50", 2000)
    node.on_link_event(ObservedEndpoint(rebound, P), now=20.0)
    assert Roamed("rebound") in _events(node)
    assert first not in node.endpoints() and rebound in node.endpoints()
    assert {m.dst for _, m, _ in _ctms(links)} == {P, B}
    links.sent.clear()
    node.on_link_event(ObservedEndpoint(Endpoint("203.0.113.50", 2001), P), now=25.0)
    assert node.stats["roamed_rebound"] == 1 and _ctms(links) == []
    # A peer's first report is news, not a change: no roam.
    q = NodeId(7 << 150)
    node.on_link_event(
        LinkUp(q, fake_certificate(q), Endpoint("203.0.113.77", 5800), None), now=40.0
    )
    node.on_link_event(ObservedEndpoint(Endpoint("203.0.113.50", 3000), q), now=40.0)
    assert node.stats["roamed_rebound"] == 1


def test_a_first_report_flagged_as_a_rebinding_roams_and_forgets_every_old_endpoint() -> None:
    # The link layer flags a first report as a rebinding when one of our busy links has just
    # gone silent and the reporter sees us where no other peer does (ipop.link.echo).
    node, links = _node()
    seen = Endpoint("203.0.113.50", 7000)
    node.on_link_event(ObservedEndpoint(seen, B), now=20.0)  # B's first word, not flagged
    assert node.stats["roamed_rebound"] == 0 and _ctms(links) == []
    node, links = _node()
    node.on_link_event(ObservedEndpoint(seen, B, rebound=True), now=20.0)
    assert Roamed("rebound") in _events(node)
    assert node.observed_endpoints() == (seen,)  # the old mapping (P's word) is gone
    assert {m.dst for _, m, _ in _ctms(links)} == {P, B}
    assert node.stats["roamed_rebound"] == 1


def _ctm_from(node: OverlayNode, requester: NodeId, eps: tuple[Endpoint, ...], now: float) -> None:
    body = ConnectToMe(int(now * 1000) & 0xFFFF, Purpose.NEAR, P, eps).encode()
    msg = FakeOrigin(requester, KEYRING).routed(FLAG_EXACT, 64, KIND_CTM, ME, None, body, now=now)
    msg = dataclasses.replace(msg, hops=1)
    node.on_link_event(LinkMessage(P, msg.encode(), P_EP), now=now)


def test_a_linked_peer_that_moved_is_followed_once() -> None:
    node, links = _node()
    b_new = Endpoint("203.0.113.31", 41000)
    _ctm_from(node, B, (B_EP,), now=5.0)  # its usual endpoints: nothing moved
    assert links.moved == [] and links.connects == []
    _ctm_from(node, B, (b_new,), now=6.0)
    assert links.moved == [B]
    assert links.connects == [(b_new, B, False)]  # one connect-back punch, not retried
    _ctm_from(node, B, (b_new,), now=7.0)  # the same news again: nothing more
    assert links.moved == [B] and len(links.connects) == 1
    assert node.stats["peer_moved"] == 1


def test_a_relayed_peer_that_moved_is_punched_back_and_hears_of_our_own_roams() -> None:
    # Q's link went through a relay when its direct path died under its NAT's flush (another
    # host behind that NAT took Q's port toward us: ipop.link.paths.displaced). Q's new
    # endpoints are the only way back to a direct path, for either of us.
    node, links = _node()
    q, q_old, q_new = (
        NodeId(7 << 150),
        Endpoint("203.0.113.77", 5800),
        Endpoint("203.0.113.77", 40000),
    )
    node.on_link_event(LinkUp(q, fake_certificate(q), RelayPath(via=P, peer=q), None), now=1.0)
    _ctm_from(node, q, (q_old,), now=5.0)  # what we knew of it
    links.connects.clear()
    _ctm_from(node, q, (q_new,), now=6.0)
    assert links.connects == [(q_new, q, False)]  # one punch to where it is now
    assert links.moved == []  # no direct path of ours to let go
    # And our own roam tells Q where we are now, as it tells direct peers.
    links.sent.clear()
    node.on_link_event(ObservedEndpoint(Endpoint("203.0.113.50", 2000), P), now=20.0)
    assert {m.dst for _, m, _ in _ctms(links)} == {P, B, q}


def _shared_nat_node() -> tuple[OverlayNode, RecordingLinks, NodeId, NodeId, Endpoint]:
    """We hold direct links to A and Q, two hosts behind one NAT (203.0.113.77): A holds the
    NAT's port 5800 toward us, Q another one. Returns the node, its links, A, Q and A's path."""
    node, links = _node()
    a, q = NodeId(6 << 150), NodeId(7 << 150)
    a_ep, q_old = Endpoint("203.0.113.77", 5800), Endpoint("203.0.113.77", 34000)
    node.on_link_event(LinkUp(a, fake_certificate(a), a_ep, None), now=1.0)
    node.on_link_event(LinkUp(q, fake_certificate(q), q_old, None), now=1.0)
    _events(node)
    _ctm_from(node, q, (q_old,), now=5.0)  # what we knew of it
    links.connects.clear()
    return node, links, a, q, a_ep


def test_a_peer_that_moved_to_another_peers_endpoint_goes_through_a_relay_at_once() -> None:
    # Q's NAT lost its table and A, behind it too, sent to us first: A took port 5800 toward
    # us, and Q's port toward us is one nobody can tell Q. Q re-advertises what its other
    # peers see (5800), which is A's path here.
    node, links, _, q, a_ep = _shared_nat_node()
    _ctm_from(node, q, (Endpoint("198.18.1.3", 5800), a_ep), now=6.0)
    relayed = [p for p, exp, _ in links.connects if isinstance(p, RelayPath) and exp == q]
    assert len(relayed) == 1  # keyed through a relay now, not after the path's silence
    assert (a_ep, q, False) in links.connects  # and still punched: A may have left it
    assert PeerHidden(q) in _events(node)  # port guessing, with Q as the side that opens
    assert node.stats["peer_moved_to_taken_relayed"] == 1


def test_a_peer_that_moved_to_a_port_nobody_holds_is_only_punched_back() -> None:
    node, links, _, q, _ = _shared_nat_node()
    q_new = Endpoint("203.0.113.77", 40000)
    _ctm_from(node, q, (q_new,), now=6.0)
    assert links.connects == [(q_new, q, False)]
    assert not any(isinstance(e, PeerHidden) for e in _events(node))
    assert node.stats["peer_moved_to_taken"] == 0


# --- the Roaming object's own interface (node.roaming) -----------------------------------------


def test_we_advertise_our_socket_then_the_three_newest_observed_endpoints() -> None:
    node, _ = _node()
    roaming = node.roaming
    # P's handshake saw us at 203.0.113.50:1024.
    assert roaming.endpoints() == (OLD, Endpoint("203.0.113.50", 1024))
    seen = [Endpoint("203.0.113.50", 2000 + i) for i in range(8)]
    for i, ep in enumerate(seen):
        roaming.note_observed(ep, 2.0 + i)
    assert roaming.endpoints() == (OLD, seen[7], seen[6], seen[5])
    # At most 2 * 3 observed ones are remembered, newest first.
    assert roaming.observed_endpoints() == tuple(reversed(seen[2:]))
    assert set(roaming.known()) == {OLD, *seen[2:]}
    assert node.endpoints() == roaming.endpoints()
    roaming.forget_observed()
    assert roaming.endpoints() == (OLD,) and roaming.observed_endpoints() == ()


def test_our_own_socket_endpoints_are_bounded_and_never_listed_as_observed() -> None:
    node, _ = _node()
    roaming = node.roaming
    roaming.note_observed(OLD, 2.0)  # a peer on our LAN sees us at our own address
    assert OLD not in roaming.observed_endpoints()
    roaming.set_local([NEW])
    assert node.local_endpoints == roaming.local_endpoints == (NEW,)
    with pytest.raises(LocalProtocolError):
        roaming.set_local([Endpoint("198.18.0.2", 6000 + i) for i in range(MAX_ENDPOINTS + 1)])


def test_a_roam_readvertises_at_its_deadline_or_through_the_first_peer_that_hears_us() -> None:
    node, links = _node()
    roaming = node.roaming
    roaming.heard_us(P, 5.0)  # nothing pending: nothing sent
    roaming.tick(5.0)
    assert _ctms(links) == []
    roaming.roam("woke", 10.0)
    assert Roamed("woke") in _events(node) and node.stats["roamed_woke"] == 1
    roaming.tick(10.0 + timing.ROAM_ADVERTISE_WAIT_S - 0.01)
    assert _ctms(links) == []
    roaming.tick(10.0 + timing.ROAM_ADVERTISE_WAIT_S)
    assert {m.dst for _, m, _ in _ctms(links)} == {P, B}
    links.sent.clear()
    roaming.roam("local", 20.0)
    roaming.heard_us(B, 20.1)
    assert [(peer, m.dst) for peer, m, _ in _ctms(links)] == [(B, B), (B, P)]
    links.sent.clear()
    roaming.tick(30.0)  # sent already: the deadline is gone
    assert _ctms(links) == []


def test_a_peer_first_heard_after_a_roam_that_sees_another_port_is_readvertised() -> None:
    # Two hosts behind one port-preserving NAT after it flushed its table: toward P we kept
    # our port, toward B (and any peer where the other host sent first) we got another one.
    # A filtering peer punches back only to what we advertise: without B's port in a new
    # CONNECT_TO_ME, such a peer stays cut off until the link times out.
    node, links = _node()
    kept, other = Endpoint("203.0.113.50", 2000), Endpoint("203.0.113.50", 21200)
    node.on_link_event(ObservedEndpoint(kept, P), now=20.0)
    assert Roamed("rebound") in _events(node)
    assert all(c.endpoints == (OLD, kept) for _, _, c in _ctms(links))
    links.sent.clear()
    node.on_link_event(ObservedEndpoint(other, B), now=20.01)
    ctms = _ctms(links)
    assert {m.dst for _, m, _ in ctms} == {P, B}
    assert all(c.endpoints == (OLD, other, kept) for _, _, c in ctms)
    assert node.stats["roam_readvertised"] == 1
    # The same peer's further news, or news that we advertised already, is not re-sent.
    links.sent.clear()
    node.on_link_event(ObservedEndpoint(Endpoint("203.0.113.50", 21201), B), now=20.5)
    node.on_link_event(ObservedEndpoint(kept, B), now=20.6)
    assert _ctms(links) == []
    # Nor is anything once the roam is ROAM_REBIND_MIN_S old.
    q = NodeId(7 << 150)
    node.on_link_event(
        LinkUp(q, fake_certificate(q), Endpoint("203.0.113.77", 5800), None), now=40.0
    )
    node.on_link_event(ObservedEndpoint(Endpoint("203.0.113.50", 3000), q), now=40.0)
    assert node.stats["roam_readvertised"] == 1
