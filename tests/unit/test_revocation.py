"""Revocation: CRLs signed by the network CA, enforced by CaTrust, spread by CrlGossip."""

from __future__ import annotations

import contextlib
import random
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipop.errors import RemoteProtocolError
from ipop.identity import (
    MAX_CRL_BYTES,
    CaTrust,
    CertificateError,
    CrlError,
    NetworkCA,
    NodeIdentity,
    cert_serial,
)
from ipop.link.events import LinkDown, LinkEvent, LinkUp
from ipop.link.layer import LinkLayer
from ipop.overlay.messages import (
    CRL_CHUNK_BYTES,
    CRL_MAX_TOTAL,
    TYPE_CRL,
    CrlChunk,
    CrlOffer,
    decode_crl,
)
from ipop.revocation import DROP_REASONS, MAX_PEERS, CrlGossip
from ipop.testing.clock import SIM_EPOCH
from ipop.testing.identities import make_identity, make_network
from ipop.timing import CRL_VERIFY_BACKOFF_S
from ipop.types import Endpoint, NodeId

NOW = SIM_EPOCH
A_EP = Endpoint("198.51.100.1", 5800)
B_EP = Endpoint("203.0.113.2", 5800)


def _own(identity: NodeIdentity) -> NodeIdentity:
    """The identity with a CaTrust of its own (one per node, as in a real deployment)."""
    return NodeIdentity(identity.private_key, identity.cert, identity.trust.fork())


def _reason(trust: CaTrust, der: bytes) -> str:
    with pytest.raises(CertificateError) as info:
        trust.verify(der, now=NOW)
    return info.value.reason


def test_revoked_certificate_is_refused_even_when_cached() -> None:
    ca = make_network(now=NOW - 60)
    alice = make_identity(ca, "alice", now=NOW - 60)
    bob = make_identity(ca, "bob", now=NOW - 60)
    trust = ca.trust.fork()
    assert trust.verify(alice.cert.der, now=NOW) == alice.cert  # now in the cache
    crl = ca.make_crl([(cert_serial(alice.cert), NOW)], number=1, now=NOW)
    got = trust.apply_crl(crl, now=NOW)
    assert got.number == 1 and trust.crl_number == 1
    assert _reason(trust, alice.cert.der) == "cert_revoked"
    with pytest.raises(CertificateError):
        trust.verify_untimed(alice.cert.der)
    assert trust.is_revoked(alice.cert) and not trust.is_revoked(bob.cert)
    assert trust.verify(bob.cert.der, now=NOW) == bob.cert
    # fork() made an independent holder: the CA's own trust object learned nothing.
    assert ca.trust.crl_number == 0
    assert ca.trust.verify(alice.cert.der, now=NOW) == alice.cert


def test_older_equal_forged_and_tampered_crls_change_nothing() -> None:
    ca = make_network(now=NOW - 60)
    other = make_network(now=NOW - 60)  # same network name, another CA key
    alice = make_identity(ca, "alice", now=NOW - 60)
    bob = make_identity(ca, "bob", now=NOW - 60)
    trust = ca.trust.fork()
    trust.apply_crl(ca.make_crl([(cert_serial(alice.cert), NOW)], number=5, now=NOW), now=NOW)
    held = (trust.crl_number, trust.crl_der)
    bob_serial = cert_serial(bob.cert)
    refused = {
        "older": ca.make_crl([(bob_serial, NOW)], number=4, now=NOW),
        "equal": ca.make_crl([(bob_serial, NOW)], number=5, now=NOW),
        "forged": other.make_crl([(bob_serial, NOW)], number=9, now=NOW),
        "garbage": b"\x30\x03\x02\x01\x01",
        "huge": b"\x30" * (MAX_CRL_BYTES + 1),
    }
    good = ca.make_crl([(bob_serial, NOW)], number=9, now=NOW)
    tampered = bytearray(good)
    tampered[-10] ^= 0x01  # inside the signature
    refused["tampered"] = bytes(tampered)
    reasons = {}
    for what, data in refused.items():
        with pytest.raises(CrlError) as info:
            trust.apply_crl(data, now=NOW)
        reasons[what] = info.value.reason
    assert reasons == {
        "older": "crl_stale",
        "equal": "crl_stale",
        "forged": "crl_bad_signature",
        "garbage": "crl_malformed",
        "huge": "crl_too_large",
        "tampered": "crl_bad_signature",
    }
    assert (trust.crl_number, trust.crl_der) == held
    assert trust.verify(bob.cert.der, now=NOW) == bob.cert
    assert _reason(trust, alice.cert.der) == "cert_revoked"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
def test_openssl_reads_the_crl(tmp_path: Path) -> None:
    ca = make_network("lab-net", now=NOW - 60)
    alice = make_identity(ca, "alice", now=NOW - 60)
    serial = cert_serial(alice.cert)
    der = ca.make_crl([(serial, NOW)], number=3, now=NOW)
    (tmp_path / "c.der").write_bytes(der)
    text = subprocess.run(
        ["openssl", "crl", "-inform", "DER", "-in", str(tmp_path / "c.der"), "-text", "-noout"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "ipop CA lab-net" in text
    assert f"{serial:X}" in text.replace(":", "").upper()
    assert "CRL Number" in text


# --- handshakes and live sessions --------------------------------------------------------------


def _pump(a: LinkLayer, b: LinkLayer, now: float) -> None:
    """Deliver every queued datagram between A (at A_EP) and B (at B_EP) until quiet."""
    for _ in range(20):
        moved = False
        for src, dst, src_ep in ((a, b, A_EP), (b, a, B_EP)):
            for data, _path in src.datagrams_to_send(now=now):
                moved = True
                dst.receive_datagram(data, src_ep, now=now)
        if not moved:
            return


def _events(ep: LinkLayer) -> list[LinkEvent]:
    out = []
    while (ev := ep.next_event()) is not None:
        out.append(ev)
    return out


def test_a_revoked_certificate_gets_no_handshake_and_loses_its_session() -> None:
    ca = make_network(now=NOW - 60)
    alice = _own(make_identity(ca, "alice", now=NOW - 60))
    bob = _own(make_identity(ca, "bob", now=NOW - 60))
    a = LinkLayer(alice, rng=random.Random(1))
    b = LinkLayer(bob, rng=random.Random(2))
    a.connect(B_EP, now=NOW, expected=bob.node_id)
    _pump(a, b, NOW)
    assert a.is_up(bob.node_id) and b.is_up(alice.node_id)
    _events(b)

    crl = ca.make_crl([(cert_serial(alice.cert), NOW)], number=1, now=NOW)
    bob.trust.apply_crl(crl, now=NOW + 1)
    closed = b.close_revoked(bob.trust.is_revoked, now=NOW + 1)
    assert closed == [alice.node_id]
    assert not b.is_up(alice.node_id)
    assert [type(e) for e in _events(b)] == [LinkDown]
    assert b.stats["link_down_revoked"] == 1

    # Alice tries again: Bob answers nothing and counts why.
    a.close(bob.node_id, now=NOW + 2)
    a.connect(B_EP, now=NOW + 2, expected=bob.node_id)
    _pump(a, b, NOW + 2)
    assert not b.is_up(alice.node_id) and not a.is_up(bob.node_id)
    assert b.drops["cert_revoked"] >= 1
    assert not any(isinstance(e, LinkUp) for e in _events(b))


# --- the gossip object --------------------------------------------------------------------------


def _crl_world() -> tuple[NetworkCA, NodeIdentity, bytes]:
    ca = make_network(now=NOW - 60)
    victim = make_identity(ca, "mallory", now=NOW - 60)
    big = [(cert_serial(victim.cert), NOW)] + [((1 << 150) + n, NOW) for n in range(60)]
    return ca, victim, ca.make_crl(big, number=7, now=NOW)


def test_messages_round_trip_and_refuse_bad_chunks() -> None:
    assert decode_crl(CrlOffer(42).encode()) == CrlOffer(42)
    step = CRL_CHUNK_BYTES
    chunk = CrlChunk(3, 2 * step + 500, 2 * step, b"x" * 500)
    assert decode_crl(chunk.encode()) == chunk
    bad = [
        bytes([TYPE_CRL, 0x09]) + bytes(8),  # unknown op
        CrlChunk(3, 2 * step + 500, step, b"x" * step).encode()[:-1],  # short middle chunk
        chunk.encode() + b"y",  # long last chunk
        bytes([TYPE_CRL, 0x02]) + bytes(8) + b"\x00\x10\x00\x00" + b"x" * 16,  # number 0
        bytes([TYPE_CRL, 0x01, 0]),  # truncated
    ]
    for data in bad:
        with pytest.raises(Exception) as info:
            decode_crl(data)
        assert getattr(info.value, "reason", None) in DROP_REASONS
    assert CRL_MAX_TOTAL == MAX_CRL_BYTES


def test_gossip_pulls_a_newer_crl_and_refuses_forgeries_with_backoff() -> None:
    ca, victim, crl = _crl_world()
    assert len(crl) > 2 * CRL_CHUNK_BYTES  # several chunks
    p, q = NodeId.from_bytes(b"p" * 20), NodeId.from_bytes(b"q" * 20)
    holder_trust = ca.trust.fork()
    holder_trust.apply_crl(crl, now=NOW)
    holder = CrlGossip(holder_trust)
    learner = CrlGossip(ca.trust.fork())

    holder.link_up(q, now=NOW)
    learner.link_up(p, now=NOW)  # holds nothing: says nothing
    assert learner.outgoing() == []
    [(to, offer)] = holder.outgoing()
    assert to == q and decode_crl(offer) == CrlOffer(7)
    assert learner.receive(p, offer, now=NOW) is None
    [(to, ask)] = learner.outgoing()
    assert to == p and decode_crl(ask) == CrlOffer(0)
    holder.receive(q, ask, now=NOW)
    chunks = holder.outgoing()
    assert len(chunks) == -(-len(crl) // CRL_CHUNK_BYTES)
    got = [learner.receive(p, data, now=NOW) for _to, data in reversed(chunks)]
    assert got[-1] is not None and got[-1].number == 7
    assert learner.trust.is_revoked(victim.cert)
    # A second ask inside CRL_PUSH_INTERVAL_S is held: one CRL per peer per interval.
    holder.receive(q, ask, now=NOW + 1)
    assert holder.outgoing() == [] and holder.stats["push_held"] == 1

    # A forged CRL (another CA), framed as number 8: refused, nothing changes, peer backs off.
    forger = make_network(now=NOW - 60)
    forged = forger.make_crl([(1, NOW)], number=8, now=NOW)
    fresh = CrlGossip(ca.trust.fork())
    for off in range(0, len(forged), CRL_CHUNK_BYTES):
        piece = forged[off : off + CRL_CHUNK_BYTES]
        assert fresh.receive(p, CrlChunk(8, len(forged), off, piece).encode(), now=NOW) is None
    assert fresh.drops["crl_bad_signature"] == 1
    assert fresh.trust.crl_number == 0
    # During the backoff even the genuine list from that peer is ignored (bounded checks) ...
    for _to, data in chunks:
        fresh.receive(p, data, now=NOW + 1)
    assert fresh.trust.crl_number == 0 and fresh.drops["crl_peer_backoff"] >= 1
    # ... but another peer's copy goes in, and after the backoff so would p's.
    for _to, data in chunks:
        fresh.receive(q, data, now=NOW + 1)
    assert fresh.trust.crl_number == 7
    # Chunks of our number or older (duplicates) are dropped before any work.
    late = CrlGossip(holder_trust.fork())
    late.receive(p, chunks[0][1], now=NOW + CRL_VERIFY_BACKOFF_S)
    assert late.stats["chunk_duplicate"] == 1 and not late.drops
    assert set(fresh.drops) <= DROP_REASONS and set(late.drops) <= DROP_REASONS


def test_gossip_state_is_bounded_per_peer() -> None:
    ca, _victim, crl = _crl_world()
    g = CrlGossip(ca.trust.fork())

    for i in range(MAX_PEERS + 50):
        peer = NodeId.from_bytes(i.to_bytes(20, "big"))
        g.receive(peer, CrlChunk(9, len(crl), 0, crl[:CRL_CHUNK_BYTES]).encode(), now=NOW)
    assert len(g._peers) == MAX_PEERS


# --- fuzzing the TYPE_CRL codec and the gossip receive path ------------------------------------


@st.composite
def crl_messages(draw: st.DrawFn) -> CrlOffer | CrlChunk:
    if draw(st.booleans()):
        return CrlOffer(draw(st.integers(0, (1 << 64) - 1)))
    total = draw(st.integers(1, CRL_MAX_TOTAL))
    offset = draw(st.integers(0, (total - 1) // CRL_CHUNK_BYTES)) * CRL_CHUNK_BYTES
    size = min(CRL_CHUNK_BYTES, total - offset)
    number = draw(st.integers(1, (1 << 64) - 1))
    return CrlChunk(number, total, offset, draw(st.binary(min_size=size, max_size=size)))


@given(crl_messages())
def test_crl_messages_round_trip(msg: CrlOffer | CrlChunk) -> None:
    assert decode_crl(msg.encode()) == msg


@settings(max_examples=200)
@given(st.one_of(st.binary(max_size=64), crl_messages().map(lambda m: m.encode())), st.data())
def test_garbage_and_mutations_are_counted_never_raised(data: bytes, draw: st.DataObject) -> None:
    blob = bytearray(data)
    if blob:
        pos = draw.draw(st.integers(0, len(blob) - 1))
        blob[pos] = draw.draw(st.integers(0, 255))
        blob = blob[: draw.draw(st.integers(0, len(blob)))]
    with contextlib.suppress(RemoteProtocolError):
        decode_crl(bytes(blob))
    g = CrlGossip(_FUZZ_CA.trust.fork())
    g.receive(NodeId(1), bytes([TYPE_CRL]) + bytes(blob[1:]), now=NOW)
    g.receive(NodeId(1), bytes(blob) or b"\x08", now=NOW)
    assert set(g.drops) <= DROP_REASONS
    assert g.trust.crl_number == 0


_FUZZ_CA = make_network(now=NOW - 60)


def test_a_member_offering_a_huge_number_does_not_stop_us_asking_others() -> None:
    ca, victim, crl = _crl_world()
    liar, honest = NodeId.from_bytes(b"l" * 20), NodeId.from_bytes(b"h" * 20)
    holder_trust = ca.trust.fork()
    holder_trust.apply_crl(crl, now=NOW)
    holder = CrlGossip(holder_trust)
    g = CrlGossip(ca.trust.fork())
    g.receive(liar, CrlOffer((1 << 64) - 1).encode(), now=NOW)
    g.receive(liar, CrlOffer((1 << 64) - 1).encode(), now=NOW + 1)  # asked once per interval
    assert [to for to, _ in g.outgoing()] == [liar]
    holder.link_up(g_id := NodeId.from_bytes(b"g" * 20), now=NOW + 2)
    [(_to, offer)] = holder.outgoing()
    g.receive(honest, offer, now=NOW + 2)
    [(to, ask)] = g.outgoing()
    assert to == honest
    holder.receive(g_id, ask, now=NOW + 2)
    for _to, data in holder.outgoing():
        g.receive(honest, data, now=NOW + 2)
    assert g.trust.crl_number == 7 and g.trust.is_revoked(victim.cert)
