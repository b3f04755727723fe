"""The issue's 1,000-node overlay target, run once and compared with its targets.

Runs ``ipop-sim overlay`` with 1,000 nodes, 30% public / 56% port-restricted cone / 14%
symmetric NAT (70% behind NATs, of which 20% symmetric), 1% loss, every node allocating an
IP at once, then ``--churn 0.3``; prints the JSON result and one line per target (met or not)::

    timeout 3600 .venv/bin/python -m ipop.tools.bench.sim_bench [--nodes N] [--seed S]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from typing import Any

from ipop.testing.scenario import OverlayScenario, run_overlay


def targets(out: dict[str, Any]) -> list[tuple[str, bool, object]]:
    """(target, met, achieved) for every target of the issue."""
    churn = out.get("churn", {})
    n = out["nodes"]
    return [
        ("ring_consistent", out["ring_consistent"] is True, out["ring_consistent"]),
        ("route_success == 1.0", out["route_success"] == 1.0, out["route_success"]),
        (
            f"mean_hops <= log2 N = {math.log2(n):.2f}",
            out["mean_hops"] is not None and out["mean_hops"] <= math.log2(n),
            out["mean_hops"],
        ),
        ("dht_get_success == 1.0", out["dht_get_success"] == 1.0, out["dht_get_success"]),
        ("duplicate_ips == 0", out.get("duplicate_ips") == 0, out.get("duplicate_ips")),
        (
            "join_p90_s <= 10",
            out["join_p90_s"] is not None and out["join_p90_s"] <= 10.0,
            out["join_p90_s"],
        ),
        (
            "churn 0.3: ring consistent within 60 s",
            churn.get("ring_consistent") is True,
            churn.get("repair_s"),
        ),
        ("churn 0.3: records_lost == 0", out.get("records_lost") == 0, out.get("records_lost")),
        ("wall_s <= 120", out["wall_s"] <= 120.0, out["wall_s"]),
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--loss", type=float, default=0.01)
    ap.add_argument("--churn", type=float, default=0.3)
    args = ap.parse_args(argv)
    logging.getLogger("kademlia").setLevel(logging.ERROR)
    out = run_overlay(
        OverlayScenario(
            nodes=args.nodes,
            nat_mix={"none": 0.3, "port-restricted-cone": 0.56, "symmetric": 0.14},
            loss=args.loss,
            churn=args.churn,
            seed=args.seed,
            hosts_per_nat=4,
            join_spread_s=30.0,
        )
    )
    print(json.dumps(out, indent=2))
    results = targets(out)
    for name, met, got in results:
        print(f"{'MET ' if met else 'MISS'} {name:<45} achieved {got}")
    return 0 if all(met for _, met, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
