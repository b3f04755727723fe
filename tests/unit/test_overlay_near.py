"""ipop.overlay.near through its public interface: pooling neighbour lists, the near candidates
we want, which of them to ask, and the brackets test with its cache."""

from __future__ import annotations

import collections

from ipop.overlay.attempts import Attempts, Backoff
from ipop.overlay.near import NearKeeper
from ipop.overlay.proven import ProvenIds
from ipop.overlay.table import ConnectionTable
from ipop.types import Endpoint, NodeId

ME = NodeId(1000)
TTL = 15.0
# Around ME on the ring: successors above, predecessors below.
S1, S2, S3 = NodeId(1010), NodeId(1020), NodeId(1030)
P1, P2 = NodeId(985), NodeId(970)
X, Y = NodeId(50_000), NodeId(60_000)  # informers, far away
EP = Endpoint("203.0.113.1", 5800)


def keeper() -> NearKeeper:
    table = ConnectionTable()
    attempts = Attempts(
        ME,
        direct=lambda p: p in table,
        stats=collections.Counter(),
        connect_timeout_s=10.0,
        connect_back_timeout_s=2.0,
        relay_after_s=3.0,
        relay_yield_s=1.5,
        failed_backoff_s=60.0,
        near_retry_s=5.0,
    )
    return NearKeeper(
        ME,
        near_per_side=1,
        seen_ttl_s=TTL,
        table=table,
        attempts=attempts,
        backoff=Backoff(),
        proven=ProvenIds(),
    )


def test_a_list_replaces_what_its_informer_told_before() -> None:
    k = keeper()
    k.consider([S1, S2, ME], X, 0.0)
    assert k.check_due and set(k.seen.told_by(X)) == {S1, S2} and ME not in k.seen
    assert k.seen.get(S1) == (X, TTL)
    k.check_due = False
    k.consider([S2], X, 1.0)  # S1 is gone from X's view: gone from ours
    assert S1 not in k.seen and k.seen.get(S2) == (X, 1.0 + TTL) and k.check_due
    k.consider([S3], Y, 1.0)
    k.forget(X)  # X's link went down: what it told us goes with it
    assert S2 not in k.seen and S3 in k.seen


def test_wanted_is_the_nearest_on_each_side_of_everything_known() -> None:
    k = keeper()
    k.consider([S2, S3, P2], X, 0.0)
    assert k.wanted(1.0) == [S2, P2]  # 20 above, 30 below: nearest first
    k.attempts.start(P1, [EP], set(), set(), relay_allowed=True, candidates=[], now=1.0)
    k.table.add(S1, EP, now=1.0)
    assert k.wanted(1.0) == [S1, P1]
    # A backed-off id is neither wanted nor kept.
    k.table.remove(S1)
    k.backoff.put(S2, 100.0)
    assert k.wanted(2.0) == [P1, S3] and S2 not in k.seen
    # Expired news is dropped even though nothing else changed (the cache is bounded by it).
    assert k.wanted(TTL) == [P1]


def test_wanted_is_cached_until_an_input_changes() -> None:
    k = keeper()
    k.consider([S2, P2], X, 0.0)
    first = k.wanted(1.0)
    assert k.wanted(2.0) is first  # nothing changed: the same answer object
    k.seen.put(S1, Y, 20.0, now=2.0)
    assert k.wanted(2.0) == [S1, P2]


def test_to_ask_skips_linked_relayable_and_recently_asked_candidates() -> None:
    k = keeper()
    k.consider([S1, P1], X, 0.0)
    assert k.to_ask(1.0) == [(S1, None), (P1, None)]  # X is not linked: no via
    assert not k.check_due
    k.table.add(X, EP, now=1.0)
    k.asked(P1, 5.0)
    assert k.to_ask(2.0) == [(S1, X)]
    # An attempt that may relay is left alone; a direct-only one (a far link) is asked too.
    k.attempts.start(S1, [EP], set(), set(), relay_allowed=True, candidates=[], now=2.0)
    assert k.to_ask(3.0) == []
    k.attempts.cancel(S1)
    k.attempts.start(S1, [EP], set(), set(), relay_allowed=False, candidates=[], now=3.0)
    assert k.to_ask(4.0) == [(S1, X)]
    k.expire(5.0)
    assert (P1, X) in k.to_ask(5.0)


def test_brackets_linked_only_proven_live_news_holds_us_back() -> None:
    k = keeper()
    assert not k.brackets_linked(0.0)  # no link at all
    k.table.add(S2, EP, now=0.0)
    k.table.add(P2, EP, now=0.0)
    assert k.brackets_linked(0.0)
    k.consider([S1], X, 0.0)  # between us and S2, heard of only: hearsay does not count
    assert k.brackets_linked(1.0)
    k.proven.add(S1)
    assert not k.brackets_linked(1.0)
    k.backoff.put(S1, 50.0)
    assert k.brackets_linked(1.0)
    k.backoff.lift(S1)
    assert not k.brackets_linked(TTL - 1)
    assert k.brackets_linked(TTL)  # S1's news expired: no input changed, time alone did
    k.consider([S1, S3], X, TTL)  # S3 lies beyond S2: cannot block
    k.proven.add(S3)
    k.table.add(S1, EP, now=TTL)  # linked now: our successor side is complete
    assert k.brackets_linked(TTL)
