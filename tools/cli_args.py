"""Argument types the ``ipop`` subcommands share: whole numbers within bounds."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def int_in(lo: int, hi: int | None, what: str) -> Callable[[str], int]:
    """An argparse ``type`` for a whole number ``what`` in ``lo..hi`` (``hi`` None: no top)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number ({what})") from None
        if value < lo or (hi is not None and value > hi):
            bounds = f"at least {lo}" if hi is None else f"in {lo}..{hi}"
            raise argparse.ArgumentTypeError(f"{what} {value} is not {bounds}")
        return value

    return parse
