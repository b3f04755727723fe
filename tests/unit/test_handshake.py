"""Handshake and session establishment of LinkLayer, driven by hand with explicit ``now``."""

from __future__ import annotations

import dataclasses
import random

import pytest

from ipop.errors import LocalProtocolError
from ipop.identity import NodeIdentity
from ipop.link.crypto import CHACHA20_POLY1305
from ipop.link.events import HandshakeFailed, LinkEvent, LinkMessage, LinkUp
from ipop.link.layer import LinkConfig, LinkLayer
from ipop.testing.clock import SIM_EPOCH
from ipop.testing.identities import make_identity, make_network
from ipop.types import Endpoint, NodeId, Path, RelayPath
from ipop.wire.handshake import MAC2_BYTES, HandshakeInit, HandshakeResp, init_signing_input

NOW = SIM_EPOCH
A_EP = Endpoint("198.51.100.1", 5800)
B_EP = Endpoint("203.0.113.2", 5800)
FAST = LinkConfig()


def events(ep: LinkLayer) -> list[LinkEvent]:
    out = []
    while (ev := ep.next_event()) is not None:
        out.append(ev)
    return out


class Pair:
    """Two endpoints, A at A_EP and B at B_EP, with a wire we move datagrams along by hand."""

    def __init__(self, config: LinkConfig = FAST, *, seed: int = 1) -> None:
        self.ca = make_network(now=NOW - 60)
        self.ida = make_identity(self.ca, "alice", now=NOW - 60)
        self.idb = make_identity(self.ca, "bob", now=NOW - 60)
        self.a = LinkLayer(self.ida, rng=random.Random(seed), config=config)
        self.b = LinkLayer(self.idb, rng=random.Random(seed + 1), config=config)
        self.where = {A_EP: self.a, B_EP: self.b}
        self.addr = {id(self.a): A_EP, id(self.b): B_EP}

    def out(self, ep: LinkLayer, now: float = NOW) -> list[tuple[bytes, Path]]:
        return ep.datagrams_to_send(now=now)

    def flush(self, now: float = NOW, rounds: int = 10) -> int:
        """Deliver everything both sides queued, until quiet; return how many datagrams."""
        moved = 0
        for _ in range(rounds):
            batch = [(ep, d, p) for ep in (self.a, self.b) for d, p in self.out(ep, now)]
            if not batch:
                return moved
            for src, data, path in batch:
                assert isinstance(path, Endpoint)
                self.where[path].receive_datagram(data, self.addr[id(src)], now=now)
                moved += 1
        return moved

    def up(self, now: float = NOW) -> None:
        self.a.connect(B_EP, now=now, expected=self.idb.node_id)
        self.flush(now)
        assert self.a.is_up(self.idb.node_id) and self.b.is_up(self.ida.node_id)


def test_handshake_establishes_both_sides_with_observed_endpoint() -> None:
    p = Pair()
    p.a.connect(B_EP, now=NOW, expected=p.idb.node_id)
    (init,) = p.out(p.a)
    assert init[1] == B_EP and len(init[0]) < 1200
    p.b.receive_datagram(init[0], A_EP, now=NOW)
    assert events(p.b) == [] and not p.b.is_up(p.ida.node_id)  # no LinkUp before confirmation
    (resp,) = p.out(p.b)
    assert resp[1] == A_EP
    p.a.receive_datagram(resp[0], B_EP, now=NOW)
    (up_a,) = events(p.a)
    assert isinstance(up_a, LinkUp)
    assert up_a.peer == p.idb.node_id and up_a.path == B_EP and up_a.observed == A_EP
    assert up_a.cert.name == "bob"
    (keepalive,) = p.out(p.a)
    assert len(keepalive[0]) == 29
    p.b.receive_datagram(keepalive[0], A_EP, now=NOW + 0.01)
    (up_b,) = events(p.b)
    assert up_b == LinkUp(p.ida.node_id, p.ida.cert, A_EP, None)
    assert not p.a.drops and not p.b.drops


def test_messages_flow_both_ways_and_keepalives_are_not_messages() -> None:
    p = Pair()
    p.up()
    events(p.a), events(p.b)
    p.a.send(p.idb.node_id, b"hello", now=NOW + 1)
    data, path = p.b.seal(p.ida.node_id, b"world", now=NOW + 1)
    assert path == A_EP
    p.a.receive_datagram(data, B_EP, now=NOW + 1)
    p.flush(NOW + 1)
    (msg_b,) = events(p.b)
    (msg_a,) = events(p.a)
    assert msg_b == LinkMessage(p.ida.node_id, b"hello", A_EP)
    assert msg_a == LinkMessage(p.idb.node_id, b"world", B_EP)
    info = {i.peer: i for i in p.a.peers()}[p.idb.node_id]
    assert info.name == "bob" and info.path == B_EP and info.observed == A_EP
    assert info.packets_out == 2 and info.packets_in == 1 and info.cipher == "aes-256-gcm"


def test_seal_without_session_is_misuse() -> None:
    p = Pair()
    with pytest.raises(LocalProtocolError):
        p.a.seal(p.idb.node_id, b"x", now=NOW)
    with pytest.raises(LocalProtocolError):
        p.a.connect(B_EP, now=NOW, expected=p.ida.node_id)


def test_cipher_negotiation_picks_initiators_preference_that_responder_speaks() -> None:
    p = Pair()
    p.b = LinkLayer(p.idb, rng=random.Random(5), config=LinkConfig(ciphers=(CHACHA20_POLY1305,)))
    p.where[B_EP] = p.b
    p.addr[id(p.b)] = B_EP
    p.up()
    assert p.a.peers()[0].cipher == CHACHA20_POLY1305
    assert p.b.peers()[0].cipher == CHACHA20_POLY1305


def _refused_init(p: Pair, responder_identity: NodeIdentity, *, now: float) -> LinkLayer:
    responder = LinkLayer(responder_identity, rng=random.Random(9))
    p.a.connect(B_EP, now=NOW)
    ((init, _),) = p.out(p.a)
    responder.receive_datagram(init, A_EP, now=now)
    assert responder.datagrams_to_send(now=now) == []
    assert responder.next_event() is None
    return responder


def test_wrong_ca_gets_no_reply() -> None:
    p = Pair()
    other_ca = make_network(now=NOW - 60)
    stranger = make_identity(other_ca, "mallory", now=NOW - 60)
    responder = _refused_init(p, stranger, now=NOW)
    assert responder.drops == {"cert_bad_signature": 1}


def test_wrong_network_gets_no_reply() -> None:
    p = Pair()
    other_ca = make_network("othernet", now=NOW - 60)
    stranger = make_identity(other_ca, "mallory", now=NOW - 60)
    responder = _refused_init(p, stranger, now=NOW)
    assert sum(responder.drops.values()) == 1
    assert set(responder.drops) <= {"cert_bad_signature", "cert_wrong_network"}


def test_expired_certificate_gets_no_reply() -> None:
    ca = make_network(now=NOW - 10 * 86400)
    old = make_identity(ca, "oldie", now=NOW - 10 * 86400, days=2)
    bob = make_identity(ca, "bob", now=NOW - 60)
    a = LinkLayer(old, rng=random.Random(1))
    b = LinkLayer(bob, rng=random.Random(2))
    a.connect(B_EP, now=NOW)
    ((init, _),) = a.datagrams_to_send(now=NOW)
    b.receive_datagram(init, A_EP, now=NOW)
    assert b.drops == {"cert_expired": 1}
    assert b.datagrams_to_send(now=NOW) == [] and b.next_event() is None


def test_initiator_refuses_responder_with_expired_certificate() -> None:
    ca = make_network(now=NOW - 10 * 86400)
    alice = make_identity(ca, "alice", now=NOW - 60)
    old = make_identity(ca, "oldie", now=NOW - 10 * 86400, days=2)
    a = LinkLayer(alice, rng=random.Random(1))
    b = LinkLayer(old, rng=random.Random(2))
    a.connect(B_EP, now=NOW)
    ((init, _),) = a.datagrams_to_send(now=NOW)
    # The responder's own certificate is expired but it still checks the initiator's.
    b.receive_datagram(init, A_EP, now=NOW)
    ((resp, _),) = b.datagrams_to_send(now=NOW)
    a.receive_datagram(resp, B_EP, now=NOW)
    assert a.drops == {"cert_expired": 1}
    assert a.datagrams_to_send(now=NOW) == [] and a.next_event() is None


def test_init_for_another_node_is_refused_by_the_responder_before_any_crypto() -> None:
    # The Init names Carol (signed), so Bob refuses it for free: no reply, no key check.
    p = Pair()
    carol = make_identity(p.ca, "carol", now=NOW - 60)
    p.a.connect(B_EP, now=NOW, expected=carol.node_id)
    p.flush()
    assert p.b.drops == {"not_for_us": 1} and p.b.stats["init_expensive"] == 0
    assert not p.a.is_up(p.idb.node_id)
    p.a.handle_timer(now=NOW + FAST.handshake_timeout_s)
    assert events(p.a) == [HandshakeFailed(B_EP, "timeout")]
    assert not p.b.is_up(p.ida.node_id)


def _flip_signature(init: bytes) -> bytes:
    """The Init with one bit of its signature (the 64 bytes before the 16-byte mac2) flipped."""
    sig_end = len(init) - MAC2_BYTES
    return init[: sig_end - 1] + bytes([init[sig_end - 1] ^ 1]) + init[sig_end:]


def test_bad_init_signature_gets_no_reply() -> None:
    p = Pair()
    p.a.connect(B_EP, now=NOW)
    ((init, _),) = p.out(p.a)
    forged = _flip_signature(init)
    p.b.receive_datagram(forged, A_EP, now=NOW)
    assert p.b.drops == {"bad_signature": 1}
    assert p.out(p.b) == []


def test_tampered_resp_is_refused() -> None:
    p = Pair()
    p.a.connect(B_EP, now=NOW)
    ((init, _),) = p.out(p.a)
    p.b.receive_datagram(init, A_EP, now=NOW)
    ((resp, _),) = p.out(p.b)
    parsed = HandshakeResp.parse(resp)
    lying = dataclasses.replace(parsed, observed=Endpoint("198.51.100.99", 1))
    p.a.receive_datagram(lying.encode(), B_EP, now=NOW)
    assert p.a.drops == {"bad_signature": 1}
    assert p.out(p.a) == [] and events(p.a) == []
    p.a.receive_datagram(resp, B_EP, now=NOW)  # the genuine one still works
    assert p.a.is_up(p.idb.node_id)


def test_replayed_init_is_stale_and_gets_no_reply() -> None:
    p = Pair()
    p.a.connect(B_EP, now=NOW)
    ((init, _),) = p.out(p.a)
    p.b.receive_datagram(init, A_EP, now=NOW)
    ((resp, _),) = p.out(p.b)
    # From another path while unconfirmed: answered there too (a copy raced ahead of the
    # original must not block it, see test_handshake_binding.py), with keys nobody confirms.
    other = Endpoint("198.51.100.99", 1)
    p.b.receive_datagram(init, other, now=NOW + 1)
    ((_, to),) = p.out(p.b)
    assert to == other and not p.b.drops
    # Once the keys are confirmed, a replay gets nothing, from any path.
    p.a.receive_datagram(resp, B_EP, now=NOW + 1)
    ((confirm, _),) = p.out(p.a)
    p.b.receive_datagram(confirm, A_EP, now=NOW + 1)
    assert p.b.is_up(p.ida.node_id)
    p.b.receive_datagram(init, A_EP, now=NOW + 5)
    p.b.receive_datagram(init, other, now=NOW + 5)
    assert p.b.drops == {"stale_handshake": 2}
    assert p.out(p.b) == []


def test_retransmitted_init_is_the_same_bytes_and_gets_the_same_resp() -> None:
    # One signature per handshake: the retry resends the Init; the responder whose Resp was
    # lost answers the identical copy with its identical Resp and keeps one pending key set.
    p = Pair()
    p.a.connect(B_EP, now=NOW)
    ((init, _),) = p.out(p.a)
    p.b.receive_datagram(init, A_EP, now=NOW)
    ((resp, _),) = p.out(p.b)  # lost
    p.a.handle_timer(now=NOW + FAST.handshake_retry_s)
    ((again, _),) = p.out(p.a)
    assert again == init
    p.b.receive_datagram(again, A_EP, now=NOW + FAST.handshake_retry_s)
    assert p.out(p.b) == [(resp, A_EP)]
    assert p.b.stats["handshake_reanswered"] == 1 and not p.b.drops
    p.a.receive_datagram(resp, B_EP, now=NOW + 2)
    assert p.a.is_up(p.idb.node_id)


def test_init_outside_clock_skew_is_stale() -> None:
    p = Pair()
    p.a.connect(B_EP, now=NOW)
    ((init, _),) = p.out(p.a)
    p.b.receive_datagram(init, A_EP, now=NOW + FAST.handshake_clock_skew_s + 1)
    p.b.receive_datagram(init, A_EP, now=NOW - FAST.handshake_clock_skew_s - 1)
    assert p.b.drops == {"stale_handshake": 2}
    assert p.out(p.b) == []


def test_resp_to_unknown_index_is_dropped() -> None:
    p = Pair()
    p.a.connect(B_EP, now=NOW)
    ((init, _),) = p.out(p.a)
    p.b.receive_datagram(init, A_EP, now=NOW)
    ((resp, _),) = p.out(p.b)
    parsed = HandshakeResp.parse(resp)
    other = dataclasses.replace(parsed, receiver_index=parsed.receiver_index ^ 1)
    p.a.receive_datagram(other.encode(), B_EP, now=NOW)
    assert p.a.drops == {"unknown_index": 1}


def test_retransmission_doubles_then_times_out() -> None:
    cfg = LinkConfig(handshake_retry_s=1.0, handshake_retry_max_s=4.0, handshake_timeout_s=20.0)
    p = Pair(cfg)
    p.a.connect(B_EP, now=NOW)
    assert len(p.out(p.a)) == 1
    sent_at = []
    t = NOW
    while True:
        timer = p.a.get_timer()
        assert timer is not None and timer > t
        t = timer
        p.a.handle_timer(now=t)
        if p.out(p.a, t):
            sent_at.append(round(t - NOW, 6))
        evs = events(p.a)
        if evs:
            assert evs == [HandshakeFailed(B_EP, "timeout")]
            break
    assert sent_at == [1.0, 3.0, 7.0, 11.0, 15.0, 19.0]
    assert round(t - NOW, 6) == 20.0
    assert p.a.get_timer() is None


def test_retransmitted_init_is_identical_and_late_resp_still_completes() -> None:
    p = Pair()
    p.a.connect(B_EP, now=NOW)
    ((init1, _),) = p.out(p.a)
    p.a.handle_timer(now=NOW + 1)
    ((init2, _),) = p.out(p.a)
    assert init1 == init2  # one signature per handshake
    # B answers both (the same Resp twice); A completes with the first; B confirms that one.
    p.b.receive_datagram(init1, A_EP, now=NOW + 1.1)
    p.b.receive_datagram(init2, A_EP, now=NOW + 1.2)
    (r1, _), (r2, _) = p.out(p.b)
    p.a.receive_datagram(r1, B_EP, now=NOW + 1.3)
    p.a.receive_datagram(r2, B_EP, now=NOW + 1.3)
    assert p.a.drops == {"unknown_index": 1}
    p.flush(NOW + 1.4)
    assert p.b.is_up(p.ida.node_id)
    p.a.send(p.idb.node_id, b"ping", now=NOW + 2)
    p.flush(NOW + 2)
    assert [e.payload for e in events(p.b) if hasattr(e, "payload")] == [b"ping"]


def test_simultaneous_connect_converges_on_one_session() -> None:
    p = Pair()
    p.a.connect(B_EP, now=NOW, expected=p.idb.node_id)
    p.b.connect(A_EP, now=NOW, expected=p.ida.node_id)
    p.flush(NOW)
    assert p.a.is_up(p.idb.node_id) and p.b.is_up(p.ida.node_id)
    loser = p.a if p.ida.node_id < p.idb.node_id else p.b
    winner = p.b if loser is p.a else p.a
    assert winner.drops == {"handshake_collision": 1}
    assert loser.stats["collision_yielded"] == 1
    ups_a = [e for e in events(p.a) if isinstance(e, LinkUp)]
    ups_b = [e for e in events(p.b) if isinstance(e, LinkUp)]
    assert len(ups_a) == len(ups_b) == 1
    # Both ends seal with the same keys: traffic flows both ways, and no timer is left failing.
    for t in (NOW + 1, NOW + 30, NOW + 60):
        p.a.send(p.idb.node_id, b"a", now=t)
        p.b.send(p.ida.node_id, b"b", now=t)
        p.flush(t)
        assert [e.payload for e in events(p.b) if hasattr(e, "payload")] == [b"a"]
        assert [e.payload for e in events(p.a) if hasattr(e, "payload")] == [b"b"]
    p.a.handle_timer(now=NOW + 60)
    assert not [e for e in events(p.a) if isinstance(e, HandshakeFailed)]


def test_crossing_inits_are_refused_before_and_yielded_to_only_after_the_signature() -> None:
    """The larger id refuses the crossing Init before checking its signature (refusing changes
    nothing); the smaller id drops its own attempt only for an authentic Init."""
    p = Pair()
    big, small = (p.a, p.b) if p.ida.node_id > p.idb.node_id else (p.b, p.a)
    big_ep, small_ep = (A_EP, B_EP) if big is p.a else (B_EP, A_EP)
    big.connect(small_ep, now=NOW)
    small.connect(big_ep, now=NOW)
    ((from_big, _),) = p.out(big)
    ((from_small, _),) = p.out(small)
    forged = _flip_signature
    # The larger end: refused as a collision, so no signature check was needed.
    big.receive_datagram(forged(from_small), small_ep, now=NOW + 0.01)
    assert big.drops == {"handshake_collision": 1}
    # The smaller end: a forged crossing Init is caught and its own attempt stands.
    small.receive_datagram(forged(from_big), big_ep, now=NOW + 0.01)
    assert small.drops == {"bad_signature": 1} and small.stats["collision_yielded"] == 0
    assert p.out(small) == []
    small.receive_datagram(from_big, big_ep, now=NOW + 0.02)
    assert small.stats["collision_yielded"] == 1
    ((resp, _),) = p.out(small)
    big.receive_datagram(resp, small_ep, now=NOW + 0.03)
    p.flush(NOW + 0.03)
    assert big.is_up(small.local_id) and small.is_up(big.local_id)


def test_simultaneous_connect_without_expected_id_matches_by_path() -> None:
    p = Pair()
    p.a.connect(B_EP, now=NOW)
    p.b.connect(A_EP, now=NOW)
    p.flush(NOW)
    assert p.a.is_up(p.idb.node_id) and p.b.is_up(p.ida.node_id)
    assert p.a.drops["handshake_collision"] + p.b.drops["handshake_collision"] == 1
    p.a.send(p.idb.node_id, b"x", now=NOW + 20)
    p.flush(NOW + 20)
    assert [e.payload for e in events(p.b) if hasattr(e, "payload")] == [b"x"]


def test_connect_reuses_pending_and_up_sessions() -> None:
    p = Pair()
    p.a.connect(B_EP, now=NOW)
    p.a.connect(B_EP, now=NOW)
    ((init, _),) = p.out(p.a)
    p.b.receive_datagram(b"", A_EP, now=NOW)  # junk disturbs nothing pending
    p.a.connect(B_EP, now=NOW)
    assert p.out(p.a) == []
    p.b.receive_datagram(init, A_EP, now=NOW)
    p.flush()
    events(p.a)
    p.a.connect(B_EP, now=NOW + 1, expected=p.idb.node_id)
    assert p.out(p.a) == [] and p.a.peer_at(B_EP) == p.idb.node_id


def test_relay_path_is_opaque() -> None:
    p = Pair()
    relay = NodeId(12345)
    a_to_b = RelayPath(via=relay, peer=p.idb.node_id)
    b_to_a = RelayPath(via=relay, peer=p.ida.node_id)
    p.a.connect(a_to_b, now=NOW, expected=p.idb.node_id)
    for _ in range(4):
        for data, path in p.out(p.a):
            assert path == a_to_b
            p.b.receive_datagram(data, b_to_a, now=NOW)
        for data, path in p.out(p.b):
            assert path == b_to_a
            p.a.receive_datagram(data, a_to_b, now=NOW)
    (up_a,) = events(p.a)
    (up_b,) = events(p.b)
    assert isinstance(up_a, LinkUp) and up_a.path == a_to_b and up_a.observed is None
    assert isinstance(up_b, LinkUp) and up_b.path == b_to_a
    data, path = p.a.seal(p.idb.node_id, b"through the relay", now=NOW)
    assert path == a_to_b and b"through the relay" not in data
    p.b.receive_datagram(data, b_to_a, now=NOW)
    (msg,) = events(p.b)
    assert msg == LinkMessage(p.ida.node_id, b"through the relay", b_to_a)


def test_close_emits_linkdown_and_forgets_keys() -> None:
    p = Pair()
    p.up()
    events(p.a)
    data, _ = p.b.seal(p.ida.node_id, b"late", now=NOW)
    p.a.close(p.idb.node_id, now=NOW)
    assert [type(e).__name__ for e in events(p.a)] == ["LinkDown"]
    p.a.receive_datagram(data, B_EP, now=NOW)
    assert p.a.drops == {"unknown_index": 1} and events(p.a) == []


def test_unauthenticated_packets_never_get_a_reply() -> None:
    p = Pair()
    p.up()
    events(p.a)
    mallory = make_identity(p.ca, "mallory", now=NOW - 60)
    # Mallory presents Alice's (public) certificate with her own ephemeral key and signature.
    stolen = HandshakeInit(
        sender_index=7,
        ephemeral=bytes(range(32)),
        timestamp_ms=int((NOW + 5) * 1000),
        ciphers=(1,),
        responder=Endpoint("203.0.113.50", 5800),  # an endpoint binding: nobody checks it
        cert_der=p.ida.cert.der,
    )
    body = stolen.signed_part()
    forged_init = body + mallory.sign(init_signing_input(body)) + bytes(MAC2_BYTES)
    # A Resp nobody asked for, from a genuine member.
    m = LinkLayer(mallory, rng=random.Random(3))
    p.b.connect(Endpoint("203.0.113.9", 1), now=NOW)
    ((b_init, _),) = p.out(p.b)
    m.receive_datagram(b_init, B_EP, now=NOW)
    ((unsolicited, _),) = m.datagrams_to_send(now=NOW)
    garbage_data = bytes([0xC3]) + bytes(40)
    for data in (forged_init, unsolicited, garbage_data, b"\xc1", b"\xc2" * 300):
        p.a.receive_datagram(data, B_EP, now=NOW + 5)
    assert p.a.drops == {
        "own_identity": 1,  # Alice's own certificate: refused before its signature is read
        "unknown_index": 2,
        "malformed": 2,
    }
    assert p.out(p.a, NOW + 5) == [] and events(p.a) == []
    # To anyone else the stolen certificate is a valid one, and the signature gives it away.
    carol = LinkLayer(make_identity(p.ca, "carol", now=NOW - 60), rng=random.Random(4))
    carol.receive_datagram(forged_init, B_EP, now=NOW + 5)
    assert carol.drops == {"bad_signature": 1}
    assert carol.datagrams_to_send(now=NOW + 5) == [] and carol.next_event() is None
