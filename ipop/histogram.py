"""Timings counted into fixed buckets: what a latency histogram in the metrics is made of.

A :class:`Histogram` is cheap to feed (one bisect and two additions per observation) and is
read as a :class:`HistogramSnapshot`, whose counts are cumulative, as Prometheus histograms
are (``le`` buckets, each counting every observation at most that bound, then ``+Inf``).
Pure: the caller measures the time.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Final

__all__ = ["DURATION_BOUNDS_S", "Histogram", "HistogramSnapshot"]

# From a reply of the nearest replica (ms) to a write's slowest retries (seconds).
DURATION_BOUNDS_S: Final[tuple[float, ...]] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    """Cumulative counts at each bound (``cumulative[i]``: observations <= ``bounds[i]``),
    how many in all (the ``+Inf`` bucket) and their sum."""

    bounds: tuple[float, ...]
    cumulative: tuple[int, ...]
    count: int
    total: float


class Histogram:
    """Observations counted per bucket of ``bounds`` (ascending), plus one for the rest."""

    __slots__ = ("_counts", "_total", "bounds")

    def __init__(self, bounds: tuple[float, ...] = DURATION_BOUNDS_S) -> None:
        if list(bounds) != sorted(set(bounds)):
            raise ValueError("histogram bounds must be ascending and distinct")
        self.bounds = bounds
        self._counts = [0] * (len(bounds) + 1)
        self._total = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bound's bucket (le).
        self._counts[bisect.bisect_left(self.bounds, value)] += 1
        self._total += value

    def snapshot(self) -> HistogramSnapshot:
        running, cumulative = 0, []
        for n in self._counts[:-1]:
            running += n
            cumulative.append(running)
        return HistogramSnapshot(
            bounds=self.bounds,
            cumulative=tuple(cumulative),
            count=running + self._counts[-1],
            total=self._total,
        )
