"""Background tasks and what happens when one fails: :class:`TaskSet`.

A TaskSet owns the tasks one component starts (the daemon, the node, the DHT service, the
DHCP/DNS runner): it holds a strong reference to each while it runs (the loop keeps only weak
ones, so an unheld task can vanish mid-flight), calls the component's ``on_failure`` once for
each task that ends with an exception (never for one cancelled, nor for one that returned),
and :meth:`close` cancels every task and waits for all of them to end.

The failure policy is the owner's, as the callback: the daemon stops (the process exits
non-zero and its service manager restarts it), the DHT keeps the error in
``background_errors``, the node and the DHCP/DNS runner log and count it. Without a callback
a failed task is reported only by asyncio's "exception was never retrieved" warning, at
garbage collection, if ever.

The set runs on whatever loop is running, the simulator's virtual-time loop included.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["TaskSet"]

T = TypeVar("T")


class TaskSet:
    """The running tasks of one component; see the module docstring."""

    def __init__(
        self,
        on_failure: Callable[[BaseException], None],
        *,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self._on_failure = on_failure
        self._loop = loop  # None: the loop running when a task is spawned
        # A dict, not a set: close() cancels in the order spawned, not in the order of the
        # tasks' addresses (what a cancelled task still does must repeat in a simulation).
        self._tasks: dict[asyncio.Task[Any], None] = {}

    def spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        loop = self._loop or asyncio.get_running_loop()
        task = loop.create_task(coro)
        self._tasks[task] = None
        task.add_done_callback(self._done)
        return task

    def __len__(self) -> int:
        """Tasks still running (what a bounded owner compares with its bound)."""
        return len(self._tasks)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.pop(task, None)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self._on_failure(exc)

    async def close(self) -> None:
        """Cancel every running task and wait until all have ended (failures that come of
        the cancellation are reported to ``on_failure`` as any other)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
