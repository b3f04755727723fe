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

from ipop.link.endpoint import (
    LinkDown,
    LinkEndpoint,
    LinkEvent,
    LinkMessage,
    LinkPathChanged,
    LinkUp,
)
from ipop.testing.clock import SIM_EPOCH
from ipop.testing.identities import make_identity, make_network
from ipop.types import Endpoint, Path
from ipop.wire.handshake import MAC2_BYTES

NOW = SIM_EPOCH
A_EP = Endpoint("198.51.100.1", 5800)
A_NEW_EP = Endpoint("198.51.100.1", 40123)  # a new NAT mapping after the restart
B_EP = Endpoint("203.0.113.2", 5800)


def _events(ep: LinkEndpoint) -> list[LinkEvent]:
    out = []
    while (ev := ep.next_event()) is not None:
        out.append(ev)
    return out


def _out(ep: LinkEndpoint, now: float) -> list[tuple[bytes, Path]]:
    return ep.datagrams_to_send(now=now)


def _deliver(src: LinkEndpoint, dst: LinkEndpoint, src_ep: Endpoint, now: float) -> int:
    batch = _out(src, now)
    for data, _ in batch:
        dst.receive_datagram(data, src_ep, now=now)
    return len(batch)


@pytest.mark.parametrize("restarted_at", [A_EP, A_NEW_EP])
def test_peer_replaces_the_dead_session_on_the_new_authenticated_handshake_only(
    restarted_at: Endpoint,
) -> None:
    ca = make_network(now=NOW - 60)
    ida = make_identity(ca, "alice", now=NOW - 60)
    idb = make_identity(ca, "bob", now=NOW - 60)
    a = LinkEndpoint(ida, rng=random.Random(1))
    b = LinkEndpoint(idb, rng=random.Random(2))
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
    a2 = LinkEndpoint(ida, rng=random.Random(3))
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
