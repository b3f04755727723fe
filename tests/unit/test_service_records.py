"""Service records (ipop.dht.srv, the svc kind of ipop.dht.policy, list_services' checks)."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from ipaddress import IPv4Address, IPv4Network

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ipop.dht.policy import POLICY_REASONS, Kind, RecordPolicy
from ipop.dht.publish import PublishFailed, ServicePublisher, list_services
from ipop.dht.record import Record, StoreOutcome, ip_key, namespace_of
from ipop.dht.srv import (
    SERVICE_QUOTA,
    SLOTS,
    SLOTS_PER_OWNER,
    ServiceValue,
    allowed_slots,
    decode_value,
    service_key,
    validate_service_name,
)
from ipop.dht.storage import STORE_REASONS, RecordStorage
from ipop.errors import RemoteProtocolError
from ipop.identity import NodeIdentity
from ipop.testing.clock import SIM_EPOCH
from ipop.testing.identities import make_network, seeded_identity
from ipop.types import NodeId

NOW = SIM_EPOCH
SUBNET = IPv4Network("100.64.0.0/16")
_CA = make_network("testnet", now=NOW)
NS = namespace_of(_CA.trust)
# Keys from a seed: the slots a member may hold follow from its key, and with fresh keys
# Alice's first slot was one of Mallory's first two in 52 runs of 400 (one record then
# overwrote the other and test_list_keeps_only_instances_at_their_owners_addresses failed).
_KEYS = random.Random(1)
ALICE = seeded_identity(_CA, "alice", _KEYS, now=NOW, hostname="alice")
MALLORY = seeded_identity(_CA, "mallory", _KEYS, now=NOW, hostname="mallory")
ROGUE = seeded_identity(make_network("testnet", now=NOW), "alice", _KEYS, now=NOW, hostname="alice")
A_IP = IPv4Address("100.64.0.10")
M_IP = IPv4Address("100.64.0.66")


def _svc(
    who: NodeIdentity,
    value: ServiceValue,
    *,
    name: str = "http",
    slot: int | None = None,
    seq: int = 1,
    expires_at: float = NOW + 600,
) -> Record:
    if slot is None:
        slot = allowed_slots(who.node_id, name, "tcp")[0]
    key = service_key(NS, name, "tcp", slot)
    return Record.sign(who, key, value.encode(), seq=seq, expires_at=expires_at)


def _storage() -> RecordStorage:
    return RecordStorage(lambda: NOW, policy=RecordPolicy(_CA.trust, subnet=SUBNET))


# --- encoding ---------------------------------------------------------------------------------


def test_value_round_trip_and_refusals() -> None:
    v = ServiceValue(A_IP, 8000, ("path=/", "version=2"))
    assert decode_value(v.encode()) == v
    assert decode_value(ServiceValue(A_IP, 1).encode()) == ServiceValue(A_IP, 1)
    for bad in (
        ServiceValue(A_IP, 0),
        ServiceValue(A_IP, 70000),
        ServiceValue(A_IP, 80, ("novalue",)),
        ServiceValue(A_IP, 80, ("k=\n",)),
        ServiceValue(A_IP, 80, ("k=" + "x" * 62,)),
        ServiceValue(A_IP, 80, tuple(f"k{i}=v" for i in range(9))),
    ):
        with pytest.raises(ValueError):
            bad.encode()
    good = v.encode()
    for data in (good[:5], good + b"\0", good[:-1], good[:4] + b"\0\0" + good[6:]):
        with pytest.raises(RemoteProtocolError) as exc:
            decode_value(data)
        assert exc.value.reason == "value_size"


@given(st.binary(max_size=300))
def test_decode_value_never_raises_anything_else(data: bytes) -> None:
    try:
        decode_value(data)
    except RemoteProtocolError as exc:
        assert exc.reason == "value_size"


def test_service_names() -> None:
    for ok in ("http", "condor", "x11", "a-b"):
        assert validate_service_name(ok) is None
    for bad in ("", "HTTP", "-a", "a-", "a--b", "123", "a" * 16, "a.b", "_http"):
        assert validate_service_name(bad) is not None, bad


def test_allowed_slots_are_distinct_stable_and_spread() -> None:
    seen: set[int] = set()
    for i in range(50):
        owner = NodeId.from_bytes(bytes([i]) * 20)
        slots = allowed_slots(owner, "http", "tcp")
        assert len(set(slots)) == SLOTS_PER_OWNER
        assert all(0 <= s < SLOTS for s in slots)
        assert slots == allowed_slots(owner, "http", "tcp")
        seen.update(slots)
    assert seen == set(range(SLOTS))


# --- what replicas accept ---------------------------------------------------------------------


def test_a_member_publishes_in_its_own_slots_only() -> None:
    store = _storage()
    v = ServiceValue(A_IP, 8000)
    assert store.offer(_svc(ALICE, v)) is StoreOutcome.STORED
    # Every other slot is somebody else's: without the slot rule one member takes them all.
    others = [s for s in range(SLOTS) if s not in allowed_slots(ALICE.node_id, "http", "tcp")]
    for slot in others:
        assert store.offer(_svc(ALICE, v, slot=slot)) is StoreOutcome.INVALID
    assert store.refused["service_slot_not_owner"] == len(others)


def test_malformed_service_keys_and_values_are_refused() -> None:
    store = _storage()
    for key in (f"{NS}:svc:http", f"{NS}:svc:http.sctp.1", f"{NS}:svc:http.tcp.16"):
        r = Record.sign(ALICE, key, ServiceValue(A_IP, 1).encode(), seq=1, expires_at=NOW + 60)
        assert store.offer(r) is StoreOutcome.INVALID
    assert store.refused["key_bad_service"] == 3
    slot = allowed_slots(ALICE.node_id, "http", "tcp")[0]
    key = service_key(NS, "http", "tcp", slot)
    garbage = Record.sign(ALICE, key, b"\x01\x02", seq=1, expires_at=NOW + 60)
    assert store.offer(garbage) is StoreOutcome.INVALID
    outside = _svc(ALICE, ServiceValue(IPv4Address("198.51.100.1"), 80), seq=2)
    assert store.offer(outside) is StoreOutcome.INVALID
    assert store.refused["value_size"] == 1 and store.refused["value_outside_subnet"] == 1


def test_tampered_forged_rogue_and_expired_records_are_refused() -> None:
    store = _storage()
    good = _svc(ALICE, ServiceValue(A_IP, 8000))
    # A relay changed the port after Alice signed.
    tampered = dataclasses.replace(good, value=ServiceValue(A_IP, 22).encode())
    assert store.offer(tampered) is StoreOutcome.INVALID
    assert store.refused["record_bad_signature"] == 1
    # Mallory signs a record and claims Alice's node id as its owner.
    forged = Record.sign(MALLORY, good.key, good.value, seq=5, expires_at=NOW + 600)
    forged = dataclasses.replace(forged, owner=ALICE.node_id)
    assert store.offer(forged) is StoreOutcome.INVALID
    assert store.refused["record_owner_mismatch"] == 1
    # A key of the same network name from a CA that is not this network's.
    rogue = _svc(ROGUE, ServiceValue(A_IP, 8000))
    assert store.offer(rogue) is StoreOutcome.INVALID
    assert store.held_by(ROGUE.node_id) == 0
    # A lease that is over.
    expired = _svc(ALICE, ServiceValue(A_IP, 8000), expires_at=NOW - 1)
    assert store.offer(expired) is StoreOutcome.EXPIRED
    assert store.offer(good) is StoreOutcome.STORED


def test_quota_bounds_what_one_member_publishes() -> None:
    store = _storage()
    names = [f"svc{i}" for i in range(SERVICE_QUOTA + 2)]
    for seq, name in enumerate(names[:SERVICE_QUOTA], start=10):
        assert store.offer(_svc(ALICE, ServiceValue(A_IP, 80), name=name, seq=seq)).accepted
    assert store.held_by(ALICE.node_id, Kind.SVC) == SERVICE_QUOTA
    # Beyond the quota: an older claim is refused, a newer one displaces the oldest.
    assert store.offer(_svc(ALICE, ServiceValue(A_IP, 80), name=names[-2], seq=1)) is (
        StoreOutcome.REFUSED
    )
    assert store.refused["quota_svc"] == 1
    assert store.offer(_svc(ALICE, ServiceValue(A_IP, 80), name=names[-1], seq=99)).accepted
    assert store.held_by(ALICE.node_id, Kind.SVC) == SERVICE_QUOTA
    assert store.held_by(ALICE.node_id, Kind.USER) == 0


def test_reasons_are_listed() -> None:
    for reason in ("key_bad_service", "service_slot_not_owner"):
        assert reason in POLICY_REASONS
    assert "quota_svc" in STORE_REASONS


# --- what readers believe ---------------------------------------------------------------------


class _Reads:
    """A DhtLike whose ``get`` returns fixed records (signatures were the DHT's business)."""

    def __init__(self, owner: NodeId, records: dict[str, Record]) -> None:
        self._owner = owner
        self.records = records
        self.creates: list[str] = []
        self.deleted: list[str] = []

    @property
    def node_id(self) -> NodeId:
        return self._owner

    async def get(self, key: str, *, strict: bool = False) -> Record | None:
        return self.records.get(key)

    def service_slots(self, namespace: str, name: str, proto: str) -> tuple[int, ...]:
        return allowed_slots(self._owner, name, proto)

    async def create(self, key: str, value: bytes, ttl: float) -> bool:
        held = self.records.get(key)
        if held is not None and held.owner != self._owner:
            return False
        self.creates.append(key)
        self.records[key] = Record(key, value, 1, self._owner, b"", NOW + ttl, b"")
        return True

    async def renew(self, key: str, ttl: float) -> bool:
        return key in self.records

    async def delete(self, key: str) -> bool:
        self.deleted.append(key)
        return self.records.pop(key, None) is not None


def _ip(who: NodeIdentity, addr: IPv4Address) -> Record:
    return Record.sign(who, ip_key(NS, addr), b"", seq=1, expires_at=NOW + 600)


def test_list_keeps_only_instances_at_their_owners_addresses() -> None:
    alice = _svc(ALICE, ServiceValue(A_IP, 8000, ("path=/",)))
    mallory_own = _svc(MALLORY, ServiceValue(M_IP, 8080))
    # Mallory points a service at Alice's machine: a lie about someone else's address.
    mallory_lie = _svc(
        MALLORY, ServiceValue(A_IP, 22), slot=allowed_slots(MALLORY.node_id, "http", "tcp")[1]
    )
    records = {r.key: r for r in (alice, mallory_own, mallory_lie)}
    assert len(records) == 3  # three slots: none of the records hides another
    records |= {r.key: r for r in (_ip(ALICE, A_IP), _ip(MALLORY, M_IP))}
    found = asyncio.run(list_services(_Reads(ALICE.node_id, records), NS, "http", "tcp"))
    assert [(i.addr, i.port, i.owner) for i in found] == [
        (A_IP, 8000, ALICE.node_id),
        (M_IP, 8080, MALLORY.node_id),
    ]
    assert found[0].txt == ("path=/",)
    # An address nobody holds (its holder gone) serves nothing either.
    del records[ip_key(NS, M_IP)]
    found = asyncio.run(list_services(_Reads(ALICE.node_id, records), NS, "http", "tcp"))
    assert [i.addr for i in found] == [A_IP]


def test_publisher_takes_its_first_free_slot_and_bounds_itself() -> None:
    async def body() -> None:
        dht = _Reads(ALICE.node_id, {})
        mine = allowed_slots(ALICE.node_id, "http", "tcp")
        # Another member holds our first slot: the next one is taken.
        taken = service_key(NS, "http", "tcp", mine[0])
        dht.records[taken] = _svc(MALLORY, ServiceValue(M_IP, 1), slot=mine[0])
        pub = ServicePublisher(dht, NS, ttl=60)
        assert await pub.publish("http", "tcp", ServiceValue(A_IP, 8000)) == mine[1]
        # An update stays in its slot.
        assert await pub.publish("http", "tcp", ServiceValue(A_IP, 8001)) == mine[1]
        assert [v.port for _, _, v in pub.published()] == [8001]
        with pytest.raises(PublishFailed):
            await pub.publish("HTTP", "tcp", ServiceValue(A_IP, 1))
        for i in range(SERVICE_QUOTA - 1):
            await pub.publish(f"s{i}", "udp", ServiceValue(A_IP, 1000 + i))
        with pytest.raises(PublishFailed, match="withdraw one first"):
            await pub.publish("onemore", "tcp", ServiceValue(A_IP, 1))
        assert await pub.withdraw("http", "tcp")
        assert dht.deleted == [service_key(NS, "http", "tcp", mine[1])]
        assert not await pub.withdraw("http", "tcp")
        await pub.withdraw_all()
        assert pub.published() == []
        assert len(dht.deleted) == SERVICE_QUOTA

    asyncio.run(body())
