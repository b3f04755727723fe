"""ipop-sim's overlay scenario: full node stacks behind NATs join, route, store, allocate, repair.

Sizes stay small (CI); tools/bench/sim_bench.py runs the 1,000-node target.
"""

from __future__ import annotations

import asyncio
import gc
import json
import math
import random
from collections.abc import Iterator
from typing import Any

import pytest

from ipop.errors import ConfigError
from ipop.testing import scenario
from ipop.testing.scenario import OverlayScenario, parse_nat_mix, run_overlay
from ipop.tools.sim import main, overlay_targets

KEYS = {
    "nodes",
    "ring_consistent",
    "route_success",
    "mean_hops",
    "p99_hops",
    "dht_get_success",
    "duplicate_ips",
    "join_p50_s",
    "join_p90_s",
    "virtual_s",
    "wall_s",
}


def test_join_route_dht_and_allocation_behind_nats(capsys: pytest.CaptureFixture[str]) -> None:
    """Routing, join time, DHT gets and concurrent IP allocation on a converged ring."""
    argv = ["overlay", "--json", "--nodes", "60", "--seed", "2", "--pairs", "100"]
    main([*argv, "--records", "40"])  # exit status 1 = some target missed; checked below
    captured = capsys.readouterr()
    out = json.loads(captured.out)  # progress goes to stderr, never into the JSON
    assert "join done" in captured.err and "allocate done" in captured.err
    assert set(out) >= KEYS
    assert out["nodes"] == 60
    assert out["ring_consistent"] is True
    assert out["route_success"] == 1.0
    assert 1.0 <= out["mean_hops"] <= math.log2(60)
    assert out["p99_hops"] >= out["mean_hops"]
    assert out["dht_get_success"] == 1.0
    assert out["duplicate_ips"] == 0 and out["alloc_failed"] == 0
    assert out["join_p90_s"] is not None and out["join_p90_s"] <= 10.0
    assert out["join_p50_s"] <= out["join_p90_s"]
    assert out["callback_errors"] == 0
    assert out["wall_s"] > 0 and out["virtual_s"] > out["join_p90_s"]
    assert out["targets"]["ring_consistent"]["met"] is True
    assert out["ok"] is all(t["met"] for t in out["targets"].values())


def test_targets_judge_each_number_against_the_issue() -> None:
    result = {
        "ring_consistent": True,
        "route_success": 0.995,  # one pair in 200 lost: missed
        "mean_hops": 2.7,
        "log2_n": 9.97,
        "dht_get_success": 1.0,
        "join_p90_s": 11.0,  # missed
        "duplicate_ips": 0,
        "churn": {"ring_consistent": True, "records_lost": 0},
        "records_lost": 0,
        "wall_s": 100.0,
    }
    targets = overlay_targets(result)
    missed = sorted(name for name, (_, _, met) in targets.items() if not met)
    assert missed == ["join_p90_s", "route_success"]
    assert "wall_s" not in targets  # machine-dependent: printed, not judged
    assert targets["churn_records_lost"] == (0, "0", True)


def test_churn_repairs_ring_and_keeps_records_under_loss() -> None:
    """Kill 30% at once on a 1%-loss internet: the ring heals, no record is lost."""
    out = run_overlay(OverlayScenario(nodes=50, loss=0.01, churn=0.3, seed=4, pairs=60, records=40))
    assert out["ring_consistent"] is True
    assert out["dht_get_success"] == 1.0
    after = out["churn"]
    assert after["killed"] == 15 and after["nodes"] == 35
    assert after["ring_consistent"] is True
    assert after["repair_s"] <= 60.0
    assert out["records_lost"] == 0
    assert after["route_success"] == 1.0


def test_symmetric_near_neighbours_link_through_a_relay() -> None:
    """Mostly symmetric NATs: neighbours that cannot link directly use relay links."""
    out = run_overlay(
        OverlayScenario(
            nodes=24,
            nat_mix={"none": 0.25, "symmetric": 0.75},
            hosts_per_nat=1,
            seed=5,
            pairs=40,
            records=10,
            allocate=False,
        )
    )
    assert out["relayed_symmetric_near_links"] > 0
    assert out["ring_consistent"] is True
    assert out["route_success"] == 1.0


def test_routes_survive_loss() -> None:
    """5% loss each datagram: routed pings still all answer (retries live above the wire).

    A try crosses about six datagrams (route_first_try is 0.8-0.9 here), so three tries all
    fail for one pair in 60 in about a third of the seeds whatever the routes: six tries
    leave a chance of about 1e-5 per pair, and a miss means a route is missing.
    """
    out = run_overlay(
        OverlayScenario(
            nodes=30, loss=0.05, seed=6, pairs=60, records=20, allocate=False, route_attempts=6
        )
    )
    assert out["ring_consistent"] is True
    assert out["route_success"] == 1.0
    assert out["dht_get_success"] == 1.0


def test_runs_repeat_exactly_from_the_seed() -> None:
    """Same seed, same run: node keys, NAT plan, loss and every random choice come from it."""
    sc = OverlayScenario(nodes=20, loss=0.02, churn=0.3, seed=9, pairs=30, records=10)
    first, second = run_overlay(sc), run_overlay(sc)
    for out in (first, second):
        del out["wall_s"], out["wall_phases_s"]
    assert first == second
    assert first["ring_consistent"] is True and first["churn"]["ring_consistent"] is True


class _ShuffledSet(set[Any]):
    """A set that iterates in an order drawn from ``rng``, whatever its members' addresses."""

    rng = random.Random(0)

    def __iter__(self) -> Iterator[Any]:
        # Tasks in creation order first (their names count up), so the draw alone decides.
        items = sorted(super().__iter__(), key=_creation_order)
        type(self).rng.shuffle(items)
        return iter(items)


def _creation_order(fut: Any) -> int:
    """A task's number from its default name ("Task-12"); -1 for anything else."""
    number = fut.get_name().rpartition("-")[2] if isinstance(fut, asyncio.Task) else ""
    return int(number) if number.isdigit() else -1


def test_runs_repeat_whatever_order_asyncio_wait_reports_in(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """asyncio.wait returns sets, which iterate in the order of their tasks' addresses: a
    run must not depend on it, or it repeats from its seed only as long as the heap does (CI
    saw 1,100 vs 1,101 drops in the test above after other tests had run: a DHT read gave a
    late peer's spare to the seat its set order came to first)."""
    real_wait = asyncio.wait

    async def wait(fs: Any, **kw: Any) -> tuple[set[Any], set[Any]]:
        done, pending = await real_wait(fs, **kw)
        return _ShuffledSet(done), _ShuffledSet(pending)

    monkeypatch.setattr(asyncio, "wait", wait)
    sc = OverlayScenario(nodes=20, loss=0.02, churn=0.3, seed=9, pairs=30, records=10)
    outs = []
    for draw in (0, 11):  # 11: one of the draws whose order changed a run before the fix
        _ShuffledSet.rng = random.Random(draw)
        out = run_overlay(sc)
        del out["wall_s"], out["wall_phases_s"]
        outs.append(out)
    assert outs[0] == outs[1]


def test_nat_mix_parsing_and_bad_flags(capsys: pytest.CaptureFixture[str]) -> None:
    assert parse_nat_mix("none:0.3, symmetric:0.7") == {"none": 0.3, "symmetric": 0.7}
    for bad in ("none:0.5", "moon:1", "none", "none:x"):
        with pytest.raises(ConfigError):
            parse_nat_mix(bad)
    assert main(["overlay", "--nat-mix", "none:0.5"]) == 2
    assert "nat-mix" in capsys.readouterr().err
    assert main(["overlay", "--nodes", "1"]) == 2
    assert main(["overlay", "--nodes", "3", "--tick-ms", "-1"]) == 2
    assert "tick" in capsys.readouterr().err
    assert OverlayScenario(nodes=10, seed=3).plan()[0] == "none"
    assert len(OverlayScenario(nodes=10, seed=3).plan()) == 10


def test_churn_repair_with_few_public_nodes_beats_the_deadline() -> None:
    """30% churn where most near pairs need relays (10% public): repaired within 60 s.

    Seeds 1-3 repair in 32-45 s (measured 2026-12-02); which seed is fastest changes with any
    change to timing (the DHT's traffic, the simulator's delivery order), so the deadline is
    the issue's 60 s, not a margin under one seed's last number.
    """
    out = run_overlay(
        OverlayScenario(
            nodes=150,
            nat_mix={"none": 0.1, "port-restricted-cone": 0.5, "symmetric": 0.4},
            loss=0.01,
            churn=0.3,
            seed=3,
            pairs=40,
            records=20,
            allocate=False,
            repair_deadline_s=60.0,
        )
    )
    assert out["ring_consistent"] is True
    after = out["churn"]
    assert after["ring_consistent"] is True, after
    assert out["records_lost"] == 0


def test_run_overlay_tunes_the_collector_only_while_it_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[tuple[int, int, int]] = []

    async def fake_run(sc: OverlayScenario, **_: Any) -> dict[str, Any]:
        seen.append(gc.get_threshold())
        raise RuntimeError("stop here")

    before = gc.get_threshold()
    monkeypatch.setattr(scenario, "run_overlay_async", fake_run)
    with pytest.raises(RuntimeError):
        scenario.run_overlay(OverlayScenario(nodes=2))
    assert seen == [scenario.SIM_GC_THRESHOLDS] and gc.get_threshold() == before
