"""A direct path that dies with no NAT of ours rebinding (simulator): ``a`` and ``b``, each
behind a port-restricted NAT, hold a direct session that carried pings; then everything on
that path is dropped both ways (a firewall rule, a middlebox that lost the flow, a NAT shared
with other hosts that gave the flow toward one peer another port after a flush while every
witness still sees us where it did). Relays still reach both. Each end must notice the
silence itself and key the other through a relay: before, both sent into the dead path
until the link timed out (50 s; seen in a 10-minute ``ipop-lab soak`` after a ``nat_flush``
of a NAT with three hosts behind it, six ordered pairs failing a sweep 39 s later)."""

from __future__ import annotations

import asyncio
import random

import pytest

from ipop import timing
from ipop.aio.stack import Node
from ipop.testing.clock import SIM_EPOCH, run_virtual
from ipop.testing.identities import make_network
from ipop.testing.netsim import Host, Network
from ipop.testing.simnode import all_dht_ready, direct_both_ways, pinger, start_nodes, stop_all
from ipop.testing.waiting import until
from ipop.types import RelayPath

PING_EVERY_S = 0.1
# Quiet + echo + one more echo + SILENT_PATH_RELAY_AFTER_S + a relayed handshake.
RESUME_WITHIN_S = 3.0
BLOCKED_S = 300.0


def _relayed_both_ways(a: Node, b: Node) -> bool:
    pa, pb = a.core.link.path_of(b.node_id), b.core.link.path_of(a.node_id)
    return isinstance(pa, RelayPath) and isinstance(pb, RelayPath)


def _cut(net: Network, a: Host, b: Host, now: float) -> None:
    """Drop whatever ``a`` and ``b`` send to each other's public address."""
    assert a.nat is not None and b.nat is not None
    net.block(a, b.nat.public_ip, until=now + BLOCKED_S)
    net.block(b, a.nat.public_ip, until=now + BLOCKED_S)


@pytest.mark.parametrize("traffic", ["flowing", "idle"])
def test_a_direct_path_that_goes_silent_is_relayed_within_seconds(traffic: str) -> None:
    """``flowing``: pings run across the cut and resume within RESUME_WITHIN_S. ``idle``:
    nothing flows when the path dies; the keepalive after it finds the silence, so by the
    time pings start (20 s later) the pair is relayed already and the first ping answers."""

    async def body() -> None:
        loop = asyncio.get_running_loop()
        net = Network(rng=random.Random(5))
        ca = make_network("silent", now=loop.time())
        hosts = [
            net.add_public_host("boot"),
            net.add_public_host("p"),
            net.add_host("a", "port-restricted-cone"),
            net.add_host("b", "port-restricted-cone"),
        ]
        nodes = start_nodes(hosts, ca, rng=random.Random(6))
        a, b = nodes[2], nodes[3]
        answered: list[float] = []
        task: asyncio.Task[None] | None = None
        try:
            await all_dht_ready(nodes)
            task = loop.create_task(pinger(a, b, answered, every_s=PING_EVERY_S))
            assert await until(lambda: direct_both_ways(a, b), 30), "no direct a<->b before"
            await asyncio.sleep(2)
            if traffic == "idle":
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                task = None
                await asyncio.sleep(2)
            cut_at = loop.time()
            _cut(net, hosts[2], hosts[3], cut_at)
            if traffic == "idle":
                # One keepalive interval and the detection after it: relayed before any ping.
                wait = timing.KEEPALIVE_INTERVAL_S + RESUME_WITHIN_S
                assert await until(lambda: _relayed_both_ways(a, b), wait), (
                    a.core.link.path_of(b.node_id),
                    b.core.link.path_of(a.node_id),
                )
                await asyncio.sleep(cut_at + 20 - loop.time())
                answered.clear()
                started = loop.time()
                task = loop.create_task(pinger(a, b, answered, every_s=PING_EVERY_S))
                assert await until(lambda: bool(answered), 10), "b was never reached again"
                resumed = answered[0] - started
                print(f"idle pair, path dead for 20 s: first ping answered after {resumed:.2f} s")
                assert resumed < PING_EVERY_S
            else:
                assert await until(lambda: any(t > cut_at for t in answered), 60)
                resumed = min(t for t in answered if t > cut_at) - cut_at
                print(f"flowing pair, path dead: traffic resumed after {resumed:.2f} s")
                assert resumed <= RESUME_WITHIN_S, f"traffic resumed only after {resumed:.2f} s"
                assert _relayed_both_ways(a, b)
            stats = a.core.stats["silent_path_relay_fallbacks"]
            stats += b.core.stats["silent_path_relay_fallbacks"]
            assert stats >= 1
            # Said in the logs (debug): which path fell silent.
            notes = [n for node in (a, b) for n in node.core.journal.drain()]
            assert any(n.event == "path_silent" and not n.rare for n in notes), notes
            assert a.core.overlay.is_linked(b.node_id) and b.core.overlay.is_linked(a.node_id)
        finally:
            await stop_all([task], nodes)

    run_virtual(body(), start=SIM_EPOCH)
