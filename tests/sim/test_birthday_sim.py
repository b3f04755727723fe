"""Port guessing in the simulator: symmetric x port-restricted cone turns direct through one
of the symmetric side's punching sockets, which is kept while the others are closed."""

from __future__ import annotations

import asyncio
import functools
import random

from ipop.aio.node import PUNCH_SOCKET_IDLE_S, Node
from ipop.overlay.node import OverlayConfig
from ipop.testing.clock import SIM_EPOCH, run_virtual
from ipop.testing.identities import make_identity, make_network
from ipop.testing.netsim import Network
from ipop.types import Endpoint, RelayPath, SocketPath

PORT = 5800


def test_a_guessed_port_carries_the_pair_and_idle_punching_sockets_close() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        net = Network(rng=random.Random(21))
        ca = make_network("bday", now=loop.time())
        rng = random.Random(22)
        nodes: list[Node] = []
        boot: list[Endpoint] = []
        for name, kind in (("boot", "none"), ("c", "port-restricted-cone"), ("s", "symmetric")):
            host = net.add_host(name, kind)
            node = Node(
                make_identity(ca, name, now=loop.time()),
                bootstrap=boot,
                clock=loop.time,
                rng=random.Random(rng.random()),
                overlay_config=OverlayConfig(local_endpoints=(Endpoint(host.address, PORT),)),
            )
            node.attach(
                host.bind(PORT, node.datagram_received),
                open_socket=functools.partial(host.bind, 0),
            )
            node.start()
            nodes.append(node)
            boot = boot or [Endpoint(host.address, PORT)]
        _, c, s = nodes
        try:
            await asyncio.wait_for(asyncio.gather(c.dht_ready.wait(), s.dht_ready.wait()), 60)
            # Plain punching fails here: no direct path yet (a relay, or no link at all).
            assert type(c.core.link.path_of(s.node_id)) in (RelayPath, type(None))
            deadline = loop.time() + 3
            while type(c.core.link.path_of(s.node_id)) is not Endpoint and loop.time() < deadline:
                await c.ping(s.node_id, timeout_s=1.0)
                await asyncio.sleep(0.05)
            assert type(c.core.link.path_of(s.node_id)) is Endpoint
            via = s.core.link.path_of(c.node_id)
            assert type(via) is SocketPath
            assert s.core.birthday.stats["knock_hit"] == 1
            assert s.punch_sockets == 256
            for _ in range(int(3 * PUNCH_SOCKET_IDLE_S)):  # traffic keeps the pair's socket
                pong = await c.ping(s.node_id, timeout_s=1.0)
                assert pong.hops == 0
                await asyncio.sleep(1.0)
            assert s.punch_sockets == 1 and s.core.link.path_of(c.node_id) == via
        finally:
            await asyncio.gather(*(n.close() for n in nodes))

    run_virtual(body(), start=SIM_EPOCH)
