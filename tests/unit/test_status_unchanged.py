"""``ipop status --json`` stays byte-for-byte what it was before status moved to ipop.report.

The documents in ``tests/unit/data/status_*.json`` were recorded from the daemon's old status
assembly (``node.core.<layer>.<x>`` reach-throughs and dict rows) over the states built here; the
status the daemon builds now over the same states must print the same bytes. The states use
fake layers (counters, link infos, an overlay snapshot) under a real :class:`PortGuessing` and
the real ``NodeCore`` methods, so the old reach-throughs and the new ``NodeCore.snapshot()`` read
the very same values.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from ipop.aio.commands import DaemonControl
from ipop.aio.daemon import Daemon, DaemonSettings
from ipop.core import NodeCore
from ipop.link.events import LinkInfo
from ipop.nat.portguess import PortGuessing
from ipop.overlay.node import ConnectionInfo, OverlaySnapshot
from ipop.overlay.table import ConnectionKind
from ipop.router.config import RouterSection
from ipop.router.daemon import RouterLan, router_daemon
from ipop.router.hosts import LanHost
from ipop.status import DnsLatency, DnsStatus
from ipop.testing.identities import make_bundle
from ipop.testing.snapshots import link_info
from ipop.types import Endpoint, NodeId, RelayPath

DATA = Path(__file__).parent / "data"
NOW = 1_800_000_000.0
SUBNET = IPv4Network("100.64.0.0/10")
ME = NodeId(1)
BOB, CAROL, DAVE, ERIN, FRANK = (NodeId(n) for n in (0xB0B, 0xCA201, 0xDA7E, 0xE21, 0xF2A))
OUR_SOCKET = Endpoint("198.18.0.5", 5800)
ECHOED = (Endpoint("203.0.113.5", 40001), Endpoint("203.0.113.5", 40002))
# Refresh the recorded documents from the code under test (only on the old code!).
RECORD = bool(os.environ.get("IPOP_RECORD_STATUS"))


def _info(
    peer: NodeId, path: Any, *, hostname: str | None, rtt_s: float | None, rx: float
) -> LinkInfo:
    n = len(hostname or "")
    return link_info(
        peer,
        path,
        at=NOW - 100,
        name=f"cert-{peer.short()}",
        hostname=hostname,
        rtt_s=rtt_s,
        last_rx=rx,
        keys_at=NOW - 50,
        bytes_in=1200 + n * 7,
        bytes_out=3400 + n * 11,
    )


def _core() -> SimpleNamespace:
    """A node holding: bob direct, carol relayed (she said in a HELLO she is symmetric), dave
    direct but silent, and erin and frank (owners of vIPs we exchanged traffic with) unlinked."""
    infos = [
        _info(BOB, Endpoint("203.0.113.20", 5800), hostname="bob", rtt_s=0.0123, rx=NOW - 1),
        _info(CAROL, RelayPath(CAROL, BOB), hostname=None, rtt_s=None, rx=NOW - 2),
        _info(DAVE, Endpoint("203.0.113.30", 5801), hostname="dave", rtt_s=0.002, rx=NOW - 40),
    ]
    conns = (
        ConnectionInfo(BOB, infos[0].path, (ConnectionKind.NEAR, ConnectionKind.SHORTCUT), 1.0),
        ConnectionInfo(DAVE, infos[2].path, (ConnectionKind.FAR,), 1.0),
    )
    overlay = SimpleNamespace(
        snapshot=lambda: OverlaySnapshot(ME, True, 12.0, conns, (("bad_mac", 3),)),
        endpoints=lambda: (OUR_SOCKET, *ECHOED),
        routable=True,
        drops=Counter({"bad_mac": 3, "unknown_type": 1}),
        stats=Counter({"joined": 1, "routed": 40}),
        observed_endpoints=lambda: ECHOED,
        local_endpoints=(OUR_SOCKET,),
    )
    punch = PortGuessing(rng=random.Random(7))
    theirs = PortGuessing(rng=random.Random(8))
    hello = theirs.hello(ME, symmetric=True, translated=True, endpoints=(), now=NOW)
    assert hello is not None
    punch.receive(
        CAROL, hello, symmetric=True, translated=True, public_host=None, endpoints=(), now=NOW
    )
    identity = SimpleNamespace(trust=SimpleNamespace(crl_number=3))
    core = SimpleNamespace(
        local_id=ME,
        link=SimpleNamespace(
            peers=lambda: list(infos),
            drops=Counter({"bad_index": 2, "replay": 5}),
            stats=Counter({"handshake_ok": 3, "handshake_failed": 1}),
        ),
        overlay=overlay,
        stats=Counter({"shortcut_asked": 4}),
        stun=SimpleNamespace(drops=Counter({"stun_relayed": 1})),
        revocation=SimpleNamespace(drops=Counter({"crl_stale": 2}), stats=Counter({"sent": 6})),
        network_crls=SimpleNamespace(drops=Counter(), stats=Counter()),
        birthday=punch,
        identity=identity,
        member=identity,  # a network that is its own overlay: no network_crl.number
        shortcut_peers=lambda: {ERIN: NOW + 5, FRANK: NOW - 60},
    )
    core.public_view = lambda: NodeCore.public_view(core)  # type: ignore[arg-type]
    if hasattr(NodeCore, "snapshot"):
        core.snapshot = lambda: NodeCore.snapshot(core)  # type: ignore[arg-type,attr-defined]
    return core


class _Services:
    def drops(self) -> dict[str, int]:
        return {"dhcp.bad_frame": 1}

    def dns_status(self) -> DnsStatus:
        return DnsStatus(
            counters={"queries": 10, "lookups": 2},
            answers={"noerror": 9},
            drops={"dns_too_many_waiters": 0, "dns_malformed": 1},
            latency_ms=DnsLatency(p50=4.2, p99=31.0, buckets={"le_1": 3, "over_5000": 0}),
        )


def _wire(d: Daemon) -> None:
    core = _core()
    node: Any = SimpleNamespace(
        core=core,
        dht=SimpleNamespace(
            drops=Counter({"bad_record": 2}),
            counters=lambda: {
                "store_records": 40,
                "store_unproven": 3,
                "store_displaced": 1,
                "store_evicted": 0,
            },
        ),
        node_id=ME,
        identity=core.identity,
    )
    owners = {
        BOB: IPv4Address("100.64.0.2").packed,
        ERIN: IPv4Address("100.64.0.9").packed,
        FRANK: IPv4Address("100.64.0.10").packed,
        ME: IPv4Address("100.64.0.1").packed,
    }
    plane: Any = SimpleNamespace(
        known_owners=lambda: dict(owners),
        drops=Counter({"no_such_vip": 4}),
        counters=Counter({"tap_writes": 100}),
        lane_stats=lambda: None,
    )
    d.node, d.dataplane = node, plane
    d.udp = SimpleNamespace(errors=Counter({"send_error": 1}))  # type: ignore[assignment]
    d.vip = IPv4Address("100.64.0.1")
    d.names = ["C064000001.ipop", "alice.ipop"]
    d.rtts[FRANK] = (0.0201, NOW - 5)
    d.peer_vips[DAVE] = (IPv4Address("100.64.0.4"), NOW - 10)


def _bundle(name: str) -> Any:
    return make_bundle(
        "lab-net", name, subnet=SUBNET, bootstrap=(Endpoint("203.0.113.10", 5800),), now=NOW
    )


def _node_daemon(tmp_path: Path) -> Daemon:
    bundle = _bundle("alice")
    d = Daemon(bundle, DaemonSettings(listen=Endpoint("127.0.0.1", 0), state_dir=tmp_path))
    d.services = _Services()  # type: ignore[assignment]
    _wire(d)
    assert d.arp is not None
    d.arp.drops["arp_not_for_us"] += 2
    return d


def _router_daemon(tmp_path: Path) -> Daemon:
    bundle = _bundle("router1")
    settings = DaemonSettings(listen=Endpoint("127.0.0.1", 0), state_dir=tmp_path)
    d = router_daemon(bundle, settings, RouterSection(interface="lan0"))
    r = d.local
    assert isinstance(r, RouterLan)
    r.clock = lambda: NOW
    _wire(d)
    r.arp.drops["arp_not_for_us"] += 2
    r.hosts.own_mac = bytes.fromhex("020000000001")
    r.hosts.add(
        LanHost(
            bytes.fromhex("0a0000000002"),
            IPv4Address("100.64.5.2"),
            "static",
            names=["C064005002.ipop"],
        )
    )
    r.hosts.add(
        LanHost(
            bytes.fromhex("0a0000000001"),
            IPv4Address("100.64.5.1"),
            "dhcp",
            names=["C064005001.ipop", "printer.router1.ipop"],
            expires=NOW + 590.5,
        )
    )
    r.rdrops["lan_rate_limited"] += 3
    r.hosts.drops["lan_wrong_src"] += 1
    r.lan = SimpleNamespace(  # type: ignore[assignment]
        drops=Counter({"csum_fragment": 2}), counters=Counter({"csum_completed": 5})
    )
    r.dhcp = SimpleNamespace(drops=Counter({"bad_option": 1}))  # type: ignore[assignment]
    r.lan_services = SimpleNamespace(  # type: ignore[assignment]
        drops=Counter({"not_ours": 7}), dns_status=_Services().dns_status
    )
    return d


def _status_json(d: Daemon) -> str:
    text = asyncio.run(DaemonControl(d).status()).to_json(indent=2) + "\n"
    return text.replace(d.bundle.node_id.hex(), "a" * 40)  # a fresh identity each run


@pytest.fixture(autouse=True)
def _fixed_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "time", lambda: NOW + 12.5)


@pytest.mark.parametrize("mode", ["node", "router"])
def test_status_json_is_what_the_old_assembly_printed(tmp_path: Path, mode: str) -> None:
    d = _node_daemon(tmp_path) if mode == "node" else _router_daemon(tmp_path)
    d.started_at = NOW
    got = _status_json(d)
    path = DATA / f"status_{mode}.json"
    if RECORD:
        path.write_text(got)
    assert got == path.read_text()
