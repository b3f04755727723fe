"""The Prometheus text exposition format, version 0.0.4: families written as text, pure.

This module owns the format's rules, so that the metrics (:mod:`ipop.metrics`) only say what
to expose: every family opens with its ``# HELP`` and ``# TYPE`` lines and its samples follow
together; metric and label names are checked against the format's grammar (a bad one is a
bug: ``ValueError``); label values are escaped (backslash, double quote, newline) and HELP
text too (backslash, newline); values are written so that ``float()`` reads them back
(``+Inf``, ``-Inf``, ``NaN``). A family is written once: a second one with the same name is
refused, since scrapers reject the whole page for it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Final, Literal

from ipop.histogram import HistogramSnapshot

__all__ = ["CONTENT_TYPE", "Exposition", "MetricKind", "escape_label_value"]

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

MetricKind = Literal["counter", "gauge", "histogram", "untyped"]
Labels = Mapping[str, str]

_NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _value(v: float) -> str:
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v))


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    parts = []
    for key, val in labels.items():
        if not _LABEL_RE.match(key) or key.startswith("__"):
            raise ValueError(f"bad label name {key!r}")
        parts.append(f'{key}="{escape_label_value(val)}"')
    return "{" + ",".join(parts) + "}"


class Exposition:
    """A page being written: :meth:`family`, then that family's samples, then the next."""

    def __init__(self) -> None:
        self._lines: list[str] = []
        self._families: set[str] = set()
        self._open: tuple[str, MetricKind] | None = None

    def family(self, name: str, kind: MetricKind, help_text: str) -> None:
        """Open family ``name``: counters' names end in ``_total``, as the conventions ask."""
        if not _NAME_RE.match(name):
            raise ValueError(f"bad metric name {name!r}")
        if name in self._families:
            raise ValueError(f"metric family {name!r} written twice")
        if kind == "counter" and not name.endswith("_total"):
            raise ValueError(f"counter {name!r} must end in _total")
        self._families.add(name)
        self._open = (name, kind)
        self._lines.append(f"# HELP {name} {_escape_help(help_text)}")
        self._lines.append(f"# TYPE {name} {kind}")

    def sample(self, value: float, labels: Labels | None = None) -> None:
        """One sample of the open (non-histogram) family."""
        name, kind = self._require_open()
        if kind == "histogram":
            raise ValueError(f"{name} is a histogram: use histogram()")
        self._lines.append(f"{name}{_labels(labels or {})} {_value(value)}")

    def histogram(self, snap: HistogramSnapshot, labels: Labels | None = None) -> None:
        """One labelled histogram of the open histogram family: its cumulative buckets,
        ``+Inf``, ``_sum`` and ``_count``."""
        name, kind = self._require_open()
        if kind != "histogram":
            raise ValueError(f"{name} is not a histogram")
        base = dict(labels or {})
        if "le" in base:
            raise ValueError("a histogram's own labels may not include 'le'")
        for bound, n in zip(snap.bounds, snap.cumulative, strict=True):
            self._lines.append(f"{name}_bucket{_labels({**base, 'le': _value(bound)})} {n}")
        self._lines.append(f"{name}_bucket{_labels({**base, 'le': '+Inf'})} {snap.count}")
        self._lines.append(f"{name}_sum{_labels(base)} {_value(snap.total)}")
        self._lines.append(f"{name}_count{_labels(base)} {snap.count}")

    def samples(self, rows: Iterable[tuple[Labels, float]]) -> None:
        for labels, value in rows:
            self.sample(value, labels)

    def text(self) -> str:
        return "\n".join(self._lines) + "\n" if self._lines else ""

    def _require_open(self) -> tuple[str, MetricKind]:
        if self._open is None:
            raise ValueError("no metric family is open")
        return self._open
