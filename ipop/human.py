"""How status numbers read to a person: byte counts and durations (``ipop status``, the map).

Shared by the CLI's table (:mod:`ipop.tools.cli_status`), the overlay map's hovers
(:mod:`ipop.overlaymap`) and the status web page (:mod:`ipop.webpage`), so the three say the
same thing about the same number. Pure functions, no I/O.
"""

from __future__ import annotations

__all__ = ["human_bytes", "human_duration"]


def human_bytes(n: int) -> str:
    """``1234`` -> ``"1.2 KiB"``; below 1 KiB the exact count (``"12 B"``)."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def human_duration(seconds: float) -> str:
    """The two largest units: ``"3m05s"``, ``"2h01m"``, ``"1d04h"``."""
    s = int(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{s:02d}s"
    return f"{s}s"
