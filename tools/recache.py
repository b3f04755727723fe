"""The compiled code of the regular expressions a daemon compiles at start, kept between runs.

Why: ``re.compile`` parses a pattern and builds its matcher code in pure Python. ipopd's imports
compile ~80 patterns (cryptography, tomllib, logging, textwrap, ours): ~10 ms of its ~0.15 CPU s,
two thirds of it one pattern, ``cryptography.x509.name._RFC4514NameParser._STRING_RE`` (its
``[\\x80-\\U0010ffff]`` classes). 31 daemons starting at once on two cores wait on each other's
compiles (issue 14's cold start). Deferring is no way out: the daemon parses its certificate
(and so imports ``cryptography.x509``) before it logs ``event=started``.

How: :func:`install` replaces ``re._compiler.compile``, which ``re`` calls on a miss of its own
in-process cache, with one that looks the (pattern, flags) up in a table loaded with ``marshal``
from ``ipop/__pycache__`` and hands the kept code to ``_sre.compile``, as ``re`` itself does
after its compile. The result is the same pattern object: patterns compare equal when their
flags, text and code are (tests/unit/test_recache.py compares every one a daemon compiles). A
miss compiles as ``re`` does, remembered for :func:`save`; ``_sre`` checks any code it gets,
and code it refuses is compiled again. The table's header holds the interpreter's bytecode magic
number and ``re``'s own, so a table from another interpreter or ``re`` is ignored.

Who writes the table: as :mod:`ipop.tools.classcache` (the daemons after their imports, the
lab's ``compile_bytecode`` and the package build through ``classcache.write_for_daemons``).
"""

from __future__ import annotations

import _sre  # type: ignore[import-not-found]
import importlib.util
import re
from pathlib import Path
from re import _compiler, _constants, _parser  # type: ignore[attr-defined]
from typing import Any

from ipop.tools.kept import KeptTable

__all__ = ["cache_path", "install", "installed", "save", "stats", "uninstall"]

# (pattern, flags as given) -> the arguments of _sre.compile after the pattern:
# (flags, code, groups - 1, groupindex, indexgroup).
_Key = tuple[str | bytes, int]
_Entry = tuple[int, list[int], int, dict[str, int], tuple[str | None, ...]]

_HEADER = importlib.util.MAGIC_NUMBER + _constants.MAGIC.to_bytes(4, "little") + b"re"
_kept: KeptTable[_Key, _Entry] = KeptTable(
    "re-code",
    _HEADER,
    lambda k, v: isinstance(k, tuple) and len(k) == 2 and isinstance(v, tuple) and len(v) == 5,
)
_original = _compiler.compile


def cache_path() -> Path:
    """Where the table lives: next to ipop's own bytecode, one file per interpreter version."""
    return _kept.path()


def _entry(pattern: str | bytes, flags: int) -> _Entry:
    """What ``re._compiler.compile`` computes before it calls ``_sre.compile`` (3.11)."""
    parsed = _parser.parse(pattern, flags)
    # Opcodes are int subclasses (named constants): plain ints, as marshal stores them.
    code = [int(op) for op in _compiler._code(parsed, flags)]
    groupindex = dict(parsed.state.groupdict)
    indexgroup: list[str | None] = [None] * parsed.state.groups
    for name, i in groupindex.items():
        indexgroup[i] = name
    return (
        flags | parsed.state.flags,
        code,
        parsed.state.groups - 1,
        groupindex,
        tuple(indexgroup),
    )


def _build(pattern: str | bytes, entry: _Entry) -> re.Pattern[Any]:
    flags, code, groups, groupindex, indexgroup = entry
    # A dict of its own: the pattern keeps the one it is given.
    compiled: re.Pattern[Any] = _sre.compile(
        pattern, flags, code, groups, dict(groupindex), indexgroup
    )
    return compiled


def _compile(p: Any, flags: int = 0) -> re.Pattern[Any]:
    """``re._compiler.compile`` with the parse and code generation looked up first."""
    # Only what marshal stores as it is: str and bytes themselves, not subclasses.
    if type(p) not in (str, bytes) or flags & re.DEBUG:
        return _original(p, flags)  # type: ignore[no-any-return]
    flags = int(flags)  # re passes an int; a RegexFlag from a direct call is stored as one
    key = (p, flags)
    entry = _kept.entries.get(key)
    if entry is not None:
        try:
            compiled = _build(p, entry)
        except (RuntimeError, TypeError, ValueError, OverflowError):
            pass  # code _sre refuses: compile it again below
        else:
            _kept.counts["hits"] += 1
            return compiled
    entry = _entry(p, flags)
    compiled = _build(p, entry)
    _kept.add(key, entry)
    return compiled


def install(path: Path | None = None) -> None:
    """Load the table and route ``re``'s compiles through it (idempotent)."""
    if installed():
        return
    _kept.load(path)
    _compiler.compile = _compile


def installed() -> bool:
    return _compiler.compile is _compile


def uninstall() -> None:
    """Back to ``re``'s own compile; the table is forgotten."""
    _compiler.compile = _original
    _kept.clear()


def stats() -> dict[str, int]:
    """Patterns found in the table and compiled since :func:`install`, and the table's size."""
    return _kept.stats()


def save(path: Path | None = None, *, force: bool = False) -> bool:
    """Write the table if patterns were compiled since it was loaded; True if written (as
    :meth:`ipop.tools.kept.KeptTable.save` says)."""
    return installed() and _kept.save(path, force=force)
