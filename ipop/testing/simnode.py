"""Full node stacks on simulated hosts, wired the one way the daemon wires them (tests only).

:func:`start_nodes` builds an :class:`ipop.aio.stack.Node` per host on the virtual-time loop:
its overlay socket on ``port``, its own endpoint advertised, punching sockets for port guessing
opened on demand on the same host, the first host as everybody's bootstrap.
:func:`pinger` pings one node from another forever, recording which pings were answered: the
outage measure of the roaming and rebinding tests; :func:`direct_both_ways` says whether two
nodes' sessions run direct on both sides.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import random
from collections.abc import Iterable, Sequence

from ipop.aio.stack import Node
from ipop.identity import NetworkCA
from ipop.link.layer import LinkConfig
from ipop.overlay.node import OverlayConfig
from ipop.testing.identities import seeded_identity
from ipop.testing.netsim import Host
from ipop.types import Endpoint, is_direct

__all__ = ["PORT", "all_dht_ready", "direct_both_ways", "pinger", "start_nodes", "stop_all"]

PORT = 5800


async def pinger(
    a: Node, b: Node, answered: list[float], *, every_s: float = 0.1, timeout_s: float = 1.0
) -> None:
    """Ping ``b`` from ``a`` every ``every_s`` forever (cancel to stop), each ping given
    ``timeout_s``; record the send time of every answered ping in ``answered``. "Traffic
    resumed" is then the first answered ping sent after an event, at most ``every_s`` late."""
    loop = asyncio.get_running_loop()

    async def one() -> None:
        sent = loop.time()
        try:
            await a.ping(b.node_id, timeout_s=timeout_s)
        except TimeoutError:
            return
        answered.append(sent)

    tasks: set[asyncio.Task[None]] = set()
    try:
        while True:
            t = loop.create_task(one())
            tasks.add(t)
            t.add_done_callback(tasks.discard)
            await asyncio.sleep(every_s)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def start_nodes(
    hosts: Sequence[Host],
    ca: NetworkCA,
    *,
    rng: random.Random,
    port: int = PORT,
    overlay_config: OverlayConfig | None = None,
    link_config: LinkConfig | None = None,
    bootstrap: Sequence[Endpoint] = (),
) -> list[Node]:
    """One started node per host (call on the running loop); ``hosts[0]`` bootstraps the rest
    (``bootstrap``: every node's, for nodes joining a running network). ``overlay_config``:
    every node's, its ``local_endpoints`` set per host; ``link_config``: every node's."""
    loop = asyncio.get_running_loop()
    nodes: list[Node] = []
    boot: list[Endpoint] = list(bootstrap)
    # Keys from the seed too (ring positions with them): reproducible runs.
    keys = random.Random(rng.getrandbits(64))
    for host in hosts:
        node = Node(
            seeded_identity(ca, host.name, keys, now=loop.time(), hostname=host.name),
            bootstrap=boot,
            clock=loop.time,
            rng=random.Random(rng.random()),
            overlay_config=dataclasses.replace(
                overlay_config or OverlayConfig(), local_endpoints=(Endpoint(host.address, port),)
            ),
            link_config=link_config,
        )
        node.attach(
            host.bind(port, node.datagram_received),
            open_socket=functools.partial(host.bind, 0),
        )
        node.start()
        nodes.append(node)
        boot = boot or [Endpoint(host.address, port)]
    return nodes


async def all_dht_ready(nodes: Iterable[Node], timeout_s: float = 60.0) -> None:
    """Wait until every node of ``nodes`` joined the DHT; TimeoutError after ``timeout_s``."""
    await asyncio.wait_for(asyncio.gather(*(n.dht_ready.wait() for n in nodes)), timeout_s)


def direct_both_ways(a: Node, b: Node) -> bool:
    """Are ``a``'s session with ``b`` and ``b``'s with ``a`` both up on direct paths?"""
    pa, pb = a.core.link.path_of(b.node_id), b.core.link.path_of(a.node_id)
    return pa is not None and pb is not None and is_direct(pa) and is_direct(pb)


async def stop_all(tasks: Sequence[asyncio.Task[None] | None], nodes: Sequence[Node]) -> None:
    """A scenario's teardown: cancel its tasks (pingers; None: not started) and close its
    nodes."""
    running = [t for t in tasks if t is not None]
    for t in running:
        t.cancel()
    await asyncio.gather(*running, return_exceptions=True)
    await asyncio.gather(*(n.close() for n in nodes))
