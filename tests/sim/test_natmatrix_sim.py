"""The NAT matrix on the simulator's RFC 4787 NATs: the same targets as the lab matrix."""

from __future__ import annotations

from statistics import median

from ipop.testing.natmatrix import KINDS, run_matrix, run_pair


def test_every_pair_of_nat_kinds_in_the_simulator() -> None:
    pairs = run_matrix(KINDS)["pairs"]
    assert len(pairs) == 15
    for p in pairs:
        label = f"{p['a']} x {p['b']}: {p}"
        assert p["reachable"], label
        assert p["direct"] == bool(p["expected_direct"]), label
        assert p["path"] == ("direct" if p["direct"] else "relayed"), label
        assert p["lost"] <= 1, label
    times = [p["time_to_direct_s"] for p in pairs if p["direct"]]
    assert median(times) <= 1.0 and max(times) <= 3.0, times


def test_direct_path_is_faster_than_the_overlay() -> None:
    row = run_pair("port-restricted-cone", "port-restricted-cone", seed=3)
    assert row["direct"]
    if row["rtt_overlay_ms"] is not None:  # the first pings went over the overlay
        assert row["rtt_direct_ms"] < row["rtt_overlay_ms"]


def test_the_outcome_does_not_depend_on_the_seed() -> None:
    # Node keys (so ring positions) come from the OS; the verdict must not depend on them.
    verdicts = {
        (r["reachable"], r["direct"], r["path"])
        for r in (run_pair("restricted-cone", "symmetric", seed=s) for s in (5, 6, 7))
    }
    assert verdicts == {(True, True, "direct")}
