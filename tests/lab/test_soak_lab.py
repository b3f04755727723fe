"""``ipop-lab soak`` at a small size (root): the JSON report's shape and every churn action.

The protocol targets (100 % of live pairs after a 5 s recovery window, vIPs kept, RSS growth
<= 10 %) are measured by ``ipop-lab soak --nodes 30 --minutes 10 --json``, not asserted here.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from ipop.tools.lab.generated import scaled_topology
from ipop.tools.lab.lab import process_prefix
from ipop.tools.lab.soak import SoakPlan, run_soak

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("iptables") is None,
    reason="needs root and iptables: builds namespaces with NATs",
)


def test_soak_small_reports_sweeps_and_churn(tmp_path: Path) -> None:
    """6 daemons + one cluster for ~50 s: the JSON has its keys, and every churn action ran
    (kill -9 and restart, re-address, NAT flush, pause and continue, bootstraps stopped).
    Protocol targets (100 % pairs, recovery <= 5 s) are not asserted here."""
    topo = scaled_topology(
        6, "none:0.2,port-restricted-cone:0.5,symmetric:0.3", clusters=1, per_nat=2
    )
    plan = SoakPlan(
        minutes=0.8,
        seed=3,
        sweep_every_s=20.0,
        pause_s=15.0,
        kills=1,
        recovery_s=5.0,
        workers=4,
        bootstraps_stop_at=0.3,
    )
    started = time.monotonic()
    result = run_soak(topo, plan, workdir=tmp_path / "soak", prefix=process_prefix("k"))
    took = time.monotonic() - started
    assert result["ok"], result.get("error")
    sweeps = result["sweeps"]
    assert len(sweeps) >= 2
    for s in sweeps:
        assert {"t_s", "pairs", "pairs_ok", "pairs_ok_ratio", "recovering"} <= set(s)
        assert 0 <= s["pairs_ok"] <= s["pairs"] and 0.0 <= s["pairs_ok_ratio"] <= 1.0
        assert s["dns_ms"]["n"] >= 0
    # 6 daemons + 3 plain hosts, all live at t = 0, to each other and to the router's name
    assert sweeps[0]["pairs"] == 9 * 8 + 9
    kinds = {f["kind"] for f in result["faults"]}
    assert kinds == {
        "kill9",
        "restart",
        "readdress",
        "nat_flush",
        "pause",
        "continue",
        "bootstraps_stopped",
    }
    assert all(f.get("ok", True) for f in result["faults"]), result["faults"]
    # every fault a host can recover from was watched: seconds until its probes answered
    watched = [f for f in result["faults"] if f["kind"] in {"restart", "readdress", "nat_flush"}]
    assert all("recover_s" in f for f in watched), watched
    # the paused and bootstrap nodes are left out of the sweeps while not live
    assert sweeps[1]["live"] < sweeps[0]["live"]
    assert len(result["restarts"]) == 2
    # cold start: every daemon but the prober (the first bootstrap), the router included, was
    # reached by name from the prober, some seconds after its own start
    cold = result["cold_start"]
    assert cold["daemons"] == len(cold["pingable_s"]) == 6, cold
    assert all(v is not None and v >= 0 for v in cold["pingable_s"].values()), cold
    # each name resolved there before its first ping answered (what is left is the path)
    resolved = cold["resolved_s"]
    assert all(resolved[h] is not None and resolved[h] <= v for h, v in cold["pingable_s"].items())
    assert cold["resolved_p50"] is not None and cold["resolved_p50"] <= cold["p50"], cold
    # names are asked once their daemons logged ready: none of them is unknown by then (a
    # resolver's timeout, "again", is the probe's own 1 s bound under load)
    misses = cold["misses_after_ready"]
    assert all(set(kinds) <= {"nxdomain", "again", "other"} for kinds in misses.values())
    assert not any("nxdomain" in kinds for kinds in misses.values()), misses
    assert isinstance(result["vips_kept"], bool)
    assert "rss_growth" in result and result["daemons"]
    assert all(d["rss_kb_last"] > 0 for d in result["daemons"])
    assert not list(tmp_path.glob("soak/lab.json"))  # torn down
    assert took < 100, took
