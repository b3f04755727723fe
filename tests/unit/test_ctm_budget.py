"""What CONNECT_TO_ME and NEIGHBOURS make an overlay node do, bounded (issue 13, finding 4).

The node is driven by hand over a recording link layer: every ``connect`` it asks for is a
handshake sent to an address a peer named. ``src`` of a routed message is taken as
authenticated (routed messages are signed by their source), so a CTM here stands for one from
a certified member; the endpoints inside it are only that member's word.
"""

from __future__ import annotations

import dataclasses
import random

from ipop.link.events import LinkMessage, LinkUp
from ipop.overlay.messages import (
    FLAG_EXACT,
    KIND_CTM,
    ConnectToMe,
    Neighbours,
    Purpose,
)
from ipop.overlay.node import OverlayConfig, OverlayNode
from ipop.ratelimit import KeyedBuckets
from ipop.testing.fake_links import fake_certificate
from ipop.testing.fake_origin import FakeKeyring, FakeOrigin
from ipop.types import Endpoint, NodeId, Path

ME = NodeId(1 << 150)
FORWARDER = NodeId(3 << 150)
FORWARDER_EP = Endpoint("203.0.113.9", 5800)
T0 = 100.0


class _Links:
    """Records every handshake the overlay starts (path, retransmitted?); sends succeed."""

    def __init__(self, local_id: NodeId) -> None:
        self.local_id = local_id
        self.connects: list[tuple[Path, bool]] = []
        self.sent: list[tuple[NodeId, bytes]] = []

    def connect(
        self,
        path: Path,
        *,
        now: float,
        expected: NodeId | None = None,
        retransmit: bool = True,
        timeout_s: float | None = None,
    ) -> None:
        self.connects.append((path, retransmit))

    def send(self, peer: NodeId, payload: bytes, *, now: float) -> None:
        self.sent.append((peer, payload))

    def close(self, peer: NodeId, *, now: float) -> None: ...

    def is_up(self, peer: NodeId) -> bool:
        return True


KEYRING = FakeKeyring()


def _node() -> tuple[OverlayNode, _Links]:
    links = _Links(ME)
    cfg = OverlayConfig(local_endpoints=(Endpoint("203.0.113.1", 5800),), far_links=False)
    node = OverlayNode(
        ME, links, rng=random.Random(1), config=cfg, bootstrap=[], origin=FakeOrigin(ME, KEYRING)
    )
    node.start(now=0.0)
    node.on_link_event(LinkUp(FORWARDER, fake_certificate(FORWARDER), FORWARDER_EP, None), now=1.0)
    links.connects.clear()
    return node, links


def _ctm(node: OverlayNode, requester: NodeId, endpoints: tuple[Endpoint, ...], now: float) -> None:
    """A CTM from ``requester`` (not linked to us) arrives through FORWARDER."""
    body = ConnectToMe(requester.value & 0xFFFF, Purpose.SHORTCUT, FORWARDER, endpoints).encode()
    msg = FakeOrigin(requester, KEYRING).routed(FLAG_EXACT, 64, KIND_CTM, ME, None, body, now=now)
    msg = dataclasses.replace(msg, hops=1)
    node.on_link_event(LinkMessage(FORWARDER, msg.encode(), FORWARDER_EP), now=now)


def _third_parties(n: int, *, base: int = 1) -> tuple[Endpoint, ...]:
    return tuple(Endpoint(f"198.51.100.{base + i}", 7000 + i) for i in range(n))


def test_a_ctm_naming_eight_third_parties_gets_three_single_inits() -> None:
    node, links = _node()
    _ctm(node, NodeId(5 << 150), _third_parties(8), T0)
    assert len(links.connects) == 3
    assert all(retransmit is False for _, retransmit in links.connects)


def test_many_ctms_from_one_requester_stay_within_its_bucket() -> None:
    node, links = _node()
    requester = NodeId(5 << 150)
    cfg = node.config
    for i in range(40):  # 40 CTMs in 2 s, each naming 8 fresh addresses
        _ctm(node, requester, _third_parties(8, base=1 + 6 * (i % 40)), T0 + i * 0.05)
    acted_on = cfg.ctm_burst + 2.0 / cfg.ctm_refill_s
    assert len(links.connects) <= acted_on * cfg.connect_back_max
    assert node.drops["ctm_rate_limited"] >= 40 - acted_on
    # and over time: at most one CTM per refill interval is acted on
    links.connects.clear()
    for i in range(100):  # one every 0.2 s for 20 s
        _ctm(node, requester, _third_parties(3, base=1 + (3 * i) % 240), T0 + 10 + i * 0.2)
    assert len(links.connects) <= (cfg.ctm_burst + 20 / cfg.ctm_refill_s) * cfg.connect_back_max


def test_many_requesters_naming_one_victim_share_its_budget() -> None:
    node, links = _node()
    cfg = node.config
    victim = "198.51.100.77"
    for i in range(50):  # 50 members, one CTM each, all naming ports of one address
        eps = tuple(Endpoint(victim, 7000 + 8 * i + k) for k in range(8))
        _ctm(node, NodeId((i + 10) << 140), eps, T0 + i * 0.02)
    to_victim = [p for p, _ in links.connects if isinstance(p, Endpoint) and p.host == victim]
    assert len(to_victim) <= cfg.connect_back_ip_burst + 1
    assert node.drops["connect_address_over_budget"] > 0


def test_connect_backs_in_flight_are_capped() -> None:
    node, links = _node()
    cfg = node.config
    for i in range(3 * cfg.connect_back_inflight):
        _ctm(node, NodeId((i + 10) << 140), _third_parties(1, base=1 + i % 250), T0)
    assert len(links.connects) == cfg.connect_back_inflight
    assert node.drops["connect_back_busy"] == 2 * cfg.connect_back_inflight


def test_a_neighbours_pull_is_answered_at_most_twice_a_second_past_a_burst() -> None:
    node, links = _node()
    links.sent.clear()
    pull = Neighbours(True, ()).encode()
    for i in range(100):  # 20 pulls a second for 5 s
        node.on_link_event(LinkMessage(FORWARDER, pull, FORWARDER_EP), now=T0 + i * 0.05)
    answers = [p for peer, p in links.sent if peer == FORWARDER and p[:1] == pull[:1]]
    assert len(answers) <= 4 + 5 / node.config.neighbours_reply_min_s
    assert node.drops["neighbours_pull_too_often"] >= 100 - 14


def test_buckets_refill_and_stay_bounded() -> None:
    b: KeyedBuckets[str] = KeyedBuckets(1.0, 2, max_keys=3)
    assert [b.take("x", 0.0) for _ in range(3)] == [True, True, False]
    assert b.take("x", 1.0) and not b.take("x", 1.0)
    for k in "abcd":
        b.take(k, 2.0)
    assert len(b) == 3  # "x" and "a", touched longest ago, went


def test_peer_hosts_are_the_public_addresses_a_peer_gave_in_its_own_ctm() -> None:
    node, _ = _node()
    requester = NodeId(5 << 150)
    lan, public = Endpoint("198.18.0.5", 5800), Endpoint("203.0.113.50", 41000)
    assert node.peer_hosts(requester) == frozenset()
    _ctm(node, requester, (lan, public), T0)
    assert node.peer_hosts(requester) == {"203.0.113.50"}  # a LAN address is nobody's proof
    assert node.peer_hosts(FORWARDER) == {FORWARDER_EP.host}  # a direct link's path
