"""Far-link candidates from our fastest peers' FAST_PEERS lists (ipop.overlay.proximity's
FastPeerPool, the 0x0A message, RingUpkeep.on_fast_peers): who is asked, what an answer may
teach us, and that a lying list buys its sender no more work from us and no bucket."""

from __future__ import annotations

import pytest

from ipop.errors import RemoteProtocolError
from ipop.overlay.messages import MAX_FAST_PEERS, FastPeers, decode_message
from ipop.overlay.proximity import FarExplorer, FastPeerPool, far_bucket
from ipop.overlay.upkeep import NEAR_DROPS
from ipop.testing.fake_origin import FakeKeyring
from ipop.testing.recording_links import node_by_hand, timed_link_up
from ipop.types import ID_BITS, NodeId

LOCAL = NodeId(0)
ME = NodeId(1 << 150)


def _at(bucket: int, offset: int = 0) -> NodeId:
    """A node in ``bucket`` seen from LOCAL."""
    return NodeId((1 << (ID_BITS - 2 - bucket)) + 1 + offset)


def _pool(**kw: float) -> FastPeerPool:
    args = {"per_epoch": 2, "interval_s": 5.0, "epoch_s": 600.0, "timeout_s": 5.0, "size": 4}
    args.update(kw)
    return FastPeerPool(**args)  # type: ignore[arg-type]


def test_the_message_round_trips_and_a_long_list_is_refused() -> None:
    ids = tuple(NodeId(i + 1) for i in range(MAX_FAST_PEERS))
    assert decode_message(FastPeers(False, ids).encode()) == FastPeers(False, ids)
    assert decode_message(FastPeers(True).encode()) == FastPeers(True, ())
    too_long = bytearray(FastPeers(False, ids).encode())
    too_long[2] = MAX_FAST_PEERS + 1
    too_long += bytes(20)
    with pytest.raises(RemoteProtocolError) as exc:
        decode_message(bytes(too_long))
    assert exc.value.reason == "too_many_ids"
    with pytest.raises(ValueError):
        FastPeers(False, (*ids, NodeId(99)))


def test_the_fastest_peers_are_asked_one_at_a_time_a_few_per_epoch() -> None:
    pool = _pool()
    a, b, c = NodeId(1), NodeId(2), NodeId(3)
    assert pool.to_ask([a, b, c], 0.0) == a
    assert pool.to_ask([a, b, c], 1.0) is None  # one question per interval
    assert pool.to_ask([a, b, c], 5.0) == b  # a was asked this epoch
    assert pool.to_ask([c], 10.0) is None  # per_epoch (2) spent
    assert pool.to_ask([a, c], 600.0) == a  # a new epoch


def test_only_an_answer_to_our_question_teaches_and_only_once() -> None:
    pool = _pool(per_epoch=3)
    a, b, c = NodeId(1), NodeId(2), NodeId(3)
    listed = (_at(2), _at(3))
    assert not pool.answered(a, listed, LOCAL, set(), 0.0)  # never asked
    assert pool.to_ask([a], 0.0) == a
    assert pool.answered(a, listed, LOCAL, set(), 1.0)
    assert not pool.answered(a, (_at(4),), LOCAL, set(), 1.5)  # one answer per question
    assert pool.to_ask([a, b], 5.0) == b
    assert not pool.answered(b, (_at(4),), LOCAL, set(), 10.5)  # too late
    assert pool.to_ask([a, b, c], 11.0) == c
    pool.forget(c)  # its link went down: no answer awaited
    assert not pool.answered(c, (_at(4),), LOCAL, set(), 11.5)
    assert len(pool) == 2 and pool.take(LOCAL, 4, set()) is None


def test_the_pool_is_bounded_and_skips_us_and_our_links() -> None:
    pool = _pool(size=4)
    peer = NodeId(1)
    assert pool.to_ask([peer], 0.0) == peer
    linked = {_at(1)}
    listed = (LOCAL, _at(1), *(_at(3, k) for k in range(MAX_FAST_PEERS - 2)))
    assert pool.answered(peer, listed, LOCAL, linked, 0.5)
    assert len(pool) == 4  # the first four others, in the order listed
    assert pool.take(LOCAL, 1, set()) is None
    assert pool.take(LOCAL, 3, set()) == _at(3, 0)
    assert pool.take(LOCAL, 3, {_at(3, 1)}) == _at(3, 2)  # one we linked to since: skipped
    assert len(pool) == 2


def test_a_lying_list_costs_no_more_explorations() -> None:
    """A peer lists nodes far from us as its fastest: the exploration budget is the one it
    always was, and each listed node is only a point to explore."""
    pool = _pool(size=64)
    liar = NodeId(7)
    assert pool.to_ask([liar], 0.0) == liar
    bucket = 3
    listed = tuple(_at(bucket, k) for k in range(MAX_FAST_PEERS))
    assert pool.answered(liar, listed, LOCAL, set(), 0.1)
    explorer = FarExplorer(per_bucket=4, interval_s=1.0, epoch_s=600.0)
    explored = 0
    for t in range(100):  # however many ticks: per_bucket explorations of the bucket
        now = 1.0 + t
        if now < explorer.next_at or bucket in explorer.spent(now):
            continue
        assert far_bucket(LOCAL, pool.take(LOCAL, bucket, set()) or LOCAL) == bucket
        explorer.explored(bucket, now)
        explored += 1
    assert explored == 4 and len(pool) == MAX_FAST_PEERS - 4
    # What the node that answers at a listed point may win is decided by our own handshake's
    # round trip: test_a_listed_node_timed_slower_loses_its_bucket (test_overlay_proximity).


# --- on a node driven by hand ----------------------------------------------------------------

KEYRING = FakeKeyring()


def test_a_question_is_answered_with_our_timed_links_fastest_first_within_a_budget() -> None:
    node, links = node_by_hand(ME, KEYRING)
    asker, slow, fast, untimed = (NodeId((k + 2) << 150) for k in range(4))
    timed_link_up(node, asker, 0, 0.004)
    timed_link_up(node, slow, 1, 0.120)
    timed_link_up(node, fast, 2, 0.010)
    timed_link_up(node, untimed, 3, None)
    links.sent.clear()
    for _ in range(4):
        node.near_upkeep.on_fast_peers(FastPeers(True), asker, 2.0)
    answers = links.sent_of(FastPeers)
    # The asker is not told of itself, nor of a link whose round trip we never measured.
    assert answers == [(asker, FastPeers(False, (fast, slow)))] * 2
    assert node.drops["fast_peers_too_often"] == 2
    assert {"fast_peers_too_often", "fast_peers_unasked"} <= NEAR_DROPS


def test_an_answer_we_did_not_ask_for_is_dropped() -> None:
    node, _ = node_by_hand(ME, KEYRING)
    peer = NodeId(3 << 150)
    timed_link_up(node, peer, 0, 0.004)
    node.near_upkeep.on_fast_peers(FastPeers(False, (NodeId(9 << 150),)), peer, 2.0)
    assert node.drops["fast_peers_unasked"] == 1
    assert node.stats["fast_peers_learned"] == 0


def test_once_joined_a_tick_asks_our_fastest_peer_and_its_answer_teaches() -> None:
    node, links = node_by_hand(ME, KEYRING)
    fast, slow = NodeId(3 << 150), NodeId(9 << 150)
    timed_link_up(node, slow, 0, 0.150)
    timed_link_up(node, fast, 1, 0.006)
    node.handle_timer(now=5.0)
    assert not links.sent_of(FastPeers)  # not joined yet: nobody asked
    node.near_upkeep.on_joined()
    node.handle_timer(now=10.0)
    assert links.sent_of(FastPeers) == [(fast, FastPeers(True))]
    node.near_upkeep.on_fast_peers(FastPeers(False, (NodeId(5 << 150),)), fast, 10.1)
    assert node.stats["fast_peers_learned"] == 1 and not node.drops["fast_peers_unasked"]
