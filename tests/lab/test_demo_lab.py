"""The README's main job, ``ipop-lab demo``, end to end (root): every pair by name, and the
shortcut moment (relayed first, then direct by port guessing, symmetric NAT included)."""

from __future__ import annotations

import os
import shutil

import pytest

from ipop.tools.lab.demo import format_table, run_demo
from ipop.tools.lab.topology import default_topology

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("iptables") is None,
    reason="needs root and iptables: builds namespaces with NATs",
)


def test_demo_pings_every_pair_and_shows_the_shortcut_moment() -> None:
    result = run_demo(default_topology(), quiet=True)
    table = format_table(result)
    assert result["ok"], table
    assert len(result["pings"]) >= 4 * 3 and all(p["ok"] for p in result["pings"]), table
    sc = result["shortcut"]
    assert (sc["from_nat"], sc["to_nat"]) == ("port-restricted-cone", "symmetric"), table
    assert sc["direct"] and sc["time_to_direct_s"] <= 3.0, table
    assert sc["lost"] is not None and sc["lost"] <= 1, table
    assert sc["replies"][-1][2] == "direct", table
    assert "the shortcut moment" in table and "direct from here" in table
    # the pair's traffic is direct in the all-pairs table too
    ac = [p for p in result["pings"] if (p["from"], p["to"]) == (sc["from"], sc["to"])]
    assert ac and ac[0]["path"] == "direct", table
