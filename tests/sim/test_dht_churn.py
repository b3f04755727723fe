"""The DHT under datagram loss and node departures (virtual time)."""

from __future__ import annotations

import asyncio
import random
import statistics

import pytest

from ipop.dht.service import DhtConfig
from ipop.testing.fake_overlay import TESTNET_NS, DhtCluster, holders, run_cluster

TIMINGS: dict[str, list[float]] = {}


@pytest.mark.parametrize("loss", [0.02, 0.05])
def test_bootstrap_and_operations_under_loss(loss: float) -> None:
    async def body(c: DhtCluster) -> dict[str, float]:
        loop = asyncio.get_running_loop()
        assert all(len(svc.contacts()) >= 8 for svc in c.nodes)
        rng = random.Random(7)
        puts, gets = [], []
        for i in range(15):
            writer, reader = rng.sample(c.nodes, 2)
            key = f"{TESTNET_NS}:user:host{i}"
            t0 = loop.time()
            assert await writer.put(key, f"v{i}".encode(), 300)
            t1 = loop.time()
            got = await reader.get(key)
            t2 = loop.time()
            assert got is not None and got.value == f"v{i}".encode()
            puts.append(t1 - t0)
            gets.append(t2 - t1)
        return {
            "put_mean": statistics.mean(puts),
            "put_max": max(puts),
            "get_mean": statistics.mean(gets),
            "get_max": max(gets),
        }

    # DhtCluster.create asserts that every one of the 30 bootstraps succeeded.
    numbers = run_cluster(body, n=30, seed=int(loss * 100), loss=loss)
    print(f"loss {loss:.0%}: " + ", ".join(f"{k} {v:.2f}s" for k, v in numbers.items()))
    assert numbers["get_mean"] < 1.5 and numbers["put_mean"] < 1.5


def test_records_survive_departures() -> None:
    config = DhtConfig(republish_interval_s=30.0, refresh_interval_s=60.0)

    async def body(c: DhtCluster) -> None:
        owners = c.nodes[:4]
        keys = [f"{TESTNET_NS}:user:n{i}" for i in range(4)]
        for owner, key in zip(owners, keys, strict=True):
            assert await owner.create(key, key.encode(), 600)
        # Every replica of the first key leaves at once (except its owner), plus a few more.
        leaving = [svc for svc, _ in holders(c, keys[0]) if svc not in owners]
        leaving += [svc for svc in c.nodes[4:] if svc not in leaving][:3]
        for svc in leaving:
            await c.remove(svc)
        assert len(leaving) >= 7
        await asyncio.sleep(75)  # two republish periods
        reader = c.nodes[-1]
        for key in keys:
            got = await reader.get(key)
            assert got is not None and got.value == key.encode()
            assert len(holders(c, key)) >= 5, key

    run_cluster(body, n=24, config=config, seed=3)
