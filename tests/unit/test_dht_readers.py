"""Who may read a network's records on a shared overlay (issue 17, item 3: a member of one
network can neither resolve nor enumerate another's names): a replica shows a record only to
a member of its namespace's network, whose certificate in that namespace comes with the
request (a FETCH's proof, a STORE's own record), and only to the node it certifies."""

from __future__ import annotations

import random
from typing import Any

from ipop.dht.policy import RecordPolicy
from ipop.dht.protocol import IpopKademliaProtocol
from ipop.dht.record import Record, StoreOutcome, ip_key, namespace_of
from ipop.dht.shim import address_for
from ipop.dht.storage import RecordStorage
from ipop.dht.wire import (
    MAX_PROOF_BYTES,
    RecordFound,
    RecordRequested,
    StoreAnswered,
    StoreRequested,
    decode_message,
    encode_message,
)
from ipop.identity import cert_serial
from ipop.testing.clock import SIM_EPOCH
from ipop.testing.identities import make_identity, make_network
from ipop.types import NodeId

NOW = SIM_EPOCH
_LAB = make_network("labnet", now=NOW)
_OTHER = make_network("othernet", now=NOW)
SHARED = namespace_of(make_network("shared", now=NOW).trust)  # the overlay's own CA
LAB = namespace_of(_LAB.trust)
ALICE = make_identity(_LAB, "alice", now=NOW, hostname="alice")
BOB = make_identity(_LAB, "bob", now=NOW, hostname="bob")
EVE = make_identity(_OTHER, "eve", now=NOW, hostname="eve")  # another network's member
# The overlay-only replica under test.
REPLICA = make_identity(make_network("shared", now=NOW), "ov1", now=NOW)
ALICE_IP = ip_key(LAB, "100.64.0.7")


def _policy(**kw: Any) -> RecordPolicy:
    return RecordPolicy(None, readable=SHARED, **kw)


def test_only_a_member_showing_its_own_certificate_may_read() -> None:
    p = _policy()
    assert p.may_read(BOB.node_id, ALICE_IP, BOB.cert.der, now=NOW)
    assert not p.may_read(BOB.node_id, ALICE_IP, b"", now=NOW)  # no proof
    assert not p.may_read(EVE.node_id, ALICE_IP, EVE.cert.der, now=NOW)  # another CA's
    assert not p.may_read(EVE.node_id, ALICE_IP, BOB.cert.der, now=NOW)  # someone else's
    assert not p.may_read(BOB.node_id, ALICE_IP, b"\x30\x03garbage", now=NOW)
    assert not p.may_read(BOB.node_id, "no namespace at all", BOB.cert.der, now=NOW)
    # The overlay's own namespace: every node of the overlay holds its CA's certificate.
    assert p.may_read(EVE.node_id, f"{SHARED}:user:motd", b"", now=NOW)
    # An expired certificate proves nothing.
    assert not p.may_read(BOB.node_id, ALICE_IP, BOB.cert.der, now=NOW + 10 * 365 * 86400)


def test_a_revoked_member_reads_nothing_once_its_crl_is_known() -> None:
    revoked = {_LAB.trust.public_key_raw: frozenset({cert_serial(BOB.cert)})}
    p = _policy(revoked=lambda key: revoked.get(key, frozenset()))
    assert not p.may_read(BOB.node_id, ALICE_IP, BOB.cert.der, now=NOW)
    assert p.may_read(ALICE.node_id, ALICE_IP, ALICE.cert.der, now=NOW)


class _Transport:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendto(self, data: bytes, addr: Any) -> None:
        self.sent.append(data)


class _Replica:
    """An overlay-only replica's protocol holding alice's address record."""

    def __init__(self) -> None:
        policy = _policy()
        self.storage = RecordStorage(lambda: NOW, policy=policy, max_ttl=86400.0)
        self.record = Record.sign(ALICE, ALICE_IP, b"", seq=1, expires_at=NOW + 600)
        assert self.storage.offer(self.record) is StoreOutcome.STORED

        def no_spawn(coro: Any) -> Any:
            coro.close()
            raise AssertionError("a request spawns nothing")

        self.proto = IpopKademliaProtocol(
            REPLICA.node_id,
            self.storage,
            20,
            rng=random.Random(1),
            clock=lambda: NOW,
            spawn=no_spawn,
            may_read=lambda asker, key, proof: policy.may_read(asker, key, proof, now=NOW),
        )
        self.transport = _Transport()
        self.proto.connection_made(self.transport)
        self._ids = iter(range(1, 1000))

    def ask(self, who: NodeId, message: RecordRequested | StoreRequested) -> Any:
        msg_id = next(self._ids).to_bytes(8, "big")
        self.proto.datagram_received(encode_message(msg_id, who, message), address_for(who))
        return decode_message(self.transport.sent[-1]).message


def test_a_fetch_shows_the_record_to_members_only() -> None:
    r = _Replica()
    kid = r.record.key_id
    assert r.ask(BOB.node_id, RecordRequested(kid, BOB.cert.der)) == RecordFound(r.record)
    # A stranger, with no proof, with its own network's, or with a member's it copied: as if
    # the replica held nothing. Before, every one of them got alice's record.
    for who, proof in ((EVE, b""), (EVE, EVE.cert.der), (EVE, BOB.cert.der)):
        assert r.ask(who.node_id, RecordRequested(kid, proof)) == RecordFound(None)
    assert r.proto.drops["fetch_not_member"] == 3


def test_a_refused_store_shows_the_current_record_to_members_only() -> None:
    """A refused STORE answers with the record held, so that a creator learns who holds the
    key: a stranger's forged offer for the key must not read it that way."""
    r = _Replica()
    squat = Record.sign(EVE, ALICE_IP, b"", seq=9, expires_at=NOW + 600)
    answer = r.ask(EVE.node_id, StoreRequested(squat))
    assert answer == StoreAnswered(StoreOutcome.INVALID, None)
    # A member's conflicting claim learns the holder, as create-if-absent needs.
    claim = Record.sign(BOB, ALICE_IP, b"", seq=9, expires_at=NOW + 600)
    answer = r.ask(BOB.node_id, StoreRequested(claim))
    assert answer == StoreAnswered(StoreOutcome.CONFLICT, r.record)
    # The same member's claim sent by another node (Eve replaying it): its certificate is
    # not the sender's, so the answer shows nothing.
    assert r.ask(EVE.node_id, StoreRequested(claim)) == StoreAnswered(StoreOutcome.CONFLICT, None)


def test_a_fetch_proof_is_bounded_on_the_wire() -> None:
    r = _Replica()
    kid = r.record.key_id
    before = len(r.transport.sent)
    big = encode_message(b"\0" * 8, BOB.node_id, RecordRequested(kid, bytes(MAX_PROOF_BYTES + 1)))
    r.proto.datagram_received(big, address_for(BOB.node_id))
    assert len(r.transport.sent) == before and r.proto.drops["dht_bad_length"] == 1
