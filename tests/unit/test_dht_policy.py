"""Records bound to membership (issue 13, finding 3): certificates, namespaces, names, quotas."""

from __future__ import annotations

import dataclasses
from collections import Counter
from ipaddress import IPv4Address, IPv4Network

import pytest

from ipop.dht.policy import POLICY_REASONS, USER_QUOTA, Kind, RecordPolicy, lan_host_name
from ipop.dht.record import (
    MAX_RECORD_BYTES,
    MAX_VALUE_BYTES,
    Record,
    StoreOutcome,
    decode_record,
    ip_key,
    name_key,
)
from ipop.dht.storage import STORE_REASONS, RecordStorage
from ipop.errors import LocalProtocolError, RemoteProtocolError
from ipop.identity import NodeIdentity
from ipop.testing.clock import SIM_EPOCH, VirtualClock
from ipop.testing.identities import make_identity, make_network

NOW = SIM_EPOCH
MAX_TTL = 86400.0
SUBNET = IPv4Network("100.64.0.0/16")

_CA = make_network("testnet", now=NOW)
ALICE = make_identity(_CA, "alice", now=NOW, hostname="alice-laptop")
BOB = make_identity(_CA, "bob", now=NOW, hostname="bob")
PLAIN = make_identity(_CA, "plain", now=NOW)  # a member without a hostname
ROUTER = NodeIdentity.generate(_CA, "r1", now=NOW, hostname="lab", router_hosts=3)
# Same network name, another CA: a key the network never certified.
ROGUE = make_identity(make_network("testnet", now=NOW), "mallory", now=NOW, hostname="bob")
# A member of another network.
OTHER = make_identity(make_network("othernet", now=NOW), "eve", now=NOW, hostname="eve")


def store(clock: VirtualClock | None = None, **kw: int) -> RecordStorage:
    c = clock or VirtualClock(NOW)
    policy = RecordPolicy(_CA.trust, subnet=SUBNET)
    return RecordStorage(lambda: c.now, policy=policy, max_ttl=MAX_TTL, **kw)


def sign(
    who: NodeIdentity, key: str, value: bytes = b"", *, seq: int = 1, ttl: float = 60.0
) -> Record:
    return Record.sign(who, key, value, seq=seq, expires_at=NOW + ttl)


def ip(n: int) -> str:
    return ip_key("testnet", IPv4Address("100.64.0.0") + n)


ADDR = IPv4Address("100.64.0.9").packed


def refused(s: RecordStorage, record: Record, reason: str) -> None:
    before = s.refused[reason]
    outcome = s.offer(record)
    assert not outcome.accepted, (record, outcome)
    assert s.refused[reason] == before + 1, s.refused
    assert s.lookup(record.key_id) is None or s.lookup(record.key_id) != record


# --- membership ---------------------------------------------------------------------------------


def test_a_key_without_a_certificate_of_this_network_stores_nothing() -> None:
    s = store()
    # A valid signature under a certificate from another CA (same network name).
    refused(s, sign(ROGUE, ip(2)), "cert_bad_signature")
    refused(s, sign(ROGUE, "testnet:user:x", b"v"), "cert_bad_signature")
    # A member's certificate stapled to another key's record.
    stapled = Record.sign(ROGUE, ip(3), b"", seq=1, expires_at=NOW + 60)
    stapled = dataclasses.replace(stapled, cert=ALICE.cert.der)
    assert s.offer(stapled) is StoreOutcome.INVALID  # the signature covers the certificate
    # Garbage where the certificate goes.
    junk = dataclasses.replace(sign(ALICE, ip(4)), cert=b"\x30\x03junk")
    assert s.offer(junk) is StoreOutcome.INVALID
    assert len(s) == 0


def test_expired_certificate_stores_nothing() -> None:
    short = make_identity(_CA, "brief", now=NOW, days=1)
    clock = VirtualClock(NOW)
    s = store(clock)
    clock.now = NOW + 2 * 86400
    r = Record.sign(short, ip(5), b"", seq=1, expires_at=clock.now + 60)
    refused(s, r, "cert_expired")


def test_the_certificate_must_carry_the_signing_key() -> None:
    policy = RecordPolicy(_CA.trust)
    # Bob's own record, but Alice's certificate in the (re-signed) cert field.
    r = sign(BOB, "testnet:user:k", b"v")
    forged = Record.sign(BOB, r.key, r.value, seq=1, expires_at=NOW + 60)
    forged = dataclasses.replace(forged, cert=ALICE.cert.der)
    with pytest.raises(RemoteProtocolError) as err:
        policy.admit(forged, now=NOW)
    assert err.value.reason == "record_cert_key_mismatch"


# --- namespaces ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("othernet:ip:100.64.0.2", b"", "key_other_network"),
        ("othernet:name:alice-laptop", ADDR, "key_other_network"),
        ("testnetx:user:k", b"", "key_other_network"),
        ("testnet:rec:1", b"", "key_unknown_kind"),
        ("testnet:ip", b"", "key_unknown_kind"),
        ("testnet:ip:100.64.0.02", b"", "key_bad_ip"),
        ("testnet:ip:alice", b"", "key_bad_ip"),
        ("testnet:ip:100.65.0.2", b"", "key_ip_outside_subnet"),
        ("testnet:name:Alice-Laptop", ADDR, "key_bad_name"),
        ("testnet:name:a.b.c", ADDR, "key_bad_name"),
        ("testnet:name:c064000009", ADDR, "key_bad_name"),
        ("testnet:user:", b"", "key_bad_user"),
        ("testnet:user:" + "k" * 65, b"", "key_bad_user"),
    ],
)
def test_keys_outside_the_networks_namespace_are_refused(
    key: str, value: bytes, reason: str
) -> None:
    refused(store(), sign(ALICE, key, value), reason)


def test_a_member_of_another_network_is_refused() -> None:
    refused(store(), sign(OTHER, "testnet:user:k", b"v"), "cert_bad_signature")


# --- hostnames ----------------------------------------------------------------------------------


def test_a_member_holds_only_its_certificates_hostname() -> None:
    s = store()
    assert s.offer(sign(ALICE, name_key("testnet", "alice-laptop"), ADDR)).accepted
    refused(s, sign(BOB, name_key("testnet", "alice-laptop"), ADDR), "name_not_certified")
    refused(s, sign(ALICE, name_key("testnet", "bank"), ADDR), "name_not_certified")
    refused(s, sign(PLAIN, name_key("testnet", "plain"), ADDR), "name_not_certified")
    # Not under somebody else's name either (that needs a router certificate for "bob").
    refused(s, sign(ALICE, name_key("testnet", "www.bob"), ADDR), "name_not_router")


def test_a_routers_lan_host_names_cannot_take_a_members_name() -> None:
    s = store()
    assert s.offer(sign(BOB, name_key("testnet", "bob"), ADDR)).accepted
    # Its LAN hosts live under its own certified hostname...
    printer = lan_host_name("printer", "lab")
    assert printer == "printer.lab"
    assert s.offer(sign(ROUTER, name_key("testnet", printer), ADDR)).accepted
    assert s.offer(sign(ROUTER, name_key("testnet", "lab"), ADDR)).accepted  # and itself
    # ...never a member's name (no dot), never under another name.
    refused(s, sign(ROUTER, name_key("testnet", "bob"), ADDR, seq=2), "name_not_certified")
    refused(s, sign(ROUTER, name_key("testnet", "x.bob"), ADDR), "name_not_router")
    refused(s, sign(ROUTER, name_key("testnet", "printer.lab2"), ADDR), "name_not_router")
    # A plain member cannot name hosts under its hostname.
    refused(s, sign(BOB, name_key("testnet", "printer.bob"), ADDR), "name_not_router")


# --- sizes --------------------------------------------------------------------------------------


def test_oversize_values_are_refused() -> None:
    # At signing: no record may carry more than MAX_VALUE_BYTES (was 600).
    with pytest.raises(LocalProtocolError):
        sign(ALICE, "testnet:user:k", b"x" * (MAX_VALUE_BYTES + 1))
    assert MAX_VALUE_BYTES == 255
    # At the replica, per kind: an address record holds nothing (or a router host's MAC), a
    # name exactly one IPv4 address of the subnet.
    s = store()
    refused(s, sign(ALICE, ip(2), b"x" * 7), "value_size")
    refused(s, sign(ALICE, ip(2), b"macmac"), "value_not_router")
    refused(s, sign(ALICE, name_key("testnet", "alice-laptop"), ADDR + b"x"), "value_size")
    outside = IPv4Address("100.65.0.1").packed
    refused(s, sign(ALICE, name_key("testnet", "alice-laptop"), outside), "value_outside_subnet")
    assert s.offer(sign(ROUTER, ip(2), b"macmac")).accepted


def test_decoder_refuses_records_over_1kb() -> None:
    big = sign(ALICE, "testnet:user:k", b"x" * MAX_VALUE_BYTES).encode()
    assert len(big) < MAX_RECORD_BYTES
    padded = bytearray(big)
    # Claim a longer certificate than the record can hold: refused before any parsing.
    with pytest.raises(RemoteProtocolError):
        decode_record(bytes(padded) + b"\x00" * (MAX_RECORD_BYTES - len(big) + 1))


def test_measured_record_sizes() -> None:
    """The numbers in ipop.dht.record's docstring."""
    node1 = make_identity(_CA, "node1", now=NOW, hostname="alice")
    assert len(node1.cert.der) == 383
    assert len(sign(node1, name_key("testnet", "alice"), ADDR).encode()) == 544
    assert len(sign(node1, ip(2)).encode()) == 543
    assert len(sign(ROUTER, name_key("testnet", "printer.lab"), ADDR).encode()) == 576
    # At the limits of every length rule the record would not fit: signing refuses it.
    ca = make_network("n" * 56, now=NOW)
    big = NodeIdentity.generate(ca, "N" * 63, now=NOW, hostname="h" * 63, router_hosts=65536)
    with pytest.raises(LocalProtocolError, match="record_too_long: 1065"):
        sign(big, name_key("n" * 56, f"{'h' * 63}.{'h' * 63}"), ADDR)


# --- quotas -------------------------------------------------------------------------------------


def test_a_member_cannot_hold_two_addresses_at_once() -> None:
    s = store()
    first = sign(ALICE, ip(2), seq=10)
    assert s.offer(first) is StoreOutcome.STORED
    second = sign(ALICE, ip(3), seq=11)
    # The newer claim displaces the older one: an honest node that lost its state gets a new
    # address at once, and one owner never holds two.
    assert s.offer(second) is StoreOutcome.STORED
    assert s.lookup(first.key_id) is None and s.lookup(second.key_id) == second
    assert s.displaced == 1
    # The superseded claim cannot come back (a read repair of old bytes): quota.
    assert s.offer(first) is StoreOutcome.REFUSED
    assert s.refused["quota_ip"] == 1
    live = [k for k in (first.key_id, second.key_id) if s.lookup(k) is not None]
    assert len(live) == 1
    # Renewing the one it holds is fine; other members are not affected.
    assert s.offer(sign(ALICE, ip(3), seq=12)) is StoreOutcome.STORED
    assert s.offer(sign(BOB, ip(2), seq=1)) is StoreOutcome.STORED
    assert s.held_by(ALICE.node_id) == 1


def test_tombstones_count_against_the_quota() -> None:
    s = store()
    t = Record.sign(ALICE, ip(2), b"", seq=5, expires_at=NOW + 60, tombstone=True)
    assert s.offer(t) is StoreOutcome.STORED
    assert s.offer(sign(ALICE, ip(3), seq=4)) is StoreOutcome.REFUSED
    assert s.offer(sign(ALICE, ip(3), seq=6)) is StoreOutcome.STORED
    assert s.held_by(ALICE.node_id) == 1


def test_a_router_holds_its_certified_number_of_addresses() -> None:
    s = store()
    records = [sign(ROUTER, ip(10 + i), b"" if i == 0 else b"macmac", seq=i) for i in range(4)]
    for r in records:
        assert s.offer(r) is StoreOutcome.STORED
    assert s.held_by(ROUTER.node_id) == 4  # itself + 3 LAN hosts
    assert s.offer(sign(ROUTER, ip(20), b"macmac", seq=0)) is StoreOutcome.REFUSED
    assert s.offer(sign(ROUTER, ip(20), b"macmac", seq=9)) is StoreOutcome.STORED
    assert s.lookup(records[0].key_id) is None  # its oldest went
    assert s.held_by(ROUTER.node_id) == 4
    assert RecordPolicy(_CA.trust).quota(ROUTER.cert, Kind.IP) == 4


def test_user_keys_are_bounded_per_member() -> None:
    s = store()
    for i in range(USER_QUOTA):
        assert s.offer(sign(BOB, f"testnet:user:k{i}", b"v", seq=100 + i)).accepted
    assert s.offer(sign(BOB, "testnet:user:late", b"v", seq=1)) is StoreOutcome.REFUSED
    assert s.refused["quota_user"] == 1
    assert s.held_by(BOB.node_id) == USER_QUOTA


def test_the_store_is_bounded_and_refuses_rather_than_evicts() -> None:
    clock = VirtualClock(NOW)
    s = store(clock, max_records=3)
    for who, key in ((ALICE, "a"), (BOB, "b"), (ROUTER, "r")):
        assert s.offer(sign(who, f"testnet:user:{key}", b"v", ttl=30)) is StoreOutcome.STORED
    assert s.offer(sign(PLAIN, "testnet:user:p", b"v")) is StoreOutcome.REFUSED
    assert s.refused["store_full"] == 1
    # A replacement of a held key needs no room.
    assert s.offer(sign(ALICE, "testnet:user:a", b"w", seq=2, ttl=30)) is StoreOutcome.STORED
    # Expired records make room.
    clock.now += 31
    assert s.offer(sign(PLAIN, "testnet:user:p", b"v", ttl=60)) is StoreOutcome.STORED
    assert len(s) == 1


def test_refusals_come_from_one_checked_list() -> None:
    s = store()
    with pytest.raises(LocalProtocolError):
        s._refuse("not_a_reason")
    assert POLICY_REASONS <= STORE_REASONS
    # Everything the tests above made a store count is in the list.
    counted: Counter[str] = Counter()
    for r in (sign(ROGUE, ip(2)), sign(ALICE, "x:user:k"), sign(ALICE, ip(2), b"1234567")):
        s.offer(r)
    counted.update(s.refused)
    assert set(counted) <= STORE_REASONS and sum(counted.values()) == 3
