"""The README's main job, ``ipop-lab demo``, end to end (root): every pair by name, the
shortcut moment (relayed first, then direct by port guessing, symmetric NAT included), and the
Grid Appliance moment (a plain LAN host finds a node's web server by SRV and fetches it)."""

from __future__ import annotations

import os
import re
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
    # The Grid Appliance moment: found by SRV through the router's DNS, fetched with curl.
    sv = result["service"]
    assert sv["fetched"] and "unmodified python3 -m http.server" in sv["page"], table
    assert (sv["publisher_nat"], sv["via"]) == ("symmetric", "r1"), table
    assert re.fullmatch(r"0 0 8000 C\d{9}\.ipop\.", sv["srv"]), table
    assert sv["url"] == f"http://{sv['srv'].split()[-1].rstrip('.')}:8000/", table
    assert sv["srv_ms"] is not None and sv["srv_ms"] <= 1000, table
    assert sv["phase_s"] <= 5.0, table
    assert "the Grid Appliance moment" in table and "fetched=True" in table
    assert sv["server_stopped"], table  # by its PID, before the lab came down
