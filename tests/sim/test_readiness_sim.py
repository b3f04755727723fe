"""How soon a freshly started network is usable (simulator): the lab demo's topology, every
node started at once over an internet as fast as the lab's veths, each node joining the DHT and
allocating its address. With next to no latency, any delay is a lost request waiting for its
retransmission: the ring around a node that joined a moment ago has not formed yet, and a DHT
answer to it, or its own request to a node it has no route to, must still arrive."""

from __future__ import annotations

import asyncio
import ipaddress
import random
import statistics

from ipop.aio.stack import Node
from ipop.dht.alloc import allocate_ip
from ipop.testing.clock import SIM_EPOCH, run_virtual
from ipop.testing.identities import make_network, seeded_identity
from ipop.testing.nat import nat_kind
from ipop.testing.netsim import Network
from ipop.testing.simnode import PORT, start_nodes
from ipop.types import Endpoint

# The lab demo: two public nodes, three behind NATs of different kinds, a router behind one.
HOSTS = (
    ("pub1", None),
    ("pub2", None),
    ("a", "port-restricted-cone"),
    ("b", "restricted-cone"),
    ("c", "symmetric"),
    ("r1", "port-restricted-cone"),
)
SUBNET = ipaddress.ip_network("100.64.0.0/10")


def _slowest_ready(seed: int) -> tuple[float, int]:
    """(virtual seconds until the last node holds its address, DHT retransmissions)."""
    result: list[tuple[float, int]] = []

    async def body() -> None:
        loop = asyncio.get_running_loop()
        net = Network(rng=random.Random(seed), internet_latency_s=0.0001)
        ca = make_network("ready", seed="ready", now=loop.time())
        hosts = [
            net.add_public_host(name)
            if kind is None
            else net.add_nat(f"nat-{name}", nat_kind(kind)).add_host(name)
            for name, kind in HOSTS
        ]
        t0 = loop.time()
        nodes = start_nodes(hosts, ca, rng=random.Random(seed + 1000))
        done: list[float] = []

        async def ready(i: int) -> None:
            node = nodes[i]
            await node.dht_ready.wait()
            assert node.dht is not None
            await allocate_ip(
                node.dht, SUBNET, namespace=node.dht.namespace, rng=random.Random(seed * 10 + i)
            )
            done.append(loop.time() - t0)

        try:
            await asyncio.wait_for(asyncio.gather(*(ready(i) for i in range(len(nodes)))), 30)
            rtx = sum(
                n.dht.protocol.counters["retransmissions"] for n in nodes if n.dht is not None
            )
            result.append((max(done), rtx))
        finally:
            await asyncio.gather(*(n.close() for n in nodes))

    run_virtual(body(), start=SIM_EPOCH)
    return result[0]


def test_a_new_network_is_ready_without_waiting_for_retransmissions() -> None:
    runs = [_slowest_ready(seed) for seed in range(1, 6)]
    slowest = [s for s, _ in runs]
    # Before reverse-path hints and the source's detour, most runs lost DHT answers to nodes
    # whose ring had not formed and waited 0.4 s per retransmission: 0.8-2.0 s, median ~0.9.
    # Now most runs need none or one (node ids come from fresh keys, so runs differ).
    assert statistics.median(slowest) <= 0.6, runs
    assert max(slowest) <= 1.3, runs


def test_a_node_started_before_its_bootstrap_joins_on_an_early_retry() -> None:
    """Started together, a node's first handshake can reach its bootstrap's port before the
    bootstrap listens (the lab demo starts every ipopd at once). It links on the first retry:
    half a second later, not one."""
    joined_after: list[float] = []

    async def body() -> None:
        loop = asyncio.get_running_loop()
        net = Network(rng=random.Random(3), internet_latency_s=0.0001)
        ca = make_network("early", seed="early", now=loop.time())
        keys = random.Random(4)  # ring positions from a seed: reproducible runs
        boot_host = net.add_public_host("boot")
        late_host = net.add_nat("nat", nat_kind("port-restricted-cone")).add_host("early")
        boot_ep = Endpoint(boot_host.address, PORT)

        def node(name: str, bootstrap: list[Endpoint]) -> Node:
            return Node(
                seeded_identity(ca, name, keys, now=loop.time()),
                bootstrap=bootstrap,
                clock=loop.time,
                rng=random.Random(name),
            )

        early = node("early", [boot_ep])
        early.attach(late_host.bind(PORT, early.datagram_received))
        early.start()
        await asyncio.sleep(0.05)
        boot = node("boot", [])
        boot.attach(boot_host.bind(PORT, boot.datagram_received))
        boot.start()
        t0 = loop.time()
        try:
            await asyncio.wait_for(early.joined.wait(), 10)
            joined_after.append(loop.time() - t0)
        finally:
            await asyncio.gather(early.close(), boot.close())

    run_virtual(body(), start=SIM_EPOCH)
    # The first retry leaves 0.5 s after the first try (1.0 s before this was tuned).
    assert joined_after and joined_after[0] < 0.6, joined_after
