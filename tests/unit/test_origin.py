"""End-to-end origins of routed messages: pairwise MACs, signatures, certificates, hints."""

from __future__ import annotations

import dataclasses
import hashlib
import random

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ipop.identity import NodeIdentity, cert_serial
from ipop.overlay import origin as origin_mod
from ipop.overlay.hints import ReverseHints
from ipop.overlay.messages import FLAG_EXACT, KIND_DHT, MAC_BYTES, SIG_BYTES, Routed
from ipop.overlay.origin import DROP_REASONS, OriginAuth, x25519_public_from_ed25519
from ipop.testing.identities import make_identity, make_network
from ipop.types import NodeId

NOW = 1_795_305_600.0
_RNG = random.Random(0)  # seal nonces
Trio = tuple[NodeIdentity, NodeIdentity, NodeIdentity]


@pytest.fixture(scope="module")
def trio() -> Trio:
    ca = make_network("unitnet", now=NOW)
    return (
        make_identity(ca, "a", now=NOW),
        make_identity(ca, "b", now=NOW),
        make_identity(ca, "c", now=NOW),
    )


def _raw(key: Ed25519PrivateKey) -> tuple[bytes, bytes]:
    seed = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return seed, pub


def test_the_x25519_form_of_an_ed25519_key_is_the_one_its_seed_expands_to() -> None:
    for _ in range(25):
        seed, pub = _raw(Ed25519PrivateKey.generate())
        x = X25519PrivateKey.from_private_bytes(hashlib.sha512(seed).digest()[:32])
        want = x.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        assert x25519_public_from_ed25519(pub) == want
    with pytest.raises(ValueError):
        x25519_public_from_ed25519((1).to_bytes(32, "little"))  # the identity point


def test_exact_messages_to_a_known_node_carry_a_mac_others_a_signature(trio: Trio) -> None:
    a, b, _ = trio
    oa, ob = OriginAuth(a, random_bytes=_RNG.randbytes), OriginAuth(b, random_bytes=_RNG.randbytes)
    first = oa.routed(FLAG_EXACT, 64, KIND_DHT, b.node_id, None, b"hello", now=NOW)
    assert len(first.sig) == SIG_BYTES and first.cert == a.cert.der
    assert ob.check(first, now=NOW) is None  # b learns a's certificate from the message
    back = ob.routed(FLAG_EXACT, 64, KIND_DHT, a.node_id, None, b"hi", now=NOW)
    assert len(back.sig) == MAC_BYTES
    oa.learn(b.cert)
    assert oa.check(Routed.decode(back.encode()), now=NOW) is None
    closest = ob.routed(0, 64, KIND_DHT, a.node_id, None, b"to whoever is closest", now=NOW)
    assert len(closest.sig) == SIG_BYTES  # the receiver is not known in advance
    assert ob.stats["pair_keys"] == 1 and oa.stats["pair_keys"] == 1


def test_forged_altered_stale_and_foreign_messages_are_refused(trio: Trio) -> None:
    a, b, c = trio
    oa, ob, oc = (
        OriginAuth(a, random_bytes=_RNG.randbytes),
        OriginAuth(b, random_bytes=_RNG.randbytes),
        OriginAuth(c, random_bytes=_RNG.randbytes),
    )
    oa.learn(b.cert)
    ob.learn(a.cert)
    mac = oa.routed(FLAG_EXACT, 64, KIND_DHT, b.node_id, None, b"store x", now=NOW)
    sig = oa.routed(0, 64, KIND_DHT, b.node_id, None, b"store x", now=NOW)
    for msg in (mac, sig):
        assert ob.check(msg, now=NOW) is None
        assert ob.check(dataclasses.replace(msg, payload=b"store y"), now=NOW) == "origin_bad_sig"
        assert ob.check(dataclasses.replace(msg, kind=3), now=NOW) == "origin_bad_sig"
        assert ob.check(msg, now=NOW + 3600) == "origin_stale"
    # c forwards a's MAC'd message: it cannot check it, nor make one in a's name for b.
    assert oc.check(mac, now=NOW) == "origin_not_ours"
    made_up = oc.routed(FLAG_EXACT, 64, KIND_DHT, b.node_id, None, b"evil", now=NOW)
    assert ob.check(dataclasses.replace(made_up, src=a.node_id), now=NOW) == "origin_cert_mismatch"
    bare = dataclasses.replace(made_up, src=a.node_id, cert=b"")
    assert ob.check(bare, now=NOW) == "origin_bad_sig"
    # An id nobody certified, with no certificate: nothing to check it against.
    assert ob.check(dataclasses.replace(bare, src=NodeId(12345)), now=NOW) == "origin_unknown"
    # A certificate of another network's CA.
    other = make_identity(make_network("othernet", now=NOW), "x", now=NOW)
    foreign = OriginAuth(other, random_bytes=_RNG.randbytes).routed(
        0, 64, KIND_DHT, b.node_id, None, b"", now=NOW
    )
    assert ob.check(foreign, now=NOW) == "origin_bad_cert"
    # An expired certificate, even one we cached while it was valid.
    assert ob.check(sig, now=a.cert.not_after + 1) in ("origin_stale", "origin_expired")
    late = oa.routed(0, 64, KIND_DHT, b.node_id, None, b"", now=a.cert.not_after + 1)
    assert ob.check(late, now=a.cert.not_after + 1) in ("origin_expired", "origin_bad_cert")


def test_every_reason_is_in_the_checked_list(trio: Trio) -> None:
    a, b, _ = trio
    ob = OriginAuth(b, revoked=lambda cert: cert.node_id == a.node_id, random_bytes=_RNG.randbytes)
    msg = OriginAuth(a, random_bytes=_RNG.randbytes).routed(
        0, 64, KIND_DHT, b.node_id, None, b"", now=NOW
    )
    assert ob.check(msg, now=NOW) == "origin_revoked"
    assert {"origin_revoked", "origin_stale", "origin_bad_sig"} <= DROP_REASONS


def test_the_certificate_cache_is_bounded(trio: Trio, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b, c = trio
    monkeypatch.setattr(origin_mod, "CERT_CACHE_SIZE", 2)
    ob = OriginAuth(b, random_bytes=_RNG.randbytes)
    for ident in (a, c, b):
        ob.learn(ident.cert)
    assert not ob.knows(a.node_id) and ob.knows(c.node_id) and ob.knows(b.node_id)


def test_a_large_message_goes_without_the_certificate(trio: Trio) -> None:
    a, b, _ = trio
    big = OriginAuth(a, random_bytes=_RNG.randbytes).routed(
        FLAG_EXACT, 64, 2, b.node_id, None, bytes(1300), now=NOW
    )
    assert big.cert == b"" and len(big.encode()) < 1443


# --- reverse-path hints -----------------------------------------------------------------------


def test_a_hint_is_used_only_once_its_message_checks(trio: Trio) -> None:
    a, b, c = trio
    ob = OriginAuth(b, random_bytes=_RNG.randbytes)
    hints = ReverseHints(lambda m, now: ob.check(m, now=now))
    p, q = NodeId(1), NodeId(2)
    real = OriginAuth(a, random_bytes=_RNG.randbytes).routed(
        0, 64, KIND_DHT, c.node_id, None, b"", now=NOW
    )
    forged = dataclasses.replace(real, payload=b"x")
    hints.note(forged, p, NOW)
    assert hints.hop(a.node_id, NOW) is None  # checked at first use, and dropped
    assert hints.stats["hint_forged"] == 1
    hints.note(real, p, NOW)
    assert hints.hop(a.node_id, NOW) == p
    # A live hint moves to another peer only for a message that checks.
    hints.note(forged, q, NOW)
    assert hints.hop(a.node_id, NOW) == p and hints.stats["hint_refused"] == 1
    hints.note(real, q, NOW)
    assert hints.hop(a.node_id, NOW) == q
    assert hints.hop(a.node_id, NOW + 60) is None  # expired


def test_a_maced_message_leaves_no_hint_and_hints_are_bounded(trio: Trio) -> None:
    a, _, c = trio
    oa = OriginAuth(a, random_bytes=_RNG.randbytes)
    oa.learn(c.cert)
    hints = ReverseHints(lambda m, now: None, max_entries=3)
    hints.note(oa.routed(FLAG_EXACT, 64, KIND_DHT, c.node_id, None, b"", now=NOW), NodeId(1), NOW)
    assert len(hints) == 0
    sig = oa.routed(0, 64, KIND_DHT, c.node_id, None, b"", now=NOW)
    for i in range(10):
        hints.note(dataclasses.replace(sig, src=NodeId(100 + i)), NodeId(1), NOW)
    assert len(hints) == 3


def test_a_revoked_member_routes_nothing_even_with_its_certificate_cached() -> None:
    """A CRL applied to a node's trust reaches the routed-origin check at once: the revoked
    member's cached certificate and its pairwise key stop counting, signed or MAC'd."""
    ca = make_network("revnet", now=NOW)
    a, b = make_identity(ca, "a", now=NOW), make_identity(ca, "b", now=NOW)
    trust = b.trust.fork()
    ob = OriginAuth(b, trust=trust, revoked=trust.is_revoked, random_bytes=_RNG.randbytes)
    oa = OriginAuth(a, random_bytes=_RNG.randbytes)
    oa.learn(b.cert)
    ob.learn(a.cert)
    mac = oa.routed(FLAG_EXACT, 64, KIND_DHT, b.node_id, None, b"x", now=NOW)
    sig = oa.routed(0, 64, KIND_DHT, b.node_id, None, b"x", now=NOW)
    assert ob.check(mac, now=NOW) is None and ob.check(sig, now=NOW) is None
    trust.apply_crl(ca.make_crl([(cert_serial(a.cert), NOW)], number=1, now=NOW), now=NOW)
    assert ob.check(mac, now=NOW) == "origin_revoked"
    assert ob.check(sig, now=NOW) == "origin_revoked"  # the attached certificate is refused too
    assert not ob.knows(a.node_id)
