"""Strict JSON documents from frozen dataclasses: one codec instead of a hand-written pair each.

A document is a frozen dataclass that subclasses :class:`Document` and declares every field with
``field(metadata=doc(reader))``. The codec walks ``dataclasses.fields()`` in declaration order,
so the fields are written once, in the class, and nowhere else:

- ``to_dict()`` writes every field under its key (the field's name unless ``doc(key=...)``),
  copying lists and dicts and writing nested documents with their own ``to_dict()``. A field
  marked ``optional`` is left out while it equals its default.
- ``from_dict(value, where)`` wants an object; a missing required key is refused first (the
  first in field order), then an unknown key (the first in sorted order); every value goes
  through its field's reader with its location (``peers[2].rtt_ms``), so an error names the
  field. An absent optional key reads as the field's default.

The readers (``read_str``, ``read_count``, ...) take ``(value, where)`` and raise
:class:`ValueError` as ``"<where>: must be ..., got <kind>"``; a document's ``from_dict`` is a
reader too, and :func:`read_list` makes one for a list of anything.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, NamedTuple, Self, cast

__all__ = [
    "Document",
    "Reader",
    "doc",
    "kind_of",
    "read_bool",
    "read_count",
    "read_count_map",
    "read_list",
    "read_matching",
    "read_number",
    "read_object",
    "read_one_of",
    "read_opt_count",
    "read_opt_number",
    "read_opt_str",
    "read_str",
    "read_str_list",
]

Reader = Callable[[object, str], Any]

_META = "ipop.jsondoc"


# --- readers ----------------------------------------------------------------------------------


def kind_of(value: object) -> str:
    """The JSON-ish name of a value's type, for error messages ("null", "str", "dict")."""
    return "null" if value is None else type(value).__name__


def read_object(value: object, where: str) -> Mapping[str, object]:
    if not isinstance(value, dict):
        raise ValueError(f"{where}: must be an object, got {kind_of(value)}")
    return cast(Mapping[str, object], value)


def read_str(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{where}: must be a string, got {kind_of(value)}")
    return value


def read_opt_str(value: object, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{where}: must be a string or null, got {kind_of(value)}")
    return value


def read_bool(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{where}: must be true or false, got {kind_of(value)}")
    return value


def read_count(value: object, where: str) -> int:
    # bool is an int in Python; a count of `true` is a bug on the writing side.
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{where}: must be an integer, got {kind_of(value)}")
    if value < 0:
        raise ValueError(f"{where}: must not be negative, got {value}")
    return value


def read_opt_count(value: object, where: str) -> int | None:
    return None if value is None else read_count(value, where)


def read_number(value: object, where: str) -> float:
    """A finite number >= 0, as a float (JSON's 12 reads as 12.0)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ValueError(f"{where}: must be a number, got {kind_of(value)}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{where}: must be a finite number >= 0, got {value}")
    return float(value)


def read_opt_number(value: object, where: str) -> float | None:
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ValueError(f"{where}: must be a number or null, got {kind_of(value)}")
    return read_number(value, where)


def read_str_list(value: object, where: str) -> list[str]:
    if not isinstance(value, list):
        raise ValueError(f"{where}: must be a list of strings, got {kind_of(value)}")
    return [read_str(item, f"{where}[{i}]") for i, item in enumerate(value)]


def read_count_map(value: object, where: str) -> dict[str, int]:
    obj = read_object(value, where)
    return {read_str(k, where): read_count(v, f"{where}.{k}") for k, v in obj.items()}


def read_matching(pattern: re.Pattern[str], shape: str) -> Reader:
    """A reader of a string that ``pattern`` matches; ``shape`` describes it in errors."""

    def read(value: object, where: str) -> str:
        text = read_str(value, where)
        if not pattern.match(text):
            raise ValueError(f"{where}: must be {shape}, got {text!r}")
        return text

    return read


def read_one_of(choices: tuple[str, ...]) -> Reader:
    """A reader of a string that is one of ``choices``."""

    def read(value: object, where: str) -> str:
        text = read_str(value, where)
        if text not in choices:
            raise ValueError(f"{where}: must be one of {', '.join(choices)}, got {text!r}")
        return text

    return read


def read_list(item: Reader) -> Reader:
    """A reader of a JSON list whose elements ``item`` reads, each at ``where[i]``."""

    def read(value: object, where: str) -> list[Any]:
        if not isinstance(value, list):
            raise ValueError(f"{where}: must be a list, got {kind_of(value)}")
        return [item(v, f"{where}[{i}]") for i, v in enumerate(value)]

    return read


# --- the codec --------------------------------------------------------------------------------


def doc(read: Reader, *, key: str | None = None, optional: bool = False) -> dict[str, Any]:
    """The metadata of one document field: ``field(metadata=doc(read_count))``.

    ``key`` spells the field in JSON when its name cannot (``self_`` -> ``"self"``);
    ``optional`` lets the key be absent (read as the default) and leaves it out on writing
    while the value equals the default, so old readers see the document they always saw.
    """
    return {_META: _FieldDoc(read, key, optional)}


class _FieldDoc(NamedTuple):
    read: Reader
    key: str | None
    optional: bool


class _Spec(NamedTuple):
    name: str
    key: str
    read: Reader
    optional: bool
    default: object  # of an optional field: the value that leaving the key out stands for


_Specs = tuple[tuple[_Spec, ...], tuple[str, ...], frozenset[str]]
_SPECS: dict[type, _Specs] = {}  # bounded by the number of document classes


def _specs(cls: type) -> _Specs:
    """Per document class: its fields, its required keys in order, and all its keys."""
    known = _SPECS.get(cls)
    if known is not None:
        return known
    specs = []
    for f in dataclasses.fields(cls):
        fd = f.metadata.get(_META)
        if not isinstance(fd, _FieldDoc):
            raise TypeError(f"{cls.__name__}.{f.name}: declare it with field(metadata=doc(...))")
        default: object = None
        if fd.optional:
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()  # compared only, never handed out
            else:
                raise TypeError(f"{cls.__name__}.{f.name}: an optional field needs a default")
        specs.append(_Spec(f.name, fd.key or f.name, fd.read, fd.optional, default))
    required = tuple(s.key for s in specs if not s.optional)
    _SPECS[cls] = out = (tuple(specs), required, frozenset(s.key for s in specs))
    return out


def _plain(value: object) -> object:
    if isinstance(value, Document):
        return value.to_dict()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


class Document:
    """The base of a strict JSON document; subclasses are frozen dataclasses (see above)."""

    __slots__ = ()

    # The location named in errors when from_dict is not told one ("peer", "dns.latency_ms").
    WHERE: ClassVar[str] = "document"
    # True for a top-level document whose fields are named bare in errors ("peers[0].rtt_ms",
    # not "status.peers[0].rtt_ms"); WHERE still names it for a missing or unknown key.
    BARE: ClassVar[bool] = False

    def to_dict(self) -> dict[str, Any]:
        specs, _, _ = _specs(type(self))
        out: dict[str, Any] = {}
        for s in specs:
            value = getattr(self, s.name)
            if s.optional and value == s.default:
                continue
            out[s.key] = _plain(value)
        return out

    @classmethod
    def from_dict(cls, value: object, where: str | None = None) -> Self:
        where = cls.WHERE if where is None else where
        specs, required, known = _specs(cls)
        obj = read_object(value, where)
        missing = [k for k in required if k not in obj]
        if missing:
            raise ValueError(f"{where}.{missing[0]}: is missing")
        unknown = sorted(set(obj) - known)
        if unknown:
            raise ValueError(f"{where}.{unknown[0]}: is not a known field")
        prefix = "" if cls.BARE else f"{where}."
        kwargs = {s.name: s.read(obj[s.key], prefix + s.key) for s in specs if s.key in obj}
        return cls(**kwargs)
