"""The full node stack (NodeCore + driver + DHT) on the simulated internet, in virtual time."""

from __future__ import annotations

import asyncio
import functools
import random
from ipaddress import IPv4Network

from ipop.aio.stack import Node
from ipop.dht.alloc import allocate_ip
from ipop.overlay.messages import KIND_IP
from ipop.testing.clock import SIM_EPOCH, run_virtual
from ipop.testing.identities import make_network, seeded_identity
from ipop.testing.netsim import Network
from ipop.testing.simnode import all_dht_ready
from ipop.types import Endpoint, NodeId

PORT = 5800
KINDS = ["none", "port-restricted-cone", "symmetric", "full-cone", "restricted-cone"]


async def _build(n: int, seed: int) -> tuple[Network, list[Node]]:
    loop = asyncio.get_running_loop()
    rng = random.Random(seed)
    net = Network(rng=random.Random(seed + 1))
    keys = random.Random(seed + 2)  # ring positions from the seed too: reproducible runs
    ca = make_network("simnet", seed="simnet", now=loop.time())
    nodes: list[Node] = []
    boot: list[Endpoint] = []
    for i in range(n):
        kind = "none" if i == 0 else KINDS[i % len(KINDS)]
        host = net.add_host(f"h{i}", kind)
        node = Node(
            seeded_identity(ca, f"h{i}", keys, now=loop.time()),
            bootstrap=boot,
            clock=loop.time,
            rng=random.Random(rng.random()),
        )
        node.attach(
            host.bind(PORT, node.datagram_received),
            open_socket=functools.partial(host.bind, 0),
        )
        node.start()
        nodes.append(node)
        if i == 0:
            boot = [Endpoint(host.address, PORT)]
        await asyncio.sleep(0.05)
    return net, nodes


def test_stack_joins_pings_and_allocates_behind_nats() -> None:
    async def body() -> None:
        _, nodes = await _build(24, seed=3)
        try:
            await all_dht_ready(nodes[1:])
            a, b = nodes[2], nodes[13]  # behind port-restricted-cone and symmetric NATs
            # Up to three tries: a routed message sent the moment the ring settles can still
            # meet a hop with no route yet (issue 14: cold-start no_route; about 1 run in 12
            # lost the first ping here, whatever the code of the last merges).
            first = None
            for _ in range(3):
                try:
                    first = await a.ping(b.node_id, timeout_s=5)
                    break
                except TimeoutError:
                    continue
            assert first is not None and first.rtt_s > 0
            got: list[tuple[NodeId, bytes]] = []
            b.on_ip = lambda src, pkt: got.append((src, pkt))
            assert a.send(b.node_id, KIND_IP, b"packet-1")
            deadline = asyncio.get_running_loop().time() + 10
            while not got and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.05)
            assert got == [(a.node_id, b"packet-1")]
            subnet = IPv4Network("100.64.0.0/24")
            addrs = await asyncio.gather(
                *(
                    allocate_ip(nd.dht, subnet, namespace=nd.dht.namespace, rng=random.Random(i))
                    for i, nd in enumerate(nodes)
                    if nd.dht is not None
                )
            )
            assert len(set(addrs)) == len(nodes)
        finally:
            await asyncio.gather(*(nd.close() for nd in nodes))

    run_virtual(body(), start=SIM_EPOCH)


def test_first_packet_asks_for_a_shortcut_which_idles_out() -> None:
    from ipop import timing
    from ipop.overlay.table import ConnectionKind

    async def body() -> None:
        loop = asyncio.get_running_loop()
        _, nodes = await _build(24, seed=7)
        try:
            await all_dht_ready(nodes[1:])
            # Two nodes with no link yet, both easy to reach (public or full-cone).
            easy = [
                nd
                for i, nd in enumerate(nodes)
                if KINDS[i % len(KINDS)] in ("none", "full-cone") and i
            ]
            pair = next(
                (a, b)
                for a in easy
                for b in easy
                if a is not b and not a.core.link.is_up(b.node_id)
            )
            a, b = pair
            got: list[bytes] = []
            b.on_ip = lambda src, pkt: got.append(pkt)

            def kinds() -> set[ConnectionKind]:
                for c in a.core.overlay.snapshot().connections:
                    if c.peer == b.node_id:
                        return set(c.kinds)
                return set()

            assert a.send_ip(b.node_id, b"first")  # routed, and asks for a shortcut
            deadline = loop.time() + 10
            while ConnectionKind.SHORTCUT not in kinds() and loop.time() < deadline:
                await asyncio.sleep(0.05)
            assert ConnectionKind.SHORTCUT in kinds()
            assert a.core.link.is_up(b.node_id)
            for i in range(5):
                assert a.send_ip(b.node_id, b"next-%d" % i)
            # Idle counts from the last send, not from the last arrival (a's idea of "used"):
            # read after the delivery wait, the release could look up to a transit time early
            # (1 arrangement of 132 in a scan of fresh keys).
            last_data = loop.time()
            deadline = loop.time() + 5
            while len(got) < 6 and loop.time() < deadline:
                await asyncio.sleep(0.05)
            # (the simulated internet has jitter: datagrams may arrive reordered)
            assert sorted(got) == sorted([b"first"] + [b"next-%d" % i for i in range(5)])
            assert a.core.stats["sent_direct"] >= 5
            deadline = last_data + timing.SHORTCUT_IDLE_S + 10
            while ConnectionKind.SHORTCUT in kinds() and loop.time() < deadline:
                await asyncio.sleep(0.5)
            assert ConnectionKind.SHORTCUT not in kinds()
            assert loop.time() - last_data >= timing.SHORTCUT_IDLE_S  # idle, not early
            assert a.core.stats["shortcut_released"] >= 1
        finally:
            await asyncio.gather(*(nd.close() for nd in nodes))

    run_virtual(body(), start=SIM_EPOCH)
