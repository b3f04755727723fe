"""The link layer's deadline heap: when each peer's session next needs attention (sans-IO).

Owns :class:`DeadlineHeap`, a lazy heap of ``(deadline, seq, key)`` entries (wireguard-go
keeps one timer per peer in timers.go; a heap gives the sans-IO core one timer for all).
Each scheduled item carries its live entry's deadline and sequence number (``due``,
``due_seq``: :class:`Timed`); an entry is live only while its sequence number is the item's
and its key still looks up to that item, so nothing is ever removed from the middle of the
heap: a stale entry is skipped when it surfaces.

Push-if-earlier: :meth:`DeadlineHeap.push` adds an entry only when the deadline moved earlier
than the live one. Per-packet bookkeeping only moves deadlines later, so the live entry is at
worst early: the item is then found not due, and the caller pushes its real deadline again.
This keeps O(peers) work off the packet path, and a firing costs O(log peers) per item due.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from typing import Final, Generic, Protocol, TypeVar

__all__ = ["DeadlineHeap", "Timed"]

_INF: Final = float("inf")


class Timed(Protocol):
    """What the heap keeps on each item: its live entry's deadline (inf: none) and seq."""

    due: float
    due_seq: int


K = TypeVar("K")
T = TypeVar("T", bound=Timed)


class DeadlineHeap(Generic[K, T]):
    """Items by their earliest deadline; ``live`` maps a key to its current item (None: gone)."""

    __slots__ = ("_heap", "_live", "_seq")

    def __init__(self, live: Callable[[K], T | None]) -> None:
        self._live = live
        self._heap: list[tuple[float, int, K]] = []
        self._seq = 0

    def __len__(self) -> int:
        """Entries held, stale ones included (they go when they surface)."""
        return len(self._heap)

    def push(self, key: K, item: T, deadline: float) -> bool:
        """Schedule ``item`` (found under ``key``) at ``deadline`` if that is earlier than its
        live entry; the older entry goes stale. True if an entry was pushed."""
        if deadline < item.due:
            self._seq += 1
            item.due = deadline
            item.due_seq = self._seq
            heapq.heappush(self._heap, (deadline, self._seq, key))
            return True
        return False

    @staticmethod
    def forget(item: T) -> None:
        """Forget when ``item``'s live entry fires, so that the next :meth:`push` goes in
        whatever its deadline (one later than the live entry included)."""
        item.due = _INF

    def pop_due(self, now: float) -> Iterator[T]:
        """Yield each item whose live entry is due at ``now``, removing the entry (the item's
        ``due`` becomes inf). Entries the caller pushes meanwhile are seen too."""
        heap = self._heap
        live = self._live
        while heap and heap[0][0] <= now:
            _, seq, key = heapq.heappop(heap)
            item = live(key)
            if item is None or item.due_seq != seq:
                continue  # stale entry
            item.due = _INF
            yield item

    def next_deadline(self) -> float:
        """The earliest live deadline (inf: none); stale entries on top are dropped."""
        heap = self._heap
        live = self._live
        while heap:
            _, seq, key = heap[0]
            item = live(key)
            if item is not None and item.due_seq == seq:
                return heap[0][0]
            heapq.heappop(heap)
        return _INF
