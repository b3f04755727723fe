"""Virtual networks' revocation lists carried over a shared overlay's links (issue 17):
``NetworkCrls`` and the TYPE_CRL NETWORK message, in memory.

A member pushes its network CA's list; a stranger (an overlay-only node) carries it on, which
it can verify by the CA key but not forge; another member that is linked only to the stranger
installs it in its network trust. Lies (forged lists, chunks nobody asked for, minted CAs by
the dozen) are counted and change nothing beyond the stated bounds.
"""

from __future__ import annotations

import random

import pytest

from ipop.core import NodeCore
from ipop.dht.policy import RecordPolicy
from ipop.dht.record import Record, ip_key, namespace_of
from ipop.errors import RemoteProtocolError
from ipop.identity import CaTrust, NetworkCA, NodeIdentity, cert_serial
from ipop.overlay.messages import (
    CRL_CHUNK_BYTES,
    TYPE_CRL,
    CrlChunk,
    CrlOffer,
    NetworkCrl,
    decode_crl,
)
from ipop.revocation import MAX_NETWORK_LISTS, CrlGossip, NetworkCrls
from ipop.testing.identities import make_identity, make_network
from ipop.types import NodeId

NOW = 1_700_000_000.0
A, S, B, M = (NodeId(i) for i in (1, 2, 3, 4))


def _world() -> tuple[NetworkCA, NodeIdentity, bytes]:
    ca = make_network("labnet", now=NOW - 60)
    victim = make_identity(ca, "mallory", now=NOW - 60)
    # Enough entries for several chunks: the list crosses links in pieces.
    entries = [(cert_serial(victim.cert), NOW)] + [((1 << 150) + n, NOW) for n in range(60)]
    return ca, victim, ca.make_crl(entries, number=7, now=NOW)


def _member(ca: NetworkCA) -> tuple[NetworkCrls, CaTrust]:
    trust = ca.trust.fork()
    crls = NetworkCrls()
    crls.pin(trust)
    return crls, trust


def _exchange(nodes: dict[NodeId, NetworkCrls], *, rounds: int = 20) -> int:
    """Deliver every outgoing message until none is left; how many were delivered."""
    sent = 0
    for _ in range(rounds):
        moved = False
        for src, crls in nodes.items():
            for dst, payload in crls.outgoing():
                if dst in nodes:
                    moved = True
                    sent += 1
                    got = nodes[dst].receive(src, payload, now=NOW)
                    if got is not None:
                        nodes[dst].announce(got[0], [p for p in nodes if p != dst], source=src)
        if not moved:
            return sent
    raise AssertionError("the gossip never settled")


def test_network_message_round_trips_and_refuses_nesting_and_garbage() -> None:
    key = bytes(range(32))
    offer = NetworkCrl(key, CrlOffer(9).encode())
    assert decode_crl(offer.encode()) == offer
    chunk = NetworkCrl(key, CrlChunk(9, 100, 0, b"x" * 100).encode())
    assert decode_crl(chunk.encode()) == chunk
    bad = [
        NetworkCrl(key, offer.encode()).encode(),  # a NETWORK inside a NETWORK
        NetworkCrl(key, CrlChunk(9, 100, 0, b"x" * 100).encode()[:-1]).encode(),  # bad chunk
        bytes([TYPE_CRL, 0x03]) + key[:20],  # truncated key
        bytes([TYPE_CRL, 0x03]) + key,  # no inner message
    ]
    for data in bad:
        with pytest.raises(RemoteProtocolError):
            decode_crl(data)
    with pytest.raises(ValueError):
        NetworkCrl(key[:31], CrlOffer(1).encode()).encode()
    # A network chunk is no bigger than an overlay chunk of the old 1,000-byte size.
    full = NetworkCrl(key, CrlChunk(9, 2 * CRL_CHUNK_BYTES, 0, b"x" * CRL_CHUNK_BYTES).encode())
    assert len(full.encode()) <= 1014


def test_a_stranger_carries_a_members_list_to_a_member_it_cannot_reach_directly() -> None:
    ca, victim, crl = _world()
    a, a_trust = _member(ca)
    b, b_trust = _member(ca)
    stranger = NetworkCrls()
    a_trust.apply_crl(crl, now=NOW)
    key = a_trust.public_key_raw
    a.announce(key, [S], source=None)
    # Links A-S and S-B only: the member B hears the list through the stranger.
    nodes = {A: a, S: stranger}
    _exchange(nodes)
    assert stranger.holds(key) == 7
    assert cert_serial(victim.cert) in stranger.revoked(key)
    assert not b_trust.is_revoked(victim.cert)
    nodes = {S: stranger, B: b}
    stranger.link_up(B, now=NOW)
    b.link_up(S, now=NOW)
    _exchange(nodes)
    assert b_trust.crl_number == 7 and b_trust.is_revoked(victim.cert)
    # A member's own list is pinned in its trust: revoked() is for other networks only.
    assert b.revoked(key) == frozenset()


def test_a_forged_list_for_a_real_networks_key_is_refused_and_backs_the_liar_off() -> None:
    ca, _victim, _crl = _world()
    rogue = make_network("labnet", now=NOW - 60)  # same name, another key
    forged = rogue.make_crl([(12345, NOW)], number=99, now=NOW)
    b, b_trust = _member(ca)
    key = b_trust.public_key_raw
    liar = CrlGossip(rogue.trust.fork())
    liar.trust.apply_crl(forged, now=NOW)
    # The liar offers number 99 under labnet's key, then pushes its own CA's list.
    b.receive(M, NetworkCrl(key, CrlOffer(99).encode()).encode(), now=NOW)
    assert b.outgoing() == [(M, NetworkCrl(key, CrlOffer(0).encode()).encode())]
    liar.receive(B, CrlOffer(0).encode(), now=NOW)
    for _peer, payload in liar.outgoing():
        assert b.receive(M, NetworkCrl(key, payload).encode(), now=NOW) is None
    assert b.drops["crl_bad_signature"] == 1 and b_trust.crl_number == 0
    # Backed off: its next list costs no signature check.
    liar.receive(B, CrlOffer(0).encode(), now=NOW + 1000)
    for _peer, payload in liar.outgoing():
        b.receive(M, NetworkCrl(key, payload).encode(), now=NOW + 1)
    assert b.drops["crl_peer_backoff"] >= 1 and b.drops["crl_bad_signature"] == 1


def test_chunks_nobody_asked_for_and_bad_keys_make_no_list() -> None:
    _ca, _victim, crl = _world()
    stranger = NetworkCrls()
    chunk = CrlChunk(7, len(crl), 0, crl[:CRL_CHUNK_BYTES]).encode()
    assert stranger.receive(M, NetworkCrl(bytes(32), chunk).encode(), now=NOW) is None
    assert stranger.drops["crl_unknown_list"] == 1
    # An offer of nothing makes no list either; garbage is counted.
    stranger.receive(M, NetworkCrl(bytes(32), CrlOffer(0).encode()).encode(), now=NOW)
    assert stranger.drops["crl_unknown_list"] == 2
    stranger.receive(M, b"\x08\x03" + b"\x00" * 5, now=NOW)
    assert stranger.drops["truncated"] == 1
    # An overlay list's message is not a network one.
    stranger.receive(M, CrlOffer(3).encode(), now=NOW)
    assert stranger.drops["crl_wrong_list"] == 1
    assert stranger.holds(bytes(32)) == 0 and not stranger.outgoing()


def test_minted_networks_churn_only_the_carried_lists_never_a_members_own() -> None:
    ca, _victim, crl = _world()
    member, trust = _member(ca)
    trust.apply_crl(crl, now=NOW)
    key = trust.public_key_raw
    for i in range(MAX_NETWORK_LISTS + 8):
        minted = make_network(f"mint{i}", now=NOW - 60).trust.public_key_raw
        member.receive(M, NetworkCrl(minted, CrlOffer(1).encode()).encode(), now=NOW)
    assert member.stats["network_list_new"] == MAX_NETWORK_LISTS + 8
    assert member.stats["network_list_evicted"] == 8
    assert member.holds(key) == 7  # pinned: never evicted
    # Every new peer hears of the pinned list and the carried ones (those with a number).
    member.outgoing()
    member.link_up(S, now=NOW)
    offers = [decode_crl(p) for _peer, p in member.outgoing()]
    assert offers == [NetworkCrl(key, CrlOffer(7).encode())]


def test_a_stranger_replica_refuses_a_revoked_members_record_once_it_holds_the_list() -> None:
    ca, victim, crl = _world()
    ns = namespace_of(ca.trust)
    record = Record.sign(victim, ip_key(ns, "100.64.0.9"), b"", seq=1, expires_at=NOW + 600)
    stranger = NetworkCrls()
    policy = RecordPolicy(None, revoked=stranger.revoked)
    policy.admit(record, now=NOW)  # no list yet: a valid certificate of that network
    a, a_trust = _member(ca)
    a_trust.apply_crl(crl, now=NOW)
    a.announce(a_trust.public_key_raw, [S], source=None)
    _exchange({A: a, S: stranger})
    with pytest.raises(RemoteProtocolError) as info:
        policy.admit(record, now=NOW)
    assert info.value.reason == "cert_revoked"


def test_a_node_in_two_networks_puts_each_networks_list_in_that_networks_trust() -> None:
    """A daemon in several networks (``NodeCore.add_network``): a CRL of its second network,
    handed over locally, is in force in that network's trust and offered to linked peers;
    the first network's and the overlay's lists are untouched."""
    overlay = make_network("shared", now=NOW - 60)
    first, second = make_network("labnet", now=NOW - 60), make_network("othernet", now=NOW - 60)
    a = make_identity(first, "ab", now=NOW - 60)
    a = NodeIdentity(a.private_key, a.cert, a.trust.fork())
    b = a.certified_by(second, "ab", now=NOW - 60)
    b = NodeIdentity(b.private_key, b.cert, b.trust.fork())
    core = NodeCore(
        a.certified_by(overlay, "ab", now=NOW - 60),
        member=a,
        rng=random.Random(1),
        bootstrap=[],
    )
    core.add_network(b)
    victim = make_identity(second, "mallory", now=NOW - 60)
    crl = second.make_crl([(cert_serial(victim.cert), NOW)], number=4, now=NOW)
    assert core.apply_crl(crl, now=NOW).number == 4
    assert b.trust.crl_number == 4 and b.trust.is_revoked(victim.cert)
    assert a.trust.crl_number == 0 and core.identity.trust.crl_number == 0
    assert core.network_crls.holds(second.trust.public_key_raw) == 4
