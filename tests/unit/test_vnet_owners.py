"""ipop.vnet.owners: every table bounded, one lookup per address, rate limits per cause."""

from __future__ import annotations

import random

from ipop.timing import OWNER_NEGATIVE_TTL_S, OWNER_TTL_S
from ipop.types import NodeId
from ipop.vnet.owners import (
    HELD_MAX_BYTES,
    LOOKUP_BURST,
    LOOKUP_RATE_PER_S,
    MAX_CAUSES,
    PENDING_MAX,
    Held,
    LookupDrop,
    OwnerTable,
)

ME, PEER = NodeId(1), NodeId(2)
NOW = 1000.0


def _vip(i: int) -> bytes:
    return (0x64400000 + i).to_bytes(4, "big")


def test_one_lookup_per_address_and_its_packets_wait_for_it() -> None:
    t = OwnerTable()
    assert t.hold_out(_vip(5), b"a", now=NOW) is Held.START
    assert t.hold_out(_vip(5), b"b", now=NOW) is Held.QUEUED
    assert t.hold_in(_vip(5), PEER, b"c", now=NOW) is Held.QUEUED
    assert t.in_flight == 1
    assert t.held_packets == 3
    out, held = t.answer(_vip(5), PEER, now=NOW)
    assert out == [b"a", b"b"]
    assert held == [(PEER, b"c")]
    assert t.in_flight == 0
    assert t.held_packets == 0
    assert t.held_bytes == 0
    assert t.entries[_vip(5)] == (PEER, NOW + OWNER_TTL_S)


def test_absence_is_cached_for_a_short_while() -> None:
    t = OwnerTable()
    t.hold_out(_vip(5), b"a", now=NOW)
    t.answer(_vip(5), None, now=NOW)
    assert t.entries[_vip(5)] == (None, NOW + OWNER_NEGATIVE_TTL_S)
    assert t.owner_of(_vip(5)) is None


def test_a_holder_is_named_only_while_its_answer_is_fresh() -> None:
    t = OwnerTable()
    t.hold_out(_vip(5), b"a", now=NOW)
    t.answer(_vip(5), PEER, now=NOW)
    t.hold_out(_vip(6), b"a", now=NOW)
    t.answer(_vip(6), None, now=NOW)
    t.pin(_vip(7), ME)
    assert t.holder(_vip(5), now=NOW + OWNER_TTL_S - 1) == PEER
    assert t.holder(_vip(5), now=NOW + OWNER_TTL_S) is None  # stale: ask again
    assert t.holder(_vip(6), now=NOW) is None  # absent
    assert t.holder(_vip(8), now=NOW) is None  # never asked
    assert t.holder(_vip(7), now=NOW + 1e9) == ME  # pinned


def test_packets_held_per_address_are_bounded() -> None:
    t = OwnerTable()
    got = [t.hold_in(_vip(5), PEER, b"p", now=NOW) for _ in range(PENDING_MAX + 5)]
    assert got[0] is Held.START
    assert got.count(Held.QUEUED) == PENDING_MAX - 1
    assert got[PENDING_MAX:] == [LookupDrop.PENDING_FULL] * 5
    assert t.held_packets == PENDING_MAX


def test_bytes_held_in_all_are_bounded() -> None:
    t = OwnerTable(max_in_flight=10_000, burst=10_000)
    big = bytes(60_000)
    got = [t.hold_out(_vip(i), big, now=NOW) for i in range(HELD_MAX_BYTES // len(big) + 5)]
    assert LookupDrop.HELD_BYTES_FULL in got
    assert t.held_bytes <= HELD_MAX_BYTES


def test_lookups_in_flight_are_capped_and_come_back_when_answered() -> None:
    t = OwnerTable(max_in_flight=8, burst=1000)
    got = [t.hold_out(_vip(i), b"p", now=NOW) for i in range(20)]
    assert got.count(Held.START) == 8
    assert got[8:] == [LookupDrop.LOOKUPS_BUSY] * 12
    t.answer(_vip(0), PEER, now=NOW)
    t.abandon(_vip(1))
    assert t.in_flight == 6
    assert t.hold_out(_vip(100), b"p", now=NOW) is Held.START
    assert t.hold_out(_vip(1), b"p", now=NOW) is Held.START  # abandoned: may start again


def test_each_cause_is_rate_limited_on_its_own() -> None:
    t = OwnerTable(max_in_flight=10_000)
    burst = int(LOOKUP_BURST)
    got = [t.hold_in(_vip(i), PEER, b"p", now=NOW) for i in range(burst + 10)]
    assert got.count(Held.START) == burst
    assert got[burst:] == [LookupDrop.LOOKUP_RATE_LIMITED] * 10
    # Another peer, and the local side, have buckets of their own.
    assert t.hold_in(_vip(5000), NodeId(3), b"p", now=NOW) is Held.START
    assert t.hold_out(_vip(5001), b"p", now=NOW) is Held.START
    # Tokens come back at the configured rate.
    later = NOW + 1.0
    got = [t.hold_in(_vip(10_000 + i), PEER, b"p", now=later) for i in range(100)]
    assert got.count(Held.START) == int(LOOKUP_RATE_PER_S)


def test_buckets_per_cause_are_bounded() -> None:
    t = OwnerTable(max_in_flight=100_000)
    for i in range(MAX_CAUSES + 50):
        t.hold_in(_vip(i), NodeId(10 + i), b"p", now=NOW)
    assert len(t._buckets) <= MAX_CAUSES


def test_answers_are_bounded_the_oldest_goes_first_and_pinned_ones_stay() -> None:
    t = OwnerTable(max_entries=100, max_in_flight=100_000, burst=100_000)
    t.pin(_vip(0), ME)
    for i in range(1, 301):
        t.hold_out(_vip(i), b"p", now=NOW)
        t.answer(_vip(i), PEER if i % 2 else None, now=NOW + i)
    assert len(t) == 101
    assert t.owner_of(_vip(0)) == ME
    assert _vip(300) in t.entries
    assert _vip(200) not in t.entries
    # An answer looked up again moves to the back of the line.
    t.hold_out(_vip(201), b"p", now=NOW)
    t.answer(_vip(201), PEER, now=NOW + 400)
    for i in range(301, 399):
        t.hold_out(_vip(i), b"p", now=NOW)
        t.answer(_vip(i), PEER, now=NOW + i)
    assert _vip(201) in t.entries
    assert _vip(202) not in t.entries


def test_a_pinned_address_is_not_replaced_by_an_answer() -> None:
    t = OwnerTable()
    t.pin(_vip(1), ME)
    t.hold_in(_vip(1), PEER, b"p", now=NOW)
    t.answer(_vip(1), PEER, now=NOW)
    assert t.owner_of(_vip(1)) == ME
    t.unpin(_vip(1))
    assert t.owner_of(_vip(1)) is None


def test_a_flood_of_random_addresses_leaves_every_table_bounded() -> None:
    """Finding 9, sans-IO: one peer names a new address in every packet for a simulated
    minute; lookups answer after 2 s (nobody holds them)."""
    rng = random.Random(9)
    t = OwnerTable()
    started: list[tuple[float, bytes]] = []
    for step in range(60_000):
        now = NOW + step * 0.001
        while started and started[0][0] <= now - 2.0:
            t.answer(started.pop(0)[1], None, now=now)
        vip = _vip(rng.randrange(1 << 16))
        if t.hold_in(vip, PEER, bytes(100), now=now) is Held.START:
            started.append((now, vip))
        assert t.in_flight <= t.max_in_flight
    assert len(started) <= LOOKUP_BURST + LOOKUP_RATE_PER_S * 2.0 + 1
    assert len(t) <= LOOKUP_BURST + LOOKUP_RATE_PER_S * 60 + 1
    assert t.held_packets <= t.in_flight * PENDING_MAX
