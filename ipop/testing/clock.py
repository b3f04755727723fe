"""Virtual time for the simulator: an asyncio loop whose clock jumps ahead when idle.

Theory of operation: asyncio's ``_run_once`` asks its selector to wait ``timeout`` seconds for
I/O until the next scheduled callback. Our selector first polls the real selector without
blocking (so the loop's own self-pipe and call_soon_threadsafe still work); if nothing is
ready, it advances the virtual clock by exactly ``timeout`` and returns no events, so the
callback due next becomes runnable at once. Simulated minutes therefore cost only the CPU
time of the callbacks. ``loop.time()`` returns the virtual clock, which starts on a UNIX-epoch
scale so certificate validity checks see a plausible date.

Invariant: the clock never goes backwards, and it only moves while nothing is runnable.

Stall detection: when nothing at all is scheduled, only real I/O could wake the loop. A worker
thread (``run_in_executor``, ``asyncio.to_thread``) wakes it through the self-pipe, so the
selector first waits up to ``stall_grace_s`` of *wall* time for that; if nothing arrives the
scenario can never progress and :class:`SimulationStalled` is raised instead of hanging. While
timers are scheduled the virtual clock keeps jumping even if a thread is still working, so
thread results land at an arbitrary virtual time: simulations should not use threads.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine, Mapping
from typing import Any, TypeVar

T = TypeVar("T")

# 2026-11-22T00:00:00Z: a fixed start so runs are reproducible and certificates made "now"
# in a test are valid in the simulation.
SIM_EPOCH = 1_795_305_600.0


class SimulationStalled(RuntimeError):
    """Nothing is scheduled and nothing can wake the loop: the scenario would hang forever."""


class VirtualClock:
    def __init__(self, start: float = SIM_EPOCH) -> None:
        self.now = start

    def advance(self, seconds: float) -> None:
        if seconds > 0:
            self.now += seconds


# Wall-clock seconds to wait for a worker thread before declaring a stall (see above).
DEFAULT_STALL_GRACE_S = 0.5


class _VirtualSelector(selectors.BaseSelector):
    def __init__(self, clock: VirtualClock, stall_grace_s: float) -> None:
        self._clock = clock
        self._stall_grace_s = stall_grace_s
        self._real = selectors.DefaultSelector()
        self._busy = 0

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout == 0:
            # Callbacks are ready: poll only now and then (a system call on every loop
            # iteration was a measurable cost of big simulations). A worker thread's wake-up
            # is still seen soon: every 64th busy iteration polls, and so does every advance.
            self._busy += 1
            if self._busy & 63:
                return []
        ready = self._real.select(0)
        if ready:
            return ready
        if timeout is None:
            # Only real file descriptors could wake us, and a simulation has none of its own;
            # give a worker thread a moment to post its result through the self-pipe.
            if self._stall_grace_s > 0:
                ready = self._real.select(self._stall_grace_s)
                if ready:
                    return ready
            raise SimulationStalled("no callback scheduled and no I/O pending")
        self._clock.advance(timeout)
        return []

    def close(self) -> None:
        self._real.close()

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._real.get_map()


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """A selector event loop whose ``time()`` is a :class:`VirtualClock`."""

    def __init__(
        self, start: float = SIM_EPOCH, *, stall_grace_s: float = DEFAULT_STALL_GRACE_S
    ) -> None:
        self.clock = VirtualClock(start)
        super().__init__(selector=_VirtualSelector(self.clock, stall_grace_s))
        # asyncio runs callbacks due before ``time() + resolution``; at an epoch-scale clock a
        # float step is ~2.4e-7 s, so the resolution must exceed it or an exact jump to a
        # callback's deadline would never make it due.
        self._clock_resolution = 1e-6

    def time(self) -> float:
        return self.clock.now


def run_virtual(
    main: Coroutine[Any, Any, T],
    *,
    start: float = SIM_EPOCH,
    stall_grace_s: float = DEFAULT_STALL_GRACE_S,
) -> T:
    """Run ``main`` to completion on a fresh :class:`VirtualTimeLoop`, then close the loop.

    Tasks still pending when ``main`` returns are cancelled, as ``asyncio.run`` does.
    """
    loop = VirtualTimeLoop(start, stall_grace_s=stall_grace_s)
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(main)
    finally:
        try:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for t in pending:
                t.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()
