"""The NAT matrix in the simulator: every pair of NAT kinds, the real node stack, virtual time.

The same question as ``ipop-lab natmatrix`` asks of real NATs, asked of the RFC 4787 models in
:mod:`ipop.testing.nat`: for hosts ``x`` and ``y`` behind NATs of kinds A and B (or public), with
a public bootstrap node, does ``x`` reach ``y``, does the path become direct, how long after
the first packet, at what RTT before and after, and how many overlay pings of a 50 ms train were
lost. Rows have the lab's keys, so the two matrices can be compared line by line.

A pair's path is "direct" once ``x`` holds a link to ``y`` on an underlay endpoint, "relayed"
when the link runs through a relay node, "overlay" while ``x`` has no link to ``y``.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from statistics import median
from typing import Any

from ipop.aio.stack import Node
from ipop.nat.kinds import NAT_KINDS, NatKind
from ipop.nat.stun import direct_expected
from ipop.testing.clock import SIM_EPOCH, run_virtual
from ipop.testing.identities import make_network
from ipop.testing.netsim import Network
from ipop.testing.simnode import start_nodes
from ipop.types import RelayPath

__all__ = ["KINDS", "run_matrix", "run_pair"]

KINDS = NAT_KINDS
PORT = 5800
PINGS = 60
INTERVAL_S = 0.05
READY_S = 60.0


def _path(node: Node, peer: Node) -> str:
    for info in node.core.link.peers():
        if info.peer == peer.node_id:
            return "relayed" if isinstance(info.path, RelayPath) else "direct"
    return "overlay"


async def _pair(a: str, b: str, seed: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    net = Network(rng=random.Random(seed))
    ca = make_network("matrix", now=loop.time())
    hosts = [net.add_host(name, kind) for name, kind in (("boot", "none"), ("x", a), ("y", b))]
    started = start_nodes(hosts, ca, rng=random.Random(seed + 1))
    nodes = dict(zip(("boot", "x", "y"), started, strict=True))
    x, y = nodes["x"], nodes["y"]
    row: dict[str, Any] = {
        "a": a,
        "b": b,
        "reachable": False,
        "direct": False,
        "expected_direct": direct_expected(NatKind(a), NatKind(b)),
        "time_to_direct_s": None,
        "rtt_overlay_ms": None,
        "rtt_direct_ms": None,
        "lost": None,
        "path": None,
    }
    try:
        await asyncio.wait_for(asyncio.gather(x.dht_ready.wait(), y.dht_ready.wait()), READY_S)
        start = loop.time()
        direct_at: float | None = None
        before: list[float] = []
        after: list[float] = []
        lost = 0

        async def one() -> None:
            nonlocal lost
            try:
                pong = await x.ping(y.node_id, timeout_s=1.0)
            except TimeoutError:
                lost += 1
                return
            (after if direct_at is not None else before).append(pong.rtt_s * 1000)

        pings = []
        for _ in range(PINGS):
            if direct_at is None and _path(x, y) == "direct":
                direct_at = loop.time()
            pings.append(asyncio.ensure_future(one()))
            await asyncio.sleep(INTERVAL_S)
        await asyncio.gather(*pings)
        if direct_at is None and _path(x, y) == "direct":
            direct_at = loop.time()
        row["reachable"] = bool(before or after)
        row["direct"] = direct_at is not None
        row["time_to_direct_s"] = round(direct_at - start, 3) if direct_at is not None else None
        row["rtt_overlay_ms"] = round(median(before), 3) if before else None
        row["rtt_direct_ms"] = round(median(after), 3) if after else None
        row["lost"] = lost
        row["path"] = _path(x, y)
    except TimeoutError:
        row["error"] = "the nodes did not join in time"
    finally:
        await asyncio.gather(*(n.close() for n in nodes.values()))
    return row


def run_pair(a: str, b: str, *, seed: int = 1) -> dict[str, Any]:
    return run_virtual(_pair(a, b, seed), start=SIM_EPOCH)


def run_matrix(kinds: tuple[str, ...] = KINDS, *, seed: int = 1) -> dict[str, Any]:
    pairs = [
        run_pair(a, b, seed=seed + i)
        for i, (a, b) in enumerate(itertools.combinations_with_replacement(kinds, 2))
    ]
    return {"pairs": pairs}
