"""A peer restarted with the same identity (kill -9, no goodbye) and its old session.

The peer that stayed up replaces the dead session the moment the restarted node's new
handshake is authenticated (key confirmation), from the same endpoint or a new one, and never
earlier: the restarted node's bare Init, a replay of the old incarnation's Init and a forged
Init all leave the live session as it was (issue 13's guarantees). The restarted node, which
holds no session, answers the old session's DATA with nothing (invariant 1).
"""

from __future__ import annotations

import random

import pytest

from ipop import timing
from ipop.link import handshakes
from ipop.link.events import LinkDown, LinkEvent, LinkMessage, LinkPathChanged, LinkUp
from ipop.link.layer import LinkLayer
from ipop.testing.clock import SIM_EPOCH
from ipop.testing.identities import alice_and_bob, make_identity, make_network
from ipop.types import Endpoint, NodeId, Path, RelayPath
from ipop.wire.handshake import MAC2_BYTES
from ipop.wire.header import (
    DATA_HEADER,
    DATA_HEADER_BYTES,
    DATA_MIN_BYTES,
    TYPE_DATA,
    TYPE_HANDSHAKE_INIT,
)

NOW = SIM_EPOCH
A_EP = Endpoint("198.51.100.1", 5800)
A_NEW_EP = Endpoint("198.51.100.1", 40123)  # a new NAT mapping after the restart
B_EP = Endpoint("203.0.113.2", 5800)


def _events(ep: LinkLayer) -> list[LinkEvent]:
    out = []
    while (ev := ep.next_event()) is not None:
        out.append(ev)
    return out


def _out(ep: LinkLayer, now: float) -> list[tuple[bytes, Path]]:
    return ep.datagrams_to_send(now=now)


def _deliver(src: LinkLayer, dst: LinkLayer, src_ep: Endpoint, now: float) -> int:
    batch = _out(src, now)
    for data, _ in batch:
        dst.receive_datagram(data, src_ep, now=now)
    return len(batch)


@pytest.mark.parametrize("restarted_at", [A_EP, A_NEW_EP])
def test_peer_replaces_the_dead_session_on_the_new_authenticated_handshake_only(
    restarted_at: Endpoint,
) -> None:
    ida, idb = alice_and_bob(now=NOW)
    a = LinkLayer(ida, rng=random.Random(1))
    b = LinkLayer(idb, rng=random.Random(2))
    a.connect(B_EP, now=NOW, expected=idb.node_id)
    ((old_init, _),) = _out(a, NOW)
    b.receive_datagram(old_init, A_EP, now=NOW)
    _deliver(b, a, B_EP, NOW)
    _deliver(a, b, A_EP, NOW)
    assert a.is_up(idb.node_id) and b.is_up(ida.node_id)
    _events(a), _events(b)
    old_keys = b.peers()[0].keys_established_at

    # Alice is killed and restarted 2 s later: same identity, no session, no goodbye.
    t = NOW + 2
    a2 = LinkLayer(ida, rng=random.Random(3))
    b.send(ida.node_id, b"into the dead session", now=t)
    assert _deliver(b, a2, B_EP, t) == 1
    assert a2.drops == {"unknown_index": 1} and _out(a2, t) == [] and not _events(a2)

    # Nothing unauthenticated touches Bob's session: a replay of the old incarnation's Init,
    # and a forged one (a flipped signature bit) under the restarted node's name.
    b.receive_datagram(old_init, A_EP, now=t)
    a2.connect(B_EP, now=t)  # a remembered peer: its endpoint, whoever answers there
    ((new_init, _),) = _out(a2, t)
    sig_end = len(new_init) - MAC2_BYTES
    forged = new_init[: sig_end - 1] + bytes([new_init[sig_end - 1] ^ 1]) + new_init[sig_end:]
    b.receive_datagram(forged, restarted_at, now=t)
    assert b.drops == {"stale_handshake": 1, "bad_signature": 1}
    assert _out(b, t) == []
    # The real new Init: answered, but until its keys are confirmed the old session stands.
    b.receive_datagram(new_init, restarted_at, now=t)
    assert b.is_up(ida.node_id) and b.peers()[0].keys_established_at == old_keys
    assert not _events(b)

    # Key confirmation: Bob seals with the new keys at once, to where Alice now is.
    _deliver(b, a2, B_EP, t)
    assert isinstance(_events(a2)[0], LinkUp)
    _deliver(a2, b, restarted_at, t)
    info = b.peers()[0]
    assert info.keys_established_at == t and info.path == restarted_at
    moved = _events(b)
    assert not any(isinstance(ev, LinkDown) for ev in moved)
    assert moved == (
        [] if restarted_at == A_EP else [LinkPathChanged(ida.node_id, A_NEW_EP, "handshake")]
    )
    b.send(ida.node_id, b"hello again", now=t)
    _deliver(b, a2, B_EP, t)
    assert _events(a2) == [LinkMessage(idb.node_id, b"hello again", B_EP)]


def _session(a: LinkLayer, b: LinkLayer, a_path: Path, b_path: Path, now: float) -> None:
    """A keys a session with B: A's datagrams reach B over ``a_path``, B's reach A over
    ``b_path`` (the path names each side sees the other on)."""
    a.connect(b_path, now=now, expected=b.local_id)
    for _ in range(3):
        for data, _ in _out(a, now):
            b.receive_datagram(data, a_path, now=now)
        for data, _ in _out(b, now):
            a.receive_datagram(data, b_path, now=now)
    assert a.is_up(b.local_id) and b.is_up(a.local_id)
    _events(a), _events(b)


def _trio() -> tuple[LinkLayer, LinkLayer, LinkLayer, RelayPath, RelayPath]:
    """Alice, Bob and Alice restarted; the relay paths through Victor each side would see."""
    ca = make_network(now=NOW - 60)
    ida = make_identity(ca, "alice", now=NOW - 60)
    idb = make_identity(ca, "bob", now=NOW - 60)
    victor = make_identity(ca, "victor", now=NOW - 60).node_id
    a = LinkLayer(ida, rng=random.Random(1))
    b = LinkLayer(idb, rng=random.Random(2))
    a2 = LinkLayer(ida, rng=random.Random(3))
    return a, b, a2, RelayPath(via=victor, peer=ida.node_id), RelayPath(victor, idb.node_id)


def test_a_relay_takes_over_a_direct_path_that_went_silent() -> None:
    """Alice's punching socket (Bob's direct path to her) died with her; restarted, she can
    only reach Bob through a relay. Bob must move there once her handshake completes, not
    keep sealing into the dead direct path (he did: 15-20 s in tests/sim)."""
    a, b, a2, to_a, to_b = _trio()
    punched = Endpoint("198.51.100.1", 40999)
    _session(a, b, punched, B_EP, NOW)
    t = NOW + 4  # killed, restarted 2 s later, relayed link keyed after the relay wait
    _session(a2, b, to_a, to_b, t)
    assert b.peers()[0].path == to_a and b.peers()[0].keys_established_at == t


def test_a_relay_handshake_racing_a_live_direct_path_does_not_take_it_over() -> None:
    a, b, _, to_a, to_b = _trio()
    _session(a, b, A_EP, B_EP, NOW)
    b.receive_datagram(a.seal(b.local_id, b"fresh", now=NOW + 1)[0], A_EP, now=NOW + 1)
    # Alice's relay attempt, started alongside the direct one, completes a moment later.
    _session(a, b, to_a, to_b, NOW + 1.5)
    assert b.peers()[0].path == A_EP and b.stats["path_kept"] == 1


def test_restarted_node_keys_a_relayed_peer_afresh_through_its_relay() -> None:
    """Relayed peers are not remembered (their relay may be gone): the first DATA Bob relays
    into the session Alice lost makes her key one afresh, through that relay, to Bob only."""
    a, b, a2, to_a, to_b = _trio()
    _session(a, b, to_a, to_b, NOW)
    t = NOW + 2
    stale = b.seal(a.local_id, b"into the dead session", now=t)[0]
    a2.receive_datagram(stale, B_EP, now=t)  # direct: garbage for all she knows, no answer
    assert _out(a2, t) == []
    a2.receive_datagram(stale, to_b, now=t)
    ((init, path),) = _out(a2, t)
    assert path == to_b and a2.stats["rehandshake_relayed_unknown"] == 1
    a2.receive_datagram(stale, to_b, now=t + 1)  # at most one per handshake timeout
    assert _out(a2, t + 1) == []
    b.receive_datagram(init, to_a, now=t + 1)
    for data, _ in _out(b, t + 1):
        a2.receive_datagram(data, to_b, now=t + 1)
    for data, _ in _out(a2, t + 1):
        b.receive_datagram(data, to_a, now=t + 1)
    assert a2.is_up(b.local_id)
    assert b.peers()[0].keys_established_at == t + 1 and b.peers()[0].path == to_a
    assert a2.drops == {"unknown_index": 3}


def _down(events: list[LinkEvent]) -> list[LinkDown]:
    return [ev for ev in events if isinstance(ev, LinkDown)]


def test_a_session_its_peer_routed_around_is_checked_and_dropped_when_dead() -> None:
    """Alice's punching socket died with her; she routes to Bob over the ring (NodeCore
    calls peer_unlinked). Bob's re-key toward the dead path gets nothing: the session goes
    after timing.UNLINKED_CHECK_S, not at the link timeout."""
    a, b, _, _, _ = _trio()
    punched = Endpoint("198.51.100.1", 40999)
    _session(a, b, punched, B_EP, NOW)
    t = NOW + 3
    alice = a.local_id
    assert b.peer_unlinked(alice, now=t)
    ((init, path),) = _out(b, t)
    assert path == punched and init[0] == TYPE_HANDSHAKE_INIT  # a fresh Init, to that path
    assert not b.peer_unlinked(alice, now=t + 1)  # one check at a time
    b.handle_timer(now=t + timing.UNLINKED_CHECK_S - 0.01)
    assert b.is_up(alice)
    b.handle_timer(now=t + timing.UNLINKED_CHECK_S)
    assert not b.is_up(alice)
    assert _down(_events(b)) == [LinkDown(alice, "stale")]
    assert b.stats["link_down_stale"] == 1


def test_a_live_peer_keeps_its_session_through_a_check() -> None:
    """A replayed routed message (or a detour) makes Bob check a live session: Alice answers
    the re-key, nothing is torn down, and the next check waits a handshake timeout."""
    a, b, _, _, _ = _trio()
    _session(a, b, A_EP, B_EP, NOW)
    t = NOW + 3
    alice = a.local_id
    assert b.peer_unlinked(alice, now=t)
    for _ in range(3):
        for data, _ in _out(b, t):
            a.receive_datagram(data, B_EP, now=t)
        for data, _ in _out(a, t):
            b.receive_datagram(data, A_EP, now=t)
    b.handle_timer(now=t + timing.UNLINKED_CHECK_S)
    assert b.is_up(alice) and not _down(_events(b))
    assert b.peers()[0].keys_established_at == t
    assert not b.peer_unlinked(alice, now=t + timing.UNLINKED_CHECK_S + 1)
    assert b.peer_unlinked(alice, now=t + b.config.handshake_timeout_s)


def test_a_live_peer_is_checked_on_its_path_while_a_handshake_to_another_one_hangs() -> None:
    """Bob dials Alice's public endpoint too (a shortcut to every endpoint of a peer on his
    LAN, through a NAT that does not hairpin: it never completes) when her routed message
    makes him check their LAN session. The check must key the session's own path: it skipped
    the handshake while that other one hung, an idle Alice sent nothing within the check, and
    Bob tore the live session down on his side only (cold start, tests/sim/
    test_coldstart_keys.py: pairs on one LAN lost every ping until the silent-peer timer)."""
    a, b, _, _, _ = _trio()
    _session(a, b, A_EP, B_EP, NOW)
    alice = a.local_id
    public = Endpoint("203.0.113.77", 5800)
    b.connect(public, now=NOW, expected=alice)
    assert [p for _, p in _out(b, NOW)] == [public]  # lost: no hairpin
    t = NOW + 1
    assert b.peer_unlinked(alice, now=t)
    out = _out(b, t)
    assert [p for _, p in out] == [A_EP] and out[0][0][0] == TYPE_HANDSHAKE_INIT
    for _ in range(3):
        for data, _ in out:
            a.receive_datagram(data, B_EP, now=t)
        for data, _ in _out(a, t):
            b.receive_datagram(data, A_EP, now=t)
        out = [(d, p) for d, p in _out(b, t) if p == A_EP]
    b.handle_timer(now=t + timing.UNLINKED_CHECK_S)
    assert b.is_up(alice) and not _down(_events(b))


def test_a_live_peer_is_checked_although_a_one_shot_punch_of_ours_is_on_its_path() -> None:
    """Bob's connect-back punch (one Init, never retransmitted) toward Alice's LAN path was
    lost (she dropped it: their Inits crossed and her larger id won), then her routed message
    makes him check their session there. The check waited on that punch: an idle Alice sent
    nothing within the check and Bob tore the live session down on his side only (cold
    start, tests/sim/test_coldstart_keys.py seed 12: prc3-0 -> prc3-1 lost every ping 3 s
    later). The punch must retry instead."""
    a, b, _, _, _ = _trio()
    _session(a, b, A_EP, B_EP, NOW)
    alice = a.local_id
    b.handshakes.start(A_EP, alice, NOW, retransmit=False)
    assert [p for _, p in _out(b, NOW)] == [A_EP]  # dropped by Alice
    t = NOW + 1
    assert b.peer_unlinked(alice, now=t)
    now = t
    while now < t + timing.UNLINKED_CHECK_S:
        b.handle_timer(now=now)
        a.handle_timer(now=now)
        _deliver(b, a, B_EP, now)
        _deliver(a, b, A_EP, now)
        now += 0.05
    b.handle_timer(now=t + timing.UNLINKED_CHECK_S)
    assert b.is_up(alice) and not _down(_events(b))
    assert b.stats["handshake_retransmitted"] >= 1


def test_relayed_rekeys_are_bounded_whatever_ids_a_relay_names() -> None:
    """The relay names the origin: one that makes ids up gets a bounded number of our Inits
    (a global budget behind the per-peer limit), and the table of them stays bounded."""
    _, _, a2, to_a, _ = _trio()
    datagram = DATA_HEADER.pack(TYPE_DATA, 12345, 0) + bytes(DATA_MIN_BYTES - DATA_HEADER_BYTES)
    for i in range(1, 101):
        a2.receive_datagram(datagram, RelayPath(to_a.via, NodeId(i)), now=NOW)
    assert len(_out(a2, NOW)) == handshakes.RELAY_REKEY_BURST
    assert a2.stats["relayed_rekey_over_budget"] == 100 - handshakes.RELAY_REKEY_BURST
    assert a2.drops == {"unknown_index": 100}
    assert a2.handshakes.relay_rekeyed_entries() <= handshakes.RELAY_REKEYED_MAX
