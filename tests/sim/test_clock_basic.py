"""The virtual-time loop jumps over idle time and keeps deadlines in order."""

from __future__ import annotations

import asyncio

import pytest

from ipop.testing.clock import SIM_EPOCH, SimulationStalled, run_virtual


def test_sleep_jumps_ahead_exactly() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(3600)
        return loop.time()

    assert run_virtual(main()) == pytest.approx(SIM_EPOCH + 3600, abs=1e-5)


def test_deadlines_keep_their_order() -> None:
    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        order: list[int] = []
        done = loop.create_future()
        for i, delay in enumerate([5.0, 0.5, 2.0, 0.25]):
            loop.call_later(delay, order.append, i)
        loop.call_later(6.0, done.set_result, None)
        await done
        return order

    assert run_virtual(main()) == [3, 1, 2, 0]


def test_wait_for_times_out_at_the_virtual_deadline() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.Event().wait(), 10)
        return loop.time() - t0

    assert run_virtual(main()) == pytest.approx(10.0, abs=1e-5)


def test_a_stalled_simulation_is_reported_not_hung() -> None:
    async def main() -> None:
        await asyncio.get_running_loop().create_future()

    with pytest.raises(SimulationStalled):
        run_virtual(main())
