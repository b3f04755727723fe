"""ipop.overlay.upkeep through RingUpkeep's public interface, on an overlay node driven by
hand: the near set and its events, neighbour lists and the pull budget, gossip timing, silent
near peers pulled then closed, a wake-up, routable, the policies' near probe."""

from __future__ import annotations

import random

from ipop.link.events import LinkDown, LinkUp
from ipop.overlay.events import ConnectionAdded, Joined, Routable
from ipop.overlay.messages import Neighbours, decode_message
from ipop.overlay.node import OverlayConfig, OverlayNode
from ipop.overlay.table import ConnectionKind
from ipop.overlay.upkeep import NEAR_DROPS, RingUpkeep
from ipop.testing.fake_links import RecordingLinks, fake_certificate
from ipop.testing.fake_origin import FakeKeyring, FakeOrigin
from ipop.types import Endpoint, NodeId

ME = NodeId(1 << 150)
# On the ring after ME: P, then C, then B (our predecessor when these are all we hold).
P, C, B = NodeId(3 << 150), NodeId(4 << 150), NodeId(5 << 150)
P_EP, C_EP, B_EP = (
    Endpoint("203.0.113.9", 5800),
    Endpoint("203.0.113.20", 5800),
    Endpoint("203.0.113.30", 41000),
)
CFG = OverlayConfig(far_links=False, near_per_side=1)
KEYRING = FakeKeyring()


def _node() -> tuple[OverlayNode, RingUpkeep, RecordingLinks]:
    links = RecordingLinks(ME)
    node = OverlayNode(
        ME, links, rng=random.Random(1), config=CFG, bootstrap=[], origin=FakeOrigin(ME, KEYRING)
    )
    node.start(now=0.0)
    return node, node.near_upkeep, links


def _events(node: OverlayNode) -> list[object]:
    out = []
    while (ev := node.next_event()) is not None:
        out.append(ev)
    return out


def _lists(links: RecordingLinks) -> list[tuple[NodeId, Neighbours]]:
    out = [(p, decode_message(d)) for p, d in links.sent]
    return [(p, m) for p, m in out if isinstance(m, Neighbours)]


def _up(node: OverlayNode, peer: NodeId, ep: Endpoint, now: float) -> None:
    node.on_link_event(LinkUp(peer, fake_certificate(peer), ep, None), now=now)


def test_the_near_set_follows_the_table_and_is_told() -> None:
    node, upkeep, _ = _node()
    _up(node, B, B_EP, 1.0)
    assert upkeep.near == {B} == node.near_peers()
    assert ConnectionAdded(B, ConnectionKind.NEAR) in _events(node)
    _up(node, P, P_EP, 1.0)  # our successor; B stays our predecessor
    _up(node, C, C_EP, 1.0)  # behind P on one side, behind B on the other: not near
    assert upkeep.near == {P, B}
    assert ConnectionAdded(P, ConnectionKind.NEAR) in _events(node)
    upkeep.last_probe = 5.0
    node.on_link_event(LinkDown(P, "test"), now=6.0)  # a near peer gone: repair at once
    assert upkeep.near == {C, B} and upkeep.last_probe == float("-inf")
    assert ConnectionAdded(C, ConnectionKind.NEAR) in _events(node)
    assert P not in upkeep.heard


def test_a_pull_is_answered_within_its_burst_then_counted() -> None:
    node, upkeep, links = _node()
    _up(node, P, P_EP, 1.0)
    links.sent.clear()
    pull = Neighbours(True, (B,))
    for _ in range(6):
        upkeep.on_neighbours(pull, P, 2.0)
    answers = _lists(links)
    assert len(answers) == 4 and all(m == Neighbours(False, (P,)) for _, m in answers)
    assert node.drops["neighbours_pull_too_often"] == 2
    assert "neighbours_pull_too_often" in NEAR_DROPS
    assert B in node.near_keeper.seen  # what P told us is weighed


def test_gossip_goes_every_interval_and_after_a_near_change() -> None:
    node, upkeep, links = _node()
    _up(node, P, P_EP, 1.0)
    links.sent.clear()
    upkeep.gossip(1.0)  # the near set changed: gossip at once
    assert _lists(links) == [(P, Neighbours(False, (P,)))]
    links.sent.clear()
    upkeep.gossip(1.5)
    assert _lists(links) == []  # nothing changed, the interval has not passed
    upkeep.gossip(1.0 + 1.2 * CFG.gossip_interval_s)
    assert len(_lists(links)) == 1


def test_a_silent_near_peer_is_pulled_then_closed_and_a_wake_up_forgives() -> None:
    node, upkeep, links = _node()
    _up(node, P, P_EP, 1.0)
    now = 100.0
    links.sent.clear()
    upkeep.heard[P] = now - CFG.near_suspect_s - 0.5
    upkeep.check_silent(now)
    assert _lists(links) == [(P, Neighbours(True, (P,)))] and not links.closed
    assert node.stats["near_silent_pulled"] == 1
    upkeep.heard[P] = now - CFG.near_dead_s - 0.5
    upkeep.woke(now)  # the silence was ours: suspect, not dead
    assert upkeep.heard[P] == now - CFG.near_suspect_s
    upkeep.check_silent(now)
    assert not links.closed
    upkeep.heard[P] = now - CFG.near_dead_s - 0.5
    upkeep.check_silent(now)
    assert links.closed == [P] and node.stats["near_silent_closed"] == 1
    assert P not in upkeep.near and not node.is_linked(P)


def test_routable_needs_the_join_answered() -> None:
    node, upkeep, _ = _node()
    _up(node, P, P_EP, 1.0)
    _events(node)
    upkeep.update_routable(2.0)
    assert not upkeep.routable and not node.routable
    upkeep.on_joined()
    upkeep.on_joined()  # the first answer counts
    upkeep.update_routable(2.0)
    assert upkeep.routable and node.routable
    assert _events(node) == [Joined(), Routable()]


def test_a_pull_around_and_the_policies_probe() -> None:
    node, upkeep, links = _node()
    _up(node, P, P_EP, 1.0)
    links.sent.clear()
    upkeep.pull([P], 2.0)
    assert _lists(links) == [(P, Neighbours(True, (P,)))]
    assert node.stats["no_route_pulled"] == 1
    upkeep.last_probe = float("-inf")
    upkeep.run_policies(3.0)  # a near probe is due: JOIN routed, lists pulled
    assert upkeep.last_probe == 3.0
