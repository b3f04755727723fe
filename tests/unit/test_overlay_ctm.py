"""The CONNECT_TO_ME agent (ipop.overlay.ctm.CtmAgent) through its public interface: our asks
in flight and their expiry, the endpoint filters and budgets of connect-backs, and its drop
reasons (one checked list). The node it belongs to is driven over a recording link layer."""

from __future__ import annotations

import inspect
import random
import re

import ipop.overlay.ctm as ctm_module
from ipop.link.events import LinkUp
from ipop.overlay.ctm import CTM_DROPS
from ipop.overlay.messages import (
    FLAG_EXACT,
    KIND_CTM_REPLY,
    ConnectToMe,
    ConnectToMeReply,
    Purpose,
    Routed,
    decode_message,
)
from ipop.overlay.node import OverlayConfig, OverlayNode
from ipop.overlay.table import ConnectionKind
from ipop.testing.fake_links import RecordingLinks, fake_certificate
from ipop.testing.fake_origin import FakeKeyring, FakeOrigin
from ipop.types import Endpoint, NodeId

ME = NodeId(1 << 150)
FORWARDER = NodeId(3 << 150)
FORWARDER_EP = Endpoint("203.0.113.9", 5800)
TARGET = NodeId(5 << 150)
KEYRING = FakeKeyring()


def _node(*, linked: bool = True) -> tuple[OverlayNode, RecordingLinks]:
    links = RecordingLinks(ME)
    cfg = OverlayConfig(local_endpoints=(Endpoint("198.18.0.2", 5800),), far_links=False)
    node = OverlayNode(
        ME, links, rng=random.Random(1), config=cfg, bootstrap=[], origin=FakeOrigin(ME, KEYRING)
    )
    if linked:
        node.on_link_event(
            LinkUp(FORWARDER, fake_certificate(FORWARDER), FORWARDER_EP, None), now=1.0
        )
    links.sent.clear()
    return node, links


def _sent_ctms(links: RecordingLinks) -> list[tuple[NodeId, Routed, ConnectToMe]]:
    out = []
    for peer, data in links.sent:
        msg = decode_message(data)
        if isinstance(msg, Routed) and msg.kind != KIND_CTM_REPLY:
            out.append((peer, msg, ConnectToMe.decode(msg.payload)))
    return out


def test_an_ask_is_in_flight_until_its_answer_is_overdue() -> None:
    node, links = _node()
    ctm = node.ctm
    assert ctm.send(TARGET, Purpose.NEAR, exact=True, now=2.0)
    ((peer, msg, body),) = _sent_ctms(links)
    assert peer == FORWARDER and msg.dst == TARGET and body.purpose is Purpose.NEAR
    assert body.endpoints == node.endpoints()
    assert ctm.pending(Purpose.NEAR) == 1 and ctm.pending(Purpose.FAR) == 0
    assert node.stats["ctm_sent_near"] == 1
    timeout = node.config.ctm_timeout_s
    assert ctm.expire(2.0 + timeout - 0.01) == []
    assert ctm.expire(2.0 + timeout) == [TARGET]
    assert ctm.pending(Purpose.NEAR) == 0


def test_a_join_is_outstanding_until_overdue_and_is_no_unanswered_near_ask() -> None:
    node, _ = _node(linked=False)
    ctm = node.ctm
    assert not ctm.join_outstanding(0.5)
    # The first link makes a node that has not joined yet send a JOIN over it.
    node.on_link_event(LinkUp(FORWARDER, fake_certificate(FORWARDER), FORWARDER_EP, None), now=1.0)
    assert ctm.join_outstanding(1.5) and ctm.pending(Purpose.JOIN) == 1
    timeout = node.config.ctm_timeout_s
    assert not ctm.join_outstanding(1.0 + timeout)
    assert ctm.expire(1.0 + timeout) == []
    assert ctm.pending(Purpose.JOIN) == 0


def test_an_ask_with_no_hop_is_not_sent() -> None:
    node, links = _node(linked=False)
    assert not node.ctm.send(TARGET, Purpose.NEAR, exact=True, now=2.0)
    assert node.stats["ctm_no_route"] == 1
    assert not links.sent and node.ctm.pending(Purpose.NEAR) == 0


def test_a_peer_endpoints_are_cut_to_one_lan_and_a_few_in_all() -> None:
    node, _ = _node()
    cap = node.config.connect_back_max
    lans = [Endpoint(f"198.18.0.{i}", 5800) for i in range(3, 6)]
    public = [Endpoint(f"203.0.113.{i}", 5800) for i in range(20, 20 + cap + 2)]
    picked = node.ctm.few([*lans, *public])
    assert picked == [lans[0], *public[: cap - 1]]
    assert node.stats["connect_endpoints_capped"] == len(lans) + len(public) - cap


def test_connect_backs_spend_their_address_budget_and_count_the_rest() -> None:
    node, _ = _node()
    cfg = node.config
    victim = [Endpoint("203.0.113.77", 7000 + i) for i in range(cfg.connect_back_max)]
    spent = 0
    for _ in range(cfg.connect_back_ip_burst + 2):
        spent += len(node.ctm.connect_back_endpoints(victim, 5.0))
    assert spent == cfg.connect_back_ip_burst
    assert node.drops["connect_address_over_budget"] > 0
    assert set(node.drops) <= CTM_DROPS


def test_an_answer_nobody_asked_for_or_from_the_wrong_node_is_dropped() -> None:
    node, links = _node()
    ctm = node.ctm
    reply = ConnectToMeReply(12345, (Endpoint("203.0.113.60", 1),), ())
    ctm.on_reply(_reply_from(TARGET, reply), 3.0)
    assert node.drops == {"unknown_token": 1}
    ctm.send(TARGET, Purpose.NEAR, exact=True, now=3.0)
    ((_, _, body),) = _sent_ctms(links)
    wrong = NodeId(6 << 150)
    ctm.on_reply(_reply_from(wrong, ConnectToMeReply(body.token, (), ())), 3.1)
    assert node.drops["ctm_wrong_responder"] == 1
    assert set(node.drops) <= CTM_DROPS
    assert ctm.peer_hosts(wrong) == frozenset()


def test_an_answer_starts_a_link_attempt_and_its_endpoints_are_remembered() -> None:
    node, links = _node()
    ctm = node.ctm
    ctm.send(TARGET, Purpose.SHORTCUT, exact=True, now=3.0)
    ((_, _, body),) = _sent_ctms(links)
    ep = Endpoint("203.0.113.61", 41000)
    ctm.on_reply(_reply_from(TARGET, ConnectToMeReply(body.token, (ep,), ())), 3.1)
    assert ep in [path for path, _, _ in links.connects]
    assert ctm.peer_hosts(TARGET) == {ep.host}
    assert ctm.pending(Purpose.SHORTCUT) == 0


def test_the_agent_counts_exactly_the_listed_drop_reasons() -> None:
    source = inspect.getsource(ctm_module)
    assert set(re.findall(r'self\._drops\["([a-z_]+)"\]', source)) == CTM_DROPS


def _reply_from(src: NodeId, reply: ConnectToMeReply) -> Routed:
    return FakeOrigin(src, KEYRING).routed(
        FLAG_EXACT, 64, KIND_CTM_REPLY, ME, None, reply.encode(), now=3.0
    )


def test_a_shortcut_asked_while_a_far_attempt_is_under_way_is_on_the_link_it_brings() -> None:
    node, links = _node()
    ctm = node.ctm
    ctm.send(TARGET, Purpose.FAR, exact=True, now=3.0)
    ((_, _, body),) = _sent_ctms(links)
    ep = Endpoint("203.0.113.61", 41000)
    ctm.on_reply(_reply_from(TARGET, ConnectToMeReply(body.token, (ep,), ())), 3.1)
    node.request_shortcut(TARGET, now=3.2)  # traffic asks once, while the far attempt runs
    node.on_link_event(LinkUp(TARGET, fake_certificate(TARGET), ep, None), now=3.3)
    (row,) = [c for c in node.snapshot().connections if c.peer == TARGET]
    # Before: the request was dropped and the link came up as FAR only.
    assert ConnectionKind.SHORTCUT in row.kinds and ConnectionKind.FAR in row.kinds
