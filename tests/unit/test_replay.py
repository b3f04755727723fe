"""The anti-replay sliding window (RFC 6479), checked against a naive set-based model."""

from __future__ import annotations

import random

import pytest

from ipop.errors import LocalProtocolError
from ipop.link.replay import ReplayWindow


def test_in_order_counters_are_accepted_once() -> None:
    w = ReplayWindow(64)
    for c in range(200):
        assert w.check(c)
        w.accept(c)
        assert not w.check(c) and w.reject_reason(c) == "replay"


def test_check_does_not_mark() -> None:
    w = ReplayWindow(64)
    assert w.check(5) and w.check(5)
    w.accept(5)
    assert w.reject_reason(5) == "replay"


def test_reordering_inside_the_window_is_accepted_outside_is_too_old() -> None:
    w = ReplayWindow(64)
    w.accept(100)
    assert w.check(37)  # 100 - 37 = 63 < 64: inside the window, never seen
    assert w.reject_reason(36) == "too_old"  # 64 behind the top: left of the window
    assert w.check(99)
    w.accept(37)
    assert w.reject_reason(37) == "replay"
    with pytest.raises(LocalProtocolError):
        w.accept(10)


def test_a_big_jump_clears_the_old_bits() -> None:
    w = ReplayWindow(64)
    for c in range(10):
        w.accept(c)
    w.accept(1000)
    assert w.reject_reason(9) == "too_old"
    assert w.check(999) and w.check(937)
    assert w.reject_reason(936) == "too_old"


def test_against_a_naive_model() -> None:
    rng = random.Random(7)
    width = 128
    w = ReplayWindow(width)
    seen: set[int] = set()
    top = -1
    for _ in range(20_000):
        # Mostly small steps and reordering, sometimes jumps past the whole window.
        c = max(0, top + rng.choice([rng.randint(-200, 20), rng.randint(-5, 300)]))
        if c in seen and top - c < width:
            expected: str | None = "replay"
        elif top - c >= width:
            expected = "too_old"
        else:
            expected = None
        assert w.reject_reason(c) == expected, (c, top)
        if expected is None:
            w.accept(c)
            seen.add(c)
            top = max(top, c)
