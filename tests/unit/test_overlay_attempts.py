"""ipop.overlay.attempts through its public interface: the attempt states, the actions each input
returns, the relay candidates, the helpers, the backoff set and the bootstraps."""

from __future__ import annotations

import collections

from ipop.overlay.attempts import (
    Attempts,
    AttemptState,
    Backoff,
    Bootstraps,
    Connect,
    GiveUp,
)
from ipop.overlay.table import ConnectionKind
from ipop.types import Endpoint, NodeId, RelayPath

ME = NodeId(1000)
# Ids above ours: we key the relayed link first; below ours: we yield relay_yield_s.
PEER, LOW = NodeId(5000), NodeId(10)
R1, R2, R3 = NodeId(2001), NodeId(2002), NodeId(2003)
EP1, EP2 = Endpoint("203.0.113.1", 5800), Endpoint("203.0.113.2", 5800)
EP3 = Endpoint("203.0.113.3", 5800)
TIMEOUT, CB_TIMEOUT, AFTER, YIELD, FAILED, RETRY = 10.0, 2.0, 3.0, 1.5, 60.0, 5.0


def attempts(direct: set[NodeId] | None = None) -> tuple[Attempts, collections.Counter[str]]:
    stats: collections.Counter[str] = collections.Counter()
    links = set() if direct is None else direct
    a = Attempts(
        ME,
        direct=lambda p: p in links,
        stats=stats,
        connect_timeout_s=TIMEOUT,
        connect_back_timeout_s=CB_TIMEOUT,
        relay_after_s=AFTER,
        relay_yield_s=YIELD,
        failed_backoff_s=FAILED,
        near_retry_s=RETRY,
    )
    return a, stats


def test_a_new_attempt_connects_to_each_endpoint_and_waits_its_turn_to_relay() -> None:
    a, stats = attempts()
    v = a.version
    acts = a.start(
        PEER, [EP1, EP2], {ConnectionKind.FAR}, set(), relay_allowed=True, candidates=[], now=0.0
    )
    assert acts == [Connect(EP1, PEER), Connect(EP2, PEER)]
    att = a.get(PEER)
    assert att is not None and att.state is AttemptState.DIRECT and not att.relaying
    assert (
        att.relay_at == AFTER and att.deadline == TIMEOUT
    )  # our id is the smaller: we relay first
    assert a.version == v + 1 and stats["connect_attempts"] == 2
    assert a.owner(EP1) == PEER and PEER in a and len(a) == 1
    assert a.wanting(ConnectionKind.FAR) == 1 and a.wanting(ConnectionKind.SHORTCUT) == 0
    b, _ = attempts()
    b.start(LOW, [EP1], set(), set(), relay_allowed=True, candidates=[], now=0.0)
    got = b.get(LOW)
    assert got is not None and got.relay_at == AFTER + YIELD  # ours is the larger: we yield


def test_a_connect_back_sends_one_init_and_our_own_attempt_then_retries() -> None:
    a, _ = attempts()
    acts = a.start(
        PEER, [EP1], set(), set(), relay_allowed=False, candidates=[], now=0.0, connect_back=True
    )
    assert acts == [Connect(EP1, PEER, retransmit=False, timeout_s=CB_TIMEOUT)]
    assert a.connect_backs() == 1
    # Our own request for the same peer: the endpoint under way is keyed again with retries,
    # a new one is added (once; not our own EP3), and it no longer counts as a connect-back.
    acts = a.start(
        PEER,
        [EP1, EP2, EP2, EP3],
        set(),
        set(),
        own={EP3},
        relay_allowed=False,
        candidates=[],
        now=1.0,
    )
    assert acts == [Connect(EP1, PEER), Connect(EP2, PEER)]
    assert a.connect_backs() == 0


def test_direct_failures_before_our_turn_wait_then_relay_through_a_direct_candidate() -> None:
    a, stats = attempts(direct={R2, R3})
    a.start(PEER, [EP1], set(), set(), relay_allowed=True, candidates=[R1, PEER, R2], now=0.0)
    # Failed before relay_not_before: nothing now, the tick relays at our turn.
    assert a.path_failed(EP1, 1.0) == []
    att = a.get(PEER)
    assert att is not None and att.relay_at == AFTER and att.state is AttemptState.DIRECT
    assert a.advance(2.0) == []
    # R1 is not linked directly and PEER is the peer itself: both skipped.
    assert a.advance(AFTER) == [Connect(RelayPath(via=R2, peer=PEER), PEER)]
    assert att.state is AttemptState.DIRECT_AND_RELAY and att.candidates == []
    assert att.deadline == AFTER + TIMEOUT and stats["relay_attempts_early"] == 1
    # The relay path times out: given up, backed off for failed_backoff_s.
    assert a.advance(AFTER + TIMEOUT) == [GiveUp(PEER, AFTER + TIMEOUT + FAILED)]
    assert PEER not in a and a.owner(RelayPath(via=R2, peer=PEER)) is None
    assert stats["connect_failed"] == 1 and stats["near_failed_relayed"] == 1


def test_failures_after_our_turn_relay_at_once_and_a_refusal_moves_on() -> None:
    a, stats = attempts(direct={R1, R2})
    a.start(PEER, [EP1], set(), set(), relay_allowed=True, candidates=[R1, R2], now=0.0)
    acts = a.path_failed(EP1, AFTER + 1)
    assert acts == [Connect(RelayPath(via=R1, peer=PEER), PEER)]
    att = a.get(PEER)
    assert att is not None and att.state is AttemptState.RELAYING
    assert stats["relay_attempts"] == 1
    # R1 cannot reach the peer: R2 at once.
    acts = a.relay_refused(RelayPath(via=R1, peer=PEER), AFTER + 2)
    assert acts == [Connect(RelayPath(via=R2, peer=PEER), PEER)]
    assert stats["relay_attempt_refused"] == 1
    # A refusal for a path nobody waits on is not ours.
    assert a.relay_refused(RelayPath(via=R1, peer=PEER), AFTER + 2) is None
    # R2 refuses too and no candidate is left: given up.
    acts = a.relay_refused(RelayPath(via=R2, peer=PEER), AFTER + 3)
    assert acts == [GiveUp(PEER, AFTER + 3 + FAILED)] and PEER not in a


def test_giving_up_backs_off_only_attempts_that_may_relay() -> None:
    a, stats = attempts()
    assert a.start(PEER, [], set(), set(), relay_allowed=False, candidates=[], now=0.0) == [
        GiveUp(PEER, None)
    ]
    # A near candidate with nobody to relay through: asked again after near_retry_s.
    a.start(LOW, [EP1], set(), set(), relay_allowed=True, candidates=[], now=0.0)
    assert a.advance(TIMEOUT) == [GiveUp(LOW, TIMEOUT + RETRY)]
    assert stats["near_failed_no_relay"] == 1 and stats["connect_failed"] == 2


def test_a_linked_peer_ends_its_attempt() -> None:
    a, _ = attempts()
    a.start(PEER, [EP1], set(), set(), relay_allowed=True, candidates=[], now=0.0)
    v = a.version
    att = a.linked(PEER)
    assert att is not None and att.peer == PEER and a.version == v + 1
    assert a.linked(PEER) is None and a.path_failed(EP1, 1.0) == [] and a.owner(EP1) is None


def test_a_relay_helper_becomes_the_first_candidate() -> None:
    a, stats = attempts(direct={R3})
    a.start(PEER, [EP1], set(), set(), relay_allowed=True, candidates=[R1], now=0.0)
    pool = a.helper_pool([R1, R1, ME, PEER, R2, R3], PEER, linked={R2})
    assert pool == [R1, R3]
    a.helper_asked(R3, PEER, 0.0)
    assert a.helping(R3, 1.0) and not a.helping(R1, 1.0)
    assert a.helper_pool([R3], PEER, linked=set()) == []  # asked already
    assert a.helper_linked(R3) == PEER and a.helper_linked(R3) is None
    assert a.helper_up(R3, PEER, 1.0) and stats["relay_helpers_up"] == 1
    att = a.get(PEER)
    assert att is not None and att.candidates == [R3, R1] and att.relay_at == AFTER
    assert a.advance(AFTER) == [Connect(RelayPath(via=R3, peer=PEER), PEER)]
    assert not a.helper_up(R3, LOW, 1.0)  # no attempt to LOW


def test_helpers_expire_after_the_connect_timeout() -> None:
    a, _ = attempts()
    a.helper_asked(R1, PEER, 0.0)
    a.advance(TIMEOUT - 1)
    assert a.helping(R1, TIMEOUT - 1)
    a.advance(TIMEOUT)
    assert a.helper_linked(R1) is None


def test_cancel_forgets_without_giving_up() -> None:
    a, stats = attempts()
    a.start(PEER, [EP1], set(), set(), relay_allowed=True, candidates=[], now=0.0)
    a.cancel(PEER)
    assert PEER not in a and a.owner(EP1) is None and stats["connect_failed"] == 0


def test_backoff_version_changes_when_a_peer_comes_or_goes() -> None:
    b = Backoff()
    b.put(PEER, 5.0)
    b.put(LOW, 9.0)
    v = b.version
    assert PEER in b and len(b) == 2 and b.until(PEER) == 5.0
    assert not b.lift(R1) and b.version == v
    b.expire(5.0)
    assert PEER not in b and LOW in b and b.version == v + 1
    b.clear()
    assert not b and b.version == v + 2
    b.clear()
    assert b.version == v + 2


def test_bootstraps_are_tried_once_at_a_time_and_retried_later() -> None:
    boot = Bootstraps([EP1, EP2], connect_timeout_s=TIMEOUT, retry_s=30.0)
    boot.set_remembered([EP2, EP3])
    acts = boot.connect({EP2}, 0.0)  # EP2 is our own
    assert acts == [Connect(EP1, None), Connect(EP3, None)]
    assert boot.connect(set(), 1.0) == [Connect(EP2, None)]  # the others are under way
    assert not boot.due(40.0)
    assert boot.settled(EP1) and not boot.settled(EP1)
    assert not boot.settled(RelayPath(via=R1, peer=PEER))
    boot.expire(TIMEOUT + 1.0)
    assert not boot.due(30.0) and boot.due(31.0)
