"""Two networks (two CAs) on one overlay's DHT (issue 17): each stores the other's records and
neither can create, replace or squat the other's keys.

The fake overlay has no link layer, so nodes of both networks share it as they will share a
real overlay once links trust an overlay CA (the link-level credential split is another
change's; here only the DHT's records are at stake). Network B's members are the strangers an
overlay-only node will be: they replicate A's keys with no A configuration.
"""

from __future__ import annotations

import asyncio
import random
from ipaddress import IPv4Address, IPv4Network

from ipop.dht.names import lookup_name, register_name
from ipop.dht.record import Record, StoreOutcome, ip_key, name_key, namespace_of
from ipop.dht.service import DhtConfig, DhtService
from ipop.testing.fake_overlay import (
    TESTNET_NS,
    DhtCluster,
    holders,
    live_owners,
    offer_everywhere,
    run_cluster,
)
from ipop.testing.identities import make_network, seeded_identity

SUBNET = IPv4Network("100.64.5.0/24")  # both networks use the same range: keys still differ
CONFIG = DhtConfig(subnet=SUBNET)
A_NODES, B_NODES = 10, 10
ALICE, CAROL = 1, 2  # members of A (testnet, the cluster's own network)
NAMES = {ALICE: "alice", CAROL: "carol"}
# The overlay both networks are on: its CA is neither's, so each network's records are its own.
SHARED_NS = namespace_of(make_network("shared", now=0.0, seed="shared-ca").trust)


async def add_network_b(c: DhtCluster) -> list[DhtService]:
    """``B_NODES`` members of "othernet" (its own CA) join the cluster's overlay."""
    now = asyncio.get_running_loop().time()
    ca_b = make_network("othernet", now=now, seed="othernet-ca")
    keys = random.Random("othernet-keys")
    first = c.nodes[0].node_id
    members = []
    for i in range(B_NODES):
        hostname = "alice" if i == 0 else f"b{i}"  # B has an "alice" too: another name
        identity = seeded_identity(ca_b, f"b{i}", keys, now=now, hostname=hostname)
        svc = c.add_node(identity)
        assert await svc.bootstrap([first])
        members.append(svc)
    return members


def test_two_networks_replicate_each_others_records_and_squat_none() -> None:
    async def body(c: DhtCluster) -> None:
        b_nodes = await add_network_b(c)
        b_alice, b_reader = b_nodes[0], b_nodes[5]
        ns_b = b_alice.namespace
        assert ns_b != TESTNET_NS and ns_b == namespace_of(b_alice.identity.trust)
        alice, carol, a_reader = c.nodes[ALICE], c.nodes[CAROL], c.nodes[7]
        addr = IPv4Address("100.64.5.10")

        # B's member is first to try A's address and A's "alice": its own build refuses
        # (its certificate is not of A's CA) ...
        assert not await b_alice.create(ip_key(TESTNET_NS, addr), b"", 600)
        assert b_alice.replica_calls.drops["own_key_wrong_ca"] == 1
        # ... and a modified build's records are refused by every replica, A's and B's.
        now = asyncio.get_running_loop().time()
        squats = ((ip_key(TESTNET_NS, addr), b""), (name_key(TESTNET_NS, "alice"), addr.packed))
        for key, value in squats:
            squat = Record.sign(b_alice.identity, key, value, seq=1, expires_at=now + 600)
            assert set(await offer_everywhere(b_alice, squat)) == {StoreOutcome.INVALID}
            assert live_owners(c, key) <= {b_alice.node_id}  # at most its own replica
        refusing = [s for s in c.nodes if s is not b_alice and s.drops["store_key_wrong_ca"]]
        assert {s in b_nodes for s in refusing} == {True, False}  # both networks' replicas

        # A's member then claims both; B's claims the same address and name in B's namespace.
        assert await alice.create(ip_key(TESTNET_NS, addr), b"", 600)
        assert await register_name(alice, TESTNET_NS, "alice", addr)
        assert await b_alice.create(ip_key(ns_b, addr), b"", 600)
        assert await register_name(b_alice, ns_b, "alice", addr)
        # Replicas of A's keys include B's members (strangers), and they hold A's record.
        a_holders = {svc for svc, _ in holders(c, name_key(TESTNET_NS, "alice"))}
        assert a_holders & set(b_nodes) and a_holders - set(b_nodes)
        # Each network resolves its own "alice"; a member of one reads none of the other's
        # records: every replica, strangers included, shows them to members only. Before,
        # B's reader got A's alice and her address (verified by the namespace's key alone).
        assert await lookup_name(a_reader, TESTNET_NS, "alice", SUBNET) == addr
        assert (await a_reader.get(ip_key(TESTNET_NS, addr))).owner == alice.node_id  # type: ignore[union-attr]
        assert (await b_reader.get(ip_key(ns_b, addr))).owner == b_alice.node_id  # type: ignore[union-attr]
        # (A stranger that is itself a replica of a key holds it: asking is what it cannot.)
        a_keys = (ip_key(TESTNET_NS, addr), name_key(TESTNET_NS, "alice"))
        held = {svc for key in a_keys for svc, _ in holders(c, key)}
        outsider = next(s for s in b_nodes if s not in held)
        b_keys = (ip_key(ns_b, addr), name_key(ns_b, "alice"))
        b_held = {svc for key in b_keys for svc, _ in holders(c, key)}
        a_outsider = next(s for s in c.nodes if s not in b_nodes and s not in b_held)
        refused = sum(s.protocol.drops["fetch_not_member"] for s in c.nodes)
        assert await outsider.get(ip_key(TESTNET_NS, addr)) is None
        assert await lookup_name(outsider, TESTNET_NS, "alice", SUBNET) is None
        assert await a_outsider.get(ip_key(ns_b, addr)) is None
        assert sum(s.protocol.drops["fetch_not_member"] for s in c.nodes) > refused
        # A's other member still cannot take alice's address (create-if-absent holds).
        assert not await carol.create(ip_key(TESTNET_NS, addr), b"", 600)
        assert live_owners(c, ip_key(TESTNET_NS, addr)) == {alice.node_id}

    run_cluster(body, n=A_NODES, hostnames=NAMES, config=CONFIG, shared=SHARED_NS)
