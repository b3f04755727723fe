"""Sealed records (issue 17: replicas outside a network read none of its records):
:mod:`ipop.dht.seal` and what :mod:`ipop.dht.policy` checks of a sealed record."""

from __future__ import annotations

import dataclasses
from ipaddress import IPv4Address, IPv4Network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipop.dht.policy import POLICY_REASONS, RecordPolicy
from ipop.dht.record import MAX_VALUE_BYTES, Record, ip_key, name_key, namespace_of, user_key
from ipop.dht.seal import SEAL_OVERHEAD, SEALED, TAG_CHARS, RecordSeal, is_tag
from ipop.dht.srv import ServiceValue, allowed_slots, sealed_slots, service_key
from ipop.errors import LocalProtocolError, RemoteProtocolError
from ipop.identity import NodeIdentity
from ipop.testing.clock import SIM_EPOCH
from ipop.testing.identities import make_identity, make_network

NOW = SIM_EPOCH
SUBNET = IPv4Network("100.64.0.0/16")
_CA = make_network("testnet", now=NOW)
NS = namespace_of(_CA.trust)
ALICE = make_identity(_CA, "alice", now=NOW, hostname="alice")
BOB = make_identity(_CA, "bob", now=NOW, hostname="bob")
ROUTER = NodeIdentity.generate(_CA, "r1", now=NOW, hostname="lab", router_hosts=3)
OUTSIDER = make_identity(make_network("testnet", now=NOW), "eve", now=NOW, hostname="alice")
SEAL = RecordSeal(bytes(range(32)))
ADDR = IPv4Address("100.64.0.9")
# A replica of no network (overlay-only) and a member's (same checks on sealed records).
STRANGER = RecordPolicy(None)
MEMBER = RecordPolicy(_CA.trust, subnet=SUBNET)


def sealed(who: NodeIdentity, key: str, value: bytes = b"", *, tombstone: bool = False) -> Record:
    stored = SEAL.stored_key(key)
    data = b"" if tombstone else SEAL.seal(stored, who.node_id.to_bytes(), value)
    return Record.sign(who, stored, data, seq=1, expires_at=NOW + 60, tombstone=tombstone)


def refused(record: Record, reason: str) -> None:
    assert reason in POLICY_REASONS
    for policy in (STRANGER, MEMBER):
        with pytest.raises(RemoteProtocolError) as err:
            policy.admit(record, now=NOW)
        assert err.value.reason == reason, err.value


def admitted(record: Record) -> None:
    for policy in (STRANGER, MEMBER):
        policy.admit(record, now=NOW)


# --- the seal ---------------------------------------------------------------------------------


def test_stored_keys_hide_what_the_certificate_does_not_show() -> None:
    svc = service_key(NS, "condor", "tcp", 5)
    stored = {
        k: SEAL.stored_key(k)
        for k in (
            ip_key(NS, ADDR),
            name_key(NS, "alice"),
            name_key(NS, "printer.lab"),
            user_key(NS, "mykey"),
            svc,
        )
    }
    for plain, key in stored.items():
        namespace, kind, rest = key.split(":", 2)
        assert namespace == NS and plain.split(":")[1] == kind and rest.startswith(SEALED)
    tag = stored[ip_key(NS, ADDR)].rsplit("~", 1)[1]
    assert is_tag(tag) and len(tag) == TAG_CHARS
    assert str(ADDR) not in stored[ip_key(NS, ADDR)]
    assert stored[name_key(NS, "alice")] == f"{NS}:name:~alice"  # the certificate shows it
    lan = stored[name_key(NS, "printer.lab")]
    assert "printer" not in lan and lan.endswith(".lab")  # the router's own hostname stays
    assert "mykey" not in stored[user_key(NS, "mykey")]
    assert "condor" not in stored[svc] and stored[svc].endswith(".5")
    # Another network's key blinds to other tags; the same key to the same one.
    other = RecordSeal(bytes(32))
    assert other.stored_key(ip_key(NS, ADDR)) != stored[ip_key(NS, ADDR)]
    assert SEAL.stored_key(ip_key(NS, ADDR)) == stored[ip_key(NS, ADDR)]
    with pytest.raises(LocalProtocolError):
        SEAL.stored_key(f"{NS}:other:x")
    with pytest.raises(LocalProtocolError):
        RecordSeal(b"short")


def test_a_sealed_value_opens_only_for_its_key_owner_and_records_key() -> None:
    r = sealed(ALICE, name_key(NS, "alice"), ADDR.packed)
    assert ADDR.packed not in r.value and len(r.value) == 4 + SEAL_OVERHEAD
    view = SEAL.open(r, name_key(NS, "alice"))
    assert view.value == ADDR.packed and view.key == name_key(NS, "alice")
    assert (view.owner, view.seq, view.expires_at) == (r.owner, r.seq, r.expires_at)
    # Deterministic: the same plaintext seals the same; another plaintext differently.
    again = SEAL.seal(r.key, ALICE.node_id.to_bytes(), ADDR.packed)
    assert again == r.value
    assert SEAL.seal(r.key, ALICE.node_id.to_bytes(), bytes(4)) != r.value

    def fails(record: Record, seal: RecordSeal = SEAL) -> None:
        with pytest.raises(RemoteProtocolError) as err:
            seal.open(record, name_key(NS, "alice"))
        assert err.value.reason == "sealed_value"

    fails(dataclasses.replace(r, value=r.value[:-1] + bytes([r.value[-1] ^ 1])))
    fails(dataclasses.replace(r, value=r.value[:10]))
    fails(dataclasses.replace(r, owner=BOB.node_id))  # another owner: other associated data
    fails(dataclasses.replace(r, key=SEAL.stored_key(name_key(NS, "bob"))))  # another key
    fails(r, RecordSeal(bytes(32)))  # another network's records key
    with pytest.raises(LocalProtocolError):
        SEAL.seal(r.key, ALICE.node_id.to_bytes(), bytes(MAX_VALUE_BYTES - SEAL_OVERHEAD + 1))
    tomb = sealed(ALICE, name_key(NS, "alice"), tombstone=True)
    assert SEAL.open(tomb, name_key(NS, "alice")).tombstone


# --- what replicas check of a sealed record -----------------------------------------------------


def test_replicas_admit_members_sealed_records_of_every_kind() -> None:
    admitted(sealed(ALICE, ip_key(NS, ADDR)))
    admitted(sealed(ROUTER, ip_key(NS, ADDR), bytes(6)))  # a router's LAN host: its MAC
    admitted(sealed(ALICE, name_key(NS, "alice"), ADDR.packed))
    admitted(sealed(ROUTER, name_key(NS, "printer.lab"), ADDR.packed))
    admitted(sealed(ALICE, user_key(NS, "k"), b"v"))
    admitted(sealed(ALICE, ip_key(NS, ADDR), tombstone=True))
    slot = sealed_slots(ALICE.node_id, SEAL.service_id("condor", "tcp"))[0]
    value = ServiceValue(ADDR, 9618).encode()
    admitted(sealed(ALICE, service_key(NS, "condor", "tcp", slot), value))


def test_replicas_refuse_what_a_sealed_record_shows_wrong() -> None:
    # Not the network's certificate: whatever the key.
    refused(sealed(OUTSIDER, ip_key(NS, ADDR)), "key_wrong_ca")
    # A hostname's record from a member whose certificate names another.
    refused(sealed(BOB, name_key(NS, "alice"), ADDR.packed), "name_not_certified")
    # A LAN host name under a router that is not the writer.
    refused(sealed(ALICE, name_key(NS, "printer.lab"), ADDR.packed), "name_not_router")
    # A MAC from a node that is no router; values of the wrong length.
    refused(sealed(ALICE, ip_key(NS, ADDR), bytes(6)), "value_not_router")
    refused(sealed(ALICE, ip_key(NS, ADDR), bytes(3)), "value_size")
    refused(sealed(ALICE, name_key(NS, "alice"), bytes(5)), "value_size")
    # A slot of the blinded service name that the writer's node id does not give it.
    tag = SEAL.service_id("condor", "tcp")
    theirs = next(s for s in range(16) if s not in sealed_slots(BOB.node_id, tag))
    value = ServiceValue(ADDR, 9618).encode()
    refused(sealed(BOB, service_key(NS, "condor", "tcp", theirs), value), "service_slot_not_owner")
    # Stored keys that are no blinded names.
    for key, reason in (
        (f"{NS}:ip:~100.64.0.9", "key_bad_ip"),
        (f"{NS}:user:~mykey", "key_bad_user"),
        (f"{NS}:svc:~condor.tcp.1", "key_bad_service"),
        (f"{NS}:name:~{tag}.", "key_bad_name"),
        (f"{NS}:name:~x.y.lab", "key_bad_name"),
    ):
        refused(Record.sign(ROUTER, key, b"", seq=1, expires_at=NOW + 60, tombstone=True), reason)


def test_readers_apply_the_rest_to_the_opened_view() -> None:
    outside = IPv4Address("100.65.0.1")
    # The stored form passes every replica; its view fails the member's subnet rules.
    for key, value, reason in (
        (ip_key(NS, outside), b"", "key_ip_outside_subnet"),
        (name_key(NS, "alice"), outside.packed, "value_outside_subnet"),
    ):
        r = sealed(ALICE, key, value)
        admitted(r)
        with pytest.raises(RemoteProtocolError) as err:
            MEMBER.admit(SEAL.open(r, key), now=NOW, opened=True)
        assert err.value.reason == reason
    # A service's view is not judged by the plain name's slots (they were the blinded name's).
    # (Alice's key is random: the first service name with such a slot.)
    name, slot = next(
        (name, s)
        for name in ("condor", "http", "ssh", "ftp", "smtp", "ldap")
        for s in sealed_slots(ALICE.node_id, SEAL.service_id(name, "tcp"))
        if s not in allowed_slots(ALICE.node_id, name, "tcp")
    )
    key = service_key(NS, name, "tcp", slot)
    r = sealed(ALICE, key, ServiceValue(ADDR, 9618).encode())
    MEMBER.admit(SEAL.open(r, key), now=NOW, opened=True)


@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from(["ip", "name", "user", "svc"]),
    rest=st.text(alphabet="abcdefghijklmnopqrstuvwxyz234567.~-0189", max_size=40),
    size=st.integers(0, 64),
)
def test_garbage_sealed_keys_are_refused_with_a_reason_never_an_exception(
    kind: str, rest: str, size: int
) -> None:
    key = f"{NS}:{kind}:~{rest}"
    r = Record.sign(ROUTER, key, bytes(size), seq=1, expires_at=NOW + 60)
    for policy in (STRANGER, MEMBER):
        try:
            policy.admit(r, now=NOW)
        except RemoteProtocolError as err:
            assert err.reason in POLICY_REASONS
