"""A seeded simulation of full node stacks is reproducible: the same seed gives the same packet
trace (times and sizes), however slowly the machine runs it."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import pytest

from ipop.identity import cert_serial
from ipop.testing import clock
from ipop.testing.clock import run_virtual
from ipop.testing.identities import make_network, seeded_identity
from ipop.testing.netsim import Network
from ipop.testing.simnode import start_nodes

KINDS = ["none", "port-restricted-cone", "symmetric", "full-cone"]


def _trace(seed: int) -> list[tuple[float, str, Any, Any, int]]:
    async def body() -> list[tuple[float, str, Any, Any, int]]:
        loop = asyncio.get_running_loop()
        net = Network(rng=random.Random(seed), trace=True, trace_limit=1_000_000)
        hosts = [net.add_host(f"h{i}", KINDS[i % len(KINDS)]) for i in range(8)]
        ca = make_network("simnet", now=loop.time())
        nodes = start_nodes(hosts, ca, rng=random.Random(seed + 1))
        try:
            await asyncio.sleep(20)
            for nd in nodes[1:]:
                nodes[0].send_ip(nd.node_id, b"hello")
            await asyncio.sleep(10)
        finally:
            await asyncio.gather(*(nd.close() for nd in nodes))
        assert net.trace is not None
        return [(r.time, r.event, r.src, r.dst, r.size) for r in net.trace]

    return run_virtual(body())


def test_same_seed_same_trace_even_on_a_slow_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    first = _trace(5)
    assert len(first) > 1000  # the nodes did talk
    assert _trace(5) == first
    # A loaded machine: the loop loses wall time now and then. Virtual time must not notice.
    real_select = clock._VirtualSelector.select
    pauses = random.Random(0)

    def slow_select(self: Any, timeout: float | None = None) -> Any:
        if pauses.random() < 0.002:
            time.sleep(0.002)
        return real_select(self, timeout)

    monkeypatch.setattr(clock._VirtualSelector, "select", slow_select)
    assert _trace(5) == first


def test_seeded_identities_have_the_same_certificate_size_and_serial() -> None:
    """A random serial is a byte shorter in DER one time in 256, and so is every datagram that
    carries the certificate: seeded identities take theirs from the key."""
    ca = make_network("simnet", now=clock.SIM_EPOCH)
    a = [seeded_identity(ca, f"h{i}", random.Random(7), now=clock.SIM_EPOCH) for i in range(2)]
    assert cert_serial(a[0].cert) == cert_serial(a[1].cert)
    keys = random.Random(1)
    sizes = {len(seeded_identity(ca, "h", keys, now=clock.SIM_EPOCH).cert.der) for _ in range(600)}
    assert len(sizes) == 1
