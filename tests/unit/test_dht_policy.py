"""Records bound to membership (issue 13, finding 3): certificates, namespaces, names, quotas;
and (issue 17) records of any network's namespace at replicas of no or another network."""

from __future__ import annotations

import dataclasses
from collections import Counter
from ipaddress import IPv4Address, IPv4Network

import pytest

from ipop.dht.policy import (
    FOREIGN_NAMESPACES,
    POLICY_REASONS,
    USER_QUOTA,
    Kind,
    RecordPolicy,
    lan_host_name,
)
from ipop.dht.record import (
    MAX_KEY_BYTES,
    MAX_NAMESPACE_BYTES,
    MAX_RECORD_BYTES,
    MAX_VALUE_BYTES,
    Record,
    StoreOutcome,
    decode_record,
    ip_key,
    name_key,
    namespace_of,
    parse_namespace,
    user_key,
)
from ipop.dht.storage import STORE_REASONS, RecordStorage
from ipop.errors import LocalProtocolError, RemoteProtocolError
from ipop.identity import NetworkCA, NodeIdentity, cert_serial
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
_OTHER_CA = make_network("othernet", now=NOW)
OTHER = make_identity(_OTHER_CA, "eve", now=NOW, hostname="eve")
NS = namespace_of(_CA.trust)  # "testnet~<52 base32 characters of the CA key>"
OTHER_NS = namespace_of(_OTHER_CA.trust)


def store(
    clock: VirtualClock | None = None, *, policy: RecordPolicy | None = None, **kw: int
) -> RecordStorage:
    """A replica of testnet (a member's), or of ``policy``'s network."""
    c = clock or VirtualClock(NOW)
    policy = policy or RecordPolicy(_CA.trust, subnet=SUBNET)
    return RecordStorage(lambda: c.now, policy=policy, max_ttl=MAX_TTL, **kw)


def sign(
    who: NodeIdentity, key: str, value: bytes = b"", *, seq: int = 1, ttl: float = 60.0
) -> Record:
    return Record.sign(who, key, value, seq=seq, expires_at=NOW + ttl)


def ip(n: int) -> str:
    return ip_key(NS, IPv4Address("100.64.0.0") + n)


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
    # A valid signature under a certificate from another CA (same network name): the key's
    # namespace names our CA's key, which did not sign it.
    refused(s, sign(ROGUE, ip(2)), "key_wrong_ca")
    refused(s, sign(ROGUE, user_key(NS, "x"), b"v"), "key_wrong_ca")
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
    r = sign(BOB, user_key(NS, "k"), b"v")
    forged = Record.sign(BOB, r.key, r.value, seq=1, expires_at=NOW + 60)
    forged = dataclasses.replace(forged, cert=ALICE.cert.der)
    with pytest.raises(RemoteProtocolError) as err:
        policy.admit(forged, now=NOW)
    assert err.value.reason == "record_cert_key_mismatch"


# --- namespaces ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        # Bare network names (the keys before namespaces), and namespaces of no CA key.
        ("testnet:ip:100.64.0.2", b"", "key_bad_namespace"),
        ("othernet:name:alice-laptop", ADDR, "key_bad_namespace"),
        (f"{NS.upper()}:user:k", b"", "key_bad_namespace"),
        (f"{NS[:-1]}:user:k", b"", "key_bad_namespace"),
        (f"{NS}a:user:k", b"", "key_bad_namespace"),
        (f"{NS[:-1]}9:user:k", b"", "key_bad_namespace"),  # 9 is not base32
        (f"Test{NS[4:]}:user:k", b"", "key_bad_namespace"),  # no network name
        # The last character's 4 low bits pad: a non-zero pad is another spelling of one key.
        (f"{NS[:-1]}{chr(ord(NS[-1]) + 1)}:user:k", b"", "key_bad_namespace"),
        (":user:k", b"", "key_bad_namespace"),
        (f"{NS}:rec:1", b"", "key_unknown_kind"),
        (f"{NS}:ip", b"", "key_unknown_kind"),
        (f"{NS}:ip:100.64.0.02", b"", "key_bad_ip"),
        (f"{NS}:ip:alice", b"", "key_bad_ip"),
        (f"{NS}:ip:100.65.0.2", b"", "key_ip_outside_subnet"),
        (f"{NS}:name:Alice-Laptop", ADDR, "key_bad_name"),
        (f"{NS}:name:a.b.c", ADDR, "key_bad_name"),
        (f"{NS}:name:c064000009", ADDR, "key_bad_name"),
        (f"{NS}:user:", b"", "key_bad_user"),
        (f"{NS}:user:" + "k" * 65, b"", "key_bad_user"),
    ],
)
def test_keys_outside_the_networks_namespace_are_refused(
    key: str, value: bytes, reason: str
) -> None:
    refused(store(), sign(ALICE, key, value), reason)


def test_a_member_of_another_network_is_refused() -> None:
    refused(store(), sign(OTHER, user_key(NS, "k"), b"v"), "key_wrong_ca")


def test_namespace_names_the_ca_key_and_parses_back() -> None:
    network, raw = parse_namespace(NS)
    assert (network, raw) == ("testnet", _CA.trust.public_key_raw)
    assert NS.startswith("testnet~") and len(NS) == len("testnet~") + 52
    # Two networks of one name never share a key.
    assert namespace_of(ROGUE.trust) != NS and ip_key(namespace_of(ROGUE.trust), 1) != ip_key(NS, 1)


# --- other networks' namespaces (issue 17): strangers replicate, nobody squats ---------------

# Replicas that are no member of testnet: a member of othernet, and a node of no network.
STRANGERS = {
    "othernet_member": lambda: RecordPolicy(_OTHER_CA.trust, subnet=IPv4Network("100.96.0.0/16")),
    "overlay_only": lambda: RecordPolicy(None),
}


@pytest.fixture(params=sorted(STRANGERS))
def stranger(request: pytest.FixtureRequest) -> RecordStorage:
    return store(policy=STRANGERS[request.param]())


def test_a_stranger_replicates_another_networks_records(stranger: RecordStorage) -> None:
    for r in (
        sign(ALICE, ip(2)),
        sign(ALICE, name_key(NS, "alice-laptop"), ADDR),
        sign(ROUTER, ip(3), b"macmac"),
        sign(ROUTER, name_key(NS, "printer.lab"), ADDR),
        sign(BOB, user_key(NS, "k"), b"v"),
    ):
        assert stranger.offer(r) is StoreOutcome.STORED, stranger.refused
    assert len(stranger) == 5 and not stranger.refused


def test_a_stranger_refuses_a_certificate_the_namespace_key_did_not_sign(
    stranger: RecordStorage,
) -> None:
    # Another CA's certificate (same network name, or another network's) under testnet's
    # namespace: refused whoever the replica is, so nobody can squat a key create-if-absent
    # would then refuse to testnet's member.
    refused(stranger, sign(ROGUE, ip(2)), "key_wrong_ca")
    refused(stranger, sign(OTHER, ip(2)), "key_wrong_ca")
    refused(stranger, sign(OTHER, name_key(NS, "eve"), ADDR), "key_wrong_ca")
    assert stranger.offer(sign(ALICE, ip(2))) is StoreOutcome.STORED  # the member still can
    # The squatter's own namespace is its own business (no testnet member reads it).
    assert stranger.offer(sign(ROGUE, ip_key(namespace_of(ROGUE.trust), "100.64.0.2"))).accepted


def test_a_member_of_another_network_cannot_create_this_networks_ip_key() -> None:
    # At this network's replicas, another network's, or an overlay-only node's alike.
    for s in (store(), *(store(policy=make()) for make in STRANGERS.values())):
        refused(s, sign(OTHER, ip(2)), "key_wrong_ca")
        assert s.offer(sign(ALICE, ip(2))) is StoreOutcome.STORED
    # Its own build does not even send it: its own policy refuses the write.
    with pytest.raises(RemoteProtocolError) as err:
        RecordPolicy(_OTHER_CA.trust).admit(sign(OTHER, ip(2)), now=NOW)
    assert err.value.reason == "key_wrong_ca"


def test_a_namespace_whose_network_is_not_the_certificates_is_refused(
    stranger: RecordStorage,
) -> None:
    # testnet's CA key, but the namespace calls the network "othernet": O=testnet differs.
    _, raw = parse_namespace(NS)
    liar = f"othernet~{NS.partition('~')[2]}"
    assert parse_namespace(liar) == ("othernet", raw)
    refused(stranger, sign(ALICE, ip_key(liar, "100.64.0.2")), "cert_wrong_network")
    refused(store(), sign(ALICE, ip_key(liar, "100.64.0.2")), "cert_wrong_network")


def test_what_only_members_check_subnet_and_revocation(stranger: RecordStorage) -> None:
    """A stranger cannot know testnet's subnet or CRL; testnet's members (readers) refuse."""
    outside = ip_key(NS, "100.65.0.2")
    member = store()
    refused(member, sign(ALICE, outside), "key_ip_outside_subnet")
    assert stranger.offer(sign(ALICE, outside)).accepted
    far = IPv4Address("100.65.0.1").packed
    refused(member, sign(BOB, name_key(NS, "bob"), far), "value_outside_subnet")
    assert stranger.offer(sign(BOB, name_key(NS, "bob"), far)).accepted
    # Every rule that needs no configuration holds for the stranger too.
    refused(stranger, sign(ALICE, ip_key(NS, "100.64.0.02")), "key_bad_ip")
    refused(stranger, sign(ALICE, name_key(NS, "bank"), ADDR), "name_not_certified")
    refused(stranger, sign(ALICE, ip_key(NS, "100.64.0.7"), b"macmac"), "value_not_router")
    refused(stranger, sign(ROUTER, name_key(NS, "printer.bob"), ADDR), "name_not_router")
    refused(stranger, sign(BOB, name_key(NS, "bob"), ADDR + b"x"), "value_size")
    # Revocation: testnet's member applied a CRL naming Bob; the stranger cannot know it.
    trust = _CA.trust.fork()
    trust.apply_crl(_CA.make_crl([(cert_serial(BOB.cert), NOW)], number=1, now=NOW), now=NOW)
    revoking = store(policy=RecordPolicy(trust, subnet=SUBNET))
    refused(revoking, sign(BOB, user_key(NS, "k"), b"v"), "cert_revoked")
    assert stranger.offer(sign(BOB, user_key(NS, "k"), b"v")).accepted


def test_quotas_count_per_namespace_with_each_networks_certificate() -> None:
    """One node key in two networks: each network's quota in its own namespace, no more."""
    s = store(policy=RecordPolicy(None))
    twin_cert = _OTHER_CA.sign_node(ALICE.public_key_raw, "alice", now=NOW, hostname="alice")
    twin = NodeIdentity(ALICE.private_key, twin_cert, _OTHER_CA.trust)
    assert twin.node_id == ALICE.node_id
    a1, b1 = sign(ALICE, ip(2), seq=1), sign(twin, ip_key(OTHER_NS, "100.96.0.2"), seq=2)
    assert s.offer(a1) is StoreOutcome.STORED and s.offer(b1) is StoreOutcome.STORED
    assert s.held_by(ALICE.node_id, Kind.IP) == 2  # one address in each network
    # A second address in testnet displaces the first there, not the one in othernet.
    a2 = sign(ALICE, ip(3), seq=3)
    assert s.offer(a2) is StoreOutcome.STORED
    assert s.lookup(a1.key_id) is None and s.lookup(b1.key_id) == b1
    assert s.offer(a1) is StoreOutcome.REFUSED and s.refused["quota_ip"] == 1
    # A router's LAN quota is its certificate's in that network: a plain node elsewhere.
    r_cert = _OTHER_CA.sign_node(ROUTER.public_key_raw, "r1", now=NOW, hostname="lab")
    r_other = NodeIdentity(ROUTER.private_key, r_cert, _OTHER_CA.trust)
    mine = [sign(r_other, ip_key(OTHER_NS, f"100.96.0.{10 + i}"), seq=i) for i in range(2)]
    assert [s.offer(r) for r in mine] == [StoreOutcome.STORED] * 2
    assert s.lookup(mine[0].key_id) is None  # quota 1 there, though 4 in testnet
    assert s.displaced == 2


def test_foreign_namespace_verifiers_are_bounded() -> None:
    policy = RecordPolicy(_CA.trust)
    for i in range(FOREIGN_NAMESPACES + 3):
        ca = NetworkCA.create(f"net{i}", now=NOW)
        who = make_identity(ca, "n", now=NOW)
        assert policy.admit(sign(who, user_key(namespace_of(ca.trust), "k"), b"v"), now=NOW)
    assert len(policy._foreign) == FOREIGN_NAMESPACES
    # Its own network never takes a slot there.
    policy.admit(sign(ALICE, ip(2)), now=NOW)
    assert NS not in policy._foreign


# --- hostnames ----------------------------------------------------------------------------------


def test_a_member_holds_only_its_certificates_hostname() -> None:
    s = store()
    assert s.offer(sign(ALICE, name_key(NS, "alice-laptop"), ADDR)).accepted
    refused(s, sign(BOB, name_key(NS, "alice-laptop"), ADDR), "name_not_certified")
    refused(s, sign(ALICE, name_key(NS, "bank"), ADDR), "name_not_certified")
    refused(s, sign(PLAIN, name_key(NS, "plain"), ADDR), "name_not_certified")
    # Not under somebody else's name either (that needs a router certificate for "bob").
    refused(s, sign(ALICE, name_key(NS, "www.bob"), ADDR), "name_not_router")


def test_a_routers_lan_host_names_cannot_take_a_members_name() -> None:
    s = store()
    assert s.offer(sign(BOB, name_key(NS, "bob"), ADDR)).accepted
    # Its LAN hosts live under its own certified hostname...
    printer = lan_host_name("printer", "lab")
    assert printer == "printer.lab"
    assert s.offer(sign(ROUTER, name_key(NS, printer), ADDR)).accepted
    assert s.offer(sign(ROUTER, name_key(NS, "lab"), ADDR)).accepted  # and itself
    # ...never a member's name (no dot), never under another name.
    refused(s, sign(ROUTER, name_key(NS, "bob"), ADDR, seq=2), "name_not_certified")
    refused(s, sign(ROUTER, name_key(NS, "x.bob"), ADDR), "name_not_router")
    refused(s, sign(ROUTER, name_key(NS, "printer.lab2"), ADDR), "name_not_router")
    # A plain member cannot name hosts under its hostname.
    refused(s, sign(BOB, name_key(NS, "printer.bob"), ADDR), "name_not_router")


# --- sizes --------------------------------------------------------------------------------------


def test_oversize_values_are_refused() -> None:
    # At signing: no record may carry more than MAX_VALUE_BYTES (was 600).
    with pytest.raises(LocalProtocolError):
        sign(ALICE, user_key(NS, "k"), b"x" * (MAX_VALUE_BYTES + 1))
    assert MAX_VALUE_BYTES == 255
    # At the replica, per kind: an address record holds nothing (or a router host's MAC), a
    # name exactly one IPv4 address of the subnet.
    s = store()
    refused(s, sign(ALICE, ip(2), b"x" * 7), "value_size")
    refused(s, sign(ALICE, ip(2), b"macmac"), "value_not_router")
    refused(s, sign(ALICE, name_key(NS, "alice-laptop"), ADDR + b"x"), "value_size")
    outside = IPv4Address("100.65.0.1").packed
    refused(s, sign(ALICE, name_key(NS, "alice-laptop"), outside), "value_outside_subnet")
    assert s.offer(sign(ROUTER, ip(2), b"macmac")).accepted


def test_decoder_refuses_records_over_1kb() -> None:
    big = sign(ALICE, user_key(NS, "k"), b"x" * MAX_VALUE_BYTES).encode()
    assert len(big) < MAX_RECORD_BYTES
    padded = bytearray(big)
    # Claim a longer certificate than the record can hold: refused before any parsing.
    with pytest.raises(RemoteProtocolError):
        decode_record(bytes(padded) + b"\x00" * (MAX_RECORD_BYTES - len(big) + 1))


def test_measured_record_sizes() -> None:
    """The numbers in ipop.dht.record's docstring."""
    node1 = make_identity(_CA, "node1", now=NOW, hostname="alice")
    assert len(node1.cert.der) == 383
    assert len(NS) == 60 and len(name_key(NS, "alice")) == 71
    assert len(sign(node1, name_key(NS, "alice"), ADDR).encode()) == 597
    assert len(sign(node1, ip(2)).encode()) == 596
    assert len(sign(ROUTER, name_key(NS, "printer.lab"), ADDR).encode()) == 629
    # The longest legal key is within MAX_KEY_BYTES.
    ca = make_network("n" * 56, now=NOW)
    longest = name_key(namespace_of(ca.trust), f"{'h' * 63}.{'h' * 63}")
    assert len(namespace_of(ca.trust)) == MAX_NAMESPACE_BYTES == 109
    assert len(longest) == 242 <= MAX_KEY_BYTES
    # At the limits of every length rule the record would not fit: signing refuses it.
    big = NodeIdentity.generate(ca, "N" * 63, now=NOW, hostname="h" * 63, router_hosts=65536)
    with pytest.raises(LocalProtocolError, match=r"record_too_long: 111[78]"):
        sign(big, longest, ADDR)
    # A plain member's name record at every limit just fits.
    plain = NodeIdentity.generate(ca, "N" * 63, now=NOW, hostname="h" * 63)
    # (A random serial is a byte shorter one time in 256: hence the range.)
    assert (
        1020 <= len(sign(plain, name_key(namespace_of(ca.trust), "h" * 63), ADDR).encode()) <= 1023
    )
    # The worst-case router fits up to a 37-byte network name.
    ca37 = make_network("n" * 37, now=NOW)
    r37 = NodeIdentity.generate(ca37, "N" * 63, now=NOW, hostname="h" * 63, router_hosts=65536)
    assert (
        len(sign(r37, name_key(namespace_of(ca37.trust), f"{'h' * 63}.{'h' * 63}"), ADDR).encode())
        <= MAX_RECORD_BYTES
    )


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
        assert s.offer(sign(BOB, user_key(NS, f"k{i}"), b"v", seq=100 + i)).accepted
    assert s.offer(sign(BOB, user_key(NS, "late"), b"v", seq=1)) is StoreOutcome.REFUSED
    assert s.refused["quota_user"] == 1
    assert s.held_by(BOB.node_id) == USER_QUOTA


def test_the_store_is_bounded_and_refuses_rather_than_evicts() -> None:
    clock = VirtualClock(NOW)
    s = store(clock, max_records=3)
    for who, key in ((ALICE, "a"), (BOB, "b"), (ROUTER, "r")):
        assert s.offer(sign(who, user_key(NS, key), b"v", ttl=30)) is StoreOutcome.STORED
    assert s.offer(sign(PLAIN, user_key(NS, "p"), b"v")) is StoreOutcome.REFUSED
    assert s.refused["store_full"] == 1
    # A replacement of a held key needs no room.
    assert s.offer(sign(ALICE, user_key(NS, "a"), b"w", seq=2, ttl=30)) is StoreOutcome.STORED
    # Expired records make room.
    clock.now += 31
    assert s.offer(sign(PLAIN, user_key(NS, "p"), b"v", ttl=60)) is StoreOutcome.STORED
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
