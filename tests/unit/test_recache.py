"""ipop.tools.recache: patterns built from the kept table are the patterns ``re`` compiles.

The table a daemon would load is built in a clean interpreter (a subprocess), as the lab does.
"""

from __future__ import annotations

import marshal
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ipop.testing.kept_tables import build_in_clean_interpreter, reinstalled
from ipop.tools import recache

# Patterns of every kind the table must carry: groups, named groups, bytes, flags, inline
# flags, look-arounds, big Unicode classes (the reason for the table).
SAMPLES: list[tuple[str | bytes, int]] = [
    (r"^(?P<host>[a-z0-9-]+)\.(?P<suffix>ipop)$", 0),
    (r"(?i)hello\s+(world)?", 0),
    (r"^\s*# (.*)$", re.MULTILINE | re.VERBOSE),
    (rf"[\x80-{chr(sys.maxunicode)}]+", 0),
    (rb"\A(\S+)[ \t]+(\S+)", 0),
    (r"(?<=a)b(?!c)", re.ASCII),
    (r"ß", re.IGNORECASE),
]


@pytest.fixture
def restore() -> Iterator[None]:
    """Tests below replace this process's table: the real one is back afterwards."""
    yield from reinstalled(recache)


def test_every_pattern_a_daemon_compiles_is_built_equal_from_the_table(tmp_path: Path) -> None:
    table = tmp_path / "re.marshal"
    # Both daemons' imports, with a fresh table, as the lab builds it.
    build_in_clean_interpreter("ipop.tools.recache", table, "ipop.tools.ipopd, ipop.tools.routerd")
    entries = recache._kept.read(table)
    # cryptography's, tomllib's, logging's, ours...
    assert len(entries) > 40
    for (pattern, flags), entry in entries.items():
        # Patterns compare equal when their text, flags and code are.
        assert recache._build(pattern, entry) == recache._original(pattern, flags), pattern


@pytest.mark.parametrize(("pattern", "flags"), SAMPLES)
def test_a_pattern_from_the_table_matches_as_a_compiled_one(
    tmp_path: Path, restore: None, pattern: str | bytes, flags: int
) -> None:
    path = tmp_path / "re.marshal"
    recache.uninstall()
    recache.install(path)
    re.purge()
    first = re.compile(pattern, flags)
    assert recache.stats()["misses"] == 1
    assert recache.save(path, force=True)
    recache.uninstall()
    recache.install(path)
    re.purge()
    again = re.compile(pattern, flags)
    assert recache.stats() == {"hits": 1, "misses": 0, "entries": 1}
    assert again is not first and again == first == recache._original(pattern, flags)
    assert (again.flags, again.groups, again.groupindex) == (
        first.flags,
        first.groups,
        first.groupindex,
    )


def test_code_sre_refuses_is_compiled_again(tmp_path: Path, restore: None) -> None:
    path = tmp_path / "re.marshal"
    good = recache._entry(r"x(y)z", 0)
    flags, code, groups, groupindex, indexgroup = good
    bad = (flags, [*code[:-1], 0], groups, groupindex, indexgroup)
    path.write_bytes(recache._HEADER + marshal.dumps({(r"x(y)z", 0): bad}))
    recache.uninstall()
    recache.install(path)
    re.purge()
    assert re.compile(r"x(y)z") == recache._original(r"x(y)z", 0)
    assert recache.stats()["misses"] == 1


def test_save_follows_dont_write_bytecode(
    tmp_path: Path, restore: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "re.marshal"
    recache.uninstall()
    recache.install(path)
    re.purge()
    re.compile(r"probe-(\d+)")
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    assert not recache.save(path)
    assert not path.exists()
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    assert recache.save(path)
    assert not recache.save(path)  # nothing new since
    assert path.is_file()


def test_flags_and_patterns_marshal_cannot_store_as_they_are_still_save(
    tmp_path: Path, restore: None
) -> None:
    """A RegexFlag from a direct call is kept as its int; a str subclass is left to re."""

    class Text(str):
        pass

    path = tmp_path / "re.marshal"
    recache.uninstall()
    recache.install(path)
    assert recache._compile(r"flag(s)?", re.IGNORECASE) == recache._original(r"flag(s)?", 2)
    assert recache._compile(Text("sub")) == recache._original("sub", 0)
    assert recache.save(path, force=True)
    assert set(recache._kept.read(path)) == {(r"flag(s)?", 2)}


def test_a_debug_compile_is_left_to_re(restore: None, capsys: pytest.CaptureFixture[str]) -> None:
    recache.uninstall()
    recache.install(Path("/nonexistent/re.marshal"))
    re.purge()
    re.compile(r"dbg", re.DEBUG)
    assert "LITERAL" in capsys.readouterr().out
    assert recache.stats() == {"hits": 0, "misses": 0, "entries": 0}
