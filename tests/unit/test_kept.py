"""ipop.tools.kept: a table file that is not ours reads as empty; ours reads back as written."""

from __future__ import annotations

import marshal
from pathlib import Path

import pytest

from ipop.tools.kept import MAX_BYTES, KeptTable

HEADER = b"HDR1"


def _table() -> KeptTable[str, int]:
    return KeptTable("probe", HEADER, lambda k, v: isinstance(k, str) and isinstance(v, int))


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"garbage",
        b"HDR0" + marshal.dumps({"a": 1}),  # another writer's header
        HEADER + b"\xff\x00",  # truncated
        HEADER + marshal.dumps([1, 2]),  # not a table
        HEADER + marshal.dumps({"a": 1}) + b"x" * MAX_BYTES,  # too big to be ours
    ],
)
def test_a_file_that_is_not_our_table_reads_as_empty(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "t.marshal"
    path.write_bytes(content)
    assert _table().read(path) == {}


def test_entries_of_the_wrong_types_are_dropped(tmp_path: Path) -> None:
    path = tmp_path / "t.marshal"
    path.write_bytes(HEADER + marshal.dumps({"a": 1, "b": "two", 3: 3}))
    assert _table().read(path) == {"a": 1}


def test_save_keeps_what_others_wrote_and_only_writes_when_something_is_new(
    tmp_path: Path,
) -> None:
    path = tmp_path / "sub" / "t.marshal"
    first, second = _table(), _table()
    assert not first.save(path, force=True)  # nothing computed
    first.add("a", 1)
    second.add("b", 2)
    assert first.save(path, force=True) and second.save(path, force=True)
    assert not second.save(path, force=True)  # nothing new since
    assert _table().read(path) == {"a": 1, "b": 2}
    assert not path.with_name(f"{path.name}.tmp").exists()


def test_a_folder_it_cannot_write_is_not_an_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    t = _table()
    t.add("a", 1)
    assert not t.save(blocker / "t.marshal", force=True)
    assert t.stats() == {"hits": 0, "misses": 1, "entries": 1}
