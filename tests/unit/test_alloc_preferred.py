"""A restarted node keeps its address unless another node holds it (ipop.dht.alloc).

A failed create of the preferred address is not a rival: right after a restart the replicas
that answer may be too few for a quorum. Only a live record of another owner sends the node to
a random address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random

import pytest

from ipop.dht import alloc
from ipop.dht.alloc import allocate_ip
from ipop.dht.record import ip_key, namespace_of
from ipop.testing.clock import SIM_EPOCH
from ipop.testing.fake_dht import FakeDht
from ipop.testing.identities import make_network
from ipop.types import NodeId

SUBNET = ipaddress.ip_network("100.64.0.0/24")
PREFERRED = ipaddress.ip_address("100.64.0.77")
NS = namespace_of(make_network("net", now=SIM_EPOCH).trust)
KEY = ip_key(NS, PREFERRED)
ME = NodeId(1)
RIVAL = NodeId(2)


class ShortOfQuorum(FakeDht):
    """The first ``failures`` creates fall short of a quorum (no rival among the answers)."""

    def __init__(self, node_id: NodeId, failures: int) -> None:
        super().__init__(node_id)
        self.failures = failures

    async def create(self, key: str, value: bytes, ttl: float) -> bool:
        if self.failures:
            self.failures -= 1
            self.calls["create"] += 1
            await asyncio.sleep(0)
            return False
        return await super().create(key, value, ttl)


def _allocate(dht: FakeDht) -> ipaddress.IPv4Address:
    async def body() -> ipaddress.IPv4Address:
        return await allocate_ip(
            dht, SUBNET, namespace=NS, rng=random.Random(1), preferred=PREFERRED
        )

    return asyncio.run(body())


def test_own_live_record_and_a_short_quorum_keep_the_preferred_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(alloc, "PREFERRED_RETRY_S", 0.0, raising=False)
    dht = ShortOfQuorum(ME, failures=2)
    dht.hold(KEY, ME)  # our record from before the restart, still live
    assert _allocate(dht) == PREFERRED
    assert dht.calls["create"] == 3
    nobody = ShortOfQuorum(ME, failures=1)  # our record lapsed (or our withdrawal erased it)
    assert _allocate(nobody) == PREFERRED


def test_a_rival_holding_the_preferred_address_sends_us_elsewhere_at_once() -> None:
    dht = FakeDht(ME)
    dht.hold(KEY, RIVAL)
    got = _allocate(dht)
    assert got != PREFERRED and got in SUBNET
    assert dht.records[KEY] == (RIVAL, b"")
    assert dht.calls["get"] == 1  # one look at who holds it, no retries


def test_the_preferred_address_is_given_up_after_bounded_tries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(alloc, "PREFERRED_RETRY_S", 0.0, raising=False)
    dht = ShortOfQuorum(ME, failures=alloc.PREFERRED_ATTEMPTS)
    got = _allocate(dht)
    assert got != PREFERRED
    assert dht.calls["create"] == alloc.PREFERRED_ATTEMPTS + 1


def test_avoided_addresses_are_never_claimed_even_when_preferred_and_free() -> None:
    """A daemon in two networks keeps its addresses apart (issue 17): its claim in the second
    network avoids its address in the first, saved state or not."""
    small = ipaddress.ip_network("100.64.0.0/29")  # usable .2 .. .6 (.1 is the gateway)
    avoid = [ipaddress.ip_address(f"100.64.0.{i}") for i in (2, 3, 5, 6)]

    async def body() -> ipaddress.IPv4Address:
        return await allocate_ip(
            FakeDht(ME),
            small,
            namespace=NS,
            rng=random.Random(1),
            preferred=avoid[0],
            avoid=avoid,
        )

    assert asyncio.run(body()) == ipaddress.ip_address("100.64.0.4")
