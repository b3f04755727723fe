"""The overlay's caches (brackets answer, policy views, seen index) against recomputation.

The caches exist for speed only (a 1,000-node simulation asks every node every tick), so at
every step of a join with NATs, relays and churn, every cached answer must equal the answer
computed from scratch the way the uncached code did.
"""

from __future__ import annotations

import bisect
import random

from ipop.nat.kinds import NatKind
from ipop.overlay.near import NearKeeper, SeenIds
from ipop.overlay.node import OverlayConfig
from ipop.overlay.ring import ring_neighbours_sorted
from ipop.testing.fake_links import FakeLinkWorld
from ipop.types import RING, NodeId, ring_distance


def build(n: int, *, seed: int) -> tuple[FakeLinkWorld, list[NodeId]]:
    """``n`` nodes joining through node 0 (open); the others open, cone or hard in turn."""
    rng = random.Random(seed)
    world = FakeLinkWorld(rng=rng)
    ids = [NodeId(rng.randrange(RING)) for _ in range(n)]
    world.spawn(ids[0], config=OverlayConfig(), bootstrap=[], seed=seed)
    boot = world.public_endpoint(ids[0])
    kinds = (NatKind.NONE, NatKind.PORT_RESTRICTED_CONE, NatKind.SYMMETRIC)
    for i, node_id in enumerate(ids[1:], 1):
        world.spawn(
            node_id,
            config=OverlayConfig(),
            bootstrap=[boot],
            nat=kinds[i % 3],
            start_at=world.now + 0.2 * i,
            seed=seed * 1000 + i,
        )
    return world, ids


def brackets_from_scratch(keeper: NearKeeper, now: float) -> bool:
    """NearKeeper.brackets_linked as it was before it was cached."""
    ring = keeper.table.ring()
    n = len(ring)
    if not n:
        return False
    local = keeper.local_id.value
    i = bisect.bisect_right(ring, local)
    to_succ = (ring[i % n] - local) % RING
    to_pred = (local - ring[(i - 1) % n]) % RING
    for c, (_, until) in keeper.seen.items():
        if until <= now or c in keeper.backoff or c in keeper.table or c == keeper.local_id:
            continue
        if c not in keeper.proven:
            continue
        v = c.value
        if 0 < (v - local) % RING < to_succ or 0 < (local - v) % RING < to_pred:
            return False
    return True


def wanted_from_scratch(keeper: NearKeeper, now: float) -> list[NodeId]:
    """NearKeeper.wanted as it was before it was cached."""
    local = keeper.local_id
    pool = {c.value: c for c, (_, t) in keeper.seen.items() if t > now and c not in keeper.backoff}
    for c in keeper.attempts:
        pool[c.value] = c
    for v in keeper.table.ring():
        pool[v] = keeper.table.peer_of(v)
    pool.pop(local.value, None)
    near = ring_neighbours_sorted(local, sorted(pool), keeper.near_per_side)
    return sorted({pool[v] for v in near}, key=lambda c: (ring_distance(local, c), c))


def check_all(world: FakeLinkWorld, seen: dict[str, int]) -> None:
    for n in world.alive_ids():
        node = world.node(n)
        keeper = node.near_keeper
        assert keeper.seen.values() == sorted(c.value for c in keeper.seen)
        assert keeper.wanted(world.now) == wanted_from_scratch(keeper, world.now), n.short()
        want = brackets_from_scratch(keeper, world.now)
        assert keeper.brackets_linked(world.now) is want, n.short()
        seen[str(want)] += 1
        views = node.connection_views
        assert views.current() == views.from_scratch(), n.short()
        # The informer index agrees with the news itself.
        for informer in {i for _, (i, _) in keeper.seen.items()}:
            told = {c for c, (i, _) in keeper.seen.items() if i == informer}
            assert set(keeper.seen.told_by(informer)) == told


def test_caches_agree_with_recomputation_through_join_and_churn() -> None:
    world, ids = build(40, seed=7)
    seen = {"True": 0, "False": 0}
    end = world.now + 40.0
    while world.now < end:
        world.run_for(0.2)
        check_all(world, seen)
    rng = random.Random(5)
    for k in rng.sample(ids[1:], 12):
        world.kill(k)
    end = world.now + 40.0
    while world.now < end:
        world.run_for(0.2)
        check_all(world, seen)
    # Both answers occurred, so both cache paths were exercised.
    assert seen["True"] > 100 and seen["False"] > 10, seen


def test_seen_versions_change_exactly_when_ids_come_or_go_or_revive() -> None:
    s = SeenIds()
    a, b, x, y = (NodeId(v) for v in (1, 2, 3, 4))
    s.put(a, x, 10.0, now=0.0)
    v = s.version
    s.put(a, x, 12.0, now=1.0)  # renewed: same answer everywhere
    assert s.version == v and s.get(a) == (x, 12.0)
    s.put(a, y, 12.0, now=1.0)  # another informer: re-indexed, the ids are the same
    assert s.version == v and s.told_by(x) == [] and s.told_by(y) == [a]
    v = s.version
    s.put(a, y, 30.0, now=20.0)  # had expired at 12: counts again
    assert s.version > v
    v = s.version
    s.put(b, y, 30.0, now=20.0)
    s.discard(a)
    s.discard(a)  # twice: no change the second time
    assert s.version == v + 2 and sorted(s.told_by(y)) == [b] and a not in s and len(s) == 1


def test_seen_ids_between_two_ring_values() -> None:
    rng = random.Random(9)
    s = SeenIds()
    ids = [NodeId(rng.randrange(RING)) for _ in range(60)]
    for c in ids:
        s.put(c, ids[0], 10.0, now=0.0)
    for c in ids[:20]:
        s.discard(c)
    live = ids[20:]
    for _ in range(200):
        low, high = rng.choice(live).value, rng.randrange(RING)
        if rng.random() < 0.5:
            low, high = high, low
        want = {c for c in live if 0 < (c.value - low) % RING < (high - low) % RING}
        assert {c for c, _ in s.between(low, high)} == want
