"""Pure ring arithmetic: greedy next hop, near sets, size estimate, Symphony sampling, policies."""

from __future__ import annotations

import math
import random

from hypothesis import given
from hypothesis import strategies as st

from ipop.overlay.policies import (
    ConnectionView,
    FarLinkWanted,
    KindExpired,
    LinkUseless,
    NearProbeDue,
    PolicyView,
    decide,
)
from ipop.overlay.relay import relay_candidates
from ipop.overlay.ring import (
    closest_node,
    estimate_size,
    far_target_count,
    next_hop,
    ring_neighbours,
    route_key,
    sample_far_target,
)
from ipop.overlay.table import ConnectionKind, ConnectionTable
from ipop.testing.invariants import ring_violations, true_near
from ipop.types import RING, Endpoint, NodeId, RelayPath, clockwise, ring_distance

ids = st.integers(min_value=0, max_value=RING - 1).map(NodeId)


def test_distance_helpers() -> None:
    a, b = NodeId(10), NodeId(RING - 10)
    assert clockwise(a, b) == RING - 20
    assert clockwise(b, a) == 20
    assert ring_distance(a, b) == 20
    assert route_key(a, a) == (0, 0)


@given(ids, ids, st.lists(ids, max_size=20), st.booleans())
def test_next_hop_never_farther_than_us(
    local: NodeId, dst: NodeId, nbrs: list[NodeId], exact: bool
) -> None:
    hop = next_hop(local, dst, nbrs, exact=exact)
    if hop is None:
        # We deliver: nobody we know is closer (or dst itself is not among them).
        best = closest_node([local, *nbrs], dst)
        assert best == local or (exact and dst not in nbrs and best != dst)
    else:
        assert hop in nbrs
        assert route_key(hop, dst) < route_key(local, dst)
        assert hop == closest_node(nbrs, dst)


@given(ids, st.lists(ids, min_size=1, max_size=20))
def test_next_hop_with_exclusion_skips_the_source(local: NodeId, nbrs: list[NodeId]) -> None:
    # A JOIN leaving its source: any neighbour but never "deliver to myself".
    hop = next_hop(local, local, nbrs, exact=False, exclude=local)
    others = [n for n in nbrs if n != local]
    assert hop == closest_node(others, local)


def test_next_hop_exact_takes_direct_link() -> None:
    local, dst = NodeId(0), NodeId(1000)
    assert next_hop(local, dst, [NodeId(999), dst], exact=True) == dst
    assert next_hop(dst, dst, [NodeId(999)], exact=True) is None


def test_greedy_routing_on_a_ring_reaches_closest() -> None:
    rng = random.Random(1)
    ring = sorted(NodeId(rng.randrange(RING)) for _ in range(64))
    nbrs = {n: ring_neighbours(n, ring, 1) for n in ring}
    for _ in range(50):
        key = NodeId(rng.randrange(RING))
        cur, hops = ring[0], 0
        while (hop := next_hop(cur, key, nbrs[cur], exact=False)) is not None:
            cur, hops = hop, hops + 1
            assert hops <= len(ring)
        assert cur == closest_node(ring, key)


def test_ring_neighbours_picks_per_side() -> None:
    ring = [NodeId(i * 100) for i in range(10)]
    assert ring_neighbours(NodeId(0), ring, 2) == {
        NodeId(100),
        NodeId(200),
        NodeId(800),
        NodeId(900),
    }
    # Fewer nodes than 2 * per_side: everyone is near.
    assert ring_neighbours(NodeId(0), ring[:3], 3) == {NodeId(100), NodeId(200)}
    assert ring_neighbours(NodeId(0), ring, 2) == true_near(NodeId(0), ring, 2)


def test_estimate_size_from_even_spacing() -> None:
    n = 1000
    gap = RING // n
    local = NodeId(0)
    near = [NodeId(gap * i) for i in (1, 2, 3)] + [NodeId(RING - gap * i) for i in (1, 2, 3)]
    assert abs(estimate_size(local, near) - n) / n < 0.01
    assert estimate_size(local, []) == 1.0


def test_far_target_count() -> None:
    assert far_target_count(5, 3, 20) == 0
    assert far_target_count(1024, 3, 20) == 10
    assert far_target_count(2**40, 3, 20) == 20


def test_symphony_samples_are_harmonic() -> None:
    rng = random.Random(7)
    local = NodeId(12345)
    n = 1024
    logs = []
    for _ in range(4000):
        t = sample_far_target(local, n, rng)
        d = ring_distance(local, t)
        assert RING // n - 1 <= d <= RING // 2
        logs.append(math.log(d / RING, n))
    # Harmonic: log_n(distance) is uniform on [-1, log_n(1/2)), so about half the draws
    # fall below the midpoint of that range.
    mid = (-1 + math.log(0.5, n)) / 2
    below = sum(1 for x in logs if x < mid) / len(logs)
    assert 0.46 < below < 0.54


def test_table_kinds_and_idle() -> None:
    t = ConnectionTable()
    p = NodeId(5)
    t.add(p, Endpoint("198.51.100.1", 5800), now=1.0)
    row = t.get(p)
    assert row is not None and row.idle_since == 1.0 and row.direct
    assert t.add_kind(p, ConnectionKind.FAR, now=2.0)
    assert not t.add_kind(p, ConnectionKind.FAR, now=2.0)
    assert row.idle_since is None
    gained, lost = t.set_near(frozenset({p}), now=3.0)
    assert gained == [p] and lost == []
    assert t.drop_kind(p, ConnectionKind.FAR, now=4.0)
    gained, lost = t.set_near(frozenset(), now=5.0)
    assert lost == [p] and row.idle_since == 5.0
    t.add(p, RelayPath(via=NodeId(9), peer=p), now=6.0)
    assert row.relayed and len(t) == 1


def _view(
    conns: tuple[ConnectionView, ...],
    *,
    n: float = 1000.0,
    last_probe: float = 0.0,
    pending_far: int = 0,
) -> PolicyView:
    return PolicyView(
        local=NodeId(0),
        joined=True,
        n_estimate=n,
        connections=conns,
        pending_far=pending_far,
        last_near_probe=last_probe,
        near_per_side=3,
        far_cap=20,
        leaf_hold_s=60.0,
        trim_grace_s=30.0,
        relay_hold_s=60.0,
        near_retry_s=5.0,
        near_probe_s=60.0,
    )


def _conn(
    i: int,
    kinds: set[ConnectionKind],
    *,
    idle: float | None = None,
    local_far: bool = False,
    leaf: float | None = None,
    relay: float = 0.0,
) -> ConnectionView:
    return ConnectionView(
        NodeId(i), frozenset(kinds), local_far, 0.0 if local_far else None, leaf, relay, idle
    )


def test_policy_trims_only_after_grace() -> None:
    idle = _conn(1, set(), idle=100.0)
    assert LinkUseless(NodeId(1)) not in decide(_view((idle,)), 129.0)
    assert LinkUseless(NodeId(1)) in decide(_view((idle,)), 130.0)


def test_policy_expires_leaf_and_relay() -> None:
    c = _conn(1, {ConnectionKind.LEAF, ConnectionKind.RELAY}, leaf=0.0, relay=10.0)
    acts = decide(_view((c,)), 65.0)
    assert KindExpired(NodeId(1), ConnectionKind.LEAF) in acts
    assert KindExpired(NodeId(1), ConnectionKind.RELAY) not in acts
    assert KindExpired(NodeId(1), ConnectionKind.RELAY) in decide(_view((c,)), 70.0)


def test_policy_far_with_hysteresis() -> None:
    far = tuple(_conn(i, {ConnectionKind.FAR}, local_far=True) for i in range(1, 11))
    # log2(1000) ~ 10: satisfied; one below asks for one more.
    assert not [a for a in decide(_view(far), 1.0) if isinstance(a, FarLinkWanted)]
    assert FarLinkWanted() in decide(_view(far[:9]), 1.0)
    assert FarLinkWanted() not in decide(_view(far[:9], pending_far=1), 1.0)
    # Estimate drops to 256 (target 8): 10 is within the hysteresis band, 11 is not.
    assert not [a for a in decide(_view(far, n=256), 1.0) if isinstance(a, KindExpired)]
    more = (*far, _conn(11, {ConnectionKind.FAR}, local_far=True))
    shed = [a for a in decide(_view(more, n=256), 1.0) if isinstance(a, KindExpired)]
    assert len(shed) == 3


def test_policy_probes_when_short() -> None:
    few = (_conn(1, {ConnectionKind.NEAR}),)
    assert NearProbeDue() in decide(_view(few, last_probe=0.0), 5.0)
    assert NearProbeDue() not in decide(_view(few, last_probe=0.0), 4.0)
    full = tuple(_conn(i, {ConnectionKind.NEAR}) for i in range(1, 7))
    assert NearProbeDue() not in decide(_view(full, last_probe=0.0), 30.0)
    assert NearProbeDue() in decide(_view(full, last_probe=0.0), 60.0)


def test_relay_candidates_prefers_common_direct() -> None:
    local, target = NodeId(0), NodeId(1000)
    got = relay_candidates(
        local,
        target,
        [NodeId(5), NodeId(990), NodeId(7)],
        [NodeId(990), NodeId(5), NodeId(3), local],
        fallback=NodeId(7),
    )
    assert got == [NodeId(990), NodeId(5), NodeId(7)]


def test_ring_violations_checker() -> None:
    ring = [NodeId(i * 10) for i in range(8)]
    good = {n: true_near(n, ring, 2) for n in ring}
    assert ring_violations(good, per_side=2) == []
    bad = dict(good)
    bad[ring[0]] = frozenset(list(good[ring[0]])[:-1]) | {ring[4]}
    out = ring_violations(bad, per_side=2)
    assert any("misses" in v for v in out) and any("extra" in v for v in out)
