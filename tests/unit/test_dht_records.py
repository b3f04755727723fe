"""DHT records, the replacement rule, the replica store and the RPC codec (pure parts)."""

from __future__ import annotations

import contextlib
import dataclasses
import random
from collections import Counter
from ipaddress import IPv4Address, IPv4Network
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kademlia.node import Node
from kademlia.routing import KBucket, RoutingTable

from ipop.dht import storage as storage_module
from ipop.dht.alloc import usable_range
from ipop.dht.names import c_name, parse_c_name
from ipop.dht.policy import RecordPolicy
from ipop.dht.protocol import IpopKademliaProtocol
from ipop.dht.record import (
    MAX_KEY_BYTES,
    MAX_RECORD_BYTES,
    MAX_VALUE_BYTES,
    Record,
    RecordChecker,
    StoreOutcome,
    check_record,
    choose_best,
    decide_store,
    decode_record,
    ip_key,
    key_id,
    name_key,
    namespace_of,
    user_key,
)
from ipop.dht.shim import address_for
from ipop.dht.storage import RecordStorage
from ipop.dht.wire import (
    Message,
    NodesFound,
    NodesRequested,
    RecordFound,
    StoreAnswered,
    StoreRequested,
    decode_message,
    encode_message,
)
from ipop.errors import ConfigError, LocalProtocolError, RemoteProtocolError
from ipop.identity import NodeIdentity
from ipop.testing.clock import SIM_EPOCH
from ipop.testing.identities import make_identity, make_network
from ipop.types import NodeId

NOW = SIM_EPOCH
MAX_TTL = 86400.0

_CA = make_network("testnet", now=NOW)
ALICE = make_identity(_CA, "alice", now=NOW)
BOB = make_identity(_CA, "bob", now=NOW)
NS_USER_K = user_key(namespace_of(_CA.trust), "k")


def rec(
    who: NodeIdentity = ALICE,
    key: str = NS_USER_K,
    value: bytes = b"v",
    *,
    seq: int = 1,
    ttl: float = 60.0,
    tombstone: bool = False,
) -> Record:
    return Record.sign(who, key, value, seq=seq, expires_at=NOW + ttl, tombstone=tombstone)


def test_round_trip_and_authentic() -> None:
    r = rec(value=b"\x00\xffhello")
    data = r.encode()
    back = decode_record(data)
    assert back == r
    check_record(back, expected_key_id=key_id(NS_USER_K))
    assert back.owner == ALICE.node_id


def test_largest_record_fits_under_1kb() -> None:
    base = len(rec(key="k", value=b"").encode())
    room = MAX_RECORD_BYTES - base - MAX_VALUE_BYTES
    assert room > 0
    r = rec(key="k" * (1 + room), value=b"x" * MAX_VALUE_BYTES, seq=(1 << 64) - 1)
    assert len(r.encode()) == MAX_RECORD_BYTES < 1024
    assert decode_record(r.encode()) == r
    with pytest.raises(LocalProtocolError):  # one byte more than a record may have
        rec(key="k" * (2 + room), value=b"x" * MAX_VALUE_BYTES)
    with pytest.raises(RemoteProtocolError):
        decode_record(r.encode() + b"x")
    assert len("k" * (2 + room)) <= MAX_KEY_BYTES  # the total bound, not the key's, refused
    with pytest.raises(LocalProtocolError):
        rec(value=b"x" * (MAX_VALUE_BYTES + 1))
    with pytest.raises(LocalProtocolError):
        rec(tombstone=True, value=b"not empty")


def test_keys_are_namespaced_per_network() -> None:
    ns = namespace_of(_CA.trust)
    assert ip_key(ns, IPv4Address("100.64.0.2")) == f"{ns}:ip:100.64.0.2"
    assert name_key(ns, "alice") == f"{ns}:name:alice"
    assert user_key(ns, "k") == f"{ns}:user:k"
    # Another network, or another CA of the same network name: other keys.
    for other in ("net-b", "testnet"):
        other_ns = namespace_of(make_network(other, now=NOW).trust)
        assert key_id(ip_key(ns, "100.64.0.2")) != key_id(ip_key(other_ns, "100.64.0.2"))
    assert len(key_id("x")) == 20


def test_every_flipped_byte_is_caught() -> None:
    data = bytearray(rec().encode())
    for i in range(len(data)):
        mutated = bytearray(data)
        mutated[i] ^= 0x01
        try:
            check_record(decode_record(bytes(mutated)))
        except RemoteProtocolError:
            continue
        pytest.fail(f"flipping byte {i} went unnoticed")


def test_owner_must_match_public_key() -> None:
    # Mallory signs with her key but claims Alice's address.
    forged = dataclasses.replace(rec(who=BOB), owner=ALICE.node_id)
    with pytest.raises(RemoteProtocolError) as err:
        check_record(forged)
    assert err.value.reason == "record_owner_mismatch"
    # Alice's key and address, Bob's signature.
    stolen = dataclasses.replace(rec(who=ALICE), sig=rec(who=BOB).sig)
    with pytest.raises(RemoteProtocolError) as err:
        check_record(stolen)
    assert err.value.reason == "record_bad_signature"


def test_record_checker_gives_check_records_verdicts_and_reasons() -> None:
    checker = RecordChecker(size=2)
    good = rec()
    checker.check(decode_record(good.encode()))
    checker.check(good, expected_key_id=good.key_id)  # an equal copy: remembered
    assert (checker.hits, len(checker)) == (1, 1)
    other_key = key_id(ip_key(namespace_of(_CA.trust), "100.64.0.3"))
    forged_owner = dataclasses.replace(rec(who=BOB), owner=ALICE.node_id)
    for bad, expected_key, reason in [
        (good, other_key, "record_key_mismatch"),  # a remembered record, asked for another key
        (forged_owner, None, "record_owner_mismatch"),
        (dataclasses.replace(good, sig=rec(who=BOB).sig), None, "record_bad_signature"),
        (dataclasses.replace(good, seq=2), None, "record_bad_signature"),  # signed bytes differ
    ]:
        with pytest.raises(RemoteProtocolError) as err:
            checker.check(bad, expected_key_id=expected_key)
        assert err.value.reason == reason
        with pytest.raises(RemoteProtocolError) as err:
            check_record(bad, expected_key_id=expected_key)
        assert err.value.reason == reason
    # Bounded: two more records, and the first is forgotten (checked again: no hit).
    checker.check(rec(seq=5))
    checker.check(rec(seq=6))
    assert len(checker) == 2
    checker.check(good)
    assert checker.hits == 1


def test_key_id_must_match() -> None:
    with pytest.raises(RemoteProtocolError) as err:
        check_record(rec(), expected_key_id=key_id(ip_key(namespace_of(_CA.trust), "100.64.0.3")))
    assert err.value.reason == "record_key_mismatch"


@pytest.mark.parametrize(
    ("current", "offered", "expected"),
    [
        (None, rec(seq=5), StoreOutcome.STORED),
        (rec(seq=5), rec(seq=6), StoreOutcome.STORED),
        (rec(seq=5), rec(seq=5), StoreOutcome.UNCHANGED),
        (rec(seq=5), rec(seq=5, value=b"other"), StoreOutcome.STALE),
        (rec(seq=5), rec(seq=4), StoreOutcome.STALE),
        (rec(seq=5), rec(BOB, seq=99), StoreOutcome.CONFLICT),
        (rec(seq=5, tombstone=True, value=b""), rec(BOB, seq=1), StoreOutcome.STORED),
        (rec(seq=5, ttl=-1), rec(BOB, seq=1), StoreOutcome.STORED),  # expired: anyone
        (None, rec(seq=5, ttl=-1), StoreOutcome.EXPIRED),
        (None, rec(seq=5, ttl=MAX_TTL + 10), StoreOutcome.EXPIRED),
    ],
)
def test_replacement_rule(current: Record | None, offered: Record, expected: StoreOutcome) -> None:
    assert decide_store(current, offered, now=NOW, max_ttl=MAX_TTL) is expected


def test_choose_best() -> None:
    a1, a2 = rec(seq=1), rec(seq=2)
    b = rec(BOB, seq=50)
    assert choose_best([a1, a2, a1], now=NOW) == a2
    assert choose_best([a1, a1, b], now=NOW) == a1  # more replicas back Alice
    assert choose_best([rec(seq=1), rec(seq=2, tombstone=True, value=b"")], now=NOW) is None
    assert choose_best([rec(ttl=-1)], now=NOW) is None
    assert choose_best([], now=NOW) is None
    # Ties are broken the same way for every reader.
    assert choose_best([a1, b], now=NOW) == choose_best([b, a1], now=NOW)


class FakeClock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def storage(clock: FakeClock | None = None, **kw: Any) -> RecordStorage:
    return RecordStorage(
        clock or FakeClock(), policy=RecordPolicy(_CA.trust), max_ttl=MAX_TTL, **kw
    )


def test_storage_refuses_forgeries_and_forgets_expired() -> None:
    clock = FakeClock()
    store = storage(clock)
    good = rec(seq=3, ttl=30)
    assert store.offer(dataclasses.replace(good, value=b"evil")) is StoreOutcome.INVALID
    assert store.offer(good) is StoreOutcome.STORED
    assert store.offer(good) is StoreOutcome.UNCHANGED
    assert store.offer(rec(seq=2)) is StoreOutcome.STALE
    assert store.offer(rec(BOB, seq=9)) is StoreOutcome.CONFLICT
    assert store.lookup(good.key_id) == good
    assert store.refused == Counter({"record_bad_signature": 1, "stale": 1, "conflict": 1})
    # kademlia's hourly republish of everything held is switched off.
    assert store.iter_older_than(0) == []
    assert list(store) == [(good.key_id, good.encode())]
    clock.now += 31
    assert store.lookup(good.key_id) is None
    assert store.get(good.key_id) is None
    # Anyone may claim it after expiry; replication never extended Alice's lease.
    bob = Record.sign(BOB, good.key, b"b", seq=1, expires_at=clock.now + 30)
    assert store.offer(bob) is StoreOutcome.STORED


def test_storage_verifies_a_copy_equal_to_the_one_it_holds_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Handoffs and repairs offer one copy many times: its signature is checked once."""
    checked: list[Record] = []

    def counting(record: Record, **kw: Any) -> None:
        checked.append(record)
        check_record(record, **kw)

    monkeypatch.setattr(storage_module, "check_record", counting)
    clock = FakeClock()
    store = storage(clock)
    good = rec(seq=3, ttl=30)
    assert store.offer(good) is StoreOutcome.STORED
    assert store.offer(decode_record(good.encode())) is StoreOutcome.UNCHANGED
    assert checked == [good]
    # A copy that differs from the held one in its signature alone is checked, and refused.
    assert store.offer(dataclasses.replace(good, sig=bytes(64))) is StoreOutcome.INVALID
    assert len(checked) == 2
    assert store.refused == Counter({"record_bad_signature": 1})
    # The equal copy is still judged now: once expired it is refused.
    clock.now += 31
    assert store.offer(good) is StoreOutcome.EXPIRED
    assert len(checked) == 2


def test_storage_setitem_checks_key_id() -> None:
    store = storage()
    r = rec()
    store[r.key_id] = r.encode()
    assert store[r.key_id] == r.encode()
    with pytest.raises(LocalProtocolError):
        store[key_id("other")] = r.encode()


def test_c_names() -> None:
    assert c_name(IPv4Address("100.64.1.2")) == "C064001002"
    assert c_name(IPv4Address("100.127.255.254")) == "C127255254"
    subnet = IPv4Network("100.64.0.0/10")
    assert parse_c_name("C064001002", subnet) == IPv4Address("100.64.1.2")
    assert parse_c_name("c064001002", subnet) == IPv4Address("100.64.1.2")
    assert parse_c_name("C256001002", subnet) is None
    assert parse_c_name("C001001002", subnet) is None  # 100.1.1.2 is outside the subnet
    assert parse_c_name("C06400100", subnet) is None
    assert parse_c_name("alice", subnet) is None


@given(st.integers(0, (1 << 32) - 1))
def test_c_name_round_trips(n: int) -> None:
    ip = IPv4Address(n)
    subnet = IPv4Network(f"{ip.packed[0]}.0.0.0/8")
    assert parse_c_name(c_name(ip), subnet) == ip


def test_config_validation() -> None:
    from ipop.dht.service import DhtConfig

    assert DhtConfig().needed(8) == 5  # Brunet: majority 5 of 8
    assert DhtConfig().needed(20) == 5
    assert DhtConfig().needed(3) == 2  # a network smaller than R: majority of its nodes
    assert DhtConfig().needed(1) == 2  # alone: nothing can be agreed
    assert DhtConfig(replicas=3).needed(3) == 2
    assert DhtConfig(replicas=8, quorum=6).needed(8) == 6
    assert DhtConfig().width == 10  # R + 2
    assert DhtConfig(lookup_k=16).width == 16
    for bad in (
        {"replicas": 2},
        {"quorum": 4},
        {"quorum": 9},
        {"ksize": 4},
        {"lookup_k": 7},  # below R: a lookup could never see the whole replica set
        {"lookup_k": 41},  # above what a find-node answer may carry
    ):
        with pytest.raises(ConfigError):
            DhtConfig(**bad)


def test_usable_range_skips_network_gateway_broadcast() -> None:
    first, last = usable_range(IPv4Network("100.64.7.0/24"))
    assert (IPv4Address(first), IPv4Address(last)) == (
        IPv4Address("100.64.7.2"),
        IPv4Address("100.64.7.254"),
    )
    with pytest.raises(ConfigError):
        usable_range(IPv4Network("100.64.7.0/31"))


# --- the RPC codec and the receive path never raise on garbage --------------------------------


def test_messages_round_trip() -> None:
    me = ALICE.node_id
    msgs: list[Message] = [
        NodesRequested(b"\x01" * 20),
        NodesFound((ALICE.node_id, BOB.node_id)),
        StoreRequested(rec()),
        StoreAnswered(StoreOutcome.CONFLICT, rec(BOB)),
        RecordFound(None),
    ]
    for msg in msgs:
        env = decode_message(encode_message(b"12345678", me, msg))
        assert env.message == msg and env.sender == me and env.msg_id == b"12345678"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1200))
def test_garbage_never_raises_out_of_decoders(data: bytes) -> None:
    for decode in (decode_record, decode_message):
        with contextlib.suppress(RemoteProtocolError):
            decode(data)


_VALID = [
    rec().encode(),
    encode_message(b"abcdefgh", ALICE.node_id, StoreRequested(rec())),
    encode_message(b"abcdefgh", ALICE.node_id, StoreAnswered(StoreOutcome.STALE, rec())),
]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(_VALID), st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255))))
def test_mutated_bytes_never_raise(data: bytes, edits: list[tuple[int, int]]) -> None:
    buf = bytearray(data)
    for pos, val in edits:
        if buf:
            buf[pos % len(buf)] = val
    for decode in (decode_record, decode_message):
        with contextlib.suppress(RemoteProtocolError):
            decode(bytes(buf))


class _Transport:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Any]] = []

    def sendto(self, data: bytes, addr: Any) -> None:
        self.sent.append((data, addr))


def _protocol() -> tuple[IpopKademliaProtocol, _Transport]:
    def no_spawn(coro: Any) -> Any:
        coro.close()
        raise AssertionError("nothing should be spawned by garbage")

    proto = IpopKademliaProtocol(
        BOB.node_id,
        storage(),
        20,
        rng=random.Random(1),
        clock=FakeClock(),
        spawn=no_spawn,
    )
    transport = _Transport()
    proto.connection_made(transport)
    return proto, transport


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_receive_path_drops_garbage_without_reply(data: bytes) -> None:
    proto, transport = _protocol()
    proto.datagram_received(b"\x00" + data, address_for(ALICE.node_id))
    proto.datagram_received(b"\x01" + data, address_for(ALICE.node_id))
    proto.datagram_received(data, ("not-a-node", 5))
    assert sum(proto.drops.values()) >= 2
    # Garbage could only be answered if it parsed as a request from the authenticated sender.
    assert all(addr == address_for(ALICE.node_id) for _, addr in transport.sent)


def test_sender_mismatch_is_dropped_and_counted() -> None:
    proto, transport = _protocol()
    msg = encode_message(b"abcdefgh", ALICE.node_id, StoreRequested(rec()))
    proto.datagram_received(msg, address_for(NodeId(12345)))
    assert proto.drops["sender_mismatch"] == 1
    assert transport.sent == []
    assert proto.record_storage.lookup(rec().key_id) is None
    proto.datagram_received(msg, address_for(ALICE.node_id))
    assert proto.record_storage.lookup(rec().key_id) == rec()
    assert len(transport.sent) == 1
    # A retransmission is answered from the cache, not executed again.
    proto.datagram_received(msg, address_for(ALICE.node_id))
    assert len(transport.sent) == 2 and transport.sent[0] == transport.sent[1]
    assert proto.counters["duplicate_requests"] == 1


def test_find_neighbors_sees_contacts_beyond_empty_buckets() -> None:
    # The shape that made a 1,000-node run's get miss: the target's bucket is the last one,
    # it and its left neighbour are empty, and every contact sits further left. Stock
    # kademlia's TableTraverser gives up after one left bucket and returned nothing.
    proto, _ = _protocol()
    top = 2**160
    contacts = [Node(i.to_bytes(20, "big")) for i in range(1, 6)]
    table = proto.router
    table.buckets = [KBucket(0, 2**100, 20), KBucket(2**100 + 1, 2**150, 20)]
    table.buckets.append(KBucket(2**150 + 1, top, 20))
    for n in contacts:
        table.buckets[0].add_node(n)
    target = Node((top - 1).to_bytes(20, "big"))
    assert RoutingTable.find_neighbors(table, target, 3) == []  # the stock failure
    got = table.find_neighbors(target, 3)
    # The 3 nearest by XOR distance to all-ones are the largest ids.
    assert [n.long_id for n in got] == [5, 4, 3]
