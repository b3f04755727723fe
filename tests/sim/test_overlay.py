"""The overlay on the ideal fake link layer: join, routing, ring consistency, repair, relays.

Every scenario runs in virtual time from a fixed seed; topology (who sits behind which NAT)
is data passed to :func:`build`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import random
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipop.link.events import LinkDown, LinkUp, ObservedEndpoint
from ipop.nat.kinds import NatKind
from ipop.overlay.attempts import AttemptState
from ipop.overlay.events import Delivered, Routable
from ipop.overlay.messages import (
    FLAG_EXACT,
    FLAG_EXCLUDE_SRC,
    KIND_CTM,
    KIND_CTM_REPLY,
    KIND_PING,
    TYPE_ROUTED,
    ConnectToMe,
    ConnectToMeReply,
    Neighbours,
    Purpose,
    RelayForward,
    RelayRefused,
    Routed,
)
from ipop.overlay.node import OverlayConfig, OverlayNode
from ipop.overlay.ring import next_hop, next_hop_sorted, ring_neighbours, ring_neighbours_sorted
from ipop.overlay.table import ConnectionKind
from ipop.testing.fake_links import FakeLinkWorld, LinkMessage, fake_certificate
from ipop.testing.fake_origin import FakeKeyring, FakeOrigin
from ipop.testing.invariants import closest_owner, ring_violations, true_near
from ipop.types import RING, Endpoint, NodeId, Path, RelayPath

# The stub-links tests' signing secrets (the FakeLinkWorld has its own).
KEYRING = FakeKeyring()


def signed(
    keyring: FakeKeyring,
    flags: int,
    hops: int,
    kind: int,
    src: NodeId,
    dst: NodeId,
    payload: bytes,
    *,
    now: float,
) -> Routed:
    """A routed message that ``src`` really sent, as it looks after ``hops`` links."""
    msg = FakeOrigin(src, keyring).routed(flags, 64, kind, dst, None, payload, now=now)
    return dataclasses.replace(msg, hops=hops)


CFG = OverlayConfig()
PER_SIDE = CFG.near_per_side


def build(
    n: int,
    *,
    seed: int,
    stagger_s: float = 0.1,
    nat: Callable[[int, NodeId], NatKind] = lambda i, n: NatKind.NONE,
    ids: list[NodeId] | None = None,
) -> tuple[FakeLinkWorld, list[NodeId]]:
    """``n`` nodes joining one by one through node 0 (an open bootstrap)."""
    rng = random.Random(seed)
    world = FakeLinkWorld(rng=rng)
    ids = ids if ids is not None else [NodeId(rng.randrange(RING)) for _ in range(n)]
    t0 = world.now
    world.spawn(ids[0], config=CFG, bootstrap=[], seed=seed)
    boot = world.public_endpoint(ids[0])
    for i, node_id in enumerate(ids[1:], 1):
        world.spawn(
            node_id,
            config=CFG,
            bootstrap=[boot],
            nat=nat(i, node_id),
            start_at=t0 + stagger_s * i,
            seed=seed * 1000 + i,
        )
    return world, ids


def near_sets(world: FakeLinkWorld) -> dict[NodeId, frozenset[NodeId]]:
    return {n: world.node(n).near_peers() for n in world.alive_ids()}


def run_until_consistent(world: FakeLinkWorld, deadline: float, step: float = 2.0) -> float:
    """Advance until the ring is consistent; returns the virtual time it happened at."""
    while world.now < deadline:
        world.run_for(step)
        if not ring_violations(near_sets(world), per_side=PER_SIDE):
            return world.now
    violations = ring_violations(near_sets(world), per_side=PER_SIDE)
    raise AssertionError(f"ring not consistent by the deadline: {violations[:5]}")


def total_drops(world: FakeLinkWorld, reason: str) -> int:
    return sum(world.node(n).drops[reason] for n in world.alive_ids())


@functools.lru_cache(maxsize=1)
def joined_ring() -> tuple[FakeLinkWorld, list[NodeId], float]:
    """120 nodes joined through a single bootstrap (shared: building it is the slow part)."""
    world, ids = build(120, seed=11)
    t0 = world.now
    done = run_until_consistent(world, t0 + 120 * 0.1 + 90.0)
    # Let trimming settle so routing runs over the steady-state table.
    world.run_for(60.0)
    return world, ids, done - t0


def test_every_node_joins_through_one_bootstrap() -> None:
    world, ids, took = joined_ring()
    assert took <= 120 * 0.1 + 60.0
    for n in ids:
        assert any(isinstance(e, Routable) for e in world.hosts[n].events), n
        assert world.node(n).routable
    assert ring_violations(near_sets(world), per_side=PER_SIDE) == []
    # Trimming left a sparse graph, not the bootstrap's star: near + ~log2 N far each way.
    mean_links = sum(len(world.node(n).connected_peers()) for n in ids) / len(ids)
    assert mean_links < 30
    boot = world.node(ids[0]).snapshot()
    assert not boot.by_kind(ConnectionKind.LEAF)
    assert all(c.far for c in (world.node(n).snapshot() for n in ids[1:20]))


def test_routing_exact_delivery_and_hops() -> None:
    world, ids, _ = joined_ring()
    rng = random.Random(5)
    sent = []
    for i in range(300):
        src, dst = rng.sample(ids, 2)
        payload = b"exact-%d" % i
        assert world.node(src).send_routed(dst, KIND_PING, payload, exact=True, now=world.now)
        sent.append((src, dst, payload))
    world.run_for(2.0)
    got = {(d.src, n, d.payload): d for n in ids for d in world.hosts[n].delivered if d.exact}
    delivered = [got.get(s) for s in sent]
    route_success = sum(d is not None for d in delivered) / len(sent)
    assert route_success == 1.0
    mean_hops = sum(d.hops for d in delivered if d is not None) / len(sent)
    assert mean_hops <= math.log2(len(ids))


def test_routing_closest_delivery() -> None:
    world, ids, _ = joined_ring()
    rng = random.Random(6)
    keys = []
    for i in range(200):
        src = rng.choice(ids)
        key = NodeId(rng.randrange(RING))
        payload = b"closest-%d" % i
        world.node(src).send_routed(key, KIND_PING, payload, exact=False, now=world.now)
        keys.append((key, payload))
    world.run_for(2.0)
    where = {d.payload: n for n in ids for d in world.hosts[n].delivered if not d.exact}
    for key, payload in keys:
        assert where.get(payload) == closest_owner(ids, key)


def test_ttl_expiry_is_dropped_and_counted() -> None:
    world, ids, _ = joined_ring()
    src = ids[3]
    linked = set(world.node(src).connected_peers())
    dst = next(n for n in ids if n not in linked and n != src)
    before = total_drops(world, "ttl_expired")
    assert world.node(src).send_routed(dst, KIND_PING, b"short", exact=True, now=world.now, ttl=1)
    world.run_for(1.0)
    assert total_drops(world, "ttl_expired") == before + 1
    assert not [d for d in world.hosts[dst].delivered if d.payload == b"short"]


def test_spoofed_source_is_dropped() -> None:
    world, ids, _ = joined_ring()
    node = world.node(ids[7])
    peer = node.connected_peers()[0]
    now = world.now
    forged = signed(world.keyring, FLAG_EXACT, 0, KIND_PING, ids[50], ids[7], b"x", now=now)
    path = node.snapshot().connections[0].path
    before = node.drops["spoofed_src"]
    node.on_link_event(LinkMessage(peer, forged.encode(), path), now=now)
    assert node.drops["spoofed_src"] == before + 1
    assert node.next_event() is None
    # The same message one hop further along is a legitimate forward.
    fwd = signed(world.keyring, FLAG_EXACT, 1, KIND_PING, ids[50], ids[7], b"forwarded", now=now)
    node.on_link_event(LinkMessage(peer, fwd.encode(), path), now=now)
    ev = node.next_event()
    assert ev is not None and getattr(ev, "payload", None) == b"forwarded"


def test_a_forwarder_cannot_forge_or_alter_a_routed_origin() -> None:
    """Issue 13, finding 1: ``hops >= 1`` used to let any member name any ``src``."""
    world, ids, _ = joined_ring()
    node = world.node(ids[7])
    peer = node.connected_peers()[0]
    path = node.snapshot().connections[0].path
    now = world.now
    # The forwarder makes the message up in ids[50]'s name: signed with its own secret.
    made_up = FakeOrigin(peer, world.keyring).routed(
        FLAG_EXACT, 64, KIND_PING, ids[7], None, b"forged", now=now
    )
    forged = dataclasses.replace(made_up, src=ids[50], hops=3)
    # Or it alters a message ids[50] really sent.
    real = signed(world.keyring, FLAG_EXACT, 2, KIND_PING, ids[50], ids[7], b"real", now=now)
    altered = dataclasses.replace(real, payload=b"altered")
    # Or it replays one from long ago.
    old = signed(world.keyring, FLAG_EXACT, 2, KIND_PING, ids[50], ids[7], b"old", now=now - 600)
    before = node.drops.copy()
    for msg in (forged, altered, old):
        node.on_link_event(LinkMessage(peer, msg.encode(), path), now=now)
    assert node.next_event() is None
    assert node.drops["origin_bad_sig"] == before["origin_bad_sig"] + 2
    assert node.drops["origin_stale"] == before["origin_stale"] + 1


def test_repair_after_killing_30_percent() -> None:
    # Every third node behind a cone NAT: links to them need simultaneous open.
    world, ids = build(
        60, seed=21, nat=lambda i, n: NatKind.PORT_RESTRICTED_CONE if i % 3 == 0 else NatKind.NONE
    )
    run_until_consistent(world, world.now + 6.0 + 90.0)
    world.run_for(30.0)
    cone = {n for i, n in enumerate(ids) if i and i % 3 == 0}
    punched = [(a, b) for a, b in world.direct_links() if a in cone and b in cone]
    assert punched, "no link between two cone-NATed nodes: hole punching never happened"
    rng = random.Random(3)
    killed = rng.sample(ids[1:], 18)
    for k in killed:
        world.kill(k)
    t_kill = world.now
    repaired = run_until_consistent(world, t_kill + 60.0)
    assert repaired - t_kill <= 60.0
    world.run_for(world.failure_detect_s)
    for n in world.alive_ids():
        assert not set(world.node(n).connected_peers()) & set(killed)
    # Routing works again over the repaired ring.
    alive = world.alive_ids()
    for i in range(40):
        src, dst = rng.sample(alive, 2)
        world.node(src).send_routed(dst, KIND_PING, b"after-%d" % i, exact=True, now=world.now)
    world.run_for(2.0)
    got = sum(1 for n in alive for d in world.hosts[n].delivered if d.payload.startswith(b"after"))
    assert got == 40


def _silent_node(me: NodeId, cfg: OverlayConfig) -> OverlayNode:
    """A node whose links never come up (see _SilentLinks)."""
    return OverlayNode(
        me,
        _SilentLinks(me),
        rng=random.Random(1),
        config=cfg,
        bootstrap=[],
        origin=FakeOrigin(me, KEYRING),
    )


def test_relay_link_between_natted_near_neighbours() -> None:
    rng = random.Random(31)
    ids = sorted(NodeId(rng.randrange(RING)) for _ in range(12))
    a, b = ids[5], ids[6]  # ring neighbours, both behind symmetric NATs
    order = [ids[0], *[n for n in ids if n != ids[0]]]
    world, _ = build(
        12,
        seed=31,
        ids=order,
        stagger_s=0.5,
        nat=lambda i, n: NatKind.SYMMETRIC if n in (a, b) else NatKind.NONE,
    )
    run_until_consistent(world, world.now + 6.0 + 90.0)
    for me, other in ((a, b), (b, a)):
        snap = world.node(me).snapshot()
        row = next(c for c in snap.connections if c.peer == other)
        assert isinstance(row.path, RelayPath), "near neighbours should be relayed"
        assert ConnectionKind.NEAR in row.kinds
        via = row.path.via
        relay_snap = world.node(via).snapshot()
        assert {c.peer for c in relay_snap.relay} >= {a, b}
    assert a in world.node(b).near_peers() and b in world.node(a).near_peers()
    # Traffic between them crosses the relayed link (one overlay hop).
    world.node(a).send_routed(b, KIND_PING, b"through the relay", exact=True, now=world.now)
    world.node(b).send_routed(a, KIND_PING, b"and back", exact=True, now=world.now)
    world.run_for(1.0)
    got_b = [d for d in world.hosts[b].delivered if d.payload == b"through the relay"]
    got_a = [d for d in world.hosts[a].delivered if d.payload == b"and back"]
    assert got_b and got_b[0].hops == 1 and got_a
    # The relay keeps holding while the neighbours gossip over the tunnel.
    world.run_for(120.0)
    assert ring_violations(near_sets(world), per_side=PER_SIDE) == []
    assert isinstance(
        next(c for c in world.node(a).snapshot().connections if c.peer == b).path, RelayPath
    )


class _SilentLinks:
    """Links that accept every command and never answer (attempts stay pending)."""

    def __init__(self, local_id: NodeId) -> None:
        self.local_id = local_id
        self.connects: list[Path] = []

    def connect(
        self, path: Path, *, now: float, expected: NodeId | None = None, **_: object
    ) -> None:
        self.connects.append(path)

    def send_run(
        self,
        peer: NodeId,
        payloads: list[bytes],
        *,
        now: float,
        head: bytes = b"",
        strip: bytes = b"",
    ) -> int:
        return 0  # no runs: the overlay sends one by one

    def send(self, peer: NodeId, payload: bytes, *, now: float) -> None: ...

    def close(self, peer: NodeId, *, now: float) -> None: ...

    def is_up(self, peer: NodeId) -> bool:
        return False

    def peer_moved(self, peer: NodeId, *, now: float) -> None: ...


def test_the_larger_id_yields_before_keying_a_relayed_link() -> None:
    """Both ends of a pair that cannot punch want the link: the smaller id relays first, the
    larger relay_yield_s later (two relayed handshakes crossing through different relays can
    leave the ends on different keys), even when its direct attempts fail early."""
    me = NodeId(1000)
    smaller, larger = NodeId(10), NodeId(5000)
    for peer, wait in (
        (larger, CFG.relay_after_s),
        (smaller, CFG.relay_after_s + CFG.relay_yield_s),
    ):
        node = _silent_node(me, CFG)
        # No endpoint to try: every direct path has "failed" at once.
        node.attempts.start(peer, [], set(), set(), relay_allowed=True, candidates=[], now=0.0)
        pend = node.attempts.get(peer)
        assert pend is not None
        assert pend.relay_at == wait and pend.state is AttemptState.DIRECT


def test_lan_endpoints_of_another_lan_are_not_tried() -> None:
    """A peer's LAN endpoint is tried only when the peer's public address is ours (one NAT)."""
    me = NodeId(1000)
    cfg = OverlayConfig(local_endpoints=(Endpoint("198.18.0.2", 5800),))
    node = _silent_node(me, cfg)
    far_lan, far_pub = Endpoint("198.18.7.2", 5800), Endpoint("203.0.113.9", 40000)
    # Before anyone told us our public address we cannot tell: everything is kept.
    assert node.ctm.worth_trying([far_lan, far_pub]) == [far_lan, far_pub]
    node.on_link_event(ObservedEndpoint(Endpoint("198.51.100.4", 1234), NodeId(7)), now=0.0)
    assert node.ctm.worth_trying([far_lan, far_pub]) == [far_pub]
    assert node.stats["lan_endpoints_skipped"] == 1
    # Behind our own NAT (same public address): the LAN endpoint is the way in.
    near_lan, near_pub = Endpoint("198.18.0.3", 5800), Endpoint("198.51.100.4", 999)
    assert node.ctm.worth_trying([near_lan, near_pub]) == [near_lan, near_pub]
    # Only LAN endpoints known, or loopback labs: nothing else to try, all kept.
    assert node.ctm.worth_trying([far_lan]) == [far_lan]
    loop = [Endpoint("127.0.0.1", 5801)]
    assert node.ctm.worth_trying(loop) == loop


@functools.lru_cache(maxsize=1)
def _pair() -> tuple[FakeLinkWorld, OverlayNode, NodeId]:
    world, ids = build(2, seed=41)
    run_until_consistent(world, world.now + 30.0)
    return world, world.node(ids[1]), ids[0]


def pair() -> tuple[FakeLinkWorld, OverlayNode, NodeId]:
    """Two linked nodes; rebuilt when an example closed the link (a valid CLOSING is fine)."""
    world, node, peer = _pair()
    if peer not in node.connected_peers():
        _pair.cache_clear()
        world, node, peer = _pair()
    return world, node, peer


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.binary(max_size=200), st.booleans())
def test_garbage_never_raises_out_of_on_link_event(data: bytes, known_peer: bool) -> None:
    world, node, peer = pair()
    sender = peer if known_peer else NodeId(12345)
    path = world.public_endpoint(peer)
    node.on_link_event(LinkMessage(sender, data, path), now=world.now)
    while node.next_event() is not None:
        pass


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.integers(0, 3), st.integers(1, 255), st.binary(max_size=80))
def test_routed_to_us_is_delivered_handled_or_counted(flags: int, kind: int, body: bytes) -> None:
    world, node, peer = pair()
    path = world.public_endpoint(peer)
    msg = signed(world.keyring, flags, 0, kind, peer, node.local_id, body, now=world.now)
    before = node.drops.copy()
    node.on_link_event(LinkMessage(peer, msg.encode(), path), now=world.now)
    events = []
    while (ev := node.next_event()) is not None:
        events.append(ev)
    if kind <= 0x7F:
        assert [e for e in events if isinstance(e, Delivered) and e.payload == body]
    elif kind > 0x81:
        assert node.drops["unknown_kind"] == before["unknown_kind"] + 1
    # 0x80/0x81 (CTM, CTM_REPLY): a garbage body is a counted drop, a valid one is handled;
    # either way nothing escaped on_link_event.


@pytest.mark.parametrize("purpose_byte", [0, 5, 255])
def test_bad_ctm_purpose_is_dropped(purpose_byte: int) -> None:
    world, node, peer = pair()
    path = world.public_endpoint(peer)
    body = bytes(4) + bytes([purpose_byte]) + peer.to_bytes() + b"\x00"
    msg = signed(world.keyring, 0, 0, 0x80, peer, node.local_id, body, now=world.now)
    before = node.drops["bad_purpose"]
    node.on_link_event(LinkMessage(peer, msg.encode(), path), now=world.now)
    assert node.drops["bad_purpose"] == before + 1


# --- ring arithmetic fast paths and relay failures ---------------------------------------------


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.integers(0, 63), min_size=1, max_size=14, unique=True),
    st.integers(0, 63),
    st.booleans(),
    st.integers(0, 3),
    st.integers(1, 3),
)
def test_sorted_ring_helpers_agree_with_the_reference(
    values: list[int], dst_v: int, exact: bool, excl: int, per_side: int
) -> None:
    """next_hop_sorted / ring_neighbours_sorted pick exactly what the O(n) versions pick.

    Small ids (0..63) make ties and wrap-around common; the distance arithmetic is the same
    on the full 160-bit ring.
    """
    local, peers = NodeId(values[0]), [NodeId(v) for v in values[1:]]
    dst = NodeId(dst_v)
    exclude = [None, local, peers[0] if peers else None, dst][excl]
    ring = sorted(p.value for p in peers)
    want = next_hop(local, dst, peers, exact=exact, exclude=exclude)
    got = next_hop_sorted(local, dst, ring, exact=exact, exclude=exclude)
    assert got == (None if want is None else want.value)
    near = ring_neighbours(local, peers, per_side)
    assert frozenset(NodeId(v) for v in ring_neighbours_sorted(local, ring, per_side)) == near
    everyone = [local, *peers]
    true = {n: true_near(n, everyone, per_side) for n in everyone}
    assert ring_violations(true, per_side=per_side) == []


class _StubLinks:
    """Records what the overlay asks of its link layer; every send succeeds."""

    def __init__(self, local_id: NodeId) -> None:
        self.local_id = local_id
        self.sent: list[tuple[NodeId, bytes]] = []
        self.closed: list[NodeId] = []
        self.connects: list[Path] = []

    def connect(
        self, path: Path, *, now: float, expected: NodeId | None = None, **_: object
    ) -> None:
        self.connects.append(path)

    def send_run(
        self,
        peer: NodeId,
        payloads: list[bytes],
        *,
        now: float,
        head: bytes = b"",
        strip: bytes = b"",
    ) -> int:
        return 0  # no runs: the overlay sends one by one

    def send(self, peer: NodeId, payload: bytes, *, now: float) -> None:
        self.sent.append((peer, payload))

    def close(self, peer: NodeId, *, now: float) -> None:
        self.closed.append(peer)

    def is_up(self, peer: NodeId) -> bool:
        return True

    def peer_moved(self, peer: NodeId, *, now: float) -> None: ...


def _node_with(links: _StubLinks, rows: dict[NodeId, Path]) -> OverlayNode:
    node = OverlayNode(
        links.local_id,
        links,
        rng=random.Random(1),
        config=OverlayConfig(),
        bootstrap=[],
        origin=FakeOrigin(links.local_id, KEYRING),
    )
    node.start(now=0.0)
    for peer, path in rows.items():
        node.on_link_event(LinkUp(peer, fake_certificate(peer), path, None), now=1.0)
    return node


def test_relay_without_a_link_to_the_target_tells_the_origin() -> None:
    """X refuses RELAY_FORWARD to a peer it holds no direct link to, and says so to A."""
    x, a, t = NodeId(100), NodeId(200), NodeId(300)
    links = _StubLinks(x)
    node = _node_with(links, {a: Endpoint("198.51.100.2", 5800)})
    links.sent.clear()
    node.on_link_event(
        LinkMessage(a, RelayForward(t, b"sealed").encode(), Endpoint("198.51.100.2", 5800)), now=2.0
    )
    assert node.drops["relay_no_link"] == 1
    assert links.sent == [(a, RelayRefused(t).encode())]


def test_relay_refused_drops_the_dead_relayed_link_at_once() -> None:
    """A's link to T runs through X; X says it cannot reach T: A forgets T and closes it."""
    a, x, t = NodeId(100), NodeId(200), NodeId(300)
    links = _StubLinks(a)
    node = _node_with(links, {x: Endpoint("198.51.100.2", 5800), t: RelayPath(via=x, peer=t)})
    assert t in node.connected_peers()
    # The link to the relay is held (RELAY) while our relayed link uses it.
    node.wrap_relay(b"keepalive", RelayPath(via=x, peer=t), now=2.0)
    assert ConnectionKind.RELAY in next(c for c in node.snapshot().connections if c.peer == x).kinds
    # A refusal from someone else, or about a link that does not run through X, changes nothing.
    node.on_link_event(LinkMessage(t, RelayRefused(t).encode(), RelayPath(via=x, peer=t)), now=3.0)
    assert t in node.connected_peers() and node.drops["relay_refused_stale"] == 1
    node.on_link_event(
        LinkMessage(x, RelayRefused(t).encode(), Endpoint("198.51.100.2", 5800)), now=3.0
    )
    assert t not in node.connected_peers()
    assert links.closed == [t]
    assert node.stats["relay_refused"] == 1


@functools.lru_cache(maxsize=1)
def small_ring() -> tuple[FakeLinkWorld, list[NodeId]]:
    world, ids = build(24, seed=41)
    run_until_consistent(world, world.now + 24 * 0.1 + 60.0)
    return world, ids


def test_routable_needs_links_to_the_nearest_known_node_on_each_side() -> None:
    world, ids = small_ring()
    me = ids[5]
    node = world.node(me)
    assert node.routable
    ring = sorted(n.value for n in ids)
    succ = ring[(ring.index(me.value) + 1) % len(ring)]
    gap = (succ - me.value) % RING
    assert gap > 2
    # Someone tells us about a node between us and our successor that we hold no link to.
    # Hearsay alone does not hold us back (anyone can list made-up ids) ...
    between = NodeId((me.value + gap // 2) % RING)
    keeper = node.near_keeper
    keeper.seen.put(between, ids[0], world.now + 30.0, now=world.now)
    node.near_upkeep.update_routable(world.now)
    assert node.routable
    # ... but once that node proved itself to us, our successor side is not linked, and we
    # are not routable until it is.
    keeper.proven.add(between)
    node.near_upkeep.update_routable(world.now)
    assert not node.routable
    keeper.seen.discard(between)
    node.near_upkeep.update_routable(world.now)
    assert node.routable


def test_silent_near_peer_is_pulled_then_closed() -> None:
    world, ids = build(16, seed=43)
    run_until_consistent(world, world.now + 16 * 0.1 + 60.0)
    cfg = OverlayConfig()
    node = world.node(ids[3])
    peer = sorted(node.near_peers())[0]
    # Late gossip: pulled, the pull is answered, nothing is closed.
    node.near_upkeep.heard[peer] = world.now - cfg.near_suspect_s - 0.5
    world.run_for(3.0)
    assert node.stats["near_silent_pulled"] >= 1
    assert node.stats["near_silent_closed"] == 0 and peer in node.near_peers()
    # Silent past near_dead_s (as a crashed peer is): closed, and the peer is told.
    before = world.node(peer).stats["near_silent_closed"]
    node.near_upkeep.heard[peer] = world.now - cfg.near_dead_s - 0.5
    world.run_for(1.0)
    assert node.stats["near_silent_closed"] == 1
    assert world.node(peer).stats["near_silent_closed"] == before
    # Both are alive and true neighbours: the ring repairs the link.
    run_until_consistent(world, world.now + 30.0)
    assert peer in node.near_peers()


def _routed_from(src: NodeId, dst: NodeId, payload: bytes, *, now: float = 2.0) -> bytes:
    return signed(KEYRING, FLAG_EXACT, 1, KIND_PING, src, dst, payload, now=now).encode()


def test_an_answer_finds_a_new_node_back_the_way_its_request_came() -> None:
    """Y holds links to P and Q only; X (not linked to Y, and nearer Y than P or Q is) reached
    Y through P. Y's answer to X is at a local minimum: it goes back through P, not dropped."""
    y, x, p, q = NodeId(500), NodeId(520), NodeId(100), NodeId(900)
    links = _StubLinks(y)
    ep_p, ep_q = Endpoint("198.51.100.2", 5800), Endpoint("198.51.100.3", 5800)
    node = _node_with(links, {p: ep_p, q: ep_q})
    node.on_link_event(LinkMessage(p, _routed_from(x, y, b"request"), ep_p), now=2.0)
    ev = node.next_event()
    while ev is not None and not isinstance(ev, Delivered):
        ev = node.next_event()
    assert isinstance(ev, Delivered) and ev.payload == b"request"
    links.sent.clear()
    # A message we forward for somebody else (no source detour) toward X: back through P too.
    z = NodeId(300)
    node.on_link_event(LinkMessage(q, _routed_from(z, x, b"answer"), ep_q), now=2.5)
    assert [peer for peer, _ in links.sent] == [p]
    assert node.drops["no_route"] == 0 and node.stats["routed_via_reverse"] == 1
    # The hint is a hint: it expires, and then the same message has no route. What goes out
    # is no message but a pull of the neighbour lists of the two peers nearest X (whoever
    # links to X is missing from our view of the ring): P and Q, nearest first.
    links.sent.clear()
    node.on_link_event(LinkMessage(q, _routed_from(z, x, b"late"), ep_q), now=60.0)
    assert node.drops["no_route"] == 1 and node.stats["no_route_pulled"] == 1
    assert [peer for peer, _ in links.sent] == [q, p]
    assert all(Neighbours.decode(data).reply_wanted for _, data in links.sent)
    # At most one pull per neighbours_reply_min_s, however many messages find no route.
    links.sent.clear()
    node.on_link_event(LinkMessage(q, _routed_from(z, x, b"later"), ep_q), now=60.1)
    assert links.sent == [] and node.drops["no_route"] == 2


def test_the_source_hands_an_exact_message_to_its_nearest_peer_at_a_local_minimum() -> None:
    """Y's own message to X, nearer Y than any of Y's peers: it goes to the peer nearest X
    (which may hold a link to X); a message Y merely forwards is not detoured."""
    y, x, p, q = NodeId(500), NodeId(520), NodeId(100), NodeId(900)
    links = _StubLinks(y)
    ep_p, ep_q = Endpoint("198.51.100.2", 5800), Endpoint("198.51.100.3", 5800)
    node = _node_with(links, {p: ep_p, q: ep_q})
    links.sent.clear()
    assert node.send_routed(x, KIND_PING, b"mine", exact=True, now=2.0)
    assert [peer for peer, _ in links.sent] == [q]
    # Marked so that Q (or anyone after it) does not hand it straight back to us.
    sent = Routed.decode(links.sent[0][1])
    assert sent.flags & FLAG_EXCLUDE_SRC and sent.dst == x and sent.payload == b"mine"
    assert node.stats["routed_source_detour"] == 1
    links.sent.clear()
    z = NodeId(300)
    node.on_link_event(LinkMessage(p, _routed_from(z, x, b"theirs"), ep_p), now=2.0)
    assert node.drops["no_route"] == 1  # not forwarded; only neighbour lists pulled
    assert not any(data[0] == TYPE_ROUTED for _, data in links.sent)


def test_near_ctm_with_no_closer_link_detours_through_the_nearest_peer() -> None:
    """A node linked only to far peers (its bootstraps) hears of a neighbour from a node it
    cannot link to: the CTM leaves through the far peer nearest the target, marked so that no
    hop hands it back (EXCLUDE_SRC), instead of dying as ctm_no_route (1,000 nodes, seed 2:
    a symmetric joiner whose only answer came from a cone node stayed off the ring forever).
    """
    a, informer, near = NodeId(1000), NodeId(1300), NodeId(1200)
    far1, far2 = NodeId(RING // 2), NodeId(RING // 4)
    links = _StubLinks(a)
    node = _node_with(
        links, {far1: Endpoint("198.51.100.2", 5800), far2: Endpoint("198.51.100.3", 5800)}
    )
    links.sent.clear()
    node.near_keeper.consider([near], informer, now=2.0)
    node.handle_timer(now=5.0)
    ctms = [
        (peer, msg)
        for peer, raw in links.sent
        if raw[:1] == b"\x01" and (msg := Routed.decode(raw)).kind == KIND_CTM and msg.dst == near
    ]
    assert node.stats["ctm_no_route"] == 0
    assert len(ctms) == 1
    peer, msg = ctms[0]
    assert peer == far2  # the linked peer nearest the target, though farther than we are
    assert msg.flags & FLAG_EXACT and msg.flags & FLAG_EXCLUDE_SRC and msg.via is None


def _ctms_to(links: _StubLinks, dst: NodeId) -> list[ConnectToMe]:
    out = []
    for _peer, raw in links.sent:
        if raw[:1] == b"\x01":
            msg = Routed.decode(raw)
            if msg.kind == KIND_CTM and msg.dst == dst:
                out.append(ConnectToMe.decode(msg.payload))
    return out


def _reply(node: OverlayNode, via: NodeId, src: NodeId, token: int, listed: list[NodeId]) -> None:
    """``src``'s CTM_REPLY to ``node`` arriving over its link to ``via``."""
    ep = Endpoint("198.18.7.2", 5800)
    body = ConnectToMeReply(token, (ep, Endpoint("203.0.113.70", 5800)), tuple(listed)).encode()
    msg = signed(KEYRING, FLAG_EXACT, 2, KIND_CTM_REPLY, src, node.local_id, body, now=3.0)
    node.on_link_event(LinkMessage(via, msg.encode(), Endpoint("198.51.100.2", 5800)), now=3.0)


def test_near_peer_with_no_common_relay_gets_one_through_a_recruited_helper() -> None:
    """T cannot be linked directly and lists no peer we hold directly: we ask a few of its
    listed peers for direct links, and relay to T through the first that comes up (400 nodes,
    30% churn, seed 3: every ring violation left after 60 s was such a pair).
    """
    a, far, t = NodeId(1000), NodeId(RING // 2), NodeId(1200)
    listed = [NodeId(1100 + i) for i in range(6)]
    links = _StubLinks(a)
    node = _node_with(links, {far: Endpoint("198.51.100.2", 5800)})
    node.ctm.send(t, Purpose.NEAR, exact=True, now=2.0)
    (ctm,) = _ctms_to(links, t)
    _reply(node, far, t, ctm.token, listed)
    # No relay candidate in T's answer: helpers are asked (a few, not all).
    helpers = [h for h in listed if _ctms_to(links, h)]
    assert 1 <= len(helpers) < len(listed)
    assert node.stats["relay_helpers_asked"] == len(helpers)
    # A helper answers and its link comes up directly: our pending link to T relays through it.
    h = helpers[0]
    (hctm,) = _ctms_to(links, h)
    _reply(node, far, h, hctm.token, [t])
    node.on_link_event(
        LinkUp(h, fake_certificate(h), Endpoint("203.0.113.71", 5800), None), now=4.0
    )
    node.handle_timer(now=9.0)
    assert RelayPath(via=h, peer=t) in links.connects
    # The helper's own attempt was direct only: no relay toward the helper itself.
    assert not [p for p in links.connects if isinstance(p, RelayPath) and p.peer == h]


def test_a_peer_turned_near_after_long_silence_is_suspect_at_once() -> None:
    """A far peer we have not heard from moves into the near set (its neighbours between us
    died): pulled at once and closed near_suspect_s sooner than a freshly heard near peer, so
    a run of dead nodes behind a dead neighbour costs near_dead_s - near_suspect_s each, not
    near_dead_s (150 nodes, 30% churn: ~8 s of the repair time).
    """
    cfg = OverlayConfig()
    a, far = NodeId(1000), NodeId(RING // 2)
    near = [NodeId(1000 + d) for d in (-30, -20, -10, 10, 20, 30)]
    links = _StubLinks(a)
    node = _node_with(links, {p: Endpoint("198.51.100.2", 5800) for p in [*near, far]})
    assert far not in node.near_peers()
    t = 100.0
    for p in near:
        node.on_link_event(LinkDown(p, "timeout"), now=t)
    assert node.near_peers() == {far}
    links.sent.clear()
    node.handle_timer(now=t + 1.0)
    assert node.stats["near_silent_pulled"] >= 1
    assert any(peer == far and raw[:1] != b"\x01" for peer, raw in links.sent)
    now = t + 1.0
    while node.stats["near_silent_closed"] == 0 and now < t + 30.0:
        now += 1.0
        node.handle_timer(now=now)
    assert node.stats["near_silent_closed"] == 1 and far in links.closed
    assert now - t <= cfg.near_dead_s - cfg.near_suspect_s + 2.0


def test_made_up_neighbours_cannot_hold_a_ring_back() -> None:
    """Issue 13, finding 2: an insider lists ids it made up, between each of its peers and their
    neighbours. They may cost a CONNECT_TO_ME each (nobody answers), but only an id that proved
    itself to a node may keep that node from being routable (before: 11 of 40 were not)."""
    world, ids = build(40, seed=5)
    run_until_consistent(world, world.now + 100)
    world.run_for(20)
    attacker = world.node(ids[5])
    made_up: set[NodeId] = set()
    for _ in range(30):
        for peer in attacker.connected_peers():
            fakes = tuple(NodeId((peer.value + d * 1_000_003) % RING) for d in range(-24, 24) if d)
            made_up.update(fakes)
            attacker._send(peer, Neighbours(False, fakes).encode(), world.now)
        world.run_for(1.0)
    honest = [n for n in ids if n != ids[5]]
    assert [n for n in honest if not world.node(n).routable] == []
    assert not ring_violations(near_sets(world), per_side=PER_SIDE)
    assert not any(made_up & world.node(n).near_peers() for n in honest)
