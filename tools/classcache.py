"""The compiled code of the methods ``dataclasses`` writes for our classes, kept between runs.

Why: ``@dataclass`` writes each ``__init__``, ``__repr__``, ``__eq__``, ``__hash__``,
``__setattr__``… of a class as source text and ``exec()``\\ s it; Python 3.11 compiles one text
per method (3.13 batches them). ipopd creates ~145 dataclasses at start, ~810 such texts: 0.07-0.09
of its ~0.22 CPU seconds of imports went to compiling them, and 32 daemons starting at once on
two cores wait on each other's compiles (issue 14's cold start).

How: :func:`install` gives the ``dataclasses`` module an ``exec`` of its own (a module global,
found before the builtin) that looks each text up in a table of code objects, loaded from
``ipop/__pycache__`` with ``marshal`` as the interpreter loads ``.pyc`` files. The table is keyed
by the whole text, so a hit runs exactly the code that compiling the text gives (code objects
compare equal: tests/unit/test_classcache.py); a miss compiles as before and is remembered for
:func:`save`. Nothing else changes: the classes are the same dataclasses with the same methods.

Who writes the table: :func:`save`, called by the daemons once their imports are done (unless
bytecode writing is off, as ``PYTHONDONTWRITEBYTECODE`` says), and by the lab's
``compile_bytecode``, which writes it for the daemons it is about to start. A table from another
interpreter version (its magic number differs), an unreadable or a corrupt one is ignored.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import importlib.util
import marshal
import os
import sys
from pathlib import Path
from types import CodeType
from typing import Any

import ipop

__all__ = ["cache_path", "install", "installed", "save", "stats", "uninstall", "write_for_daemons"]

_MAGIC = importlib.util.MAGIC_NUMBER
# Refuse to read a table larger than this (ipopd's and ipop-router's together are ~0.6 MB).
_MAX_BYTES = 16 << 20

_table: dict[str, CodeType] = {}
_new: dict[str, CodeType] = {}
_counts = {"hits": 0, "misses": 0}


def cache_path() -> Path:
    """Where the table lives: next to ipop's own bytecode, one file per interpreter version."""
    tag = sys.implementation.cache_tag or "none"
    return Path(ipop.__file__).parent / "__pycache__" / f"dataclass-methods.{tag}.marshal"


def _load(path: Path) -> dict[str, CodeType]:
    try:
        with path.open("rb") as f:
            data = f.read(_MAX_BYTES + 1)
    except OSError:
        return {}
    if len(data) > _MAX_BYTES or not data.startswith(_MAGIC):
        return {}
    try:
        table = marshal.loads(data[len(_MAGIC) :])
    except (EOFError, ValueError, TypeError):
        return {}
    if not isinstance(table, dict):
        return {}
    return {k: v for k, v in table.items() if isinstance(k, str) and isinstance(v, CodeType)}


def _exec(source: Any, globals: Any = None, locals: Any = None, /) -> None:
    """``exec`` as ``dataclasses`` calls it, with the compile looked up first."""
    if type(source) is str:
        code = _table.get(source)
        if code is None:
            # dont_inherit: compile as the builtin exec called from dataclasses would, without
            # this module's ``from __future__ import annotations``.
            code = compile(source, "<string>", "exec", dont_inherit=True)
            _table[source] = _new[source] = code
            _counts["misses"] += 1
        else:
            _counts["hits"] += 1
        source = code
    builtins.exec(source, globals, locals)


def install(path: Path | None = None) -> None:
    """Load the table and route ``dataclasses``' compiles through it (idempotent)."""
    if installed():
        return
    _table.update(_load(path or cache_path()))
    dataclasses.exec = _exec  # type: ignore[attr-defined]


def installed() -> bool:
    return getattr(dataclasses, "exec", None) is _exec


def uninstall() -> None:
    """Back to the builtin ``exec``; the table is forgotten."""
    if installed():
        del dataclasses.exec  # type: ignore[attr-defined]
    _table.clear()
    _new.clear()
    _counts.update(hits=0, misses=0)


def stats() -> dict[str, int]:
    """Texts found in the table and compiled since :func:`install`, and the table's size."""
    return {**_counts, "entries": len(_table)}


def save(path: Path | None = None, *, force: bool = False) -> bool:
    """Write the table if texts were compiled since it was loaded; True if written.

    Off when bytecode writing is (``sys.dont_write_bytecode``) unless ``force``. Written to a
    temporary file and renamed, so daemons starting together never read a half-written one;
    a folder we may not write to is not an error (the daemon compiles, as without a table).
    """
    if not _new or not installed() or (sys.dont_write_bytecode and not force):
        return False
    path = path or cache_path()
    # Entries of the file written since we loaded it (another program's classes) are kept.
    table = {**_load(path), **_table}
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(_MAGIC + marshal.dumps(table))
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        return False
    _new.clear()
    return True


def write_for_daemons() -> bool:
    """Import both daemons as ``python -m`` does and write the table of the dataclass methods
    they compiled (forced: the lab and a package build turn bytecode writing off); True if the
    table is there afterwards. Run it in a fresh interpreter: the table must hold what a
    daemon's own imports compile, not what the caller imported first."""
    import ipop.tools.ipopd
    import ipop.tools.routerd  # noqa: F401

    save(force=True)
    return cache_path().is_file()
