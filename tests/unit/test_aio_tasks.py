"""ipop.tasks.TaskSet: one failure policy, called once per failed task, never for a
cancelled one; close() cancels and awaits everything."""

from __future__ import annotations

import asyncio
import gc

from ipop.tasks import TaskSet
from ipop.testing.clock import SIM_EPOCH, run_virtual


class Boom(Exception):
    pass


def test_a_failing_task_calls_on_failure_once_with_its_exception() -> None:
    failures: list[BaseException] = []

    async def body() -> None:
        tasks = TaskSet(failures.append)

        async def fail() -> None:
            await asyncio.sleep(1)
            raise Boom("x")

        async def fine() -> int:
            await asyncio.sleep(1)
            return 7

        failing, ok = tasks.spawn(fail()), tasks.spawn(fine())
        assert len(tasks) == 2
        await asyncio.gather(failing, ok, return_exceptions=True)
        await asyncio.sleep(0)  # done callbacks run one loop pass later
        assert ok.result() == 7 and len(tasks) == 0
        await tasks.close()  # nothing left: reports nothing again

    run_virtual(body(), start=SIM_EPOCH)
    gc.collect()
    assert len(failures) == 1 and isinstance(failures[0], Boom)


def test_cancelled_tasks_are_not_failures_and_close_cancels_and_awaits_all() -> None:
    failures: list[BaseException] = []
    ended: list[str] = []

    async def body() -> None:
        tasks = TaskSet(failures.append)

        async def forever(name: str) -> None:
            try:
                await asyncio.sleep(3600)
            finally:
                ended.append(name)

        one = tasks.spawn(forever("one"))
        tasks.spawn(forever("two"))
        tasks.spawn(forever("three"))
        await asyncio.sleep(1)
        one.cancel()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert ended == ["one"] and len(tasks) == 2
        await tasks.close()
        assert sorted(ended) == ["one", "three", "two"]  # all ended before close returned
        assert len(tasks) == 0

    run_virtual(body(), start=SIM_EPOCH)
    assert failures == []


def test_a_task_that_fails_while_being_cancelled_is_reported() -> None:
    failures: list[BaseException] = []

    async def body() -> None:
        tasks = TaskSet(failures.append)

        async def bad_cleanup() -> None:
            try:
                await asyncio.sleep(3600)
            finally:
                raise Boom("in cleanup")

        tasks.spawn(bad_cleanup())
        await asyncio.sleep(0)
        await tasks.close()

    run_virtual(body(), start=SIM_EPOCH)
    assert [str(e) for e in failures] == ["in cleanup"]
