"""Silent next hops (ipop.overlay.suspect) and routing around them (next_hop_sorted's avoid)."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from ipop.overlay.config import OverlayConfig
from ipop.overlay.ring import next_hop, next_hop_sorted
from ipop.overlay.suspect import SUSPECT_RTOS, SilentHops
from ipop.timing import OVERLAY_HOP_PROBE_MAX_S as PROBE_MAX_S
from ipop.types import RING, NodeId

ids = st.integers(min_value=0, max_value=RING - 1).map(NodeId)
P, Q = NodeId(1), NodeId(2)


def _hops() -> SilentHops:
    return SilentHops(rto_min_s=0.05, rto_max_s=1.0, rto_initial_s=0.3)


def test_an_idle_link_is_never_suspect() -> None:
    hops = _hops()
    hops.measured(P, 0.01)
    assert hops.next_due() is None
    assert hops.due(1000.0) == []
    assert not hops.suspect(P, 1000.0)


def test_a_hop_that_stays_silent_is_probed_then_suspect_then_probed_less_often() -> None:
    hops = _hops()
    hops.sent(P, 10.0)
    hops.sent(P, 10.2)  # the episode counts from the first unanswered send
    rto = hops.rto(P)
    assert rto == 0.3  # nothing measured yet
    times = []
    while (t := hops.next_due()) is not None and t < 60.0:
        assert [p for p, _ in hops.due(t)] == [P]
        times.append(round(t - 10.0, 6))
    assert times[:3] == [0.3, 0.6, 0.9]  # one timeout apart
    gaps = [round(b - a, 6) for a, b in itertools.pairwise(times[2:])]
    assert gaps[:4] == [0.6, 1.2, 2.4, PROBE_MAX_S] and set(gaps[4:]) == {PROBE_MAX_S}
    assert not hops.suspect(P, 10.0 + SUSPECT_RTOS * rto - 0.001)
    assert hops.suspect(P, 10.0 + SUSPECT_RTOS * rto)
    assert hops.heard(P, 60.0)  # it was suspect
    assert not hops.suspect(P, 60.0) and hops.next_due() is None


def test_an_answer_clears_and_measures_the_round_trip() -> None:
    hops = _hops()
    hops.sent(P, 0.0)
    [(_, first)] = hops.due(0.3)
    [(_, second)] = hops.due(0.6)
    # The first probe's answer comes late, after the second left: its own round trip counts
    # (0.35 s), not the time since the second probe (0.05 s).
    hops.answered(P, first, 0.65)
    assert not hops.heard(P, 0.65)
    assert hops.rto(P) >= 0.35
    hops.answered(P, second, 0.7)  # the episode is over: a sample still, nothing else
    assert hops.next_due() is None


def test_unknown_tokens_and_forgotten_peers_are_ignored() -> None:
    hops = _hops()
    hops.answered(Q, 1234, 1.0)
    assert hops.rto(Q) == 0.3
    hops.sent(P, 0.0)
    hops.forget(P)
    assert hops.next_due() is None and not hops.suspect(P, 100.0)


def test_the_timer_heap_stays_bounded_by_the_episodes() -> None:
    hops = _hops()
    for i in range(10_000):
        hops.sent(P, i * 0.001)
        hops.heard(P, i * 0.001)
    assert len(hops._heap) <= 2 * len(hops) + 33


def test_the_timeout_is_clamped() -> None:
    hops = _hops()
    hops.measured(P, 0.001)
    assert hops.rto(P) == 0.05
    hops.measured(Q, 5.0)
    assert hops.rto(Q) == 1.0


@given(
    ids, ids, st.lists(ids, max_size=20), st.sets(st.integers(0, 19)), st.booleans(), st.booleans()
)
def test_next_hop_avoiding_some_is_next_hop_over_the_rest(
    local: NodeId, dst: NodeId, nbrs: list[NodeId], bad: set[int], exact: bool, excl: bool
) -> None:
    nbrs = sorted({n for n in nbrs if n != local}, key=lambda n: n.value)
    avoided = {nbrs[i].value for i in bad if i < len(nbrs)}
    exclude = local if excl else None
    got = next_hop_sorted(
        local,
        dst,
        [n.value for n in nbrs],
        exact=exact,
        exclude=exclude,
        avoid=avoided.__contains__,
    )
    rest = [n for n in nbrs if n.value not in avoided]
    want = next_hop(local, dst, rest, exact=exact, exclude=exclude)
    assert got == (None if want is None else want.value)


def test_a_busy_peer_on_a_fast_link_is_not_probed_with_the_daemons_defaults() -> None:
    # A 32-daemon cold start on two cores: links that handshook in 5-20 ms, peers whose
    # answers then took 50-250 ms while their event loops were busy. With a 30 ms floor each
    # such wait sent an ALIVE probe and drew its answer (3,400 probes, a tenth of all
    # datagrams, nearly all answered at once): probing load grew with the load it waited on.
    cfg = OverlayConfig()
    hops = SilentHops(
        rto_min_s=cfg.hop_rto_min_s,
        rto_max_s=cfg.hop_rto_max_s,
        rto_initial_s=cfg.hop_rto_initial_s,
    )
    hops.measured(P, 0.005)
    hops.sent(P, 10.0)
    due = hops.next_due()
    assert due is not None and due > 10.15
    assert hops.due(10.15) == []
    assert not hops.heard(P, 10.15)
    # A peer that died is still avoided well inside a second.
    hops.sent(P, 20.0)
    assert hops.suspect(P, 20.61)
