"""Services through the DHT (ipop.dht.publish) over the fake overlay, on virtual time."""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Address, IPv4Network

from ipop.dht.publish import ServicePublisher, list_services
from ipop.dht.record import Record, StoreOutcome, ip_key
from ipop.dht.service import DhtConfig, DhtService
from ipop.dht.srv import SLOTS, ServiceValue, allowed_slots, service_key
from ipop.testing.fake_overlay import TESTNET_NS, DhtCluster, run_cluster

SUBNET = IPv4Network("100.64.5.0/24")
CONFIG = DhtConfig(subnet=SUBNET)
TTL = 60.0


async def _own_address(node: DhtService, last: int) -> IPv4Address:
    addr = SUBNET.network_address + last
    assert await node.create(ip_key(TESTNET_NS, addr), b"", 600)
    return addr


async def _ports(reader: DhtService) -> list[tuple[IPv4Address, int]]:
    found = await list_services(reader, TESTNET_NS, "condor", "tcp", subnet=SUBNET)
    return [(i.addr, i.port) for i in found]


def test_publish_list_withdraw_and_lapse() -> None:
    async def body(c: DhtCluster) -> None:
        a, b, m, reader = c.nodes[1], c.nodes[4], c.nodes[7], c.nodes[10]
        ip_a, ip_b, ip_m = [await _own_address(n, i) for n, i in ((a, 10), (b, 20), (m, 30))]
        pub_a = ServicePublisher(a, TESTNET_NS, ttl=TTL)
        pub_b = ServicePublisher(b, TESTNET_NS, ttl=TTL)
        await pub_a.publish("condor", "tcp", ServiceValue(ip_a, 9618, ("pool=grid",)))
        await pub_b.publish("condor", "tcp", ServiceValue(ip_b, 9618))
        # Mallory publishes her own machine (fine) and, in her second slot, Alice's.
        pub_m = ServicePublisher(m, TESTNET_NS, ttl=TTL)
        await pub_m.publish("condor", "tcp", ServiceValue(ip_m, 9618))
        lie_slot = allowed_slots(m.node_id, "condor", "tcp")[3]
        assert await m.create(
            service_key(TESTNET_NS, "condor", "tcp", lie_slot),
            ServiceValue(ip_a, 22).encode(),
            TTL,
        )
        # Every live instance is listed once, the lie not at all; within 1 s (20 +- 10 ms a
        # hop here) from a reader that never read these keys (issue 17's cold SRV target).
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        assert await _ports(reader) == [(ip_a, 9618), (ip_b, 9618), (ip_m, 9618)]
        assert loop.time() - t0 < 1.0
        found = await list_services(reader, TESTNET_NS, "condor", "tcp")
        assert found[0].txt == ("pool=grid",) and found[0].owner == a.node_id
        # A slot outside Mallory's own is refused by every replica.
        other = next(s for s in range(SLOTS) if s not in allowed_slots(m.node_id, "condor", "tcp"))
        now = loop.time()
        forged = Record.sign(
            m.identity,
            service_key(TESTNET_NS, "condor", "tcp", other),
            ServiceValue(ip_m, 1).encode(),
            seq=1,
            expires_at=now + TTL,
        )
        for peer in await m.replica_set(forged.key_id):
            if peer != m.node_id:
                answer = await m.protocol.store_record(peer, forged)
                assert answer is not None and answer.outcome is StoreOutcome.INVALID
        # Withdrawn: gone at once.
        assert await pub_b.withdraw("condor", "tcp")
        assert await _ports(reader) == [(ip_a, 9618), (ip_m, 9618)]
        # Leases keep A's instance past its TTL; Mallory's publisher dies (stops renewing)
        # and hers lapse with the lease.
        await pub_m.publish("condor", "tcp", ServiceValue(ip_m, 9618))  # re-publish: same slot
        await pub_m.stop()
        await asyncio.sleep(TTL * 1.5)
        assert await _ports(reader) == [(ip_a, 9618)]
        await pub_a.withdraw_all()
        assert await _ports(reader) == []

    run_cluster(body, n=14, config=CONFIG)
