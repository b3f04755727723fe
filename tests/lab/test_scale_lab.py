"""Large labs: generated topologies (``--nodes N --nat-mix``, presets, several hosts per NAT,
two router clusters) and the CI-sized lab swept by name.

The topology tests need nothing; the lab test needs root. The full size (30 daemons) is the
benchmark command ``ipop-lab soak --nodes 30 --minutes 10 --json`` (tests/lab/test_soak_lab.py
runs the soak small), not a test.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ipop.errors import ConfigError
from ipop.tools.lab import main as lab_main
from ipop.tools.lab.generated import parse_nat_mix, preset_topology, scaled_topology
from ipop.tools.lab.ipopnet import IpopNet
from ipop.tools.lab.lab import HOST_IF, Lab
from ipop.tools.lab.soak import sweep, target_name
from ipop.tools.lab.topology import topology_from_dict

MakeLab = Callable[..., Lab]
needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("iptables") is None,
    reason="needs root and iptables: builds namespaces with NATs",
)


# ---------------------------------------------------------------- generated topologies


def test_scaled_topology_follows_the_mix_and_shares_nats() -> None:
    topo = scaled_topology(
        30, "none:0.2,port-restricted-cone:0.4,symmetric:0.4", clusters=2, per_nat=3
    )
    daemons = [h for h in topo.hosts if topo.cluster_of_router(h.name) is None]
    assert len(daemons) == 30
    kinds = [h.nat.kind if h.nat else "none" for h in daemons]
    assert (kinds.count("none"), kinds.count("port-restricted-cone")) == (6, 12)
    assert kinds.count("symmetric") == 12
    # three hosts per NAT router: one owner and two behind it, on one LAN and one WAN address
    prc = [h for h in daemons if h.nat and h.nat.kind == "port-restricted-cone"]
    assert [h.nat_owner for h in prc[:3]] == [None, "prc1", "prc1"]
    assert len({h.public_ip for h in prc[:3]}) == 1 and len({h.ip for h in prc[:3]}) == 3
    assert len({h.public_ip for h in prc}) == 4
    assert [c.router for c in topo.clusters] == ["r1", "r2"]
    assert topo.bootstrap_names == ("pub1", "pub2")
    assert topology_from_dict(topo.to_dict()) == topo


def test_cone_nats_serve_one_host_each_and_presets_exist() -> None:
    topo = scaled_topology(8, "full-cone:1,restricted-cone:1", clusters=0)
    assert all(h.nat_owner is None for h in topo.hosts)
    assert sum(1 for h in topo.hosts if h.role == "public") == 2  # bootstraps forced in
    assert len(preset_topology("30").hosts) == 32  # 30 daemons + 2 routers
    with pytest.raises(ConfigError, match="serves one host"):
        topology_from_dict(
            {
                "hosts": [
                    {"name": "pub", "role": "public"},
                    {"name": "a", "role": "nat", "kind": "full-cone"},
                    {"name": "b", "role": "nat", "behind": "a"},
                ]
            }
        )
    with pytest.raises(ConfigError, match="unknown NAT kind"):
        parse_nat_mix("none:1,carrier-grade:2")


def test_up_refuses_two_topology_sources(tmp_path: Path) -> None:
    rc = lab_main.main(["up", "--workdir", str(tmp_path), "--preset", "ci", "--nodes", "12"])
    assert rc == 2


# ---------------------------------------------------------------- the CI-sized lab


def _view(net: IpopNet, row: dict[str, object]) -> str:
    """A failed sweep row, with the source daemon's status row for the target (if any)."""
    src, to = str(row["from"]), str(row["to"])
    try:
        peers = net.status(src).peers
    except Exception as exc:  # a plain LAN host has no daemon to ask
        return f"{src}->{to} {row} (no status: {type(exc).__name__})"
    target = to.split(".")[0]
    peer = next((p for p in peers if p.name == target), None)
    return f"{src}->{to} {row} path {peer.path if peer else 'none'} {peer}"


@needs_root
def test_ci_preset_every_pair_by_name(make_lab: MakeLab) -> None:
    """14 daemons (several behind each shared NAT) + two router clusters of plain hosts: every
    ordered pair of endpoints answers a ping by name in the first sweep after a cold start
    (issue 14's target; failed pairs are retried until a deadline first, so that the message
    says whether they recover)."""
    lab = make_lab(preset_topology("ci"), "s")
    net = IpopNet(lab)
    net.prepare()
    net.start_all()
    net.wait_all_ready(lab.hosts, timeout_s=60.0)
    for p in lab.plain_hosts:
        net.start_plain(p)
    for p in lab.plain_hosts:
        net.wait_lease(p, timeout_s=20.0)
    # hosts sharing a NAT reach the internet from one address
    shared = [h for h in lab.hosts if h.nat_owner is not None]
    assert shared and all(h.router_ns == lab.host(h.nat_owner or "").router_ns for h in shared)
    endpoints = [h for h in lab.hosts if not lab.is_router(h)] + lab.plain_hosts
    assert len(endpoints) == 14 + 5
    rows = sweep(lab, endpoints, endpoints, workers=6)
    first_ok = sum(r["ok"] for r in rows)
    # What each failing source saw of its target right after the sweep (for the message).
    seen = {f"{r['from']}->{r['to']}": _view(net, r) for r in rows if not r["ok"]}
    print(f"ci preset: first sweep {first_ok}/{len(rows)} pairs by name")  # shown with -s
    assert len(rows) == 19 * 18
    failed = {(r["from"], r["to"]) for r in rows if not r["ok"]}
    deadline = time.monotonic() + 90.0
    while failed and time.monotonic() < deadline:
        by_src: dict[str, list[str]] = {}
        for src, dst in failed:
            by_src.setdefault(src, []).append(dst)
        again = []
        for src, names in by_src.items():
            targets = [t for t in endpoints if target_name(t) in names]
            again += sweep(lab, [lab.host(src)], targets, workers=1)
        failed = {(r["from"], r["to"]) for r in again if not r["ok"]}
    assert not failed, f"first sweep {first_ok}/{len(rows)}; still failing: {sorted(failed)}"
    # A pair with a symmetric NAT's host links by port guessing or through a relay, and in
    # about one cold start of 40 it lost both of the sweep's first pings while that formed
    # (issue 14's closing note); it must answer on the retry above. Every other pair must
    # answer from the first sweep on.
    first_failed = sorted(
        f"{r['from']}->{r['to']}" for r in rows if not r["ok"] and "sym" not in r["from"] + r["to"]
    )
    assert not first_failed, (
        f"first sweep {first_ok}/{len(rows)}: {[seen[k] for k in first_failed]}"
    )
    # The kernel of every daemon keeps one neighbour entry on its TAP (the gateway), not one
    # per peer: the neighbour table is shared by the machine's namespaces (1,024 entries by
    # default), and on-link peers overflowed it at 30 daemons (sends failed with ENOBUFS).
    for h in (h for h in lab.hosts if not lab.is_router(h)):
        neigh = lab.exec(h, ["ip", "-4", "neigh", "show", "dev", "ipop0"], timeout=5).stdout
        others = [ln for ln in neigh.splitlines() if ln and not ln.startswith(f"{net.gateway} ")]
        assert not others, f"{h.name} keeps a neighbour entry per peer: {others[:3]}"
    # On the lab's internet too, each host keeps a neighbour entry for its segment's router
    # only (ipop.tools.lab.lab: segments are routed, as the internet is): a flat segment held one
    # per pair of hosts that talked, and 30 daemons overflowed the machine's table.
    for h in (h for h in lab.hosts if h.nat_kind is None and h.lan_router is None):
        gw = str(lab.topology.segment_of(h.ip).network_address + 1)
        neigh = lab.exec(h, ["ip", "-4", "neigh", "show", "dev", HOST_IF], timeout=5).stdout
        others = [ln for ln in neigh.splitlines() if ln and not ln.startswith(f"{gw} ")]
        assert not others, f"{h.name} keeps neighbour entries for its segment: {others[:3]}"
    # the two clusters' plain hosts reach each other by name
    cross = [r for r in rows if r["from"] == "p1" and r["to"] == "q1.r2.ipop"]
    assert len(cross) == 1
