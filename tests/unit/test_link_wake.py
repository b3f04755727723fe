"""A node that did not run for two minutes (SIGSTOP, a suspended laptop) and its sessions.

Its peer timed the session out meanwhile. Waking, every session of the stopped node looks
silent for the whole gap; without :meth:`LinkLayer.woke` the link timeout closed them all at
the first timer (and the node rejoined the network from nothing: 24 s in the 30-daemon soak).
With it, each session is keyed afresh and is up again after one round trip.
"""

from __future__ import annotations

import random

from ipop.core import NodeCore
from ipop.link.events import LinkDown, LinkEvent, LinkUp
from ipop.link.layer import LinkLayer
from ipop.testing.clock import SIM_EPOCH
from ipop.testing.identities import alice_and_bob, make_identity, make_network
from ipop.types import Endpoint
from ipop.wire.header import TYPE_HANDSHAKE_INIT

NOW = SIM_EPOCH
A_EP = Endpoint("198.51.100.1", 5800)
B_EP = Endpoint("203.0.113.2", 5800)
GAP_S = 120.0


def _events(ep: LinkLayer) -> list[LinkEvent]:
    out = []
    while (ev := ep.next_event()) is not None:
        out.append(ev)
    return out


def _deliver(src: LinkLayer, dst: LinkLayer, src_ep: Endpoint, now: float) -> int:
    batch = src.datagrams_to_send(now=now)
    for data, _ in batch:
        dst.receive_datagram(data, src_ep, now=now)
    return len(batch)


def _linked_pair() -> tuple[LinkLayer, LinkLayer]:
    ida, idb = alice_and_bob(now=NOW)
    a = LinkLayer(ida, rng=random.Random(1))
    b = LinkLayer(idb, rng=random.Random(2))
    a.connect(B_EP, now=NOW, expected=idb.node_id)
    _deliver(a, b, A_EP, NOW)
    _deliver(b, a, B_EP, NOW)
    _deliver(a, b, A_EP, NOW)
    assert a.is_up(b.local_id) and b.is_up(a.local_id)
    _events(a), _events(b)
    return a, b


def _stop_a_for_the_gap(a: LinkLayer, b: LinkLayer) -> float:
    """b runs its timers through the gap (its session with a times out); a runs nothing."""
    t = NOW
    while t < NOW + GAP_S:
        t += 1.0
        b.handle_timer(now=t)
        b.datagrams_to_send(now=t)  # keepalives to a, lost: a is stopped
    assert not b.is_up(a.local_id)
    assert any(isinstance(e, LinkDown) for e in _events(b))
    return t


def test_a_woken_node_keys_its_sessions_afresh_instead_of_closing_them() -> None:
    a, b = _linked_pair()
    t = _stop_a_for_the_gap(a, b)
    started = a.woke(now=t)
    a.handle_timer(now=t)
    assert started == 1 and a.is_up(b.local_id)
    assert not [e for e in _events(a) if isinstance(e, LinkDown)]
    inits = [d for d, p in a.datagrams_to_send(now=t) if d[0] == TYPE_HANDSHAKE_INIT]
    assert len(inits) == 1
    b.receive_datagram(inits[0], A_EP, now=t)
    _deliver(b, a, B_EP, t + 0.05)
    _deliver(a, b, A_EP, t + 0.05)
    assert a.is_up(b.local_id) and b.is_up(a.local_id)
    assert any(isinstance(e, LinkUp) for e in _events(b))
    # Nothing left to time out: a minute later both still hold the session.
    for s in range(1, 61):
        for ep, other, at in ((a, b, A_EP), (b, a, B_EP)):
            ep.handle_timer(now=t + s)
            _deliver(ep, other, at, t + s)
    assert a.is_up(b.local_id) and b.is_up(a.local_id)


def test_without_waking_every_session_closes_at_the_first_timer() -> None:
    """What woke() prevents (and what still happens to a peer that is really gone)."""
    a, b = _linked_pair()
    t = _stop_a_for_the_gap(a, b)
    a.handle_timer(now=t)
    assert not a.is_up(b.local_id)
    assert [e.reason for e in _events(a) if isinstance(e, LinkDown)] == ["timeout"]


def test_a_woken_node_still_closes_a_peer_that_never_answers() -> None:
    a, b = _linked_pair()
    t = _stop_a_for_the_gap(a, b)
    a.woke(now=t)
    s = t
    while a.is_up(b.local_id) and s < t + 60:
        s += 1.0
        a.handle_timer(now=s)
        a.datagrams_to_send(now=s)  # b is gone: nothing answers
    assert not a.is_up(b.local_id)
    assert s - t <= a.config.handshake_timeout_s + 1.0


def test_node_core_wakes_after_a_gap_in_its_timers_only() -> None:
    ca = make_network("wake", now=NOW - 60)
    core = NodeCore(make_identity(ca, "c", now=NOW - 60), rng=random.Random(1), bootstrap=[])
    core.start(now=NOW)
    t = NOW
    for _ in range(30):  # running: timers at least every overlay tick
        t += 1.0
        core.handle_timer(now=t)
    assert core.stats["woke"] == 0
    core.handle_timer(now=t + 130.0)  # stopped for two minutes
    assert core.stats["woke"] == 1
    assert core.link.stats["woke"] == 1 and core.overlay.stats["roamed_woke"] == 1
