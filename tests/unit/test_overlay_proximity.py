"""Far links chosen by measured round trips (ipop.overlay.proximity, policies.decide_far)."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from ipop.overlay.policies import (
    ConnectionView,
    FarExplore,
    FarLinkWanted,
    KindExpired,
    PolicyView,
    decide,
)
from ipop.overlay.proximity import FarExplorer, far_bucket, sample_in_bucket
from ipop.overlay.table import ConnectionKind, ConnectionTable
from ipop.overlay.views import ConnectionViews
from ipop.types import ID_BITS, RING, NodeId, RelayPath

FAR = ConnectionKind.FAR
LOCAL = NodeId(0)


def _at(bucket: int, offset: int = 0) -> NodeId:
    """A peer in ``bucket`` seen from LOCAL (clockwise, ``offset`` past the bucket's start)."""
    return NodeId((1 << (ID_BITS - 2 - bucket)) + 1 + offset)


def _far(peer: NodeId, rtt: float | None, *, local: bool = True) -> ConnectionView:
    return ConnectionView(peer, frozenset({FAR}), local, 0.0, None, 0.0, None, rtt)


def _view(
    conns: tuple[ConnectionView, ...],
    *,
    n: float = 16.0,
    pending_far: int = 0,
    spent: frozenset[int] = frozenset(),
    explore_at: float = 0.0,
    proximity: bool = True,
) -> PolicyView:
    return PolicyView(
        local=LOCAL,
        joined=True,
        n_estimate=n,  # 16 nodes: a target of round(log2 16) = 4 far links
        connections=conns,
        pending_far=pending_far,
        last_near_probe=1e9,
        near_per_side=3,
        far_cap=20,
        leaf_hold_s=60.0,
        trim_grace_s=30.0,
        relay_hold_s=60.0,
        near_retry_s=5.0,
        near_probe_s=60.0,
        proximity=proximity,
        explore_spent=spent,
        explore_at=explore_at,
    )


def _far_actions(view: PolicyView, now: float = 10.0) -> list[object]:
    return [a for a in decide(view, now) if isinstance(a, (FarExplore, KindExpired, FarLinkWanted))]


def test_buckets_halve_the_distance() -> None:
    assert far_bucket(LOCAL, NodeId(RING // 2)) == 0
    assert far_bucket(LOCAL, NodeId(RING // 2 + 5)) == 0  # the other side
    assert far_bucket(LOCAL, NodeId(RING // 4)) == 1
    assert far_bucket(LOCAL, NodeId(RING // 4 + 1)) == 0
    assert far_bucket(LOCAL, NodeId(RING - 1)) == ID_BITS - 1  # one step counter-clockwise
    assert far_bucket(LOCAL, _at(5)) == far_bucket(LOCAL, _at(5, 12345)) == 5


@given(st.integers(0, RING - 1), st.integers(0, ID_BITS - 1), st.integers(0, 2**32))
def test_samples_land_in_their_bucket(local: int, bucket: int, seed: int) -> None:
    rng = random.Random(seed)
    me = NodeId(local)
    assert far_bucket(me, sample_in_bucket(me, bucket, rng)) == bucket


def test_over_target_the_slower_of_one_bucket_loses_its_far_kind() -> None:
    # Four far links in four buckets, plus an exploration's answer in bucket 2.
    links = (
        _far(_at(1), 0.120),
        _far(_at(2), 0.300),
        _far(_at(3), 0.050),
        _far(_at(4), 0.090),
        _far(_at(2, 99), 0.010),
    )
    assert _far_actions(_view(links)) == [KindExpired(_at(2), FAR)]
    # Off, the same table is within the hysteresis band: nothing is shed.
    assert _far_actions(_view(links, proximity=False)) == []


def test_an_unmeasured_round_trip_never_wins_a_bucket() -> None:
    # The new peer answered nothing we timed (its handshake gave no round trip): whatever it
    # might claim, the measured link keeps the bucket and the unmeasured one goes.
    links = (
        _far(_at(1), 0.120),
        _far(_at(2), 0.300),
        _far(_at(3), 0.050),
        _far(_at(4), 0.090),
        _far(_at(2, 99), None),
    )
    assert _far_actions(_view(links)) == [KindExpired(_at(2, 99), FAR)]


def test_exploration_goes_to_the_slowest_bucket_not_spent() -> None:
    links = (
        _far(_at(1), 0.120),
        _far(_at(2), 0.300),
        _far(_at(3), None),  # unknown counts as slowest
        _far(_at(4), 0.090),
    )
    assert _far_actions(_view(links)) == [FarExplore(3)]
    assert _far_actions(_view(links, spent=frozenset({3}))) == [FarExplore(2)]
    assert _far_actions(_view(links, spent=frozenset({1, 2, 3, 4}))) == []
    # One at a time, and not before its time.
    assert _far_actions(_view(links, pending_far=1)) == []
    assert _far_actions(_view(links, explore_at=11.0)) == []
    assert _far_actions(_view(links, proximity=False)) == []


def test_only_our_own_far_links_are_weighed_and_near_ones_never() -> None:
    near = ConnectionView(
        _at(2, 5), frozenset({ConnectionKind.NEAR}), False, None, None, 0.0, None, 0.001
    )
    theirs = _far(_at(2, 7), 0.001, local=False)  # a peer's far link to us: its business
    links = (
        _far(_at(1), 0.120),
        _far(_at(2), 0.300),
        _far(_at(3), 0.050),
        _far(_at(4), 0.090),
        near,
        theirs,
    )
    acts = decide(_view(links, explore_at=1e9), 10.0)
    assert acts == [], acts


def test_short_of_the_target_asks_before_exploring() -> None:
    links = (_far(_at(1), 0.120), _far(_at(2), 0.300))
    assert _far_actions(_view(links)) == [FarLinkWanted()]


def test_explorer_spends_buckets_per_epoch() -> None:
    ex = FarExplorer(per_bucket=2, interval_s=1.0, epoch_s=100.0)
    assert ex.spent(0.0) == frozenset()
    ex.explored(3, 0.0)
    assert ex.next_at == 1.0 and ex.spent(0.5) == frozenset()
    ex.explored(3, 1.0)
    assert ex.spent(1.5) == frozenset({3})
    assert ex.spent(100.0) == frozenset()  # a new epoch


def test_table_keeps_the_least_handshake_rtt_and_forgets_it_on_a_new_path() -> None:
    t = ConnectionTable()
    p = NodeId(7)
    path = RelayPath(via=NodeId(9), peer=p)
    row = t.add(p, path, now=0.0, rtt_s=0.080)
    views = ConnectionViews(t, relay_stamp=lambda: 0)
    assert views.current()[0].rtt_s == 0.080
    t.add(p, path, now=1.0, rtt_s=0.120)  # a slower sample: queueing, not distance
    assert row.rtt_s == 0.080
    t.add(p, path, now=2.0, rtt_s=0.060)
    assert views.current()[0].rtt_s == 0.060  # the view cache saw the change
    t.add(p, path, now=3.0)  # the same path, no sample: kept
    assert row.rtt_s == 0.060
    t.add(p, RelayPath(via=NodeId(10), peer=p), now=4.0)  # moved: unknown until measured
    assert row.rtt_s is None and views.current()[0].rtt_s is None


def test_a_listed_node_timed_slower_loses_its_bucket() -> None:
    """A FAST_PEERS list (ipop.overlay.proximity.FastPeerPool) named a node far from us as
    fast, we explored it and it linked: our handshake timed it at 180 ms against our own far
    link's 8 ms in its bucket, so over the target it is the one that loses its FAR kind."""
    listed = _at(3)
    links = (_far(_at(0), 0.05), _far(_at(1), 0.05), _far(_at(2), 0.05), _far(_at(3, 9), 0.008))
    assert _far_actions(_view((*links, _far(listed, 0.180)))) == [KindExpired(listed, FAR)]
