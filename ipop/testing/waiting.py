"""Waiting on a condition with a deadline (tests only): the one alternative to sleeping as
synchronisation. Works on the real loop and on the virtual-time loop alike."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["until"]


async def until(cond: Callable[[], bool], deadline_s: float, *, every_s: float = 0.01) -> bool:
    """True as soon as ``cond()`` holds, False if it still does not after ``deadline_s``."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while not cond():
        if loop.time() >= end:
            return False
        await asyncio.sleep(every_s)
    return True
