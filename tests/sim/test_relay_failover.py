"""A relay that dies without a word (simulator, issue 14): two hosts behind symmetric NATs
can only ever talk through a relay node. When that node is killed (no goodbye, its links
left to time out), the pair's traffic resumes through another relay within a couple of
seconds, not when the silent-neighbour timer or the link timeout closes the dead relayed
link (about 15 s before: the soak's prc6 -> sym2/sym4 pairs after pub3 was killed)."""

from __future__ import annotations

import asyncio
import random

import pytest

from ipop.aio.stack import Node
from ipop.testing.clock import SIM_EPOCH, run_virtual
from ipop.testing.identities import make_network
from ipop.testing.netsim import Network
from ipop.testing.simnode import all_dht_ready, pinger, start_nodes, stop_all
from ipop.testing.waiting import until
from ipop.types import RelayPath

RESUME_WITHIN_S = 2.0


def _relay_of(a: Node, b: Node) -> RelayPath | None:
    p = a.core.link.path_of(b.node_id)
    return p if isinstance(p, RelayPath) else None


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_relayed_pair_moves_to_another_relay_within_2s_after_its_relay_dies(
    seed: int,
) -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        net = Network(rng=random.Random(seed))
        ca = make_network("relaydeath", now=loop.time())
        # Five nodes: each is near every other (three per side), so the symmetric pair keeps
        # a relayed near link (a shortcut between two symmetric NATs is never relayed: in a
        # larger ring a far pair is routed over the ring instead).
        hosts = [net.add_public_host(f"pub{i}") for i in range(3)]
        hosts += [net.add_host("a", "symmetric"), net.add_host("b", "symmetric")]
        nodes = start_nodes(hosts, ca, rng=random.Random(seed + 10))
        a, b = nodes[3], nodes[4]
        answered: list[float] = []
        task: asyncio.Task[None] | None = None
        try:
            await all_dht_ready(nodes)
            task = loop.create_task(pinger(a, b, answered, every_s=0.1))
            assert await until(lambda: _relay_of(a, b) is not None, 60), "never relayed"
            # Traffic flows through the relay before it dies (20 answers, 2 s of pings).
            flowing = len(answered) + 20
            assert await until(lambda: len(answered) >= flowing, 10), "no traffic via the relay"
            path = _relay_of(a, b)
            assert path is not None
            victim = next(n for n in nodes if n.node_id == path.via)
            index = nodes.index(victim)
            killed = loop.time()
            # kill -9: no goodbye; its sockets simply stop.
            await victim.close()
            for sock in hosts[index].sockets():
                sock.close()
            assert await until(lambda: any(t > killed for t in answered), 60)
            resumed = min(t for t in answered if t > killed) - killed
            print(f"seed {seed}: resumed after {resumed:.2f} s")
            assert resumed <= RESUME_WITHIN_S, f"traffic resumed after {resumed:.2f} s"
            # Through a live relay, both ways.
            for x, y in ((a, b), (b, a)):
                now_path = _relay_of(x, y)
                assert now_path is not None and now_path.via != victim.node_id, now_path
        finally:
            await stop_all([task], nodes)

    run_virtual(body(), start=SIM_EPOCH)
