"""One node's protocol stack below the DHT, as a single sans-IO core: link layer + overlay.

:class:`NodeCore` owns the wiring that every node needs and that must not be written twice
(the daemon and the simulator both drive this object through :class:`ipop.aio.driver.Driver`):

- link events go to the overlay;
- link datagrams for a relayed path (``RelayPath``) are handed to the overlay, which carries
  them to the relay node inside RELAY_FORWARD; RELAY_DELIVER datagrams that the overlay
  unwraps (``RelayDatagram`` events) are fed back into the link layer as if they had arrived
  on that relay path. Only underlay datagrams leave through :meth:`datagrams_to_send`;
- upper-layer traffic (:meth:`send`) goes DIRECT over a link to the destination when one is
  up (a shortcut or any other link) and is routed over the ring otherwise. The first packet to
  a peer with no link asks the overlay for a shortcut, so later packets go direct;
- traffic to a peer over a relayed link or over the ring also starts port guessing
  (:mod:`ipop.birthday`), the only way to a direct path between a symmetric NAT and a
  port-restricted one. Its openers leave from punching sockets (``SocketPath``), which the I/O
  layer opens on first use; a knock on one of them starts a handshake there. Openers and
  knocks go only to the addresses the overlay knows the peer at
  (:meth:`ipop.overlay.node.OverlayNode.peer_hosts`), never to one a birthday message names.

Theory of operation: every input (datagram, timer, command) ends with :meth:`_settle`, which
moves events and datagrams between the two layers until neither has anything left. Both layers
only queue work, so the loop is bounded by what the input caused. The core reads no clock:
``now`` comes with every call.
"""

from __future__ import annotations

import collections
import random
from collections.abc import Callable, Sequence

from ipop import timing
from ipop.birthday import BirthdayPunch, is_knock
from ipop.errors import LocalProtocolError
from ipop.identity import NodeIdentity, VerifiedCrl
from ipop.journal import Journal
from ipop.link.endpoint import (
    LinkConfig,
    LinkDown,
    LinkEndpoint,
    LinkMessage,
    LinkPathChanged,
    LinkUp,
)
from ipop.overlay.messages import KIND_BIRTHDAY, KIND_IP, TYPE_CRL, TYPE_DIRECT, Closing
from ipop.overlay.node import (
    Delivered,
    OverlayConfig,
    OverlayEvent,
    OverlayNode,
    RelayDatagram,
    Roamed,
)
from ipop.overlay.origin import OriginAuth
from ipop.revocation import CrlGossip
from ipop.stun import SOURCE_PRIMARY, StunAgent
from ipop.types import Endpoint, NodeId, Path, RelayPath, SocketPath, is_direct

__all__ = ["NodeCore"]

_CRL_TAG = bytes([TYPE_CRL])
# How long a shortcut request for one peer stands before traffic may ask again.
SHORTCUT_RETRY_S = 10.0


class NodeCore:
    """Link layer and overlay of one node, wired together; see the module docstring."""

    def __init__(
        self,
        identity: NodeIdentity,
        *,
        rng: random.Random,
        bootstrap: Sequence[Endpoint],
        overlay_config: OverlayConfig | None = None,
        link_config: LinkConfig | None = None,
        shortcuts: bool = True,
        stun_serve: bool = False,
    ) -> None:
        self.identity = identity
        self.local_id = identity.node_id
        self.link = LinkEndpoint(identity, rng=random.Random(rng.random()), config=link_config)
        self.overlay = OverlayNode(
            identity.node_id,
            self.link,
            rng=random.Random(rng.random()),
            config=overlay_config or OverlayConfig(),
            bootstrap=bootstrap,
            origin=OriginAuth(identity, revoked=identity.trust.is_revoked),
        )
        self.shortcuts = shortcuts
        self.stats: collections.Counter[str] = collections.Counter()
        self._out: list[tuple[bytes, Path]] = []
        self._events: collections.deque[OverlayEvent] = collections.deque()
        self._shortcut_asked: dict[NodeId, float] = {}
        # Peers we asked a shortcut to, with the last time data went to them (idle expiry).
        self._shortcut_used: dict[NodeId, float] = {}
        # STUN on the overlay socket (ipop.stun): answered here, never seen by the link layer.
        # ``stun_alt_send`` is the I/O layer's way to send from a node's alternate sockets.
        # Answered only with ``stun_serve`` (``[stun] serve``): see ipop.stun.
        self.stun = StunAgent(rng=random.Random(rng.random()), serve=stun_serve)
        self.stun_alt_send: Callable[[int, bytes, Endpoint], None] | None = None
        self.birthday = BirthdayPunch(rng=random.Random(rng.random()))
        # Links up and down, path changes and punching, for the adapter to log (ipop.journal).
        self.journal = Journal()
        # The revocation list epidemic (ipop.revocation): TYPE_CRL link messages stop here.
        self.revocation = CrlGossip(identity.trust)

    # --- commands ---------------------------------------------------------------------------

    def start(self, *, now: float) -> None:
        self.overlay.start(now=now)
        self._settle(now)

    def send(self, dst: NodeId, kind: int, payload: bytes, *, now: float) -> bool:
        """Deliver ``payload`` of upper-layer ``kind`` to node ``dst`` exactly.

        Direct when a link to ``dst`` is up; otherwise routed over the ring (and, for data
        traffic, a shortcut is requested so that the next packets go direct). False if it could
        not even leave this node (no route; counted by the overlay).
        """
        overlay = self.overlay
        if dst in self._shortcut_used:
            self._shortcut_used[dst] = now
        if kind == KIND_IP and dst not in self.link.pmtu.wanted:
            self.link.want_path_mtu(dst, now=now)
        if overlay.send_direct(dst, kind, payload, now=now):
            self.stats["sent_direct"] += 1
            if self.shortcuts and type(self.link.path_of(dst)) is RelayPath:
                self._guess_ports(dst, now)
            self._settle(now)
            return True
        ok = overlay.send_routed(dst, kind, payload, exact=True, now=now)
        self.stats["sent_routed"] += 1
        if self.shortcuts and dst != self.local_id:
            asked = self._shortcut_asked.get(dst)
            if asked is None or now - asked >= SHORTCUT_RETRY_S:
                self._shortcut_asked[dst] = now
                self._shortcut_used[dst] = now
                overlay.request_shortcut(dst, now=now)
            self._guess_ports(dst, now)
        self._settle(now)
        return ok

    def apply_crl(self, data: bytes, *, now: float) -> VerifiedCrl:
        """Install a CRL (DER or PEM) handed over locally (bundle, file, operator), then end
        revoked peers' sessions and spread it. Raises :class:`ipop.identity.CrlError`."""
        crl = self.identity.trust.apply_crl(data, now=now)
        self._crl_installed(None, now)
        self._settle(now)
        return crl

    def send_routed(
        self, dst: NodeId, kind: int, payload: bytes, *, exact: bool, now: float
    ) -> bool:
        """Route over the ring even if a direct link exists (control traffic, DHT, tests)."""
        ok = self.overlay.send_routed(dst, kind, payload, exact=exact, now=now)
        self._settle(now)
        return ok

    def local_endpoints_changed(self, endpoints: Sequence[Endpoint], *, now: float) -> None:
        """Our socket's own addresses are now ``endpoints`` (the I/O layer's address watcher).

        Nothing happens if they did not change. Otherwise we roamed: the overlay forgets our
        old public endpoint and re-advertises (:meth:`OverlayNode.local_endpoints_changed`),
        the link layer keys every direct session afresh from the new address, and port
        guessing forgets its verdicts (see :meth:`_on_roamed`).
        """
        if tuple(endpoints) == self.overlay.local_endpoints:
            return
        self.stats["local_endpoints_changed"] += 1
        self.overlay.local_endpoints_changed(endpoints, now=now)
        self.link.local_address_changed(now=now)
        self._settle(now)

    # --- data-plane fast path (additive: same effects as send/receive_datagram) ------------

    def seal_ip(
        self, dst: NodeId, plaintext: bytes | bytearray | memoryview, *, now: float
    ) -> tuple[bytes, Endpoint | SocketPath] | None:
        """Seal a DIRECT message for ``dst`` whose link is up on a direct path (the main
        socket's Endpoint, or a punching socket's SocketPath).

        ``plaintext`` is the whole DIRECT message (``TYPE_DIRECT, kind`` then the payload), as
        :meth:`OverlayNode.send_direct` would have built it. Returns the datagram and where to
        send it (the caller sends it itself, skipping the outbox), or None when :meth:`send` must
        be used instead (no overlay link, no session, relayed path, expired keys). Anything the
        link queued meanwhile (a rekey Init) leaves on the next :meth:`flush`.
        """
        if not self.overlay.is_linked(dst):  # what send_direct checks
            return None
        link = self.link
        if dst not in link.pmtu.wanted:
            link.want_path_mtu(dst, now=now)
        try:
            sealed = link.seal_direct(dst, plaintext, now=now)
        except LocalProtocolError:  # keys expired: send() counts it and routes instead
            return None
        if sealed is not None:
            self.stats["sent_direct"] += 1
            used = self._shortcut_used
            if dst in used:
                used[dst] = now
        return sealed

    def receive_direct(
        self, data: bytes, path: Path, *, now: float, kind: int
    ) -> tuple[NodeId, bytes] | None:
        """:meth:`receive_datagram`, except that a DIRECT message of upper-layer ``kind`` from a
        linked peer is returned as ``(peer, message)`` (``message`` still starts with the two
        DIRECT bytes) instead of becoming a Delivered event. Everything else takes the usual
        path (None). Call :meth:`flush` after a batch.
        """
        if data and data[0] < 4:  # STUN (RFC 7983 demultiplexing): not for the link layer
            self._stun_in(data, path, now)
            return None
        got = self.link.open_data(data, path, now=now)
        if got is None:
            self._settle(now)
            return None
        peer, payload = got
        if (
            payload[0] == TYPE_DIRECT
            and len(payload) > 1
            and payload[1] == kind
            and self.overlay.is_linked(peer)  # what the overlay checks first
        ):
            return got
        if payload[0] == TYPE_CRL:
            self._on_crl(peer, payload, now)
        else:
            self.overlay.on_link_event(LinkMessage(peer, payload, path), now=now)
        self._settle(now)
        return None

    def flush(self, *, now: float) -> None:
        """Move whatever the fast path left queued in the layers to the outputs."""
        self._settle(now)

    def has_output(self) -> bool:
        """Anything queued in either layer or in our outputs. A batch that went entirely
        through the fast path leaves nothing, and then neither :meth:`flush` nor the driver's
        pump has anything to do (their cost per batch is most of a lone packet's, measured)."""
        return bool(
            self._out or self._events or self.link.has_output() or self.overlay.has_events()
        )

    # --- sans-IO core interface (ipop.aio.driver.SansIOCore) --------------------------------

    def receive_datagram(self, data: bytes, path: Path, *, now: float) -> None:
        if data and data[0] < 4:  # STUN (RFC 7983 demultiplexing): not for the link layer
            self._stun_in(data, path, now)
            self._settle(now)
            return
        self.link.receive_datagram(data, path, now=now)
        self._settle(now)

    def handle_timer(self, *, now: float) -> None:
        t = self.link.get_timer()
        if t is not None and now >= t:
            self.link.handle_timer(now=now)
        t = self.overlay.get_timer()
        if t is not None and now >= t:
            self.overlay.handle_timer(now=now)
        t = self.stun.get_timer()
        if t is not None and now >= t:
            self.stun.handle_timer(now=now)
            self.stun_flush()
        t = self.birthday.get_timer()
        if t is not None and now >= t:
            self.birthday.handle_timer(now=now)
            self._out.extend(self.birthday.datagrams_to_send())
        self._expire_shortcuts(now)
        # Forget old shortcut requests so the table cannot grow with every peer ever seen.
        if len(self._shortcut_asked) > 256:
            self._shortcut_asked = {
                p: t0 for p, t0 in self._shortcut_asked.items() if now - t0 < SHORTCUT_RETRY_S
            }
        self._settle(now)

    def _expire_shortcuts(self, now: float) -> None:
        """Release shortcuts idle for SHORTCUT_IDLE_S, and the least used past SHORTCUT_MAX."""
        used = self._shortcut_used
        if not used:
            return
        idle = [p for p, t in used.items() if now - t >= timing.SHORTCUT_IDLE_S]
        excess = len(used) - len(idle) - timing.SHORTCUT_MAX
        if excess > 0:
            live = sorted(
                (p for p, t in used.items() if now - t < timing.SHORTCUT_IDLE_S),
                key=used.__getitem__,
            )
            idle += live[:excess]
        for peer in idle:
            del used[peer]
            self._shortcut_asked.pop(peer, None)
            self.overlay.drop_shortcut(peer, now=now)
            self.stats["shortcut_released"] += 1

    def shortcut_peers(self) -> dict[NodeId, float]:
        """Peers we hold (or are forming) a shortcut to, with their last data time."""
        return dict(self._shortcut_used)

    def get_timer(self) -> float | None:
        # Asked after every input (the driver re-arms its timer): no list, no min() call.
        due = self.overlay.get_timer()
        for t in (self.link.get_timer(), self.stun.get_timer(), self.birthday.get_timer()):
            if t is not None and (due is None or t < due):
                due = t
        return due

    def datagrams_to_send(self, *, now: float) -> list[tuple[bytes, Path]]:
        out, self._out = self._out, []
        return out

    def next_event(self) -> OverlayEvent | None:
        return self._events.popleft() if self._events else None

    # --- STUN -------------------------------------------------------------------------------

    def _stun_in(self, data: bytes, path: Path, now: float) -> None:
        if is_knock(data):
            peer = self.birthday.on_knock(data, path, now=now)
            if peer is not None:
                current = self.link.path_of(peer)
                if current is None or not is_direct(current):
                    self.stats["birthday_handshakes"] += 1
                    self.link.connect(path, now=now, expected=peer)
            return
        self.stats["stun_in"] += 1
        if not isinstance(path, Endpoint):  # STUN over a relay describes nothing real
            self.stun.drops["stun_relayed"] += 1
            return
        self.stun.receive(data, path, now=now)
        self.stun_flush()

    def stun_flush(self) -> None:
        """Move the STUN agent's output: the overlay socket's to :meth:`datagrams_to_send`,
        the alternate sockets' to :attr:`stun_alt_send` (dropped and counted without one)."""
        for source, data, dst in self.stun.datagrams_to_send():
            if source == SOURCE_PRIMARY:
                self._out.append((data, dst))
            elif self.stun_alt_send is not None:
                self.stun_alt_send(source, data, dst)
            else:
                self.stun.drops["no_alt_socket"] += 1

    # --- port guessing (ipop.birthday) -------------------------------------------------------

    def public_view(self) -> tuple[str | None, bool, bool]:
        """What peers' echoes say of our NAT: our public address (None: nobody told us yet),
        whether peers saw different ports (a mapping per destination: symmetric), and whether
        the port they see differs from our socket's (the NAT translated it)."""
        seen = self.overlay.observed_endpoints()
        if not seen:
            return None, False, False
        host = seen[0].host
        ports = {e.port for e in seen if e.host == host}
        local = {e.port for e in self.overlay.local_endpoints}
        return host, len(ports) > 1, bool(local) and not ports & local

    def _guess_ports(self, peer: NodeId, now: float) -> None:
        host, symmetric, translated = self.public_view()
        if host is None:
            return
        hello = self.birthday.hello(
            peer, symmetric=symmetric, translated=translated, endpoints=self._advertised(), now=now
        )
        if hello is not None:
            self.journal.punch_started(peer, now=now)
            self._send_birthday(peer, hello, now)

    def _on_birthday(self, ev: Delivered, now: float) -> None:
        host, symmetric, translated = self.public_view()
        answer = self.birthday.receive(
            ev.src,
            ev.payload,
            symmetric=symmetric,
            translated=translated,
            public_host=host,
            endpoints=self._advertised(),
            now=now,
            seen_hosts=self.overlay.peer_hosts(ev.src),
        )
        # Openers first: the GO must not overtake them, or the peer knocks on closed ports.
        self._out.extend(self.birthday.datagrams_to_send())
        if answer is not None:
            self._send_birthday(ev.src, answer, now)

    def _advertised(self) -> tuple[Endpoint, ...]:
        # Public ones first: a HELLO carries only a few, and openers to a LAN address of a
        # peer behind another NAT go nowhere.
        observed = self.overlay.observed_endpoints()
        return tuple(dict.fromkeys([*observed, *self.overlay.endpoints()]))

    def _send_birthday(self, peer: NodeId, payload: bytes, now: float) -> None:
        if not self.overlay.send_direct(peer, KIND_BIRTHDAY, payload, now=now):
            self.overlay.send_routed(peer, KIND_BIRTHDAY, payload, exact=True, now=now)

    def _on_roamed(self) -> None:
        """We roamed (a new address, or our NAT rebound): what port guessing learned and the
        shortcut requests made from the old address no longer hold; traffic asks anew."""
        self.birthday.roamed()
        self._shortcut_asked.clear()

    def _on_link_path(self, peer: NodeId, now: float) -> None:
        """A session with ``peer`` is up or moved: a direct one ends our knocking at it."""
        path = self.link.path_of(peer)
        if path is not None and is_direct(path) and self.birthday.stop(peer):
            self.journal.punch_linked(peer, path, now=now)

    # --- revocation (ipop.revocation) ------------------------------------------------------

    def _on_crl(self, peer: NodeId, payload: bytes, now: float) -> None:
        if self.revocation.receive(peer, payload, now=now) is not None:
            self._crl_installed(peer, now)
        self._send_crl_output(now)

    def _crl_installed(self, source: NodeId | None, now: float) -> None:
        """A newer CRL is in force: revoked peers lose their sessions (their LinkDowns reach
        the overlay in _settle), every other linked peer hears the new number."""
        gone = self.link.close_revoked(
            self.identity.trust.is_revoked, now=now, farewell=Closing().encode()
        )
        self.stats["revoked_links_closed"] += len(gone)
        self.stats["crl_installed"] += 1
        self.revocation.announce((p.peer for p in self.link.peers()), source=source)
        self._send_crl_output(now)

    def _send_crl_output(self, now: float) -> None:
        for peer, payload in self.revocation.outgoing():
            if not self.link.is_up(peer):
                continue
            try:
                self.link.send(peer, payload, now=now)
            except LocalProtocolError:  # keys expired, rekey pending: the next offer retries
                self.stats["crl_send_failed"] += 1

    # --- wiring -----------------------------------------------------------------------------

    def _settle(self, now: float) -> None:
        link = self.link
        overlay = self.overlay
        events = self._events
        out = self._out
        while True:
            busy = False
            while (lev := link.next_event()) is not None:
                busy = True
                if type(lev) is LinkMessage and lev.payload[:1] == _CRL_TAG:
                    self._on_crl(lev.peer, lev.payload, now)
                    continue
                if type(lev) is LinkUp:
                    self.journal.link_up(lev.peer, lev.path, now=now)
                elif type(lev) is LinkPathChanged:
                    self.journal.path_changed(lev.peer, lev.path, lev.reason, now=now)
                if type(lev) is LinkUp or type(lev) is LinkPathChanged:
                    self._on_link_path(lev.peer, now)
                if type(lev) is LinkUp:
                    self.revocation.link_up(lev.peer, now=now)
                    self._send_crl_output(now)
                elif type(lev) is LinkDown:
                    self.journal.link_down(lev.peer, lev.reason, now=now)
                    self.revocation.link_down(lev.peer)
                overlay.on_link_event(lev, now=now)
            for data, path in link.datagrams_to_send(now=now):
                if isinstance(path, RelayPath):
                    busy = True
                    overlay.wrap_relay(data, path, now=now)
                else:
                    out.append((data, path))
            while (oev := overlay.next_event()) is not None:
                if type(oev) is RelayDatagram:
                    busy = True
                    link.receive_datagram(oev.data, oev.path, now=now)
                elif isinstance(oev, Delivered) and oev.kind == KIND_BIRTHDAY:
                    busy = True
                    self._routed_around(oev, now)
                    self._on_birthday(oev, now)
                elif type(oev) is Roamed:
                    self._on_roamed()
                    events.append(oev)
                else:
                    if type(oev) is Delivered:
                        self._routed_around(oev, now)
                    events.append(oev)
            if not busy:
                return

    def _routed_around(self, ev: Delivered, now: float) -> None:
        """A message ``ev.src`` routed to us over other nodes (hops > 1; authenticated end to
        end) although we hold a session with it: the sender holds none with us (a peer that
        holds one routes to us through it). Usually it was restarted and our session is dead:
        the link layer checks (:meth:`LinkEndpoint.peer_unlinked`)."""
        if ev.hops > 1 and self.link.is_up(ev.src) and self.link.peer_unlinked(ev.src, now=now):
            self.stats["routed_around_link"] += 1

    def __repr__(self) -> str:
        return f"NodeCore({self.local_id.short()})"
