"""The parts NodeCore holds, each on its own public interface: RouteProbes (ipop.routes),
ShortcutKeeper (ipop.shortcuts), Punching and public_view (ipop.punching). The overlay is a
recording stand-in: these parts only call it."""

from __future__ import annotations

import collections
import random
from typing import cast

from ipop import timing
from ipop.journal import Journal
from ipop.link.pmtu import PROBE_TAG, ack_payload, probe_payload
from ipop.nat.portguess import PortGuessing
from ipop.overlay.events import Delivered
from ipop.overlay.messages import KIND_BIRTHDAY, KIND_PMTU
from ipop.overlay.node import OverlayNode
from ipop.punching import NO_VIEW, PublicView, Punching, public_view
from ipop.routes import ROUTE_PROBED_MAX, ROUTED_IP_MTU, RouteProbes
from ipop.shortcuts import ShortcutKeeper
from ipop.types import Endpoint, NodeId, Path, SocketPath
from ipop.wire.header import DATA_MIN_BYTES

NOW = 1_800_000_000.0
ME, PEER = NodeId(1), NodeId(2)


class _Overlay:
    """Records what the parts ask of the overlay; answers what a test sets."""

    def __init__(self) -> None:
        self.routed: list[tuple[NodeId, int, bytes, int | None]] = []
        self.direct: list[tuple[NodeId, int, bytes]] = []
        self.asked: list[NodeId] = []
        self.dropped: list[NodeId] = []
        self.linked: set[NodeId] = set()
        self.direct_ok = False
        self.observed: tuple[Endpoint, ...] = ()
        self.local_endpoints: tuple[Endpoint, ...] = ()
        self.hosts: frozenset[str] = frozenset()

    def send_routed(
        self,
        dst: NodeId,
        kind: int,
        payload: bytes,
        *,
        exact: bool,
        now: float,
        cert_budget: int | None = None,
    ) -> bool:
        self.routed.append((dst, kind, payload, cert_budget))
        return True

    def send_direct(self, peer: NodeId, kind: int, payload: bytes, *, now: float) -> bool:
        if self.direct_ok:
            self.direct.append((peer, kind, payload))
        return self.direct_ok

    def is_linked(self, peer: NodeId) -> bool:
        return peer in self.linked

    def request_shortcut(self, peer: NodeId, *, now: float) -> None:
        self.asked.append(peer)

    def drop_shortcut(self, peer: NodeId, *, now: float) -> None:
        self.dropped.append(peer)

    def observed_endpoints(self) -> tuple[Endpoint, ...]:
        return self.observed

    def endpoints(self) -> tuple[Endpoint, ...]:
        return self.local_endpoints

    def peer_hosts(self, peer: NodeId) -> frozenset[str]:
        return self.hosts


def _as_overlay(fake: _Overlay) -> OverlayNode:
    return cast(OverlayNode, fake)


# --- RouteProbes ----------------------------------------------------------------------------


def test_a_route_ip_flows_over_is_probed_at_once_up_to_a_routed_hops_size() -> None:
    fake, stats = _Overlay(), collections.Counter[str]()
    routes = RouteProbes(_as_overlay(fake), stats)
    routes.probe(PEER, NOW)
    assert routes.used == {PEER: NOW} and PEER in routes.prober.wanted
    assert fake.routed and {(d, k) for d, k, _, _ in fake.routed} == {(PEER, KIND_PMTU)}
    # The largest probe is as large on every hop as a routed IP packet of ROUTED_IP_MTU.
    assert max(len(p) for _, _, p, _ in fake.routed) == ROUTED_IP_MTU
    assert routes.cert_budget(PEER) is None  # no size known: the default rule
    sent = len(fake.routed)
    routes.probe(PEER, NOW + 1)  # already probed: only marked used
    assert len(fake.routed) == sent and routes.used == {PEER: NOW + 1}


def test_the_probed_routes_are_bounded_least_recently_used_first_out() -> None:
    stats = collections.Counter[str]()
    routes = RouteProbes(_as_overlay(_Overlay()), stats)
    for i in range(ROUTE_PROBED_MAX + 2):
        routes.probe(NodeId(10 + i), NOW + i)
    assert len(routes.used) == ROUTE_PROBED_MAX == len(routes.prober.wanted)
    assert NodeId(10) not in routes.used and NodeId(11) not in routes.prober.wanted
    assert stats["route_probe_evicted"] == 2


def test_routes_are_forgotten_when_idle_or_linked() -> None:
    fake = _Overlay()
    routes = RouteProbes(_as_overlay(fake), collections.Counter())
    routes.probe(PEER, NOW)
    routes.probe(NodeId(3), NOW + timing.ROUTE_PROBE_IDLE_S / 2)
    routes.probe(NodeId(4), NOW + timing.ROUTE_PROBE_IDLE_S / 2)
    fake.linked.add(NodeId(4))
    routes.expire(NOW + timing.ROUTE_PROBE_IDLE_S)
    assert list(routes.used) == [NodeId(3)] and routes.prober.wanted == {NodeId(3)}


def test_a_routed_probe_is_answered_an_ack_taken_and_garbage_counted() -> None:
    fake, stats = _Overlay(), collections.Counter[str]()
    routes = RouteProbes(_as_overlay(fake), stats)
    probe = probe_payload(7, 200)
    routes.on_probe(Delivered(PEER, ME, KIND_PMTU, probe, hops=2, exact=True), NOW)
    assert fake.routed == [(PEER, KIND_PMTU, ack_payload(7), None)]
    assert stats["route_probes_answered"] == 1
    # An ack of a probe we never sent is the prober's to count (late).
    routes.on_probe(Delivered(PEER, ME, KIND_PMTU, ack_payload(9), hops=2, exact=True), NOW)
    assert routes.prober.stats["late_acks"] == 1 and not stats["bad_route_probe"]
    # A probe that was not for us exactly, and a truncated message: counted as bad.
    routes.on_probe(Delivered(PEER, ME, KIND_PMTU, probe, hops=2, exact=False), NOW)
    routes.on_probe(Delivered(PEER, ME, KIND_PMTU, bytes([PROBE_TAG]), hops=2, exact=True), NOW)
    assert stats["bad_route_probe"] == 2 and len(fake.routed) == 1


def test_a_routes_acks_set_its_size_and_the_certificate_budget() -> None:
    fake = _Overlay()
    routes = RouteProbes(_as_overlay(fake), collections.Counter())
    routes.probe(PEER, NOW)
    small = min(fake.routed, key=lambda r: len(r[2]))[2]  # the smallest probe of the round
    probe_id = int.from_bytes(small[2:6], "big")
    ack = Delivered(PEER, ME, KIND_PMTU, ack_payload(probe_id), hops=2, exact=True)
    routes.on_probe(ack, NOW + 0.1)
    t = routes.next_time()
    assert t is not None
    routes.send_due(t)  # the round ends: its result is the one acknowledged size
    assert routes.prober.limits[PEER] == len(small) + DATA_MIN_BYTES
    budget = routes.cert_budget(PEER)
    assert budget is not None and budget < len(small) + 100


# --- ShortcutKeeper -------------------------------------------------------------------------


def test_data_asks_a_shortcut_once_per_retry_interval_and_anew_after_a_roam() -> None:
    fake = _Overlay()
    keeper = ShortcutKeeper(_as_overlay(fake), collections.Counter())
    keeper.ask(PEER, NOW)
    keeper.ask(PEER, NOW + timing.SHORTCUT_RETRY_S / 2)
    assert fake.asked == [PEER] and keeper.peers() == {PEER: NOW}
    keeper.ask(PEER, NOW + timing.SHORTCUT_RETRY_S)
    assert fake.asked == [PEER, PEER]
    keeper.roamed()
    keeper.ask(PEER, NOW + timing.SHORTCUT_RETRY_S + 1)
    assert fake.asked == [PEER] * 3


def test_idle_and_surplus_shortcuts_are_released() -> None:
    fake, stats = _Overlay(), collections.Counter[str]()
    keeper = ShortcutKeeper(_as_overlay(fake), stats)
    for i in range(timing.SHORTCUT_MAX + 3):
        keeper.ask(NodeId(10 + i), NOW + i / 10)
    keeper.used[NodeId(10)] = NOW - timing.SHORTCUT_IDLE_S  # idle: no data since
    keeper.expire(NOW + 20)
    # The idle one, then the two least recently used of the rest.
    assert fake.dropped == [NodeId(10), NodeId(11), NodeId(12)]
    assert len(keeper.used) == timing.SHORTCUT_MAX and stats["shortcut_released"] == 3
    assert NodeId(11) not in keeper.asked  # released: data asks again


def test_old_asks_are_forgotten_once_the_table_is_large() -> None:
    keeper = ShortcutKeeper(_as_overlay(_Overlay()), collections.Counter())
    for i in range(300):
        keeper.ask(NodeId(10 + i), NOW)
    keeper.ask(NodeId(5), NOW + timing.SHORTCUT_RETRY_S)
    keeper.forget_old_asks(NOW + timing.SHORTCUT_RETRY_S)
    assert keeper.asked == {NodeId(5): NOW + timing.SHORTCUT_RETRY_S}


# --- Punching, public_view ------------------------------------------------------------------


def test_the_public_view_reads_the_observed_endpoints() -> None:
    fake = _Overlay()
    assert public_view(_as_overlay(fake)) == NO_VIEW
    fake.local_endpoints = (Endpoint("198.18.0.2", 5800),)
    fake.observed = (Endpoint("203.0.113.2", 5800),)
    assert public_view(_as_overlay(fake)) == PublicView("203.0.113.2", False, False)
    fake.observed = (Endpoint("203.0.113.2", 40000), Endpoint("203.0.113.2", 40001))
    assert public_view(_as_overlay(fake)) == PublicView("203.0.113.2", True, True)


def _punching(fake: _Overlay) -> tuple[Punching, PortGuessing, Journal, list[tuple[bytes, Path]]]:
    out: list[tuple[bytes, Path]] = []
    birthday, journal = PortGuessing(rng=random.Random(3)), Journal()
    return Punching(_as_overlay(fake), birthday, journal, out.extend), birthday, journal, out


def test_no_hello_before_anyone_told_us_our_public_address() -> None:
    fake = _Overlay()
    punching, _, journal, _ = _punching(fake)
    punching.guess(PEER, NOW)
    assert not fake.routed and not fake.direct and not journal.drain()


def test_a_hello_goes_direct_when_linked_else_routed_and_public_endpoints_first() -> None:
    fake = _Overlay()
    fake.local_endpoints = (Endpoint("198.18.0.2", 5800),)
    fake.observed = (Endpoint("203.0.113.2", 40000),)
    punching, _, journal, _ = _punching(fake)
    assert punching.advertised() == (*fake.observed, *fake.local_endpoints)
    punching.guess(PEER, NOW)
    assert [(d, k) for d, k, _, _ in fake.routed] == [(PEER, KIND_BIRTHDAY)]
    assert journal.drain()  # the punch is in the journal
    fake.direct_ok = True
    punching.guess(NodeId(3), NOW)
    assert [(d, k) for d, k, _ in fake.direct] == [(NodeId(3), KIND_BIRTHDAY)]
    punching.guess(PEER, NOW + 1)  # asked lately: the machine says not
    assert len(fake.routed) == 1 and len(fake.direct) == 1


def test_a_hello_to_the_side_that_opens_sends_openers_before_the_go() -> None:
    fake = _Overlay()
    fake.local_endpoints = (Endpoint("198.18.0.2", 5800),)
    fake.observed = (Endpoint("203.0.113.2", 40000), Endpoint("203.0.113.2", 40001))
    fake.hosts = frozenset({"203.0.113.9"})
    punching, _, _, out = _punching(fake)
    theirs = PortGuessing(rng=random.Random(4))
    hello = theirs.hello(
        ME, symmetric=False, translated=False, endpoints=(Endpoint("203.0.113.9", 5800),), now=NOW
    )
    assert hello is not None
    punching.on_birthday(Delivered(PEER, ME, KIND_BIRTHDAY, hello, hops=2, exact=True), NOW)
    assert out and all(type(path) is SocketPath for _, path in out)  # we are symmetric: open
    assert [(d, k) for d, k, _, _ in fake.routed] == [(PEER, KIND_BIRTHDAY)]  # then GO
