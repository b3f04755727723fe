"""Virtual IP allocation, leases and names on the DHT (virtual time)."""

from __future__ import annotations

import asyncio
import random
from ipaddress import IPv4Address, IPv4Network

from ipop.dht.alloc import IpLease, allocate_ip, is_usable, lease_ip
from ipop.dht.names import c_name, lookup_name, register_name
from ipop.dht.record import Record, ip_key
from ipop.testing.fake_overlay import TESTNET_NS, DhtCluster, live_owners, run_cluster
from ipop.types import NodeId

SUBNET = IPv4Network("100.64.5.0/24")


def test_fifty_nodes_allocate_at_once_without_duplicates() -> None:
    async def body(c: DhtCluster) -> None:
        rngs = [random.Random(i) for i in range(len(c.nodes))]
        addrs = await asyncio.gather(
            *(
                allocate_ip(svc, SUBNET, namespace=TESTNET_NS, rng=rng, ttl=600)
                for svc, rng in zip(c.nodes, rngs, strict=True)
            )
        )
        assert len(set(addrs)) == len(addrs) == 50
        assert all(is_usable(SUBNET, a) for a in addrs)
        for svc, addr in zip(c.nodes, addrs, strict=True):
            assert live_owners(c, ip_key(TESTNET_NS, addr)) == {svc.node_id}

    run_cluster(body, n=50, seed=5)


def test_restart_keeps_the_address() -> None:
    async def body(c: DhtCluster) -> None:
        node = c.nodes[3]
        addr = await allocate_ip(node, SUBNET, namespace=TESTNET_NS, rng=random.Random(1))
        identity = node.identity
        await c.remove(node)
        # Someone else asking for that address while the lease lives gets another one.
        other = await allocate_ip(
            c.nodes[5], SUBNET, namespace=TESTNET_NS, rng=random.Random(2), preferred=addr
        )
        assert other != addr
        await asyncio.sleep(20)
        again = c.add_node(identity)
        assert await again.bootstrap([c.nodes[0].node_id])
        got = await allocate_ip(
            again, SUBNET, namespace=TESTNET_NS, rng=random.Random(3), preferred=addr
        )
        assert got == addr
        assert live_owners(c, ip_key(TESTNET_NS, addr)) == {identity.node_id}

    run_cluster(body, n=12)


def test_ip_lease_renews_then_lapses() -> None:
    async def body(c: DhtCluster) -> None:
        node, reader = c.nodes[2], c.nodes[8]
        lease = await lease_ip(node, SUBNET, namespace=TESTNET_NS, rng=random.Random(4), ttl=40)
        assert isinstance(lease, IpLease)
        key = ip_key(TESTNET_NS, lease.address)
        await asyncio.sleep(200)
        assert lease.renewals >= 8 and not lease.lost
        got = await reader.get(key)
        assert got is not None and got.owner == node.node_id
        await lease.stop()
        await asyncio.sleep(41)
        assert await reader.get(key) is None
        lease2 = await lease_ip(reader, SUBNET, namespace=TESTNET_NS, rng=random.Random(4), ttl=40)
        assert lease2.address == lease.address  # same rng, the address is free again
        assert await lease2.release()
        assert await node.get(key) is None

    run_cluster(body, n=12)


def test_names_register_and_resolve() -> None:
    async def body(c: DhtCluster) -> None:
        alice, bob, mallory = c.nodes[1], c.nodes[2], c.nodes[3]
        a_ip = await allocate_ip(alice, SUBNET, namespace=TESTNET_NS, rng=random.Random(1))
        assert await register_name(alice, TESTNET_NS, "alice-laptop", a_ip)
        assert await lookup_name(bob, TESTNET_NS, "alice-laptop", SUBNET) == a_ip
        assert await lookup_name(bob, TESTNET_NS, "ALICE-LAPTOP", SUBNET) == a_ip
        # Address names need no lookup at all.
        sent = c.overlay.stats["sent"]
        assert await lookup_name(bob, TESTNET_NS, c_name(a_ip), SUBNET) == a_ip
        assert c.overlay.stats["sent"] == sent
        # A name is its certificate's; a name pointing at an address its owner does not hold
        # never resolves.
        assert not await register_name(bob, TESTNET_NS, "alice-laptop", IPv4Address("100.64.5.9"))
        assert await register_name(mallory, TESTNET_NS, "bank", a_ip)
        assert await lookup_name(bob, TESTNET_NS, "bank", SUBNET) is None
        assert await lookup_name(bob, TESTNET_NS, "nobody", SUBNET) is None
        assert await lookup_name(bob, TESTNET_NS, "not a name!", SUBNET) is None
        # Networks are separate namespaces on one overlay.
        assert await lookup_name(bob, "othernet", "alice-laptop", SUBNET) is None

    run_cluster(body, n=12, hostnames={1: "alice-laptop", 3: "bank"})


def test_a_name_lookup_hands_on_the_holder_it_checked() -> None:
    """What ``lookup_name`` read of the address's holder goes to ``learned`` (the data plane
    keeps the owner: ipop.aio.member.resolve_in), only when the name resolves."""

    async def body(c: DhtCluster) -> None:
        alice, bob, mallory = c.nodes[1], c.nodes[2], c.nodes[3]
        a_ip = await allocate_ip(alice, SUBNET, namespace=TESTNET_NS, rng=random.Random(1))
        assert await register_name(alice, TESTNET_NS, "alice-laptop", a_ip)
        assert await register_name(mallory, TESTNET_NS, "bank", a_ip)
        got: list[tuple[IPv4Address, NodeId]] = []

        def learned(addr: IPv4Address, holder: Record) -> None:
            got.append((addr, holder.owner))

        for name in ("alice-laptop", c_name(a_ip), "bank", "nobody"):
            await lookup_name(bob, TESTNET_NS, name, SUBNET, learned=learned)
        assert got == [(a_ip, alice.node_id)]

    run_cluster(body, n=12, hostnames={1: "alice-laptop", 3: "bank"})


def test_lease_reclaims_after_a_lapse() -> None:
    """Renewals fail while the node's stores are lost; once through again it re-claims."""

    async def body(c: DhtCluster) -> None:
        node = c.nodes[2]
        lease = await lease_ip(node, SUBNET, namespace=TESTNET_NS, rng=random.Random(9), ttl=40)
        key = ip_key(TESTNET_NS, lease.address)
        c.overlay.check = lambda src, dst, p: src != node.node_id
        await asyncio.sleep(50)
        assert lease.failures >= 1
        assert await c.nodes[5].get(key) is None  # lapsed
        c.overlay.check = None
        await asyncio.sleep(15)
        got = await c.nodes[5].get(key)
        assert got is not None and got.owner == node.node_id and not lease.lost
        await lease.stop()

    run_cluster(body, n=12)
