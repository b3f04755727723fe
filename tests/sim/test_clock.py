"""The virtual-time loop: idle time is skipped, deadlines keep order, stalls are reported."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from ipop.testing.clock import SIM_EPOCH, SimulationStalled, VirtualTimeLoop, run_virtual


def test_sleeps_jump_ahead_without_wall_time() -> None:
    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        seen = [loop.time()]
        for step in (1.0, 60.0, 86_400.0, 0.001):
            await asyncio.sleep(step)
            seen.append(loop.time())
        return seen

    wall = time.monotonic()
    seen = run_virtual(main())
    assert time.monotonic() - wall < 2.0  # a simulated day costs no real time
    assert seen[0] == SIM_EPOCH
    expected = [
        SIM_EPOCH,
        SIM_EPOCH + 1,
        SIM_EPOCH + 61,
        SIM_EPOCH + 86_461,
        SIM_EPOCH + 86_461.001,
    ]
    assert seen == pytest.approx(expected, abs=1e-5)


def test_custom_start_and_monotonic_clock() -> None:
    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        stamps: list[float] = []
        for i in range(200):
            loop.call_later((i * 7919 % 200) / 100, lambda: stamps.append(loop.time()))
        await asyncio.sleep(3)
        return stamps

    stamps = run_virtual(main(), start=1_000.0)
    assert len(stamps) == 200
    assert stamps == sorted(stamps)  # never backwards
    assert stamps[0] == pytest.approx(1_000.0, abs=1e-5)
    assert stamps[-1] == pytest.approx(1_001.99, abs=1e-5)


def test_call_later_deadlines_keep_their_order() -> None:
    async def main() -> list[tuple[int, float]]:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        order: list[tuple[int, float]] = []
        delays = [5.0, 0.5, 2.0, 0.25, 2.0000001, 1e-6, 3600.0]

        def record(i: int) -> None:
            order.append((i, loop.time() - t0))

        for i, delay in enumerate(delays):
            loop.call_later(delay, record, i)
        await asyncio.sleep(3601)
        return order

    order = run_virtual(main())
    assert [i for i, _ in order] == [5, 3, 1, 2, 4, 0, 6]
    for i, at in order:
        expected = [5.0, 0.5, 2.0, 0.25, 2.0000001, 1e-6, 3600.0][i]
        assert at == pytest.approx(expected, abs=2e-6)


def test_wait_for_times_out_at_the_virtual_deadline() -> None:
    async def main() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.Event().wait(), 10)
        timed_out = loop.time() - t0
        # A wait that is satisfied in time returns at the event, not at the deadline.
        ev = asyncio.Event()
        loop.call_later(3, ev.set)
        t1 = loop.time()
        await asyncio.wait_for(ev.wait(), 10)
        return timed_out, loop.time() - t1

    timed_out, satisfied = run_virtual(main())
    assert timed_out == pytest.approx(10.0, abs=1e-5)
    assert satisfied == pytest.approx(3.0, abs=1e-5)


def test_asyncio_timeout_context_uses_virtual_time() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(42):
                await asyncio.sleep(1_000)
        return loop.time() - t0

    assert run_virtual(main()) == pytest.approx(42.0, abs=1e-5)


def test_a_stalled_simulation_is_reported_not_hung() -> None:
    async def main() -> None:
        await asyncio.get_running_loop().create_future()

    wall = time.monotonic()
    with pytest.raises(SimulationStalled):
        run_virtual(main(), stall_grace_s=0)
    assert time.monotonic() - wall < 1.0


def test_a_worker_thread_is_not_mistaken_for_a_stall() -> None:
    release = threading.Event()

    def work() -> str:
        release.wait(5)
        return "done"

    async def main() -> str:
        loop = asyncio.get_running_loop()
        loop.call_soon(release.set)
        return await loop.run_in_executor(None, work)

    assert run_virtual(main(), stall_grace_s=5.0) == "done"


def test_pending_tasks_are_cancelled_and_loop_closed() -> None:
    cancelled = asyncio.Event()
    loops: list[asyncio.AbstractEventLoop] = []

    async def forever() -> None:
        try:
            await asyncio.sleep(1e9)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def main() -> int:
        loops.append(asyncio.get_running_loop())
        asyncio.get_running_loop().create_task(forever())
        await asyncio.sleep(1)
        return 7

    assert run_virtual(main()) == 7
    assert cancelled.is_set()
    assert loops[0].is_closed()
    assert isinstance(loops[0], VirtualTimeLoop)
