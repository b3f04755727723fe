"""ipop.link.handshakes.Handshakes through its public interface, without a LinkLayer around it:
two of them exchange Init and Resp by hand, with the session layer's four services faked."""

from __future__ import annotations

import random

from ipop.identity import NetworkCA
from ipop.link.config import LINK_DROP_REASONS
from ipop.link.cookie import InitGuard
from ipop.link.events import HandshakeFailed, LinkUp
from ipop.link.handshakes import Handshakes
from ipop.link.layer import LinkLayer
from ipop.link.peer import Peer
from ipop.testing.clock import SIM_EPOCH
from ipop.testing.identities import make_identity, make_network
from ipop.testing.link_parts import SharedRecorder
from ipop.types import Endpoint

NOW = SIM_EPOCH
A_EP = Endpoint("198.51.100.1", 5800)
B_EP = Endpoint("203.0.113.2", 5800)
C_EP = Endpoint("203.0.113.3", 5800)


class Side(SharedRecorder):
    """One Handshakes over the tables a LinkLayer would share with it."""

    def __init__(self, name: str, seed: int, ca: NetworkCA) -> None:
        super().__init__(seed=seed)
        self.identity = make_identity(ca, name, now=NOW - 60)
        self.probed: list[Peer] = []
        self.relayed: list[Peer] = []
        self.hs = Handshakes(
            self.identity,
            self.shared,
            probe_path=lambda st, now: self.probed.append(st),
            relayed=lambda st, now: self.relayed.append(st),
        )


def pair() -> tuple[Side, Side]:
    ca = make_network(now=NOW - 60)
    return Side("alice", 1, ca), Side("bob", 2, ca)


def test_a_handshake_completes_through_the_public_interface() -> None:
    a, b = pair()
    a.hs.initiate(B_EP, b.identity.node_id, NOW)
    assert a.hs.expecting(b.identity.node_id)
    assert a.hs.expecting_on(b.identity.node_id, B_EP)
    assert not a.hs.expecting_on(b.identity.node_id, C_EP)
    assert a.hs.expected_peers() == {b.identity.node_id}
    assert a.wakes == 1
    ((init, to),) = a.take()
    assert to == B_EP
    b.hs.on_init(init, A_EP, NOW + 0.01)
    ((resp, back),) = b.take()
    assert back == A_EP and b.stats["handshake_answered"] == 1
    st_b = b.peers[a.identity.node_id]
    assert len(st_b.pending) == 1 and not st_b.up  # the responder waits for key confirmation
    a.hs.on_resp(resp, B_EP, NOW + 0.02)
    st_a = a.peers[b.identity.node_id]
    assert st_a.up and st_a.current is not None and st_a.path == B_EP
    assert not a.hs.expecting(b.identity.node_id)
    (up,) = a.events
    assert isinstance(up, LinkUp) and up.peer == b.identity.node_id
    # The key confirmation is sealed (by the layer) under the new keys, with nothing in it.
    assert a.sealed == [(st_a, st_a.current, b"")] and a.take() == [(b"", B_EP)]
    assert a.probed == [st_a]
    # The initiator's first DATA confirms the responder's pending keys.
    kp = next(iter(st_b.pending.values()))
    b.hs.on_older_keys(st_b, kp, A_EP, NOW + 0.03)
    assert st_b.up and st_b.current is kp and not st_b.pending
    assert isinstance(b.events[-1], LinkUp)
    assert set(a.drops) <= LINK_DROP_REASONS and not b.drops


def test_a_retransmitted_init_gets_the_same_resp_again() -> None:
    a, b = pair()
    a.hs.initiate(B_EP, None, NOW)
    ((init, _),) = a.take()
    b.hs.on_init(init, A_EP, NOW)
    ((resp, _),) = b.take()
    b.hs.on_init(init, A_EP, NOW + 1.0)
    assert b.take() == [(resp, A_EP)]
    assert b.stats["handshake_reanswered"] == 1


def test_initiate_upgrades_a_one_shot_punch_instead_of_starting_another() -> None:
    a, _ = pair()
    a.hs.initiate(B_EP, None, NOW, retransmit=False, timeout_s=1.0)
    assert len(a.take()) == 1
    assert a.hs.next_time(float("inf")) == NOW + 1.0  # only the deadline: no retry
    a.hs.initiate(B_EP, None, NOW + 0.5)
    assert a.take() == []  # the same initiation, no second Init
    cfg = a.config
    assert a.hs.next_time(float("inf")) == NOW + 0.5 + cfg.handshake_retry_s


def test_retransmit_resends_the_same_init_then_fails() -> None:
    a, b = pair()
    a.hs.initiate(B_EP, b.identity.node_id, NOW)
    ((first, _),) = a.take()
    cfg = a.config
    a.hs.retransmit(NOW + cfg.handshake_retry_s)
    assert a.take() == [(first, B_EP)] and a.stats["handshake_retransmitted"] == 1
    a.hs.retransmit(NOW + cfg.handshake_timeout_s)
    (failed,) = a.events
    assert isinstance(failed, HandshakeFailed) and failed.path == B_EP
    assert not a.hs.expecting(b.identity.node_id)
    assert a.hs.next_time(123.0) == 123.0


def test_cancel_forgets_initiations_expecting_the_peer_only() -> None:
    a, b = pair()
    a.hs.initiate(B_EP, b.identity.node_id, NOW)
    a.hs.initiate(C_EP, None, NOW)
    a.hs.cancel(b.identity.node_id)
    assert a.hs.expected_peers() == {None}


def test_forget_old_drops_freshness_entries_past_the_skew_window() -> None:
    a, b = pair()
    a.hs.initiate(B_EP, None, NOW)
    ((init, _),) = a.take()
    b.hs.on_init(init, A_EP, NOW)
    assert b.hs.freshness_entries() == 1
    b.hs.forget_old(NOW + 1.0)
    assert b.hs.freshness_entries() == 1
    b.hs.forget_old(NOW + b.config.handshake_clock_skew_s + 1.0)
    assert b.hs.freshness_entries() == 0


def test_the_layer_guard_is_the_handshakes_guard() -> None:
    ca = make_network(now=NOW - 60)
    link = LinkLayer(make_identity(ca, "alice", now=NOW - 60), rng=random.Random(1))
    assert link.guard is link.handshakes.guard
    guard = InitGuard()
    link.guard = guard
    assert link.handshakes.guard is guard
