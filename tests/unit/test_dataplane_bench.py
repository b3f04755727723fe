"""The data-plane micro benchmark runs (its in-memory pair links up and the fast path delivers)."""

from __future__ import annotations

import asyncio
import time

from ipop.overlay.messages import KIND_IP, TYPE_DIRECT
from ipop.tools.bench.dataplane_bench import A_EP, bench, bench_dataplane, linked_pair


def test_fast_path_round_trip_between_an_in_memory_pair() -> None:
    now = time.time()
    a, b = linked_pair(now)
    msg = bytes((TYPE_DIRECT, KIND_IP)) + b"\x45" + bytes(40)
    sealed = a.seal_ip(b.local_id, msg, now=now)
    assert sealed is not None
    got = b.receive_direct(sealed[0], A_EP, now=now, kind=KIND_IP)
    assert got == (a.local_id, msg)
    # The same datagram again is a replay: refused and counted, not delivered.
    assert b.receive_direct(sealed[0], A_EP, now=now, kind=KIND_IP) is None
    assert sum(b.link.drops.values()) == 1


def test_bench_reports_positive_costs() -> None:
    out = bench(200, 16, 100)
    assert set(out) == {"seal_us", "open_us", "slow_roundtrip_us"}
    assert all(v > 0 for v in out.values())


def test_dataplane_bench_moves_every_packet_both_ways() -> None:
    out = asyncio.run(bench_dataplane(256, 64, 1400))
    assert set(out) == {"dp_tap_to_udp_us", "dp_udp_to_tap_us"}
    assert all(v > 0 for v in out.values())
