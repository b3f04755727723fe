"""The DHT's retransmission timeouts (ipop.dht.protocol.RttEstimator), sans-IO."""

from __future__ import annotations

from ipop.dht.protocol import RttEstimator
from ipop.types import NodeId

A, B, C = NodeId(1), NodeId(2), NodeId(3)


def test_no_sample_waits_the_ceiling() -> None:
    assert RttEstimator(0.1, 0.4).timeout(A) == 0.4


def test_timeout_follows_measured_round_trips_within_floor_and_ceiling() -> None:
    est = RttEstimator(0.1, 0.4)
    for _ in range(20):
        est.sample(A, 0.01)
    assert est.timeout(A) == 0.1  # 10 ms round trips: the floor, not 0.4 s
    for _ in range(20):
        est.sample(B, 0.08)
    assert 0.08 <= est.timeout(B) < 0.2
    for _ in range(5):
        est.sample(B, 1.0)
    assert est.timeout(B) == 0.4  # a slow path grows back to the ceiling


def test_unknown_peer_gets_the_estimate_of_all_peers() -> None:
    est = RttEstimator(0.05, 0.4)
    for _ in range(20):
        est.sample(A, 0.02)
    assert est.timeout(C) < 0.4


def test_peer_table_is_bounded() -> None:
    est = RttEstimator(0.1, 0.4, max_peers=2)
    for peer in (A, B, C):
        est.sample(peer, 0.3)
    assert len(est._peers) == 2 and A not in est._peers
