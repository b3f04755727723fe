"""Sealed records on a shared overlay (issue 17, item 1: replicas outside a network "can read
or forge none of" its records; :mod:`ipop.dht.seal`).

Network A (the cluster's ``testnet``, with its records key) shares the overlay's DHT with
overlay-only nodes and network B's members. They store A's records; none of what A wrote
(addresses, LAN host names, service names, ports and TXT strings, operator keys and values)
appears in their memory, while A's members read all of it. What replicas can still check of
a sealed record they do: a non-member's write, a hostname that is not the writer's, a slot
that is not the writer's, a MAC from a non-router. What they cannot, readers do.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from ipaddress import IPv4Address, IPv4Network

from ipop.dht.names import lookup_name, register_name
from ipop.dht.publish import ServicePublisher, list_services
from ipop.dht.record import (
    MAX_VALUE_BYTES,
    Record,
    StoreOutcome,
    ip_key,
    name_key,
    namespace_of,
    user_key,
)
from ipop.dht.seal import SEAL_OVERHEAD, SEALED, RecordSeal
from ipop.dht.service import DhtConfig, DhtService
from ipop.dht.srv import ServiceValue, service_key
from ipop.testing.fake_overlay import TESTNET_NS, DhtCluster, offer_everywhere, run_cluster
from ipop.testing.identities import make_network, seeded_identity

SUBNET = IPv4Network("100.64.5.0/24")
CONFIG = DhtConfig(subnet=SUBNET)
A_NODES = 8
ALICE, CAROL, READER = 1, 2, 5
NAMES = {ALICE: "alice", CAROL: "carol"}
ROUTERS = {ALICE: 4}
RECORDS_KEY = bytes(range(32))
# The overlay's CA (its key from the seed: the same namespace whenever it is made).
SHARED_NS = namespace_of(make_network("shared", now=0.0, seed="shared-ca").trust)
ADDR = IPv4Address("100.64.5.10")
LAN_HOST = IPv4Address("100.64.5.11")
# What A writes; none of it may show in a stranger's memory.
SECRETS = [
    str(ADDR).encode(),
    ADDR.packed,
    str(LAN_HOST).encode(),
    LAN_HOST.packed,
    b"printer",
    b"condor",
    b"pool=physics",
    b"mykey",
    b"my value",
]


async def add_strangers(c: DhtCluster) -> list[DhtService]:
    """Four overlay-only nodes and four members of another network join the overlay."""
    now = asyncio.get_running_loop().time()
    keys = random.Random("strangers")
    ca_b = make_network("othernet", now=now, seed="othernet-ca")
    shared = make_network("shared", now=now, seed="shared-ca")
    first = c.nodes[0].node_id
    out = []
    for i in range(8):
        overlay_only = i < 4
        ca = shared if overlay_only else ca_b
        identity = seeded_identity(ca, f"s{i}", keys, now=now)
        port = c.overlay.add(identity.node_id)
        svc = DhtService(
            identity,
            port,
            rng=random.Random(f"stranger-{i}"),
            config=CONFIG,
            member=not overlay_only,
            overlay=SHARED_NS,
        )
        c.overlay.attach(identity.node_id, svc.deliver)
        c.nodes.append(svc)
        assert await svc.bootstrap([first])
        out.append(svc)
    return out


def _run(body: Callable[[DhtCluster], Awaitable[None]], *, seed: int) -> None:
    """``body`` on network A's members (Alice a router), sealing, on the shared overlay."""
    run_cluster(
        body,
        n=A_NODES,
        seed=seed,
        config=CONFIG,
        hostnames=NAMES,
        routers=ROUTERS,
        shared=SHARED_NS,
        records_key=RECORDS_KEY,
    )


def _records_of(svc: DhtService) -> list[Record]:
    """The records of network A that ``svc`` holds as a replica."""
    return [r for r in svc.storage.records() if r.key.startswith(TESTNET_NS)]


def test_strangers_store_a_networks_records_and_read_none_of_them() -> None:
    async def body(c: DhtCluster) -> None:
        strangers = await add_strangers(c)
        alice, reader = c.nodes[ALICE], c.nodes[READER]
        # Alice (a router) takes an address, a name, a LAN host's name, a service and a key.
        assert await alice.create(ip_key(TESTNET_NS, ADDR), b"", 600)
        assert await alice.create(ip_key(TESTNET_NS, LAN_HOST), bytes(6), 600)
        assert await register_name(alice, TESTNET_NS, "alice", ADDR)
        assert await register_name(alice, TESTNET_NS, "printer.alice", LAN_HOST)
        pub = ServicePublisher(alice, TESTNET_NS, ttl=600)
        try:
            await pub.publish("condor", "tcp", ServiceValue(ADDR, 9618, ("pool=physics",)))
            assert await alice.put(user_key(TESTNET_NS, "mykey"), b"my value", 600)
            # A sealed value is 28 bytes longer: the longest one a member may put still fits.
            longest = alice.max_value_bytes(TESTNET_NS)
            assert longest == MAX_VALUE_BYTES - SEAL_OVERHEAD
            assert await alice.put(user_key(TESTNET_NS, "long"), bytes(longest), 600)

            # Every member reads all of it back.
            assert await lookup_name(reader, TESTNET_NS, "alice", SUBNET) == ADDR
            assert await lookup_name(reader, TESTNET_NS, "printer.alice", SUBNET) == LAN_HOST
            found = await list_services(reader, TESTNET_NS, "condor", "tcp", subnet=SUBNET)
            assert [(i.addr, i.port, i.txt) for i in found] == [(ADDR, 9618, ("pool=physics",))]
            got = await reader.get(user_key(TESTNET_NS, "mykey"))
            assert got is not None and got.value == b"my value" and got.owner == alice.node_id
            held = await reader.get(ip_key(TESTNET_NS, LAN_HOST))
            assert held is not None and held.value == bytes(6)

            # The strangers hold A's records (they are replicas) but none of their content.
            stored = [r for s in strangers for r in _records_of(s)]
            assert len(stored) >= 6
            for record in stored:
                blob = record.key.encode() + record.value
                assert not [s for s in SECRETS if s in blob], record.key
                assert record.key.split(":", 2)[2].startswith(SEALED)
            # ... and neither do A's own members as replicas: nothing of A is stored plain.
            for svc in c.nodes[:A_NODES]:
                for record in _records_of(svc):
                    assert record.key.split(":", 2)[2].startswith(SEALED)
            # Withdrawn, the service is gone for readers too (a sealed tombstone).
            assert await pub.withdraw("condor", "tcp")
            assert await list_services(reader, TESTNET_NS, "condor", "tcp", subnet=SUBNET) == []
        finally:
            await pub.stop()

    _run(body, seed=3)


def test_replicas_check_what_a_sealed_record_shows_and_readers_the_rest() -> None:
    async def body(c: DhtCluster) -> None:
        strangers = await add_strangers(c)
        alice, carol, reader = c.nodes[ALICE], c.nodes[CAROL], c.nodes[READER]
        seal = RecordSeal(RECORDS_KEY)
        now = asyncio.get_running_loop().time()

        def sealed(who: DhtService, key: str, value: bytes) -> Record:
            stored = seal.stored_key(key)
            return Record.sign(
                who.identity,
                stored,
                seal.seal(stored, who.node_id.to_bytes(), value),
                seq=1,
                expires_at=now + 600,
            )

        # Carol (a member, holding the records key) squats Alice's name: its stored form
        # shows the hostname, her certificate names another; every replica refuses.
        squat = sealed(carol, name_key(TESTNET_NS, "alice"), ADDR.packed)
        assert set(await offer_everywhere(carol, squat)) == {StoreOutcome.INVALID}
        # Alice's service slots (chosen from the blinded name): Carol can take none.
        theirs = alice.service_slots(TESTNET_NS, "condor", "tcp")
        mine = carol.service_slots(TESTNET_NS, "condor", "tcp")
        slot = next(s for s in theirs if s not in mine)
        grab = sealed(carol, service_key(TESTNET_NS, "condor", "tcp", slot), bytes(7))
        assert set(await offer_everywhere(carol, grab)) == {StoreOutcome.INVALID}
        # A MAC (6 bytes sealed) in an ip record from a node that is no router.
        mac = sealed(carol, ip_key(TESTNET_NS, ADDR), bytes(6))
        assert set(await offer_everywhere(carol, mac)) == {StoreOutcome.INVALID}
        # A stranger (another network's member) writes A's blinded key: not A's certificate.
        b_member = strangers[5]
        forged = sealed(b_member, ip_key(TESTNET_NS, ADDR), b"")
        assert set(await offer_everywhere(b_member, forged)) == {StoreOutcome.INVALID}
        assert any(s.drops["store_key_wrong_ca"] for s in c.nodes if s is not b_member)

        # What replicas cannot check, readers do: an address outside the subnet ...
        outside = IPv4Address("100.64.9.9")
        assert await carol.create(ip_key(TESTNET_NS, outside), b"", 600)
        assert await reader.get(ip_key(TESTNET_NS, outside)) is None
        assert reader.drops["opened_key_ip_outside_subnet"] == 1
        # ... a name pointing outside it ...
        assert await carol.put(name_key(TESTNET_NS, "carol"), outside.packed, 600)
        assert await lookup_name(reader, TESTNET_NS, "carol", SUBNET) is None
        assert reader.drops["opened_value_outside_subnet"] == 1
        # ... and a value that does not open under the records key.
        other = RecordSeal(bytes(32))
        key = ip_key(TESTNET_NS, ADDR)
        stored = seal.stored_key(key)
        junk = Record.sign(
            carol.identity,
            stored,
            other.seal(stored, carol.node_id.to_bytes(), b""),
            seq=1,
            expires_at=now + 600,
        )
        assert StoreOutcome.STORED in set(await offer_everywhere(carol, junk))
        assert await reader.get(key) is None
        assert reader.drops["opened_sealed_value"] == 1

    _run(body, seed=4)


def test_a_node_in_two_networks_seals_each_with_its_own_key() -> None:
    """A daemon in a second network (``DhtService.add_network``) seals that network's records
    with that network's records key: A's key opens none of them."""
    c_key = bytes(range(100, 132))

    async def body(c: DhtCluster) -> None:
        now = asyncio.get_running_loop().time()
        ca_c = make_network("thirdnet", now=now, seed="thirdnet-ca")
        alice = c.nodes[ALICE]
        second = alice.identity.certified_by(ca_c, "alice", now=now)
        second.records_key = c_key
        # Alice again, in both networks (a daemon adds its networks before it starts).
        await c.remove(alice)
        both = c.add_node(alice.identity)
        both.add_network(second, subnet=SUBNET)
        assert await both.bootstrap([c.nodes[0].node_id])
        ns_c = namespace_of(ca_c.trust)
        key = user_key(ns_c, "mykey")
        assert await both.put(key, b"my value", 600)
        got = await both.get(key)
        assert got is not None and got.value == b"my value"
        stored = RecordSeal(c_key).stored_key(key)
        copies = [r for s in c.nodes for r in s.storage.records() if r.key == stored]
        assert copies and all(b"my value" not in r.value for r in copies)
        assert RecordSeal(c_key).open(copies[0], key).value == b"my value"
        assert RecordSeal(RECORDS_KEY).stored_key(key) != stored

    _run(body, seed=5)
