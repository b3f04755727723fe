"""Insiders on the simulated internet: one valid certificate, a modified build, real node stacks.

Issue 13, findings 1 and 2. Before routed origins were authenticated, the eclipser below had
its made-up ids adopted by every honest node's DHT routing table within seconds, and readers
then took its record for the victim's name from the made-up "replicas".
"""

from __future__ import annotations

import asyncio
import random
from ipaddress import IPv4Address

import pytest

from ipop.aio.stack import Node
from ipop.dht.names import register_name
from ipop.dht.record import Record, ip_key, key_id, name_key, namespace_of
from ipop.testing.clock import SIM_EPOCH, run_virtual
from ipop.testing.hostile import Eclipser
from ipop.testing.identities import make_network
from ipop.testing.netsim import Network
from ipop.testing.simnode import all_dht_ready, start_nodes

NET = "simnet"
# The CA is seeded: its key names the DHT namespace, so it places every key on the ring.
NS = namespace_of(make_network(NET, seed=NET, now=SIM_EPOCH).trust)
KINDS = ["none", "port-restricted-cone", "symmetric", "full-cone", "restricted-cone"]
VICTIM_IP = IPv4Address("100.64.0.33")
ATTACKER_IP = IPv4Address("100.64.0.66")


async def _network(n: int, seed: int) -> list[Node]:
    net = Network(rng=random.Random(seed))
    ca = make_network(NET, seed=NET, now=asyncio.get_running_loop().time())
    hosts = [net.add_host(f"h{i}", "none" if i == 0 else KINDS[i % len(KINDS)]) for i in range(n)]
    nodes = start_nodes(hosts, ca, rng=random.Random(seed + 1))
    await all_dht_ready(nodes[1:])
    return nodes


@pytest.mark.parametrize("seed", range(1, 9))
def test_one_certificate_cannot_eclipse_a_name_or_an_address(seed: int) -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        nodes = await _network(16, seed)
        try:
            honest, attacker, victim = nodes[:-1], nodes[-1], nodes[3]
            assert victim.dht is not None and attacker.dht is not None
            assert await victim.dht.create(ip_key(NS, VICTIM_IP), b"", 600)
            name = victim.identity.cert.hostname
            assert name is not None
            assert await register_name(victim.dht, NS, name, VICTIM_IP)
            expires = loop.time() + 600
            eclipsers = [
                Eclipser(
                    attacker,
                    key_id(key),
                    Record.sign(attacker.identity, key, value, seq=99, expires_at=expires),
                )
                for key, value in (
                    (name_key(NS, name), ATTACKER_IP.packed),
                    (ip_key(NS, VICTIM_IP), b""),
                )
            ]
            targets = [nd.node_id for nd in honest]
            for e in eclipsers:
                assert e.plant(targets) == len(targets) * len(e.fake_ids)
            # Let the attack run: every planted message has long arrived (20 ms a hop).
            await asyncio.sleep(5)
            fakes = {f for e in eclipsers for f in e.fake_ids}
            adopted = [nd.node_id for nd in honest if fakes & set(nd.dht.contacts())]  # type: ignore[union-attr]
            assert adopted == []
            hijacked = 0
            for reader in honest[1:6]:
                assert reader.dht is not None
                for key in (name_key(NS, name), ip_key(NS, VICTIM_IP)):
                    got = await reader.dht.get(key)
                    assert got is not None, key
                    hijacked += got.owner != victim.node_id
            assert hijacked == 0
            refused = sum(
                v
                for nd in honest
                for k, v in nd.core.overlay.drops.items()
                if k.startswith("origin_")
            )
            assert refused > 0
        finally:
            await asyncio.gather(*(nd.close() for nd in nodes))

    run_virtual(body(), start=SIM_EPOCH)
