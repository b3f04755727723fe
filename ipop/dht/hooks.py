"""What the DHT service hands each of its parts: :class:`ServiceHooks`.

The parts (:mod:`ipop.dht.lookup`, :mod:`ipop.dht.replicas`, :mod:`ipop.dht.read`,
:mod:`ipop.dht.write`, :mod:`ipop.dht.handoff`) start tasks only through the service, so every
task is in its task set and ``close()`` ends them all; they read record time from the service's
injected clock, timers from the loop, and count into one ``stats`` counter.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

__all__ = ["ServiceHooks", "Spawn"]

T = TypeVar("T")


class Spawn(Protocol):
    """How a part starts a task: tracked by the service, refused once it closed."""

    def __call__(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]: ...


@dataclass(frozen=True, slots=True)
class ServiceHooks:
    """The service's loop (timers: ``loop.time()``), record time (``now``: UNIX seconds, for
    leases, seqs, certificates), task start, closed flag and the stats every part counts in."""

    loop: asyncio.AbstractEventLoop
    now: Callable[[], float]
    spawn: Spawn
    closed: Callable[[], bool]
    stats: Counter[str]
