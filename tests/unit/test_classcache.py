"""ipop.tools.classcache: dataclasses built from the kept table are the classes a compile builds.

The cross-process checks run clean interpreters (subprocesses), as a daemon starts.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ipop.testing.kept_tables import build_in_clean_interpreter, reinstalled
from ipop.tools import classcache

# Imports ipopd with the table at TABLE (or none: "") and prints, for every dataclass method
# written by ``dataclasses`` in a loaded ipop module, a canonical form of its code, plus the
# table's hit and miss counts.
_METHODS = """
import dataclasses, json, sys, types
from pathlib import Path
table = sys.argv[1]
import ipop.tools.classcache as cc
cc.uninstall()
if table:
    cc.install(Path(table))
import ipop.tools.ipopd

def canon(code):
    consts = [canon(c) if isinstance(c, types.CodeType) else repr(c) for c in code.co_consts]
    return [code.co_qualname, code.co_code.hex(), consts, code.co_names, code.co_varnames,
            code.co_freevars, code.co_cellvars, code.co_flags, code.co_argcount,
            code.co_kwonlyargcount, code.co_linetable.hex(), code.co_firstlineno]

out = {}
for name, mod in list(sys.modules.items()):
    if not name.startswith("ipop."):
        continue
    for cls in list(vars(mod).values()):
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
            continue
        for attr, fn in vars(cls).items():
            code = getattr(fn, "__code__", None)
            if code is not None and code.co_filename == "<string>":
                out[f"{cls.__module__}.{cls.__qualname__}.{attr}"] = canon(code)
print(json.dumps({"methods": out, "stats": cc.stats()}))
"""


def _methods(table: Path | None) -> dict[str, object]:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", _METHODS, str(table or "")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, object] = json.loads(out.stdout)
    return result


@pytest.fixture
def restore() -> Iterator[None]:
    """Tests below replace this process's table: the real one is back afterwards."""
    yield from reinstalled(classcache)


def test_classes_from_the_table_carry_the_code_a_compile_gives(tmp_path: Path) -> None:
    table = tmp_path / "table.marshal"
    build_in_clean_interpreter("ipop.tools.classcache", table, "ipop.tools.ipopd")
    compiled, cached = _methods(None), _methods(table)
    stats = cached["stats"]
    assert isinstance(stats, dict)
    # Every method came from the table, none was compiled...
    assert stats["misses"] == 0 and stats["hits"] > 500
    # ...and each is the method a compile gives (ipopd's ~145 dataclasses, ~800 methods).
    methods = compiled["methods"]
    assert isinstance(methods, dict) and len(methods) > 500
    assert cached["methods"] == methods


@pytest.mark.parametrize(
    "content",
    [b"", b"garbage", b"\x00\x00\r\n" + b"x" * 40, None],
    ids=["empty", "garbage", "other-interpreter", "missing"],
)
def test_a_bad_table_is_ignored(tmp_path: Path, content: bytes | None, restore: None) -> None:
    path = tmp_path / "table.marshal"
    if content is not None:
        path.write_bytes(content)
    classcache.uninstall()
    classcache.install(path)
    assert classcache.stats()["entries"] == 0

    @dataclasses.dataclass(frozen=True)
    class Probe:
        a: int

    assert Probe(1) == Probe(1) and repr(Probe(2)).endswith(".Probe(a=2)")
    assert classcache.stats()["misses"] > 0


def test_save_writes_what_was_compiled_and_a_new_process_reads_it(
    tmp_path: Path, restore: None
) -> None:
    path = tmp_path / "sub" / "table.marshal"
    classcache.uninstall()
    classcache.install(path)

    @dataclasses.dataclass(frozen=True)
    class Probe:
        b: str

    missed = classcache.stats()["misses"]
    assert missed > 0
    assert classcache.save(path, force=True)
    assert not classcache.save(path, force=True)  # nothing new since
    classcache.uninstall()
    classcache.install(path)
    assert classcache.stats()["entries"] == missed

    @dataclasses.dataclass(frozen=True)
    class Probe2:  # another name, same field: only the texts naming the class differ
        b: str

    assert classcache.stats()["hits"] > 0


def test_save_follows_dont_write_bytecode(
    tmp_path: Path, restore: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "table.marshal"
    classcache.uninstall()
    classcache.install(path)

    @dataclasses.dataclass
    class Probe:
        c: float

    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    assert not classcache.save(path)
    assert not path.exists()
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    assert classcache.save(path)
    assert path.is_file()


def test_save_into_a_folder_it_cannot_write_is_not_an_error(tmp_path: Path, restore: None) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    path = blocker / "table.marshal"  # its folder is a file
    classcache.uninstall()
    classcache.install(path)

    @dataclasses.dataclass
    class Probe:
        d: bytes

    assert not classcache.save(path, force=True)
