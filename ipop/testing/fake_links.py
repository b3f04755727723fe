"""An ideal in-process link layer for many overlay nodes, driven by explicit virtual time.

:class:`FakeLinkWorld` stands in for "the internet plus every node's LinkLayer": each node
gets a :class:`FakeLinks` with the methods the overlay uses (``ipop.overlay.node.Links``) and
the driver-facing ones of the real endpoint (``next_event``, ``datagrams_to_send``,
``receive_datagram``), and emits the real event classes of :mod:`ipop.link.layer`.
No crypto, no loss by default: links come up or fail by policy, after latency;
``pair_model(src, dst)``, when set, gives a direct datagram's (latency, loss probability).

Reachability (direct paths), a small model of three :class:`ipop.nat.kinds.NatKind` kinds
(:data:`MODELLED_KINDS`; the other kinds are refused rather than modelled wrongly):

- ``NatKind.NONE``: its public endpoint accepts handshakes from anyone.
- ``NatKind.PORT_RESTRICTED_CONE``: accepts a handshake only while it is itself trying to reach
  the initiator (simultaneous open: both attempts cross, as hole punching does), and never from
  a symmetric NAT (whose port it did not send to); its private endpoint is reachable from its
  own LAN.
- ``NatKind.SYMMETRIC``: never accepts unsolicited handshakes and cannot be punched (its
  mapping differs per peer, so the advertised endpoint is useless); it can still link out to
  public nodes, and over its LAN.
- ``pair_policy(a, b)``, when set, can forbid any direct link between two nodes.

A relayed path ``RelayPath(via, peer)`` comes up when ``via`` holds direct links to both ends;
its datagrams then really travel through the overlay: ``send`` queues a datagram for
``datagrams_to_send`` (the driver hands it to ``OverlayNode.wrap_relay``), and the far end's
overlay emits ``RelayDatagram`` which the driver feeds to ``receive_datagram``.

Like the real endpoint, ``close`` tears the session down locally (LinkDown "closed") without
telling the peer, whose side times out after ``failure_detect_s``; a killed node's links time
out the same way.

The scheduler is a heap of timed actions; :meth:`FakeLinkWorld.run_until` executes them in
order, pumps every touched node (link events into the overlay, relay datagrams both ways) and
fires overlay timers, so tests need no asyncio and are deterministic for a seed.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

from ipop.errors import LocalProtocolError
from ipop.link.events import HandshakeFailed, LinkDown, LinkEvent, LinkMessage, LinkUp
from ipop.nat.kinds import NatKind
from ipop.overlay.events import Delivered, OverlayEvent, RelayDatagram
from ipop.overlay.node import OverlayConfig, OverlayNode
from ipop.testing.clock import SIM_EPOCH
from ipop.testing.fake_origin import FakeKeyring, FakeOrigin
from ipop.testing.recording_links import RecordingLinks, fake_certificate
from ipop.types import ID_BYTES, Endpoint, NodeId, Path, RelayPath

__all__ = [
    "DROP_REASONS",
    "MODELLED_KINDS",
    "FakeLinkWorld",
    "FakeLinks",
    "HandshakeFailed",
    "LinkDown",
    "LinkMessage",
    "LinkUp",
    "RecordingLinks",
    "fake_certificate",
]

_MAGIC = b"FK"

# Every reason FakeLinks.drops counts under.
DROP_REASONS: Final = frozenset(
    {
        "not_fake",  # not a fake-link datagram over a relay path
        "no_session",  # from a peer with no link up to us over that path
    }
)


MODELLED_KINDS = (NatKind.NONE, NatKind.PORT_RESTRICTED_CONE, NatKind.SYMMETRIC)


@dataclass(eq=False)
class _Link:
    a: NodeId
    b: NodeId
    paths: dict[NodeId, Path]  # our path toward the other end, per end
    via: NodeId | None
    up: dict[NodeId, bool] = field(default_factory=dict)

    def other(self, n: NodeId) -> NodeId:
        return self.b if n == self.a else self.a


@dataclass(eq=False)
class _Attempt:
    src: NodeId
    path: Path
    expected: NodeId | None
    deadline: float
    target: NodeId | None = None
    done: bool = False


@dataclass(eq=False)
class _Host:
    node_id: NodeId
    links: FakeLinks
    nat: NatKind
    public: Endpoint
    private: Endpoint | None
    lan: str | None
    alive: bool = True
    node: OverlayNode | None = None
    events: list[OverlayEvent] = field(default_factory=list)
    delivered: list[Delivered] = field(default_factory=list)
    timer_at: float | None = None


class FakeLinks:
    """One node's view of the fake link layer (satisfies ``ipop.overlay.node.Links``)."""

    def __init__(self, world: FakeLinkWorld, node_id: NodeId) -> None:
        self._world = world
        self.local_id = node_id
        self._events: collections.deque[LinkEvent] = collections.deque()
        self._out: list[tuple[bytes, Path]] = []
        self.drops: collections.Counter[str] = collections.Counter()
        self.stats: collections.Counter[str] = collections.Counter()

    # --- the Links protocol -------------------------------------------------------------------

    def connect(
        self,
        path: Path,
        *,
        now: float,
        expected: NodeId | None = None,
        retransmit: bool = True,
        timeout_s: float | None = None,
    ) -> None:
        # Links come up or fail by policy here: how many Inits go out does not matter.
        if expected == self.local_id:
            raise LocalProtocolError("connect() to our own node id")
        self._world.start_attempt(self.local_id, path, expected, now)

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
        link = self._world.link_between(self.local_id, peer)
        if link is None or not link.up.get(self.local_id):
            raise LocalProtocolError(f"no session with {peer!r}")
        # As the real driver pumps after every send: the overlay's timer may have moved
        # earlier (a probe of a silent next hop, ipop.overlay.suspect).
        self._world.mark_dirty(self.local_id)
        if link.via is None:
            self._world.deliver_direct(link, self.local_id, payload)
        else:
            data = _MAGIC + self.local_id.to_bytes() + payload
            self._out.append((data, link.paths[self.local_id]))

    def close(self, peer: NodeId, *, now: float) -> None:
        self._world.close_link(self.local_id, peer)

    def is_up(self, peer: NodeId) -> bool:
        link = self._world.link_between(self.local_id, peer)
        return link is not None and bool(link.up.get(self.local_id))

    def payload_limit(self, peer: NodeId) -> int | None:
        return None  # no path sizes in this world

    def peer_moved(self, peer: NodeId, *, now: float) -> None:
        """Fake links have no paths to hold on to: counted only."""
        self.stats["peer_moved"] += 1

    # --- the driver side ----------------------------------------------------------------------

    def next_event(self) -> LinkEvent | None:
        return self._events.popleft() if self._events else None

    def datagrams_to_send(self, *, now: float) -> list[tuple[bytes, Path]]:
        out, self._out = self._out, []
        return out

    def receive_datagram(self, data: bytes, path: Path, *, now: float) -> None:
        if not isinstance(path, RelayPath) or len(data) < 2 + ID_BYTES or data[:2] != _MAGIC:
            self.drops["not_fake"] += 1
            return
        origin = NodeId.from_bytes(data[2 : 2 + ID_BYTES])
        link = self._world.link_between(self.local_id, origin)
        if (
            origin != path.peer
            or link is None
            or link.via != path.via
            or not link.up.get(self.local_id)
        ):
            self.drops["no_session"] += 1
            return
        self._events.append(LinkMessage(origin, data[2 + ID_BYTES :], path))

    def push(self, ev: LinkEvent) -> None:
        """The world hands this node a link event (up, down, failed, a message)."""
        self._events.append(ev)
        self._world.mark_dirty(self.local_id)


class FakeLinkWorld:
    """Every node's fake link layer plus the scheduler that drives the overlay nodes."""

    def __init__(
        self,
        *,
        rng: random.Random,
        latency_s: float = 0.01,
        handshake_timeout_s: float = 5.0,
        failure_detect_s: float = 5.0,
        start: float = SIM_EPOCH,
    ) -> None:
        self.rng = rng
        self.latency_s = latency_s
        self.handshake_timeout_s = handshake_timeout_s
        self.failure_detect_s = failure_detect_s
        self.now = start
        # Return False to forbid a direct link between two nodes (in either direction).
        self.pair_policy: Callable[[NodeId, NodeId], bool] | None = None
        # (latency_s, loss) of a direct datagram from src to dst; None: latency_s, no loss.
        self.pair_model: Callable[[NodeId, NodeId], tuple[float, float]] | None = None
        self.hosts: dict[NodeId, _Host] = {}
        self._by_endpoint: dict[Endpoint, NodeId] = {}
        self._links: dict[frozenset[NodeId], _Link] = {}
        self._attempts: list[_Attempt] = []
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._dirty: set[NodeId] = set()
        # Every node's signing secret: routed origins are checked in this world too.
        self.keyring = FakeKeyring()

    # --- building -----------------------------------------------------------------------------

    def add_host(
        self, node_id: NodeId, *, nat: NatKind = NatKind.NONE, lan: str | None = None
    ) -> FakeLinks:
        if node_id in self.hosts:
            raise LocalProtocolError(f"{node_id!r} already exists")
        if nat not in MODELLED_KINDS:
            raise LocalProtocolError(
                f"the fake link world models NAT kinds {', '.join(MODELLED_KINDS)}, not {nat}"
            )
        i = len(self.hosts)
        if nat is NatKind.NONE:
            public = Endpoint(f"198.51.100.{i % 254 + 1}", 5800 + i // 254)
            private = None
        else:
            public = Endpoint(f"203.0.113.{i % 254 + 1}", 40000 + i // 254)
            private = Endpoint(f"198.18.{i // 254}.{i % 254 + 1}", 5800)
        links = FakeLinks(self, node_id)
        self.hosts[node_id] = _Host(node_id, links, nat, public, private, lan)
        self._by_endpoint[public] = node_id
        if private is not None:
            self._by_endpoint[private] = node_id
        return links

    def local_endpoints(self, node_id: NodeId) -> tuple[Endpoint, ...]:
        """What the node's own socket is bound to (its private endpoint behind a NAT)."""
        h = self.hosts[node_id]
        return (h.private if h.private is not None else h.public,)

    def public_endpoint(self, node_id: NodeId) -> Endpoint:
        return self.hosts[node_id].public

    def attach(self, node: OverlayNode) -> None:
        self.hosts[node.local_id].node = node
        self._dirty.add(node.local_id)

    def spawn(
        self,
        node_id: NodeId,
        *,
        config: OverlayConfig,
        bootstrap: Sequence[Endpoint],
        nat: NatKind = NatKind.NONE,
        lan: str | None = None,
        start_at: float | None = None,
        seed: int = 0,
    ) -> OverlayNode:
        """Add a host with an OverlayNode on it, started at ``start_at`` (default: now)."""
        links = self.add_host(node_id, nat=nat, lan=lan)
        cfg = OverlayConfig(
            **{
                **{f: getattr(config, f) for f in config.__dataclass_fields__},
                "local_endpoints": self.local_endpoints(node_id),
            }
        )
        node = OverlayNode(
            node_id,
            links,
            rng=random.Random(seed),
            config=cfg,
            bootstrap=bootstrap,
            origin=FakeOrigin(node_id, self.keyring),
        )
        self.attach(node)
        at = self.now if start_at is None else start_at

        def start() -> None:
            if self.hosts[node_id].alive:
                node.start(now=self.now)
                self._dirty.add(node_id)

        self.schedule(at, start)
        return node

    def kill(self, node_id: NodeId) -> None:
        """The node vanishes: its peers' links time out after ``failure_detect_s``."""
        host = self.hosts[node_id]
        host.alive = False
        for link in list(self._links.values()):
            if node_id in (link.a, link.b) or link.via == node_id:
                self._time_out(link)

    def alive_ids(self) -> list[NodeId]:
        return sorted(n for n, h in self.hosts.items() if h.alive and h.node is not None)

    def node(self, node_id: NodeId) -> OverlayNode:
        node = self.hosts[node_id].node
        if node is None:
            raise LocalProtocolError(f"no overlay node on {node_id!r}")
        return node

    # --- scheduler ----------------------------------------------------------------------------

    def schedule(self, at: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._heap, (max(at, self.now), next(self._seq), fn))

    def run_until(self, t: float) -> None:
        """Run every action and overlay timer due up to ``t``; leaves ``now == t``."""
        self._dirty.update(self.alive_ids())
        self._pump()
        while self._heap and self._heap[0][0] <= t:
            at, _, fn = heapq.heappop(self._heap)
            self.now = max(self.now, at)
            fn()
            self._pump()
        self.now = max(self.now, t)

    def run_for(self, seconds: float) -> None:
        self.run_until(self.now + seconds)

    def _pump(self) -> None:
        while self._dirty:
            for nid in sorted(self._dirty):
                self._dirty.discard(nid)
                self._pump_host(self.hosts[nid])

    def _pump_host(self, host: _Host) -> None:
        node, links = host.node, host.links
        if node is None or not host.alive:
            return
        now = self.now
        busy = True
        while busy:
            busy = False
            while (ev := links.next_event()) is not None:
                busy = True
                node.on_link_event(ev, now=now)
            for data, path in links.datagrams_to_send(now=now):
                busy = True
                if isinstance(path, RelayPath):
                    node.wrap_relay(data, path, now=now)
            while (oev := node.next_event()) is not None:
                busy = True
                if isinstance(oev, RelayDatagram):
                    links.receive_datagram(oev.data, oev.path, now=now)
                else:
                    host.events.append(oev)
                    if isinstance(oev, Delivered):
                        host.delivered.append(oev)
        timer = node.get_timer()
        if timer is not None and timer != host.timer_at:
            host.timer_at = timer
            nid = host.node_id

            def fire(at: float = timer) -> None:
                h = self.hosts[nid]
                if h.alive and h.timer_at == at and h.node is not None:
                    h.timer_at = None
                    h.node.handle_timer(now=self.now)
                    self._dirty.add(nid)

            self.schedule(timer, fire)

    # --- links --------------------------------------------------------------------------------

    # The side of the world each node's FakeLinks calls: the link between two nodes, an
    # attempt to start, a payload to carry, a link to close, a node whose events wait.

    def link_between(self, a: NodeId, b: NodeId) -> _Link | None:
        return self._links.get(frozenset((a, b)))

    def mark_dirty(self, node_id: NodeId) -> None:
        """``node_id`` has events or a timer to look at: the next pump visits it."""
        self._dirty.add(node_id)

    def _allowed(self, a: NodeId, b: NodeId) -> bool:
        return self.pair_policy is None or self.pair_policy(a, b)

    def start_attempt(self, src: NodeId, path: Path, expected: NodeId | None, now: float) -> None:
        att = _Attempt(src, path, expected, now + self.handshake_timeout_s)
        rtt = 2 * self.latency_s
        if isinstance(path, RelayPath):
            self.schedule(now + 2 * rtt, lambda: self._resolve_relay(att))
        else:
            self._attempts.append(att)
            self.schedule(now + rtt, lambda: self._resolve_direct(att))
        self.schedule(att.deadline, lambda: self._expire(att))

    def _expire(self, att: _Attempt) -> None:
        if att.done:
            return
        att.done = True
        self._attempts = [a for a in self._attempts if not a.done]
        if self.hosts[att.src].alive:
            self.hosts[att.src].links.push(HandshakeFailed(att.path, "timeout"))

    def _reaches(self, src: NodeId, dst: NodeId, ep: Endpoint, *, punched: bool) -> bool:
        """Would a handshake from ``src`` to ``dst``'s endpoint ``ep`` get through?"""
        s, d = self.hosts[src], self.hosts[dst]
        if not self._allowed(src, dst):
            return False
        if ep == d.private:
            return d.lan is not None and d.lan == s.lan
        if d.nat is NatKind.NONE:
            return True
        return punched and d.nat is NatKind.PORT_RESTRICTED_CONE and s.nat is not NatKind.SYMMETRIC

    def _resolve_direct(self, att: _Attempt) -> None:
        if att.done or not self.hosts[att.src].alive:
            return
        assert isinstance(att.path, Endpoint)
        dst = self._by_endpoint.get(att.path)
        if dst is None or dst == att.src or not self.hosts[dst].alive:
            return  # nobody answers: the deadline reports the failure
        if att.expected is not None and dst != att.expected:
            att.done = True
            self.hosts[att.src].links.push(HandshakeFailed(att.path, "unexpected_peer"))
            return
        att.target = dst
        if self._fully_up(att.src, dst):
            att.done = True
            return
        if self._reaches(att.src, dst, att.path, punched=False):
            att.done = True
            self._establish(att.src, dst, att.path, None)
            return
        # Simultaneous open: the peer is trying to reach us at the same moment.
        for other in self._attempts:
            if (
                not other.done
                and other.src == dst
                and other.target == att.src
                and isinstance(other.path, Endpoint)
                and self._reaches(att.src, dst, att.path, punched=True)
                and self._reaches(dst, att.src, other.path, punched=True)
            ):
                att.done = other.done = True
                self._establish(att.src, dst, att.path, None)
                return

    def _resolve_relay(self, att: _Attempt) -> None:
        if att.done or not self.hosts[att.src].alive:
            return
        assert isinstance(att.path, RelayPath)
        via, dst = att.path.via, att.path.peer
        if dst not in self.hosts or not self.hosts[dst].alive or not self.hosts[via].alive:
            return
        if att.expected is not None and dst != att.expected:
            return
        hop1, hop2 = self.link_between(att.src, via), self.link_between(via, dst)
        for hop in (hop1, hop2):
            if hop is None or hop.via is not None or not all(hop.up.values()):
                return
        att.done = True
        if not self._fully_up(att.src, dst):
            self._establish(att.src, dst, att.path, via)

    def _fully_up(self, a: NodeId, b: NodeId) -> bool:
        link = self.link_between(a, b)
        return link is not None and all(link.up.get(n) for n in (a, b))

    def _establish(self, a: NodeId, b: NodeId, path_a: Path, via: NodeId | None) -> None:
        ha, hb = self.hosts[a], self.hosts[b]
        if via is not None:
            path_b: Path = RelayPath(via=via, peer=a)
            observed = None
        else:
            same_lan = ha.lan is not None and ha.lan == hb.lan and ha.private is not None
            path_b = ha.private if same_lan and ha.private is not None else ha.public
            observed = path_b
            if ha.nat is NatKind.SYMMETRIC and not same_lan:
                # A symmetric NAT maps every destination to a fresh port.
                observed = Endpoint(ha.public.host, 50000 + self.rng.randrange(10000))
                path_b = observed
        link = _Link(a, b, {a: path_a, b: path_b}, via)
        self._links[frozenset((a, b))] = link
        when = self.now + self.latency_s

        def up(n: NodeId, ev: LinkUp) -> Callable[[], None]:
            def fire() -> None:
                if self._links.get(frozenset((a, b))) is link and self.hosts[n].alive:
                    link.up[n] = True
                    self.hosts[n].links.push(ev)

            return fire

        self.schedule(when, up(a, LinkUp(b, fake_certificate(b), path_a, observed)))
        self.schedule(when, up(b, LinkUp(a, fake_certificate(a), path_b, None)))

    def deliver_direct(self, link: _Link, src: NodeId, payload: bytes) -> None:
        dst = link.other(src)
        path = link.paths[dst]
        latency = self.latency_s
        if self.pair_model is not None:
            latency, loss = self.pair_model(src, dst)
            if loss and self.rng.random() < loss:
                return

        def fire() -> None:
            current = self._links.get(frozenset((src, dst))) is link
            if current and link.up.get(dst) and self.hosts[dst].alive:
                self.hosts[dst].links.push(LinkMessage(src, payload, path))

        self.schedule(self.now + latency, fire)

    def close_link(self, a: NodeId, b: NodeId) -> None:
        link = self.link_between(a, b)
        if link is None or not link.up.get(a):
            return
        link.up[a] = False
        self.hosts[a].links.push(LinkDown(b, "closed"))
        self._time_out(link)
        for other in list(self._links.values()):
            if other.via is not None and other.via in (a, b) and {a, b} & {other.a, other.b}:
                self._time_out(other)

    def _time_out(self, link: _Link) -> None:
        """Each end still up on ``link`` sees LinkDown("timeout") after failure_detect_s."""

        def fire() -> None:
            if self._links.get(frozenset((link.a, link.b))) is not link:
                return
            del self._links[frozenset((link.a, link.b))]
            for n in (link.a, link.b):
                if link.up.get(n) and self.hosts[n].alive:
                    link.up[n] = False
                    self.hosts[n].links.push(LinkDown(link.other(n), "timeout"))
            for other in list(self._links.values()):
                if other.via in (link.a, link.b) and {link.a, link.b} & {other.a, other.b}:
                    self._time_out(other)

        self.schedule(self.now + self.failure_detect_s, fire)

    # --- inspection ---------------------------------------------------------------------------

    def direct_links(self) -> Iterable[tuple[NodeId, NodeId]]:
        return [(k.a, k.b) for k in self._links.values() if k.via is None]
