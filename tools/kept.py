"""A table of values a daemon would otherwise compute at every start, kept in one marshal file.

Shared by :mod:`ipop.tools.classcache` (dataclass methods' code) and :mod:`ipop.tools.recache`
(regular expressions' code). The file lives next to ipop's own bytecode, one per interpreter
version, and starts with a header naming what wrote it (the interpreter's magic number, at
least): a file with another header, an unreadable, an oversized or a corrupt one reads as empty,
and the caller computes as before. Writes go to a temporary file that is then renamed, so
daemons starting together never read a half-written one.
"""

from __future__ import annotations

import contextlib
import marshal
import os
import sys
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any, Generic, TypeVar

import ipop

__all__ = ["KeptTable"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

# Refuse to read a table larger than this (ipopd's and ipop-router's are ~0.8 MB together).
MAX_BYTES = 16 << 20


class KeptTable(Generic[K, V]):
    """Entries loaded from the file, those computed since (:meth:`add`), hit and miss counts.

    ``valid(key, value)`` keeps an entry read from a file: only the types the owner wrote."""

    def __init__(self, name: str, header: bytes, valid: Callable[[object, object], bool]) -> None:
        self.name = name
        self.header = header
        self.valid = valid
        self.entries: dict[K, V] = {}
        self.new: dict[K, V] = {}
        self.counts = {"hits": 0, "misses": 0}

    def path(self) -> Path:
        """Where the table lives: ``ipop/__pycache__/NAME.<cache tag>.marshal``."""
        tag = sys.implementation.cache_tag or "none"
        return Path(ipop.__file__).parent / "__pycache__" / f"{self.name}.{tag}.marshal"

    def read(self, path: Path) -> dict[K, V]:
        """The valid entries of the file at ``path``; none if it is absent or not ours."""
        try:
            with path.open("rb") as f:
                data = f.read(MAX_BYTES + 1)
        except OSError:
            return {}
        if len(data) > MAX_BYTES or not data.startswith(self.header):
            return {}
        try:
            table = marshal.loads(data[len(self.header) :])
        except (EOFError, ValueError, TypeError):
            return {}
        if not isinstance(table, dict):
            return {}
        return {k: v for k, v in table.items() if self.valid(k, v)}

    def load(self, path: Path | None = None) -> None:
        self.entries.update(self.read(path or self.path()))

    def hit(self, key: K) -> V | None:
        value = self.entries.get(key)
        if value is not None:
            self.counts["hits"] += 1
        return value

    def add(self, key: K, value: V) -> None:
        """A value computed on a miss: kept for :meth:`save`."""
        self.entries[key] = self.new[key] = value
        self.counts["misses"] += 1

    def clear(self) -> None:
        self.entries.clear()
        self.new.clear()
        self.counts.update(hits=0, misses=0)

    def stats(self) -> dict[str, int]:
        """Entries found and computed since loading, and the table's size."""
        return {**self.counts, "entries": len(self.entries)}

    def save(self, path: Path | None = None, *, force: bool = False) -> bool:
        """Write the table if entries were computed since it was loaded; True if written.

        Off when bytecode writing is (``sys.dont_write_bytecode``) unless ``force``. Entries
        of the file written since we loaded it (another program's) are kept. A folder we may
        not write to is not an error: the daemons compute, as without a table."""
        if not self.new or (sys.dont_write_bytecode and not force):
            return False
        path = path or self.path()
        table: dict[Any, Any] = {**self.read(path), **self.entries}
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(self.header + marshal.dumps(table))
            os.replace(tmp, path)
        except (OSError, ValueError):
            with contextlib.suppress(OSError):
                tmp.unlink()
            return False
        self.new.clear()
        return True
