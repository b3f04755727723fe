"""Full node stacks on simulated hosts, wired the one way the daemon wires them (tests only).

:func:`start_nodes` builds an :class:`ipop.aio.node.Node` per host on the virtual-time loop:
its overlay socket on ``port``, its own endpoint advertised, punching sockets for port guessing
opened on demand on the same host, the first host as everybody's bootstrap.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import random
from collections.abc import Sequence

from ipop.aio.node import Node
from ipop.identity import NetworkCA
from ipop.overlay.node import OverlayConfig
from ipop.testing.identities import make_identity
from ipop.testing.netsim import Host
from ipop.types import Endpoint

__all__ = ["PORT", "start_nodes"]

PORT = 5800


def start_nodes(
    hosts: Sequence[Host],
    ca: NetworkCA,
    *,
    rng: random.Random,
    port: int = PORT,
    overlay_config: OverlayConfig | None = None,
) -> list[Node]:
    """One started node per host (call on the running loop); ``hosts[0]`` bootstraps the rest.
    ``overlay_config``: every node's, its ``local_endpoints`` set per host."""
    loop = asyncio.get_running_loop()
    nodes: list[Node] = []
    boot: list[Endpoint] = []
    for host in hosts:
        node = Node(
            make_identity(ca, host.name, now=loop.time(), hostname=host.name),
            bootstrap=boot,
            clock=loop.time,
            rng=random.Random(rng.random()),
            overlay_config=dataclasses.replace(
                overlay_config or OverlayConfig(), local_endpoints=(Endpoint(host.address, port),)
            ),
        )
        node.attach(
            host.bind(port, node.datagram_received),
            open_socket=functools.partial(host.bind, 0),
        )
        node.start()
        nodes.append(node)
        boot = boot or [Endpoint(host.address, port)]
    return nodes
