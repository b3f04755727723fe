"""ipop.jsondoc: one strict codec for every JSON document dataclass."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import pytest

from ipop.jsondoc import (
    Document,
    doc,
    read_count,
    read_count_map,
    read_list,
    read_matching,
    read_one_of,
    read_opt_number,
    read_str,
    read_str_list,
)


@dataclass(frozen=True, slots=True)
class Leaf(Document):
    WHERE = "leaf"

    n: int = field(metadata=doc(read_count))
    tags: list[str] = field(metadata=doc(read_str_list))


@dataclass(frozen=True, slots=True)
class Root(Document):
    WHERE = "root"
    BARE = True

    name_: str = field(metadata=doc(read_str, key="name"))
    leaves: list[Leaf] = field(metadata=doc(read_list(Leaf.from_dict)))
    counts: dict[str, int] = field(metadata=doc(read_count_map))
    rtt: float | None = field(default=None, metadata=doc(read_opt_number))
    note: str | None = field(default=None, metadata=doc(read_str, optional=True))
    extra: list[Leaf] = field(
        default_factory=list, metadata=doc(read_list(Leaf.from_dict), optional=True)
    )


def _root() -> Root:
    return Root("r", [Leaf(1, ["a"]), Leaf(0, [])], {"x": 2})


def test_round_trip_in_field_order_with_keys_renamed() -> None:
    r = _root()
    d = r.to_dict()
    assert json.dumps(d) == (
        '{"name": "r", "leaves": [{"n": 1, "tags": ["a"]}, {"n": 0, "tags": []}],'
        ' "counts": {"x": 2}, "rtt": null}'
    )
    assert Root.from_dict(json.loads(json.dumps(d))) == r
    full = Root("r", [], {}, rtt=1.5, note="n", extra=[Leaf(3, [])])
    assert list(full.to_dict()) == ["name", "leaves", "counts", "rtt", "note", "extra"]
    assert Root.from_dict(full.to_dict()) == full


def test_written_values_are_copies() -> None:
    r = _root()
    d = r.to_dict()
    d["leaves"][0]["tags"].append("b")
    d["counts"]["y"] = 1
    assert r.leaves[0].tags == ["a"] and r.counts == {"x": 2}


def test_optional_keys_are_left_out_at_their_default_and_read_as_it() -> None:
    d = _root().to_dict()
    assert "note" not in d and "extra" not in d
    assert "rtt" in d  # a field with a default but not optional is always written
    back = Root.from_dict(d)
    assert back.note is None and back.extra == []


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("counts"), "root.counts: is missing"),
        (lambda d: d.pop("rtt"), "root.rtt: is missing"),
        (lambda d: d.update(zz=1, aa=2), "root.aa: is not a known field"),
        (lambda d: d["leaves"][1].pop("tags"), "leaves[1].tags: is missing"),
        (lambda d: d["leaves"][0].update(x=0), "leaves[0].x: is not a known field"),
        (lambda d: d.update(name=5), "name: must be a string, got int"),
        (lambda d: d.update(leaves={}), "leaves: must be a list, got dict"),
        (lambda d: d["leaves"].append(3), "leaves[2]: must be an object, got int"),
        (lambda d: d["leaves"][0].update(n=True), "leaves[0].n: must be an integer, got bool"),
        (lambda d: d["leaves"][0].update(n=-1), "leaves[0].n: must not be negative, got -1"),
        (lambda d: d["counts"].update(y="1"), "counts.y: must be an integer, got str"),
        (lambda d: d.update(rtt=float("inf")), "rtt: must be a finite number >= 0"),
        (lambda d: d.update(note=None), "note: must be a string, got null"),
    ],
)
def test_refusals_name_the_field(mutate: object, message: str) -> None:
    d = _root().to_dict()
    mutate(d)  # type: ignore[operator]
    with pytest.raises(ValueError) as info:
        Root.from_dict(d)
    assert str(info.value).startswith(message)


def test_a_missing_key_is_named_before_an_unknown_one() -> None:
    d = _root().to_dict()
    del d["name"]
    d["zz"] = 1
    with pytest.raises(ValueError, match=r"^root\.name: is missing$"):
        Root.from_dict(d)


def test_nested_documents_take_the_location_they_are_given() -> None:
    with pytest.raises(ValueError, match=r"^leaf\.n: is missing$"):
        Leaf.from_dict({"tags": []})
    with pytest.raises(ValueError, match=r"^x\[3\]\.n: must be an integer"):
        Leaf.from_dict({"n": "1", "tags": []}, "x[3]")
    with pytest.raises(ValueError, match=r"^root: must be an object, got list"):
        Root.from_dict([])


def test_a_field_without_doc_metadata_is_a_programming_error() -> None:
    @dataclass(frozen=True)
    class Bad(Document):
        n: int = field(metadata=doc(read_count))
        m: int = 0

    with pytest.raises(TypeError, match=r"Bad\.m: declare it"):
        Bad(1).to_dict()

    @dataclass(frozen=True)
    class NoDefault(Document):
        n: int = field(metadata=doc(read_count, optional=True))

    with pytest.raises(TypeError, match=r"NoDefault\.n: an optional field needs a default"):
        NoDefault.from_dict({})


def test_pattern_and_choice_readers() -> None:
    hexish = read_matching(re.compile(r"^[0-9a-f]+$"), "hex digits")
    assert hexish("ab", "w") == "ab"
    with pytest.raises(ValueError, match=r"^w: must be hex digits, got 'AB'$"):
        hexish("AB", "w")
    colour = read_one_of(("red", "blue"))
    assert colour("red", "c") == "red"
    with pytest.raises(ValueError, match=r"^c: must be one of red, blue, got 'green'$"):
        colour("green", "c")
    with pytest.raises(ValueError, match=r"^c: must be a string, got null$"):
        colour(None, "c")
