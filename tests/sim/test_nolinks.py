"""A node without links says why, once: e.g. every handshake refused, certificate of another CA."""

from __future__ import annotations

import asyncio
import functools
import random

from ipop.aio.stack import Node
from ipop.identity import CERT_REASONS
from ipop.nolinks import CERT_WORDS, NoLinkWatch
from ipop.testing.clock import SIM_EPOCH, run_virtual
from ipop.testing.identities import make_network, seeded_identity
from ipop.testing.netsim import Network
from ipop.types import Endpoint

PORT = 5800


def _watch(node: Node, watch: NoLinkWatch, now: float, tried: int) -> str | None:
    link = node.core.link
    return watch.check(
        now=now,
        links=len(link.peers()),
        drops=link.drops,
        handshake_failed=link.stats["handshake_failed"],
        tried=tried,
    )


def test_nodes_of_two_cas_each_say_the_other_is_from_another_ca() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        net = Network(rng=random.Random(1))
        hosts = [net.add_host(f"h{i}", "none") for i in range(3)]
        eps = [Endpoint(h.address, PORT) for h in hosts]
        ca1 = make_network("simnet", now=loop.time())
        ca2 = make_network("simnet", now=loop.time())  # same name, another key
        keys = random.Random(2)  # ring positions from a seed: reproducible runs
        ids = [
            seeded_identity(ca1, "a", keys, now=loop.time()),
            seeded_identity(ca2, "b", keys, now=loop.time()),
            seeded_identity(ca2, "c", keys, now=loop.time()),
        ]
        # a and b list each other; c lists only a (which drops its Inits without a word).
        boots = [[eps[1]], [eps[0]], [eps[0]]]
        nodes = []
        for i in range(3):
            nd = Node(ids[i], bootstrap=boots[i], clock=loop.time, rng=random.Random(i))
            nd.attach(
                hosts[i].bind(PORT, nd.datagram_received),
                open_socket=functools.partial(hosts[i].bind, 0),
            )
            nodes.append(nd)
        watches = [NoLinkWatch(now=loop.time()) for _ in nodes]
        said: list[list[str]] = [[], [], []]
        try:
            for nd in nodes:
                nd.start()
            deadline = loop.time() + 60
            while loop.time() < deadline:
                await asyncio.sleep(1)
                for i, nd in enumerate(nodes):
                    words = _watch(nd, watches[i], loop.time(), tried=1)
                    if words is not None:
                        said[i].append(words)
            for i in (0, 1):
                assert len(said[i]) == 1, said[i]  # once
                assert "cert_bad_signature" in said[i][0]
                assert "another CA" in said[i][0] and "ipop-config node" in said[i][0]
            assert len(said[2]) == 1, said[2]
            assert "got no answer" in said[2][0] and "another CA" in said[2][0]
        finally:
            await asyncio.gather(*(nd.close() for nd in nodes))

    run_virtual(body(), start=SIM_EPOCH)


def test_watch_rearms_when_a_link_came_and_went() -> None:
    w = NoLinkWatch(now=0.0, grace_s=10, min_failures=3)
    bad = {"cert_expired": 5}
    assert w.check(now=5, links=0, drops=bad, handshake_failed=0, tried=1) is None  # grace
    first = w.check(now=11, links=0, drops=bad, handshake_failed=0, tried=1)
    assert first is not None and "expired" in first
    assert w.check(now=20, links=0, drops={"cert_expired": 50}, handshake_failed=0, tried=1) is None
    assert w.check(now=21, links=1, drops={"cert_expired": 50}, handshake_failed=0, tried=1) is None
    # The link went; failures before it do not count again, new ones do.
    assert w.check(now=40, links=0, drops={"cert_expired": 50}, handshake_failed=2, tried=1) is None
    assert w.check(now=52, links=0, drops={"cert_expired": 51}, handshake_failed=2, tried=1) is None
    again = w.check(now=53, links=0, drops={"cert_expired": 51}, handshake_failed=3, tried=2)
    assert again is not None and "handshakes to 2 endpoints got no answer (1 gave up)" in again


def test_watch_nobody_to_link_to_and_every_reason_has_words() -> None:
    w = NoLinkWatch(now=0.0)
    words = w.check(now=11, links=0, drops={}, handshake_failed=0, tried=0)
    assert words is not None and "bootstrap" in words
    assert set(CERT_WORDS) == set(CERT_REASONS)
