"""Path choice between direct paths (simulator): two nodes on one LAN behind a hairpinning NAT
can link over the LAN and over their public endpoints; the LAN path wins and stays put."""

from __future__ import annotations

import asyncio
import dataclasses
import random

from ipop.testing.clock import SIM_EPOCH, run_virtual
from ipop.testing.identities import make_network
from ipop.testing.nat import nat_kind
from ipop.testing.netsim import Network
from ipop.testing.simnode import start_nodes
from ipop.types import Endpoint

PORT = 5800


def test_two_peers_on_one_lan_keep_the_lan_path() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        net = Network(rng=random.Random(11))
        ca = make_network("lan", now=loop.time())
        behaviour = dataclasses.replace(nat_kind("full-cone"), hairpinning=True)
        home = net.add_nat("home", behaviour)
        hosts = [net.add_public_host("boot"), home.add_host("a"), home.add_host("b")]
        nodes = start_nodes(hosts, ca, rng=random.Random(12))
        _, a, b = nodes
        try:
            await asyncio.wait_for(asyncio.gather(a.dht_ready.wait(), b.dht_ready.wait()), 60)
            lan_b = Endpoint(hosts[2].address, PORT)
            lan_a = Endpoint(hosts[1].address, PORT)
            # b advertises its public (hairpin) endpoint too: both paths can come up.
            assert any(e.host == home.public_ip for e in b.core.overlay.endpoints())
            answered = 0
            for _ in range(100):  # 10 s of traffic
                try:
                    await a.ping(b.node_id, timeout_s=1.0)
                    answered += 1
                except TimeoutError:
                    pass
                await asyncio.sleep(0.1)
            assert answered >= 90
            assert a.core.link.path_of(b.node_id) == lan_b
            assert b.core.link.path_of(a.node_id) == lan_a
            # The hairpinned public path came up too and was refused, not flapped to and back.
            assert a.core.link.stats["path_kept"] + b.core.link.stats["path_kept"] >= 1
            for n in (a, b):
                assert n.core.link.stats["roamed"] == 0
        finally:
            await asyncio.gather(*(n.close() for n in nodes))

    run_virtual(body(), start=SIM_EPOCH)
