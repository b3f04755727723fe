"""MappingCheck (ipop.nat.mapping): whom a node behind a NAT asks where it sees us, and when."""

from __future__ import annotations

from ipop.nat.mapping import MappingCheck, Observer
from ipop.types import Endpoint, NodeId

A, B, C = (NodeId(n << 150) for n in (1, 2, 3))
LOCAL = Endpoint("198.18.0.2", 5800)
PUBLIC = Endpoint("203.0.113.50", 40001)


def test_behind_a_nat_it_asks_peers_outside_in_turn_every_interval() -> None:
    check = MappingCheck(interval_s=2.0)
    seen = [Observer(B, PUBLIC, True), Observer(A, PUBLIC, True), Observer(C, PUBLIC, True)]
    assert check.pick(seen, local=[LOCAL], now=0.0) == A
    assert check.due() == 2.0
    assert check.pick(seen, local=[LOCAL], now=1.0) is None  # not due yet
    assert check.pick(seen, local=[LOCAL], now=2.0) == B
    assert check.pick(seen, local=[LOCAL], now=4.0) == C
    assert check.pick(seen, local=[LOCAL], now=6.0) == A  # round again


def test_a_public_node_lan_peers_and_silent_or_guessed_sessions_are_never_asked() -> None:
    check = MappingCheck(interval_s=2.0)
    public = [Observer(A, LOCAL, True)]  # a peer sees us at our own address: no NAT between
    assert check.pick(public, local=[LOCAL], now=0.0) is None
    assert check.due() is None  # not behind a NAT: no timer of its own
    others = [
        Observer(A, None, True),  # never said where it sees us
        Observer(B, PUBLIC, False),  # a punching socket's session: another mapping
    ]
    assert check.pick(others, local=[LOCAL], now=2.0) is None
    assert check.due() is None
    # Once a peer outside reports us, the check runs on its own timer.
    assert check.pick([Observer(C, PUBLIC, True)], local=[LOCAL], now=4.0) == C
    assert check.due() == 6.0
