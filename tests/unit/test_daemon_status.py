"""What the daemon fills and logs: rtt_ms from the link layer, VIP of linked peers, link notes."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections import Counter
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from ipop import timing
from ipop.aio.daemon import Daemon, DaemonSettings
from ipop.core import NodeSnapshot
from ipop.dht.record import ip_key, name_key
from ipop.journal import Journal
from ipop.link.events import LinkInfo
from ipop.overlay.node import OverlaySnapshot
from ipop.status import PeerStatus
from ipop.testing.clock import SIM_EPOCH, run_virtual
from ipop.testing.fake_dht import FakeDht
from ipop.testing.identities import make_bundle
from ipop.testing.snapshots import link_info
from ipop.types import Endpoint, NodeId, RelayPath

SUBNET = IPv4Network("100.64.0.0/10")
BOB, CAROL = NodeId(0xB0B), NodeId(0xCA201)
BOB_VIP = IPv4Address("100.64.0.7")


def _daemon(tmp_path: Path, *, overlay: str | None = None) -> Daemon:
    bundle = make_bundle(
        "lab-net",
        "alice",
        subnet=SUBNET,
        bootstrap=(Endpoint("203.0.113.10", 5800),),
        now=time.time(),
        overlay=overlay,
    )
    settings = DaemonSettings(listen=Endpoint("127.0.0.1", 0), state_dir=tmp_path)
    return Daemon(bundle, settings)


def _info(peer: NodeId, hostname: str | None, rtt_s: float | None, at: float) -> LinkInfo:
    path = Endpoint("203.0.113.20", 5800)
    return link_info(peer, path, at=at, name=hostname or "x", hostname=hostname, rtt_s=rtt_s)


def _wire(
    d: Daemon,
    infos: list[LinkInfo],
    dht: FakeDht,
    *,
    owners: dict[NodeId, bytes] | None = None,
    shortcuts: dict[NodeId, float] | None = None,
) -> None:
    core = SimpleNamespace(
        link=SimpleNamespace(peers=lambda: infos),
        overlay=SimpleNamespace(),
        learn_certificate=lambda node, der, now: True,  # owner records' certificates
        snapshot=lambda: NodeSnapshot(
            node_id=NodeId(1),
            overlay=OverlaySnapshot(NodeId(1), False, 1.0, (), ()),
            links=tuple(infos),
            shortcuts=dict(shortcuts or {}),
        ),
    )
    node: Any = SimpleNamespace(core=core, dht=dht, node_id=NodeId(1))
    learned: dict[bytes, NodeId] = {}  # what name lookups handed the data plane
    plane: Any = SimpleNamespace(
        known_owners=lambda: dict(owners or {}),
        drops=Counter(),
        counters=Counter(),
        lane_stats=lambda: None,
        learn_owner=lambda vip, owner: learned.setdefault(vip.packed, owner),
        live_owner=learned.get,
    )
    d.node, d.dataplane = node, plane


def _peers(d: Daemon) -> dict[str, PeerStatus]:
    return {p.node_id: p for p in d.status().peers}


def test_rtt_of_every_linked_peer_comes_from_its_handshake_or_a_newer_ping(
    tmp_path: Path,
) -> None:
    d = _daemon(tmp_path)
    _wire(d, [_info(BOB, "bob", 0.012, at=100.0), _info(CAROL, None, None, at=100.0)], FakeDht(1))
    rows = _peers(d)
    assert rows[BOB.hex()].rtt_ms == 12.0
    assert rows[CAROL.hex()].rtt_ms is None  # no handshake measured yet
    d.rtts[BOB] = (0.003, 200.0)  # an overlay ping after the handshake
    d.rtts[CAROL] = (0.004, 50.0)
    rows = _peers(d)
    assert rows[BOB.hex()].rtt_ms == 3.0
    assert rows[CAROL.hex()].rtt_ms == 4.0


def test_vip_of_a_linked_peer_is_learned_from_its_hostname(tmp_path: Path) -> None:
    d = _daemon(tmp_path)
    dht = FakeDht(NodeId(1))
    dht.hold(name_key(d.namespace, "bob"), BOB, BOB_VIP.packed)
    dht.hold(ip_key(d.namespace, BOB_VIP), BOB)
    # carol's name points at bob's address: not carol's, not shown.
    dht.hold(name_key(d.namespace, "carol"), CAROL, BOB_VIP.packed)
    infos = [_info(BOB, "bob", 0.01, at=1.0), _info(CAROL, "carol", 0.01, at=1.0)]
    _wire(d, infos, dht)
    assert asyncio.run(d.learn_peer_vips(now=0.0)) == 1
    rows = _peers(d)
    assert rows[BOB.hex()].vip == str(BOB_VIP)
    assert rows[CAROL.hex()].vip is None
    # Two reads a peer: its name, then its address's holder, which the name's check read
    # (the owner check asked the DHT for it a third time).
    assert dht.calls["get"] == 4
    infos.pop(0)  # bob's link went: forgotten
    asyncio.run(d.learn_peer_vips(now=1.0))
    assert BOB not in d.peer_vips


def test_on_a_shared_overlay_a_peers_vip_is_learned_from_its_node_name(tmp_path: Path) -> None:
    """Overlay certificates name no hostname: the node name stands in, under the same owner
    check (one-network links without a hostname are not looked up, as before)."""
    d = _daemon(tmp_path, overlay="shared")
    dht = FakeDht(NodeId(1))
    dht.hold(name_key(d.namespace, "bob"), BOB, BOB_VIP.packed)
    dht.hold(ip_key(d.namespace, BOB_VIP), BOB)
    bob = link_info(BOB, Endpoint("203.0.113.20", 5800), at=1.0, name="bob", hostname=None)
    _wire(d, [bob], dht)
    assert asyncio.run(d.learn_peer_vips(now=0.0)) == 1
    assert _peers(d)[BOB.hex()].vip == str(BOB_VIP)
    one = _daemon(tmp_path / "one")
    dht.hold(name_key(one.namespace, "bob"), BOB, BOB_VIP.packed)
    dht.hold(ip_key(one.namespace, BOB_VIP), BOB)
    _wire(one, [bob], dht)
    assert asyncio.run(one.learn_peer_vips(now=0.0)) == 0


def test_the_first_peer_vip_sweep_waits_out_the_networks_busiest_seconds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A cold start of 32 daemons spent ~16 DHT lookups per node on this display column while
    # the same DHT was claiming everyone's addresses and names.
    d = _daemon(tmp_path)
    seen: list[tuple[str, float]] = []

    async def fake_sleep(s: float) -> None:
        seen.append(("sleep", s))
        if len(seen) > 2:
            raise asyncio.CancelledError

    async def fake_learn(*, now: float) -> int:
        seen.append(("learn", now))
        return 0

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)
    monkeypatch.setattr(d, "learn_peer_vips", fake_learn)
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(d._learn_peer_vips())
    assert seen[0] == ("sleep", timing.PEER_VIP_FIRST_S) and seen[1][0] == "learn"
    assert timing.PEER_VIP_FIRST_S >= 5.0


def test_link_notes_are_logged_rare_at_info_routine_at_debug(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    d = _daemon(tmp_path)
    _wire(d, [], FakeDht(NodeId(1)))
    journal = Journal()
    d.node.core.journal = journal  # type: ignore[union-attr]
    ep = Endpoint("198.51.100.7", 5800)
    journal.link_up(BOB, ep, now=1.0)
    journal.link_down(BOB, "timeout", now=2.0)
    with caplog.at_level(logging.INFO, logger="ipopd"):
        assert d.log_journal() == 2
    lines = [r.getMessage() for r in caplog.records if r.name == "ipopd"]
    assert lines == [f"event=link_up peer={BOB.short()} path=direct at={ep.host}:5800 first=yes"]


def test_daemon_remembers_direct_links_and_hands_them_to_the_overlay(tmp_path: Path) -> None:
    d = _daemon(tmp_path)
    handed: list[list[Endpoint]] = []
    bob = _info(BOB, "bob", 0.01, at=1.0)
    carol = dataclasses.replace(_info(CAROL, None, None, at=1.0), path=RelayPath(CAROL, BOB))
    _wire(d, [bob, carol], FakeDht(NodeId(1)))
    d.node.core.overlay.endpoints = list  # type: ignore[union-attr]
    d.node.core.overlay.set_remembered = handed.append  # type: ignore[union-attr]
    d.remember_links(now=100.0)
    assert handed == [[bob.path]]  # the relayed link is not an endpoint to come back to
    saved = json.loads((tmp_path / "peers.json").read_text())
    assert saved == {"network": "lab-net", "peers": ["203.0.113.20:5800"]}
    # A restart of the daemon reads them back.
    assert _daemon(tmp_path).peer_store.load() == [bob.path]


def test_daemon_writes_its_peers_right_after_the_first_links(tmp_path: Path) -> None:
    """A daemon killed a few seconds after start must come back with remembered peers (the
    first write came 10 s after start: the soak's early restarts had none)."""
    d = _daemon(tmp_path)
    _wire(d, [_info(BOB, "bob", 0.01, at=1.0)], FakeDht(NodeId(1)))
    d.node.core.overlay.endpoints = list  # type: ignore[union-attr]
    d.node.core.overlay.set_remembered = lambda eps: None  # type: ignore[union-attr]
    path = tmp_path / "peers.json"

    async def body() -> float:
        loop = asyncio.get_running_loop()
        task = loop.create_task(d._remember_peers())
        start = loop.time()
        try:
            while not path.exists() and loop.time() - start < 30:
                await asyncio.sleep(0.1)
            return loop.time() - start
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    assert run_virtual(body(), start=SIM_EPOCH) <= 1.5
    assert json.loads(path.read_text())["peers"] == ["203.0.113.20:5800"]


def test_a_shortcut_that_stopped_forming_is_not_said_to_form(tmp_path: Path) -> None:
    d = _daemon(tmp_path)
    now = time.time()
    owners = {BOB: IPv4Address("100.64.0.8").packed, CAROL: BOB_VIP.packed}
    _wire(d, [], FakeDht(NodeId(1)), owners=owners, shortcuts={BOB: now, CAROL: now - 60})
    why = {node_id: p.why for node_id, p in _peers(d).items()}
    assert why[BOB.hex()] == "no link yet: routed over the ring while a shortcut forms"
    assert why[CAROL.hex()].startswith("no link: routed over the ring (no traffic for 6")


def test_a_direct_link_gone_quiet_says_so_before_it_times_out(tmp_path: Path) -> None:
    d = _daemon(tmp_path)
    now = time.time()
    _wire(
        d, [_info(BOB, "bob", 0.01, at=now - 30), _info(CAROL, None, 0.01, at=now - 1)], FakeDht(1)
    )
    why = {node_id: p.why for node_id, p in _peers(d).items()}
    assert why[CAROL.hex()] is None
    assert why[BOB.hex()].startswith("nothing heard for 30 s")
    assert "the link closes after 50 s of silence" in why[BOB.hex()]


def test_metrics_page_of_a_daemon_not_started_yet(tmp_path: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from ipop.link import fastpath

    d = _daemon(tmp_path)
    text = d.metrics_text(max_peers=4, drops={"metrics.not_found": 1})
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    assert fams["ipop_dataplane_backend_info"].samples[0].labels == {"backend": fastpath.BACKEND}
    assert fams["ipop_node_info"].samples[0].labels["node_name"] == "alice"
    assert fams["ipop_start_time_seconds"].samples[0].value == d.started_at
    (drop,) = fams["ipop_drops"].samples
    assert drop.labels == {"layer": "metrics", "reason": "not_found"} and drop.value == 1
    assert fams["ipop_routable"].samples[0].value == 0 and not fams["ipop_peer_info"].samples
