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
import dataclasses
import importlib.util
from pathlib import Path
from types import CodeType
from typing import Any

from ipop.tools.kept import KeptTable

__all__ = ["cache_path", "install", "installed", "save", "stats", "uninstall", "write_for_daemons"]

_kept: KeptTable[str, CodeType] = KeptTable(
    "dataclass-methods",
    importlib.util.MAGIC_NUMBER,
    lambda k, v: isinstance(k, str) and isinstance(v, CodeType),
)


def cache_path() -> Path:
    """Where the table lives: next to ipop's own bytecode, one file per interpreter version."""
    return _kept.path()


def _exec(source: Any, globals: Any = None, locals: Any = None, /) -> None:
    """``exec`` as ``dataclasses`` calls it, with the compile looked up first."""
    if type(source) is str:
        code = _kept.hit(source)
        if code is None:
            # dont_inherit: compile as the builtin exec called from dataclasses would, without
            # this module's ``from __future__ import annotations``.
            code = compile(source, "<string>", "exec", dont_inherit=True)
            _kept.add(source, code)
        source = code
    builtins.exec(source, globals, locals)


def install(path: Path | None = None) -> None:
    """Load the table and route ``dataclasses``' compiles through it (idempotent)."""
    if installed():
        return
    _kept.load(path)
    dataclasses.exec = _exec  # type: ignore[attr-defined]


def installed() -> bool:
    return getattr(dataclasses, "exec", None) is _exec


def uninstall() -> None:
    """Back to the builtin ``exec``; the table is forgotten."""
    if installed():
        del dataclasses.exec  # type: ignore[attr-defined]
    _kept.clear()


def stats() -> dict[str, int]:
    """Texts found in the table and compiled since :func:`install`, and the table's size."""
    return _kept.stats()


def save(path: Path | None = None, *, force: bool = False) -> bool:
    """Write the table if texts were compiled since it was loaded; True if written (as
    :meth:`ipop.tools.kept.KeptTable.save` says: not when bytecode writing is off, unless
    ``force``)."""
    return installed() and _kept.save(path, force=force)


def write_for_daemons() -> bool:
    """Import both daemons as ``python -m`` does and write the table of the dataclass methods
    they compiled, and :mod:`ipop.tools.recache`'s of their regular expressions (forced: the
    lab and a package build turn bytecode writing off); True if both tables are there
    afterwards. Run it in a fresh interpreter: the tables must hold what a daemon's own
    imports compile, not what the caller imported first."""
    import ipop.tools.ipopd
    import ipop.tools.routerd  # noqa: F401
    from ipop.tools import recache, save_tables

    save_tables(force=True)
    return cache_path().is_file() and recache.cache_path().is_file()
