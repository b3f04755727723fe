"""Port guessing in the simulator: symmetric x port-restricted cone turns direct through one
of the symmetric side's punching sockets, which is kept while the others are closed."""

from __future__ import annotations

import asyncio
import random

from ipop.testing.clock import SIM_EPOCH, run_virtual
from ipop.testing.identities import make_network
from ipop.testing.netsim import Network
from ipop.testing.simnode import start_nodes
from ipop.timing import PUNCH_SOCKET_IDLE_S
from ipop.types import Endpoint, RelayPath, SocketPath

PORT = 5800


def test_a_guessed_port_carries_the_pair_and_idle_punching_sockets_close() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        net = Network(rng=random.Random(21))
        ca = make_network("bday", now=loop.time())
        kinds = (("boot", "none"), ("c", "port-restricted-cone"), ("s", "symmetric"))
        hosts = [net.add_host(name, kind) for name, kind in kinds]
        nodes = start_nodes(hosts, ca, rng=random.Random(22))
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
