"""The routing decision (ipop.overlay.routing) on its own: every verdict, every drop reason,
the detours at a local minimum and around a suspect hop, without an overlay node."""

from __future__ import annotations

import collections
import math

import pytest

from ipop.overlay.messages import FLAG_EXACT, FLAG_EXCLUDE_SRC, FLAG_VIA, Routed
from ipop.overlay.near import SeenIds
from ipop.overlay.routing import _PRS_BIT_S, ROUTE_DROPS, Deliver, Drop, Forward, Router
from ipop.overlay.suspect import SilentHops
from ipop.overlay.table import ConnectionTable
from ipop.types import Endpoint, NodeId, Path, RelayPath

L = NodeId(1000)  # us
A = NodeId(2000)
B = NodeId(4000)
FAR = NodeId(5000)  # beyond B: B is the greedy hop toward it
NEAR_US = NodeId(1100)  # nearer to us than to any peer
SIG = bytes(64)  # a signature's length (a MAC-sized one leaves no reverse hint)


class World:
    def __init__(self, *peers: NodeId, relayed: NodeId | None = None) -> None:
        self.table = ConnectionTable()
        for i, p in enumerate(peers):
            path: Path = Endpoint("198.51.100.1", 4000 + i)
            if p == relayed:
                path = RelayPath(via=peers[0], peer=p)
            self.table.add(p, path, now=0.0)
        self.silent = SilentHops(rto_min_s=0.05, rto_max_s=1.0, rto_initial_s=0.3)
        self.seen = SeenIds()
        self.stats: collections.Counter[str] = collections.Counter()
        self.forged: set[NodeId] = set()
        self.router = Router(
            L,
            table=self.table,
            silent=self.silent,
            seen=self.seen,
            check=lambda msg, now: "origin_bad_sig" if msg.src in self.forged else None,
            stats=self.stats,
            pull_min_s=1.0,
        )


def routed(
    src: NodeId,
    dst: NodeId,
    *,
    exact: bool = True,
    hops: int = 0,
    ttl: int = 64,
    via: NodeId | None = None,
    flags: int = 0,
) -> Routed:
    flags |= (FLAG_EXACT if exact else 0) | (FLAG_VIA if via is not None else 0)
    return Routed(flags, hops, ttl, 5, src, dst, via, b"data", 0, SIG)


def test_a_message_handed_to_us_is_forwarded_one_hop_further() -> None:
    w = World(A, B)
    msg = routed(A, FAR)
    verdict = w.router.decide(msg, A, 1.0)
    assert verdict == Forward(B, routed(A, FAR, hops=1))
    assert not w.stats


def test_our_own_message_leaves_with_no_hop_counted() -> None:
    w = World(A, B)
    assert w.router.decide(routed(L, FAR), None, 1.0) == Forward(B, routed(L, FAR))


def test_a_message_for_us_is_delivered_with_its_hops() -> None:
    w = World(A, B)
    assert w.router.decide(routed(A, L, hops=2), B, 1.0) == Deliver(routed(A, L, hops=2), 3)
    # Closest delivery: nobody is nearer to NEAR_US than we are.
    msg = routed(A, NEAR_US, exact=False)
    assert w.router.decide(msg, A, 1.0) == Deliver(msg, 1)
    # Our own message to our own address is delivered here with no hop.
    own = routed(L, L)
    assert w.router.decide(own, None, 1.0) == Deliver(own, 0)


def test_a_via_naming_us_is_cleared_and_the_message_goes_on_to_its_destination() -> None:
    w = World(A, B)
    verdict = w.router.decide(routed(A, FAR, via=L), A, 1.0)
    assert verdict == Forward(B, routed(A, FAR, hops=1))


def test_a_via_goes_first() -> None:
    w = World(A, B)
    verdict = w.router.decide(routed(B, FAR, via=A), B, 1.0)
    assert isinstance(verdict, Forward) and verdict.hop == A


@pytest.mark.parametrize(
    ("msg", "frm", "reason"),
    [
        (routed(A, FAR), B, "spoofed_src"),  # hops 0 yet not from its source
        (routed(L, FAR, hops=3), A, "own_src_returned"),
        (routed(A, NEAR_US, hops=1), B, "no_route"),  # exact, and we are the local minimum
        (routed(A, FAR, hops=63, ttl=64), B, "ttl_expired"),
    ],
)
def test_each_drop_reason(msg: Routed, frm: NodeId, reason: str) -> None:
    w = World(A, B)
    verdict = w.router.decide(msg, frm, 1.0)
    assert isinstance(verdict, Drop) and verdict.reason == reason
    assert verdict.pull == (NEAR_US if reason == "no_route" else None)


def test_the_drop_reasons_are_one_checked_list() -> None:
    assert {"spoofed_src", "own_src_returned", "no_route", "ttl_expired"} == ROUTE_DROPS
    for reason in ROUTE_DROPS:
        assert Drop(reason).reason == reason
    with pytest.raises(ValueError, match="not a routing drop reason"):
        Drop("no_rout")


def test_a_via_we_cannot_reach_is_no_route_even_for_closest_delivery() -> None:
    w = World(A, B)
    # Nobody of ours is nearer to NEAR_US than we are: the via cannot be reached.
    verdict = w.router.decide(routed(A, FAR, exact=False, via=NEAR_US), A, 1.0)
    assert verdict == Drop("no_route", NEAR_US)


def test_a_suspect_hop_is_routed_around_when_another_makes_progress() -> None:
    w = World(A, B)
    w.silent.sent(B, 0.0)
    assert w.silent.suspect(B, 10.0)
    assert w.router.decide(routed(L, FAR), None, 10.0) == Forward(A, routed(L, FAR))
    assert w.stats == {"routed_around_suspect": 1}


def test_a_suspect_hop_is_used_when_no_other_makes_progress() -> None:
    w = World(B)
    w.silent.sent(B, 0.0)
    assert w.router.decide(routed(L, FAR), None, 10.0) == Forward(B, routed(L, FAR))
    assert w.stats == {"routed_via_suspect": 1}


def test_a_suspect_hop_that_answered_is_used_again() -> None:
    w = World(A, B)
    w.silent.sent(B, 0.0)
    w.silent.heard(B, 9.0)
    assert w.router.decide(routed(L, FAR), None, 10.0) == Forward(B, routed(L, FAR))
    assert not w.stats


def test_at_a_local_minimum_the_peer_that_told_us_of_the_target_takes_it() -> None:
    w = World(A, B)
    w.seen.put(NEAR_US, A, 5.0, now=0.0)
    assert w.router.decide(routed(B, NEAR_US), B, 1.0) == Forward(A, routed(B, NEAR_US, hops=1))
    assert w.stats == {"routed_via_informer": 1}
    # Stale news is no hint.
    assert w.router.decide(routed(B, NEAR_US), B, 6.0) == Drop("no_route", NEAR_US)


def test_at_a_local_minimum_an_answer_goes_back_the_way_its_target_came() -> None:
    w = World(A, B)
    # NEAR_US (no link of ours) reached us through A: its answer goes back that way.
    assert isinstance(w.router.decide(routed(NEAR_US, FAR, hops=2), A, 1.0), Forward)
    assert len(w.router.reverse) == 1
    verdict = w.router.decide(routed(B, NEAR_US), B, 2.0)
    assert verdict == Forward(A, routed(B, NEAR_US, hops=1))
    assert w.stats == {"routed_via_reverse": 1}


def test_a_forged_reverse_hint_is_not_taken() -> None:
    w = World(A, B)
    w.forged.add(NEAR_US)
    w.router.decide(routed(NEAR_US, FAR, hops=2), A, 1.0)
    assert w.router.decide(routed(B, NEAR_US), B, 2.0) == Drop("no_route", NEAR_US)
    assert w.router.reverse.stats["hint_forged"] == 1


def test_only_the_source_detours_and_its_message_then_excludes_it() -> None:
    w = World(A, B)
    verdict = w.router.decide(routed(L, NEAR_US), None, 1.0)
    assert verdict == Forward(A, routed(L, NEAR_US, flags=FLAG_EXCLUDE_SRC))
    assert w.stats == {"routed_source_detour": 1}
    assert w.router.detour_hop(NEAR_US, 1.0) == A
    # The same message handed to us by a peer is no_route: only its source detours.
    assert w.router.decide(routed(B, NEAR_US), B, 1.0) == Drop("no_route", NEAR_US)


def test_an_excluded_source_is_never_handed_the_message_back() -> None:
    w = World(A, B)
    # B excluded itself: A is the closest node to FAR that is left.
    msg = routed(B, FAR, exact=False, flags=FLAG_EXCLUDE_SRC)
    assert w.router.decide(msg, B, 1.0) == Forward(
        A, routed(B, FAR, exact=False, hops=1, flags=FLAG_EXCLUDE_SRC)
    )
    w = World(B)
    # Now we are the closest node left, so we deliver.
    msg = routed(B, FAR, exact=False, flags=FLAG_EXCLUDE_SRC)
    assert w.router.decide(msg, B, 1.0) == Deliver(msg, 1)


def test_no_route_pulls_the_two_direct_peers_nearest_the_target_at_a_bounded_rate() -> None:
    c = NodeId(1300)
    w = World(A, B, c, relayed=c)
    assert w.router.pull_peers(NEAR_US, 1.0) == [A, B]  # c's link is relayed
    assert w.router.pull_peers(NEAR_US, 1.5) == []  # within pull_min_s
    assert w.router.pull_peers(NEAR_US, 2.0) == [A, B]


# --- proximity route selection --------------------------------------------------------------

TARGET = NodeId(10_000)
GREEDY = NodeId(9_000)  # 1,000 from the target: the greedy hop
WITHIN = NodeId(8_200)  # 1,800 from it
BEYOND = NodeId(1_500)  # 8,500 from it: little progress, yet nearer than we are (9,000)


def _prs(rtts: dict[NodeId, float | None], *, proximity: bool = True) -> Router:
    table = ConnectionTable()
    for i, (p, rtt) in enumerate(rtts.items()):
        table.add(p, Endpoint("198.51.100.1", 4000 + i), now=0.0, rtt_s=rtt)
    return Router(
        L,
        table=table,
        silent=SilentHops(rto_min_s=0.05, rto_max_s=1.0, rto_initial_s=0.3),
        seen=SeenIds(),
        check=lambda msg, now: None,
        stats=collections.Counter(),
        pull_min_s=1.0,
        proximity=proximity,
    )


def test_a_much_faster_link_that_still_makes_progress_is_taken() -> None:
    r = _prs({GREEDY: 0.200, WITHIN: 0.020, BEYOND: 0.030})
    assert r.next_hop(TARGET, 1.0, exact=True) == WITHIN
    # Less progress (8.5 times as far from the target as the greedy hop) is taken when it
    # saves more than the bits it leaves to go are worth: a hop inside our region costs a
    # fraction of one that leaves it.
    r = _prs({GREEDY: 0.200, WITHIN: 0.020, BEYOND: 0.001})
    assert r.next_hop(TARGET, 1.0, exact=True) == BEYOND
    # Off: greedy, whatever the round trips.
    assert (
        _prs({GREEDY: 0.200, WITHIN: 0.020}, proximity=False).next_hop(TARGET, 1.0, exact=True)
        == GREEDY
    )


def test_a_hop_must_save_more_than_the_distance_it_leaves_is_worth() -> None:
    # BEYOND leaves log2(8.5) bits more to go than the greedy hop: worth _PRS_BIT_S each.
    extra = _PRS_BIT_S * math.log2(8_500 / 1_000)
    slower = 0.200 - extra + 0.002
    faster = 0.200 - extra - 0.002
    assert _prs({GREEDY: 0.200, BEYOND: slower}).next_hop(TARGET, 1.0, exact=True) == GREEDY
    assert _prs({GREEDY: 0.200, BEYOND: faster}).next_hop(TARGET, 1.0, exact=True) == BEYOND
    # The least estimated cost wins, not the fastest: WITHIN, 1.8 times as far as the greedy
    # hop, beats BEYOND although BEYOND is a little faster.
    r = _prs({GREEDY: 0.200, WITHIN: 0.050, BEYOND: 0.045})
    assert r.next_hop(TARGET, 1.0, exact=True) == WITHIN
    # An unmeasured link is never preferred, and an unmeasured greedy hop is kept.
    assert _prs({GREEDY: 0.200, WITHIN: None}).next_hop(TARGET, 1.0, exact=True) == GREEDY
    assert _prs({GREEDY: None, WITHIN: 0.001}).next_hop(TARGET, 1.0, exact=True) == GREEDY


def test_the_target_itself_and_progress_come_first() -> None:
    # Linked to the target: straight there, however slow.
    r = _prs({TARGET: 0.300, WITHIN: 0.001})
    assert r.next_hop(TARGET, 1.0, exact=True) == TARGET
    # A fast link within the window but no nearer the target than we are (615 against our
    # 600) is never a hop: every hop makes progress, so no loops and no detours.
    r = _prs({NodeId(1_290): 0.300, NodeId(2_215): 0.001})
    assert r.next_hop(NodeId(1_600), 1.0, exact=True) == NodeId(1_290)
    r = _prs({NodeId(1_290): 0.300, NodeId(2_150): 0.001})  # 550: progress, so taken
    assert r.next_hop(NodeId(1_600), 1.0, exact=True) == NodeId(2_150)


def test_a_detour_is_not_taken_back_to_the_peer_that_handed_us_the_message() -> None:
    """At a local minimum, the hint's peer (or the reverse path's) is not taken when that peer
    is the one the message just came from: it greedily handed the message back to us, so it
    holds no link to the target either, and taking the hint again bounced the message between
    the two until its TTL ran out (a 31-daemon cold start dropped 236 this way, 93 and 143 at
    two neighbours)."""
    w = World(A, B)
    w.seen.put(NEAR_US, A, 5.0, now=0.0)
    # First arrival, from B: the informer A takes it.
    assert w.router.decide(routed(B, NEAR_US), B, 1.0) == Forward(A, routed(B, NEAR_US, hops=1))
    # A had no link to NEAR_US after all and handed it back (we are nearer): not A again.
    assert w.router.decide(routed(B, NEAR_US, hops=2), A, 1.1) == Drop("no_route", NEAR_US)
    # Nor by the reverse path that leads to the same peer.
    w.router.decide(routed(NEAR_US, FAR, hops=2), A, 1.2)
    assert w.router.decide(routed(B, NEAR_US, hops=2), A, 1.3) == Drop("no_route", NEAR_US)
    # Once for the first bounce, twice for the second (the informer's hint, then the path).
    assert w.stats["routed_hint_bounced"] == 3
