"""The driver's timer, on the loop's timers and on the simulator's uncancellable call_at."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from ipop.aio.driver import Driver
from ipop.testing.clock import run_virtual
from ipop.testing.netsim import Network
from ipop.types import Path


class TimerCore:
    """A core whose only behaviour is a settable timer; records when it was handled."""

    def __init__(self) -> None:
        self.deadline: float | None = None
        self.fired: list[float] = []
        self.calls = 0

    def receive_datagram(self, data: bytes, path: Path, *, now: float) -> None:
        pass

    def handle_timer(self, *, now: float) -> None:
        self.calls += 1
        if self.deadline is not None and now >= self.deadline:
            self.fired.append(now)
            self.deadline = None

    def get_timer(self) -> float | None:
        return self.deadline

    def datagrams_to_send(self, *, now: float) -> list[tuple[bytes, Path]]:
        return []

    def next_event(self) -> Any:
        return None


class NoSocket:
    def sendto(self, data: bytes, addr: Any) -> None:
        raise AssertionError("nothing is sent")


@pytest.mark.parametrize("use_call_at", [False, True])
def test_timer_moves_earlier_fires_once_and_can_be_withdrawn(use_call_at: bool) -> None:
    async def main() -> tuple[float, list[float], int]:
        loop = asyncio.get_running_loop()
        call_at = Network(rng=random.Random(1)).call_at if use_call_at else None
        core, other = TimerCore(), TimerCore()
        driver = Driver(core, NoSocket(), clock=loop.time, call_at=call_at)
        withdrawn = Driver(other, NoSocket(), clock=loop.time, call_at=call_at)
        t0 = loop.time()
        core.deadline = t0 + 5.0
        driver.pump()
        core.deadline = t0 + 1.0  # earlier: the 5 s timer must not fire on its own
        driver.pump()
        other.deadline = t0 + 2.0
        withdrawn.pump()
        other.deadline = None  # nothing wanted any more
        withdrawn.pump()
        await asyncio.sleep(10.0)
        assert core.calls == 1  # the replaced 5 s timer did not wake the core again
        return t0, core.fired, other.calls

    t0, fired, other_calls = run_virtual(main())
    assert len(fired) == 1 and fired[0] == pytest.approx(t0 + 1.0, abs=1e-5)
    assert other_calls == 0
