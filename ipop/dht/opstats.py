"""How the DHT's public operations went: counts by operation and outcome, and their durations.

:class:`~ipop.dht.service.DhtService` records each ``get``, ``put``, ``create``, ``renew`` and
``delete`` once, when it returns (a few a minute on a quiet node: never a packet path); the
metrics (:mod:`ipop.metrics`) read it. Outcomes: ``ok`` (found, or acknowledged by a quorum),
``no`` (no record; no quorum, a key held by another owner, a record not ours) and ``error``
(the operation raised or was cancelled). Pure: the service measures the time.
"""

from __future__ import annotations

from collections import Counter
from typing import Final

from ipop.histogram import Histogram, HistogramSnapshot

__all__ = ["DHT_OPS", "DHT_OUTCOMES", "DhtOpStats"]

DHT_OPS: Final[tuple[str, ...]] = ("get", "put", "create", "renew", "delete")
DHT_OUTCOMES: Final[tuple[str, ...]] = ("ok", "no", "error")


class DhtOpStats:
    """Per operation: how many ended in each outcome, and a histogram of their durations."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()
        self._durations = {op: Histogram() for op in DHT_OPS}

    def record(self, op: str, outcome: str, seconds: float) -> None:
        if op not in self._durations or outcome not in DHT_OUTCOMES:
            raise ValueError(f"unknown DHT operation or outcome: {op!r}, {outcome!r}")
        self.counts[op, outcome] += 1
        self._durations[op].observe(max(0.0, seconds))

    def durations(self) -> dict[str, HistogramSnapshot]:
        return {op: h.snapshot() for op, h in self._durations.items()}
