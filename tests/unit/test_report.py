"""ipop.report: the status document from hand-made snapshots, no daemon, no sockets."""

from __future__ import annotations

import dataclasses
from ipaddress import IPv4Address

from ipop.core import NodeSnapshot, PublicView
from ipop.link.events import LinkInfo
from ipop.nat.kinds import NatKind
from ipop.nat.portguess import FLAG_SYMMETRIC, FLAG_TRANSLATED
from ipop.overlay.node import ConnectionInfo, OverlaySnapshot
from ipop.overlay.table import ConnectionKind
from ipop.report import LocalView, build_status, nat_kind, why_no_link, why_relayed
from ipop.status import LanHostStatus, Status
from ipop.testing.snapshots import link_info
from ipop.types import Endpoint, NodeId, Path, RelayPath

NOW = 1_800_000_000.0
ME, BOB, CAROL, DAVE = NodeId(1), NodeId(0xB0B), NodeId(0xCA201), NodeId(0xDA7E)
BOB_EP = Endpoint("203.0.113.20", 5800)
CONE = PublicView("203.0.113.5", symmetric=False, translated=True)
SYMMETRIC = PublicView("203.0.113.5", symmetric=True, translated=True)
LOCAL = LocalView(node_id="ab" * 20, node_name="alice", uptime_s=12.3456, owners={})


def _info(peer: NodeId, path: Path, *, rtt_s: float | None = 0.01, rx: float = NOW) -> LinkInfo:
    return link_info(
        peer,
        path,
        at=NOW - 60,
        rtt_s=rtt_s,
        last_rx=rx,
        keys_at=NOW - 30,
        bytes_in=10,
        bytes_out=20,
    )


def _snap(*links: LinkInfo, public: PublicView = CONE, **kw: object) -> NodeSnapshot:
    conns = tuple(ConnectionInfo(i.peer, i.path, (ConnectionKind.NEAR,), 0.0) for i in links)
    overlay = OverlaySnapshot(ME, True, 4.0, conns, ())
    return NodeSnapshot(node_id=ME, overlay=overlay, links=links, public=public, **kw)  # type: ignore[arg-type]


def _status(core: NodeSnapshot | None, **local: object) -> Status:
    return build_status(core, dataclasses.replace(LOCAL, **local), now=NOW)  # type: ignore[arg-type]


def test_a_direct_peer_shows_its_endpoint_vip_kinds_and_handshake_rtt() -> None:
    st = _status(_snap(_info(BOB, BOB_EP, rtt_s=0.0042)), owners={BOB: b"\x64\x40\x00\x02"})
    (bob,) = st.peers
    assert (bob.path, bob.endpoint, bob.vip) == ("direct", "203.0.113.20:5800", "100.64.0.2")
    assert bob.rtt_ms == 4.2 and bob.kinds == ["near"] and bob.why is None
    assert (bob.bytes_in, bob.bytes_out, bob.name) == (10, 20, "cert-name")
    assert st.self_.nat == "cone" and st.self_.routable and st.self_.uptime_s == 12.346


def test_a_relayed_peer_says_why_from_both_sides_flags() -> None:
    relayed = _info(CAROL, RelayPath(CAROL, BOB), rtt_s=None)
    # Carol never sent a HELLO: we cannot know her NAT yet.
    (row,) = _status(_snap(relayed)).peers
    assert (row.path, row.endpoint) == ("relayed", f"via {BOB.short()}")
    assert row.why is not None and "port guessing starts when traffic flows" in row.why
    # Both symmetric: nothing to guess.
    core = _snap(relayed, public=SYMMETRIC, peer_nat={CAROL: FLAG_SYMMETRIC | FLAG_TRANSLATED})
    (row,) = _status(core).peers
    assert row.why is not None and row.why.startswith("no direct path: both sides symmetric")


def test_a_port_guessed_peer_is_said_to_be_guessed() -> None:
    # We are symmetric, carol is a cone that translates: we play S, port guessing runs.
    relayed = _info(CAROL, RelayPath(CAROL, BOB))
    core = _snap(relayed, public=SYMMETRIC, peer_nat={CAROL: FLAG_TRANSLATED})
    (row,) = _status(core).peers
    assert row.why == "no direct path yet: guessing the symmetric side's port (retried every 30 s)"
    # netcheck's measurement beats peers' echoes for our side: echoes say both sides are
    # symmetric, netcheck measured a cone here, so the symmetric side's port is guessed.
    core = _snap(relayed, public=SYMMETRIC, peer_nat={CAROL: FLAG_SYMMETRIC})
    (row,) = _status(core).peers
    assert row.why is not None and row.why.startswith("no direct path: both sides symmetric")
    (row,) = _status(core, measured_nat=NatKind.CONE).peers
    assert row.why == why_relayed(core, CAROL, symmetric=False)
    assert row.why.startswith("no direct path yet: guessing")


def test_no_peers_and_no_core() -> None:
    st = _status(None, owners=None)
    assert st.peers == [] and st.self_.nat is None and st.self_.endpoints == []
    assert not st.self_.routable and st.drops == {} and st.counters == {}
    st = _status(_snap(public=PublicView(None, False, False)), owners=None)
    assert st.peers == []  # no data plane yet: no rows
    assert st.self_.nat == "none"  # routable and nobody saw another address
    assert st.counters == {"crl.number": 0}


def test_unlinked_peers_we_route_to_say_whether_a_shortcut_forms() -> None:
    owners = {BOB: bytes([100, 64, 0, 2]), DAVE: bytes([100, 64, 0, 4]), ME: bytes(4)}
    core = _snap(shortcuts={BOB: NOW - 1})
    rows = {p.node_id: p for p in _status(core, owners=owners, rtts={DAVE: (0.5, NOW)}).peers}
    assert set(rows) == {BOB.hex(), DAVE.hex()}  # never ourselves
    assert (
        rows[BOB.hex()].why
        == why_no_link(NOW - 1, NOW)
        == ("no link yet: routed over the ring while a shortcut forms")
    )
    assert rows[DAVE.hex()].why == "no link: routed over the ring"
    assert rows[DAVE.hex()].path == "overlay" and rows[DAVE.hex()].rtt_ms == 500.0


def test_a_quiet_direct_link_and_a_learned_vip() -> None:
    core = _snap(_info(BOB, BOB_EP, rx=NOW - 30))
    (row,) = _status(core, peer_vips={BOB: (IPv4Address("100.64.0.9"), NOW)}).peers
    assert row.vip == "100.64.0.9"
    assert row.why is not None and row.why.startswith("nothing heard for 30 s")


def test_router_mode_lists_lan_hosts_and_puts_core_drops_before_the_rest() -> None:
    hosts = (
        LanHostStatus(
            mac="0a:00:00:00:00:01", vip="100.64.5.1", names=[], kind="static", lease_s=None
        ),
    )
    core = _snap(
        drops={"link": {"replay": 1}, "overlay": {"bad_mac": 2}},
        counters={"link": {"handshake_ok": 3}},
        crl_number=7,
    )
    st = _status(
        core,
        lan_hosts=hosts,
        drops=({"vnet.no_such_vip": 4}, {"router.lan_rate_limited": 5}),
        counters=({"lan.csum_completed": 6},),
    )
    assert st.lan_hosts == list(hosts)
    assert list(st.drops.items()) == [
        ("link.replay", 1),
        ("overlay.bad_mac", 2),
        ("vnet.no_such_vip", 4),
        ("router.lan_rate_limited", 5),
    ]
    assert st.counters == {"link.handshake_ok": 3, "crl.number": 7, "lan.csum_completed": 6}
    assert '"lan_hosts"' in st.to_json()


def test_nat_kind_prefers_the_measurement_then_peers_echoes() -> None:
    assert nat_kind(None) is None and nat_kind(None, NatKind.SYMMETRIC) == "symmetric"
    assert nat_kind(_snap(public=SYMMETRIC)) == "symmetric"
    assert nat_kind(_snap(public=SYMMETRIC), NatKind.CONE) == "cone"
    unroutable = dataclasses.replace(
        _snap(public=PublicView(None, False, False)),
        overlay=OverlaySnapshot(ME, False, 1.0, (), ()),
    )
    assert nat_kind(unroutable) is None  # nobody told us anything yet
