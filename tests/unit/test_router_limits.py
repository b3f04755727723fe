"""ipop.router.limits: the ARP lookup gate and the LRU bound, each table bounded."""

from __future__ import annotations

import pytest

from ipop.errors import LocalProtocolError
from ipop.router.limits import OwnerLookups, lru_put


def test_lru_put_evicts_the_least_recent() -> None:
    table: dict[str, int] = {}
    for i, key in enumerate("abcd"):
        lru_put(table, key, i, 3)
    assert list(table) == ["b", "c", "d"]
    lru_put(table, "b", 9, 3)  # re-inserted: now the most recent
    lru_put(table, "e", 5, 3)
    assert list(table) == ["d", "b", "e"]


def test_owner_lookups_one_per_address_waiters_and_cache() -> None:
    g: OwnerLookups[str] = OwnerLookups(max_in_flight=2, max_waiters=2, live_ttl_s=10, dead_ttl_s=1)
    assert g.answer(b"x", 0.0) is None and g.wait(b"x", "r1") is None
    assert g.start(b"x", "r1")
    with pytest.raises(LocalProtocolError):
        g.start(b"x", "r2")
    assert g.wait(b"x", "r2") is True and g.wait(b"x", "r3") is False
    assert g.start(b"y", "s1") and not g.start(b"z", "t1")  # two in flight at most
    assert g.finish(b"x", True, 0.0) == ["r1", "r2"] and g.in_flight() == 1
    assert g.finish(b"y", False, 0.0) == ["s1"]
    assert g.answer(b"x", 9.9) is True and g.answer(b"x", 10.0) is None
    assert g.answer(b"y", 0.5) is False and g.answer(b"y", 1.0) is None
    assert g.started == 2


def test_owner_lookup_cache_is_bounded() -> None:
    g: OwnerLookups[str] = OwnerLookups(max_cached=4)
    for i in range(100):
        key = i.to_bytes(4, "big")
        g.start(key, "r")
        g.finish(key, False, 0.0)
    assert len(g._cache) == 4 and g.answer((99).to_bytes(4, "big"), 0.0) is False
