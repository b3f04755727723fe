"""Routed messages under the pairwise key are sealed end to end (ipop.overlay.origin): what a
forwarder holds of one is ciphertext, any change to it or to its header is refused, and IP is
never routed, nor delivered, in the clear."""

from __future__ import annotations

import dataclasses
import random

import pytest

from ipop.core import NodeCore
from ipop.errors import RemoteProtocolError
from ipop.identity import NodeIdentity
from ipop.overlay.messages import (
    FLAG_EXACT,
    FLAG_SEALED,
    KIND_DHT,
    KIND_IP,
    KIND_PING,
    KIND_PMTU,
    MAC_BYTES,
    SEAL_NONCE_BYTES,
    Routed,
)
from ipop.overlay.origin import DROP_REASONS, ROUTED_SEALED_OVERHEAD, OriginAuth, pairwise_mac
from ipop.testing.clock import SIM_EPOCH
from ipop.testing.identities import make_identity, make_network

NOW = SIM_EPOCH
_RNG = random.Random(0)  # seal nonces
# An inner packet whose bytes are easy to find anywhere they leak to.
PACKET = b"E\x00" + b"secret inner packet " * 5
Trio = tuple[NodeIdentity, NodeIdentity, NodeIdentity]


@pytest.fixture(scope="module")
def trio() -> Trio:
    ca = make_network("sealnet", now=NOW - 60)
    return (
        make_identity(ca, "a", now=NOW - 60),
        make_identity(ca, "b", now=NOW - 60),
        make_identity(ca, "c", now=NOW - 60),
    )


def _pair(trio: Trio) -> tuple[OriginAuth, OriginAuth, OriginAuth]:
    """a and b hold each other's certificates; c (a forwarder) holds both."""
    a, b, c = trio
    oa = OriginAuth(a, random_bytes=random.Random(1).randbytes)
    ob, oc = OriginAuth(b, random_bytes=_RNG.randbytes), OriginAuth(c, random_bytes=_RNG.randbytes)
    oa.learn(b.cert)
    ob.learn(a.cert)
    oc.learn(a.cert)
    oc.learn(b.cert)
    return oa, ob, oc


def test_a_forwarders_view_of_a_routed_ip_message_holds_no_plaintext(trio: Trio) -> None:
    a, b, _ = trio
    oa, ob, oc = _pair(trio)
    msg = oa.routed(FLAG_EXACT, 64, KIND_IP, b.node_id, None, PACKET, now=NOW)
    wire = msg.encode()
    # What every forwarder opens from its link: the whole routed message, header and all.
    assert msg.flags & FLAG_SEALED and len(msg.sig) == MAC_BYTES
    for chunk in (PACKET, PACKET[:16], PACKET[-16:]):
        assert chunk not in wire
    assert len(wire) == ROUTED_SEALED_OVERHEAD + len(PACKET) + 2 + len(a.cert.der)
    seen = Routed.decode(wire)
    assert oc.open(seen, now=NOW) == "origin_not_ours"  # c holds both certificates, no key
    got = ob.open(seen, now=NOW)
    assert isinstance(got, Routed)
    assert (got.payload, got.kind, got.src, got.flags & FLAG_SEALED) == (
        PACKET,
        KIND_IP,
        a.node_id,
        0,
    )
    # Every pairwise-keyed kind is sealed; a message with no known receiver is signed.
    for kind in (KIND_DHT, KIND_PING, KIND_PMTU):
        assert oa.routed(FLAG_EXACT, 64, kind, b.node_id, None, b"x", now=NOW).flags & FLAG_SEALED
    assert not oa.routed(0, 64, KIND_DHT, b.node_id, None, b"x", now=NOW).flags & FLAG_SEALED


def test_nonces_come_from_the_owners_randomness_and_never_repeat(trio: Trio) -> None:
    _, b, _ = trio
    oa, _, _ = _pair(trio)
    msgs = [oa.routed(FLAG_EXACT, 64, KIND_IP, b.node_id, None, PACKET, now=NOW) for _ in range(50)]
    nonces = {m.payload[:SEAL_NONCE_BYTES] for m in msgs}
    assert len(nonces) == 50  # same payload, same second: 50 different nonces and ciphertexts
    first = random.Random(1).randbytes(SEAL_NONCE_BYTES)
    assert msgs[0].payload[:SEAL_NONCE_BYTES] == first  # the seeded source: runs replay


def test_any_change_to_a_sealed_message_or_its_header_is_refused(trio: Trio) -> None:
    a, b, c = trio
    oa, ob, _ = _pair(trio)
    msg = oa.routed(FLAG_EXACT, 64, KIND_IP, b.node_id, None, PACKET, now=NOW)
    ob.learn(c.cert)
    flip = bytes([msg.payload[20] ^ 1])
    changed = {
        "ciphertext": dataclasses.replace(msg, payload=msg.payload[:20] + flip + msg.payload[21:]),
        "nonce": dataclasses.replace(msg, payload=bytes([msg.payload[0] ^ 1]) + msg.payload[1:]),
        "cut": dataclasses.replace(msg, payload=msg.payload[:-1]),
        "tag": dataclasses.replace(msg, sig=bytes(MAC_BYTES)),
        "ts": dataclasses.replace(msg, ts=msg.ts + 1),
        "kind": dataclasses.replace(msg, kind=KIND_PING),
        "src": dataclasses.replace(msg, src=c.node_id, cert=b""),
        "short": dataclasses.replace(msg, payload=msg.payload[: SEAL_NONCE_BYTES - 1]),
        # Without SEALED the bytes read as the older MAC form: which no key makes match.
        "unsealed": dataclasses.replace(msg, flags=msg.flags & ~FLAG_SEALED),
    }
    for what, bad in changed.items():
        assert ob.open(bad, now=NOW) == "origin_bad_sig", what
        assert ob.check(bad, now=NOW) == "origin_bad_sig", what
    # Another destination is not ours to open (and the real one refuses the copy's dst).
    assert ob.open(dataclasses.replace(msg, dst=c.node_id), now=NOW) == "origin_not_ours"
    oc = OriginAuth(c, random_bytes=_RNG.randbytes)
    oc.learn(a.cert)
    assert oc.open(dataclasses.replace(msg, dst=c.node_id), now=NOW) == "origin_bad_sig"
    assert ob.open(msg, now=NOW + 3600) == "origin_stale"
    assert isinstance(ob.open(msg, now=NOW), Routed)  # the original still opens


def test_ip_that_arrives_in_the_clear_is_refused_at_delivery(trio: Trio) -> None:
    a, b, _ = trio
    oa, ob, _ = _pair(trio)
    # Signed (a forwarder could read it) or in the older MAC form: authentic, never delivered.
    signed = OriginAuth(a, random_bytes=_RNG.randbytes).routed(
        FLAG_EXACT, 64, KIND_IP, b.node_id, None, PACKET, now=NOW
    )
    assert len(signed.sig) != MAC_BYTES and signed.cert
    key = oa.mac_key(b.node_id)  # the key the older nodes MAC'd with
    assert key is not None
    older = Routed(FLAG_EXACT, 0, 64, KIND_IP, a.node_id, b.node_id, None, PACKET, int(NOW), b"")
    older = dataclasses.replace(older, sig=pairwise_mac(key, older.signed_bytes()))
    for msg in (signed, older):
        assert ob.check(msg, now=NOW) is None  # it is a's ...
        assert ob.open(msg, now=NOW) == "origin_unsealed"  # ... but IP must not be read en route
    # Other kinds in the older form still deliver (upgrades).
    dht = dataclasses.replace(older, kind=KIND_DHT)
    dht = dataclasses.replace(dht, sig=pairwise_mac(key, dht.signed_bytes()))
    opened = ob.open(dht, now=NOW)
    assert isinstance(opened, Routed) and opened.payload == PACKET
    assert "origin_unsealed" in DROP_REASONS


def test_a_sealed_flag_needs_the_pairwise_form_and_its_nonce_on_the_wire(trio: Trio) -> None:
    _, b, _ = trio
    oa, _, _ = _pair(trio)
    wire = bytearray(oa.routed(FLAG_EXACT, 64, KIND_IP, b.node_id, None, b"", now=NOW).encode())
    assert Routed.decode(bytes(wire)).payload[:SEAL_NONCE_BYTES]  # an empty packet: the nonce
    no_mac = bytearray(wire)
    no_mac[1] &= ~0x10  # SEALED without MAC
    with pytest.raises(RemoteProtocolError) as err:
        Routed.decode(bytes(no_mac))
    assert err.value.reason == "bad_flags"
    short = bytes(wire[:45]) + bytes(wire[-20:])  # no room for a nonce (and no certificate)
    short = bytes([short[0], short[1] & ~0x08]) + short[2:]
    with pytest.raises(RemoteProtocolError) as err:
        Routed.decode(short)
    assert err.value.reason == "truncated"
    msg = Routed.decode(bytes(wire))
    with pytest.raises(ValueError):
        dataclasses.replace(msg, sig=bytes(64)).encode()  # sealed needs the 16-byte tag
    with pytest.raises(ValueError):
        dataclasses.replace(msg, payload=b"").encode()


def test_a_certificate_handed_over_is_verified_and_must_be_its_nodes(trio: Trio) -> None:
    a, b, c = trio
    oa = OriginAuth(a, random_bytes=_RNG.randbytes)
    assert not oa.sealable(b.node_id)
    assert oa.learn_der(b.node_id, c.cert.der, now=NOW) == "origin_cert_mismatch"
    other = make_identity(make_network("othernet", now=NOW - 60), "b", now=NOW - 60)
    assert oa.learn_der(other.node_id, other.cert.der, now=NOW) == "origin_bad_cert"
    assert oa.learn_der(b.node_id, b"not a certificate", now=NOW) == "origin_bad_cert"
    assert not oa.sealable(b.node_id) and not oa.knows(c.node_id)
    assert oa.learn_der(b.node_id, b.cert.der, now=NOW) is None
    assert oa.sealable(b.node_id)
    assert oa.learn_der(a.node_id, a.cert.der, now=NOW) is None
    assert not oa.sealable(a.node_id)  # our own messages are delivered here, never sealed


def _core(ident: NodeIdentity) -> NodeCore:
    core = NodeCore(ident, rng=random.Random(1), bootstrap=[])
    core.start(now=NOW)
    return core


def test_ip_without_the_pair_key_is_not_routed_in_the_clear(trio: Trio) -> None:
    """NodeCore routes IP only sealed: without dst's certificate nothing leaves (counted), the
    route probe that brings it back goes; with the certificate a DHT record carried, the first
    packet leaves sealed."""
    a, b, c = trio
    core = _core(a)
    made: list[Routed] = []
    routed = core.origin.routed

    def spy(*args: object, **kw: object) -> Routed:
        msg = routed(*args, **kw)  # type: ignore[arg-type]
        made.append(msg)
        return msg

    core.origin.routed = spy  # type: ignore[method-assign]
    assert core.send_ip(b.node_id, PACKET, now=NOW) is None
    assert core.stats["ip_unsealable"] == 1 and "sent_routed" not in core.stats
    assert made and all(m.kind == KIND_PMTU for m in made)  # probes only: they carry our cert
    assert all(PACKET not in m.encode() for m in made)
    # The owner's certificate as a DHT record carries it: refused unless it is b's own.
    assert not core.learn_certificate(b.node_id, c.cert.der, now=NOW)
    assert core.stats["cert_refused"] == 1
    assert core.learn_certificate(b.node_id, b.cert.der, now=NOW)
    made.clear()
    assert core.send_ip(b.node_id, PACKET, now=NOW) is None
    ip = [m for m in made if m.kind == KIND_IP]
    assert len(ip) == 1 and ip[0].flags & FLAG_SEALED and PACKET not in ip[0].encode()
    assert core.stats["ip_unsealable"] == 1 and core.stats["sent_routed"] == 1


def test_on_a_shared_overlay_the_records_network_certificate_makes_ip_sealable() -> None:
    """Links and origin checks use overlay certificates; a DHT record carries the owner's
    network certificate (another CA, the same key). The core verifies that one against the
    network's CA, so IP to the owner is sealed from the first packet; a certificate of neither
    CA, or of another node, is refused."""
    overlay_ca = make_network("shared", now=NOW - 60)
    network_ca = make_network("neta", now=NOW - 60)
    a_net, b_net = (make_identity(network_ca, n, now=NOW - 60) for n in ("a", "b"))
    a_ovl = a_net.certified_by(overlay_ca, "a", now=NOW - 60)
    core = NodeCore(a_ovl, rng=random.Random(1), bootstrap=[], member=a_net)
    core.start(now=NOW)
    stranger = make_identity(make_network("netb", now=NOW - 60), "b", now=NOW - 60)
    assert not core.learn_certificate(stranger.node_id, stranger.cert.der, now=NOW)
    assert not core.learn_certificate(b_net.node_id, a_net.cert.der, now=NOW)
    assert core.stats["cert_refused"] == 2
    assert not core.origin.sealable(b_net.node_id)
    assert core.learn_certificate(b_net.node_id, b_net.cert.der, now=NOW)
    assert core.origin.sealable(b_net.node_id)
    assert core.send_ip(b_net.node_id, PACKET, now=NOW) is None
    assert core.stats["ip_unsealable"] == 0 and core.stats["sent_routed"] == 1
