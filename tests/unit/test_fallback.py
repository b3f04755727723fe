"""RoamFallback (ipop.fallback): which direct sessions fall back to a relay after a roam,
through which peers, and when the next check comes."""

from __future__ import annotations

from ipop import timing
from ipop.fallback import RoamFallback, Session
from ipop.types import Endpoint, NodeId, RelayPath, SocketPath

A, B, C, D = (NodeId(n << 150) for n in (1, 2, 3, 4))
EP = Endpoint("203.0.113.7", 5800)


def test_nothing_is_due_before_a_roam() -> None:
    fb = RoamFallback()
    assert fb.due is None


def test_a_new_address_checks_sooner_than_a_rebinding() -> None:
    fb = RoamFallback()
    fb.roamed("local", now=100.0)
    assert fb.due == 100.0 + timing.ROAM_RELAY_AFTER_S
    fb.roamed("rebound", now=200.0)
    assert fb.due == 200.0 + timing.REBIND_RELAY_AFTER_S


def test_silent_direct_sessions_fall_back_through_peers_heard_since_the_roam() -> None:
    fb = RoamFallback()
    fb.roamed("local", now=10.0)
    plan = fb.plan(
        [
            Session(A, EP, heard=9.0),  # silent since the roam: falls back
            Session(B, EP, heard=10.5),  # heard since: may relay
            Session(C, RelayPath(B, C), heard=1.0),  # already relayed: left alone
            Session(D, EP, heard=None),  # never heard: not a session that roamed
        ],
        now=11.0,
    )
    assert plan.silent == (A,)
    assert plan.relays == frozenset({B})
    # A stays silent: checked again, since no relay may have been heard from yet.
    assert fb.due == 11.0 + timing.ROAM_RELAY_CHECK_S


def test_checks_stop_when_nothing_is_silent_or_the_window_closes() -> None:
    fb = RoamFallback()
    fb.roamed("local", now=0.0)
    fb.plan([Session(B, EP, heard=0.5)], now=1.0)
    assert fb.due is None
    fb.roamed("local", now=0.0)
    late = timing.ROAM_FALLBACK_WINDOW_S - timing.ROAM_RELAY_CHECK_S / 2
    plan = fb.plan([Session(A, EP, heard=-1.0)], now=late)
    assert plan.silent == (A,)
    assert fb.due is None


def test_after_a_rebinding_only_port_guessed_sessions_fall_back() -> None:
    fb = RoamFallback()
    fb.roamed("rebound", now=10.0)
    guessed = SocketPath(1, EP)
    plan = fb.plan(
        [
            Session(A, EP, heard=5.0),  # a cone peer punches back to us: no relay
            Session(B, guessed, heard=5.0),  # our punching socket carries it
            Session(C, EP, heard=5.0, knocked=True),  # our knocks found it
        ],
        now=12.0,
    )
    assert plan.silent == (B, C)
    # A later roam to a new address lets every silent session fall back again.
    fb.roamed("local", now=20.0)
    plan = fb.plan([Session(A, EP, heard=5.0)], now=21.0)
    assert plan.silent == (A,)


def test_after_a_rebinding_every_session_still_silent_falls_back_later() -> None:
    # A peer behind a filtering NAT that did not punch back within a second or two heard of a
    # mapping that is not ours toward it (two hosts behind one NAT that lost its table keep
    # their old port only toward the peers each reached first).
    fb = RoamFallback()
    fb.roamed("rebound", now=10.0)
    plan = fb.plan([Session(A, EP, heard=5.0), Session(B, EP, heard=10.3)], now=12.0)
    assert plan.silent == ()
    assert fb.due == 12.0 + timing.ROAM_RELAY_CHECK_S  # A is silent: looked at again
    now = 10.0 + timing.REBIND_RELAY_ALL_AFTER_S
    plan = fb.plan([Session(A, EP, heard=5.0), Session(B, EP, heard=10.3)], now=now)
    assert plan.silent == (A,) and plan.relays == frozenset({B})
