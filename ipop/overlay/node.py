"""The overlay node (sans-IO): joins the ring, keeps its links, routes, and relays.

Theory of operation
-------------------
An :class:`OverlayNode` sits on a link layer (the narrow :class:`ipop.overlay.ports.Links`
protocol, which :class:`ipop.link.layer.LinkLayer` satisfies) and turns authenticated links into a
Brunet-style ring (DESIGN.md §5):

- **Join.** ``start()`` links to the bootstrap endpoints (LEAF links). Over the first link a
  CONNECT_TO_ME with purpose JOIN is routed to our own address with closest delivery, as if
  we were not on the ring (EXCLUDE_SRC); the node closest to us answers through the bootstrap
  (the VIA field) with its endpoints and its neighbours, and both sides call
  ``links.connect`` toward each other at once (simultaneous open punches cone NATs).
- **Near links** are the ``near_per_side`` closest linked peers on each side, recomputed on
  every change. Near neighbours swap their near lists (NEIGHBOURS) every gossip interval and
  whenever the near set changes; any id that would be nearer than what we hold gets an exact
  CONNECT_TO_ME. After a near link goes down we pull lists from the remaining near peers and
  re-probe our own address. This is ring stabilisation: every node converges on its true
  neighbours because each one tells its neighbours about theirs. Which candidates to ask,
  and whether both sides are linked, is :class:`ipop.overlay.near.NearKeeper`'s to say; the
  upkeep itself is :class:`ipop.overlay.upkeep.RingUpkeep`'s to do.
- **Silent near peers** (:mod:`ipop.overlay.upkeep`): a near peer whose gossip is late
  (``near_suspect_s``) is pulled every tick, one silent for ``near_dead_s`` is closed as dead,
  so a crashed neighbour is replaced in seconds, not at the link layer's keepalive timeout. A
  peer that becomes near after a long silence is suspect at once, so a run of dead nodes
  behind a dead neighbour is cleared at ``near_dead_s - near_suspect_s`` per node.
- **Silent next hops** (:mod:`ipop.overlay.suspect`). A peer we route into without hearing
  back is asked whether it is there (ALIVE) after one retransmission timeout of its own round
  trip and again after two; after three it is *suspect* and routing takes any other hop that
  makes progress, so a peer killed without a word costs routed traffic a fraction of a second,
  not ``near_dead_s`` or the link timeout. A suspect that answers (or says anything) is used
  again; one that stays silent is closed by the timers above. A peer we send nothing to is
  never suspect.
- **Detours.** An exact CTM for which no linked peer is closer to the target than we are (we
  hold only far links, or whoever told us about the target is not linked to us) leaves
  through the peer nearest the target with EXCLUDE_SRC, so no hop hands it back to us.
- **Far links** follow Symphony: about log2 N of them, targets drawn from the harmonic
  distribution using N estimated from the near spacing; a CTM to the target address (closest
  delivery) finds the node that owns that arc.
- **Relay links** (:class:`ipop.overlay.relay.RelayRole` plays both parts). If no direct link to
  a NEAR candidate comes up (every endpoint failed, or the deadline passed), we key a link over
  ``RelayPath(via=X, peer=T)`` through a node X that both of us hold direct links to (from T's
  CTM answer). X forwards sealed datagrams (RELAY_FORWARD → RELAY_DELIVER) and holds both links
  as RELAY while traffic flows; the two ends hold their link to X as RELAY too (else the trim
  policy would cut X away under them). A relay attempt starts ``relay_after_s`` after the direct
  ones, alongside them; the end with the larger id waits ``relay_yield_s`` longer, so that two
  ends needing each other do not key two relayed links through different relays at once. A relay
  that holds no direct link to T answers RELAY_REFUSED: a pending attempt moves on to the next
  candidate, an up relayed link is dropped at once (instead of swallowing traffic until the link
  layer's timeout) and the ring repairs it. When the target's answer names no peer we hold
  directly, we ask a few of the peers it named for direct links (**relay helpers**) and relay
  through the first that comes up.
- **Backoff.** A near candidate we failed to reach is not asked again for a while: briefly
  when only a CTM went unanswered or no relay candidate existed yet (one lost datagram, a ring
  still forming), ``failed_backoff_s`` after a relay failed too. Failures of direct-only
  attempts (far links, shortcuts, connect-backs) never gate near requests. Attempts, their
  states and the backoff set live in :mod:`ipop.overlay.attempts`.
- **Bounded work** (CTMs: :class:`ipop.overlay.ctm.CtmAgent`). What a peer's message makes us
  send is bounded, because a member may lie: a CTM's endpoints are only the requester's word
  (the requester itself is authenticated end to end). Each requester's CTMs are acted on within
  a token bucket (``ctm_burst``, one per ``ctm_refill_s``); a connect-back tries at most
  ``connect_back_max`` of them (one LAN endpoint at most) with a single Init each, never
  retransmitted; every address we connect back to spends a token of that address's bucket,
  whoever named it, and at most ``connect_back_inflight`` connect-backs run at once. An answer
  to our own CTM is tried at as many endpoints (with the usual retries: we asked). A NEIGHBOURS
  pull is answered at most once per ``neighbours_reply_min_s`` per peer past a burst of four.
  tools/bench/amplification.py measures every message type's worst case with the real cores.
- **Routing** (decided by :mod:`ipop.overlay.routing`, applied here) is greedy over every up
  link (:func:`ipop.overlay.ring.next_hop`): strictly closer at each hop, so it cannot loop;
  exact delivery drops at a local minimum ("no_route"), closest delivery delivers there. At a
  local minimum an exact message may take one detour, bounded by the TTL: to the near peer that
  told us it holds a link to the target, else back the way the target's own last routed message
  came to us (a reverse-path hint: a node that has just joined sends requests before the ring
  around it has formed, and the answers must find it), else, at the message's source only, to
  our peer nearest the target. A suspect next hop is skipped when another one is strictly closer
  than we are; it is used anyway when none is, so suspicion never turns a route into a drop or a
  loop. With proximity, peers we timed fast tell us which nodes they hold links to (LINK_IDS,
  :mod:`ipop.overlay.linkhints`, sent from the tick), and the fastest one that holds a link to
  the target takes the message, at most one such step per message not getting nearer.
- **Trimming** closes links with no reason left after a grace period (policies.py).
- **Roaming** (:class:`ipop.overlay.roaming.Roaming`): our endpoints as we and our peers see
  them; a new address, a wake-up or a NAT rebinding re-advertises them to every linked peer,
  and a linked peer whose CTM names new endpoints is followed and punched back to.

Invariants:

1. The table holds exactly the peers whose LinkUp we saw and whose LinkDown (or our own close)
   we have not; nothing is sent to a peer outside it.
2. A routed message with ``hops == 0`` is accepted only from the link of its ``src``
   ("spoofed_src"); every forward increments ``hops`` and no message crosses more than
   ``ttl`` links ("ttl_expired").
3. Nothing a peer sends raises out of :meth:`on_link_event`: parse failures and refusals are
   counted in ``drops`` by reason. API misuse raises :class:`LocalProtocolError`.
4. One timer: :meth:`get_timer` is the next maintenance tick; all deadlines are checked there.

Who does what
-------------
This module keeps the commands, the queries, the dispatch of link events and overlay messages
and the tick, and applies what the objects it owns decide: :class:`ipop.overlay.routing.Router`
(where a routed message goes), :class:`ipop.overlay.relay.RelayRole` (relayed links, both
parts), :class:`ipop.overlay.ctm.CtmAgent` (CONNECT_TO_ME), :class:`ipop.overlay.roaming.Roaming`
(our endpoints and roams), :class:`ipop.overlay.upkeep.RingUpkeep` (the near set, gossip,
silent near peers, routable, the policies), :class:`ipop.overlay.near.NearKeeper` (near
candidates), :class:`ipop.overlay.attempts.Attempts` (links being brought up),
:class:`ipop.overlay.suspect.SilentHops` (silent next hops) and
:class:`ipop.overlay.views.ConnectionViews` (the policies' view of the table). Settings are
:class:`ipop.overlay.config.OverlayConfig`, status :class:`ipop.overlay.snapshot.OverlaySnapshot`.

Why over 600 lines: what remains is what ties the parts together and cannot leave without
splitting one decision over two modules. The constructor wires the parts to each other (each
gets the table, the counters and the callbacks it acts through: about 200 lines, most of them
keyword arguments); the dispatch tables and handlers of link events and overlay messages touch
several parts per event (a LinkUp teaches the origin, the silent-hop timer, roaming, attempts,
the table and the upkeep, in that order); the packet paths (``_on_link_message``, the routed
forward) stay here so that a forwarded message costs no extra call; and the tick orders the
parts' timers. This docstring is the overlay's theory of operation, which the parts' own
docstrings refer to.
"""

from __future__ import annotations

import collections
import random
from collections.abc import Callable, Collection, Sequence
from typing import Final, TypeVar

from ipop import timing
from ipop.errors import LocalProtocolError, RemoteProtocolError
from ipop.link.events import (
    HandshakeFailed,
    LinkDown,
    LinkMessage,
    LinkPathChanged,
    LinkPathDisplaced,
    LinkUp,
    ObservedEndpoint,
)
from ipop.overlay.attempts import Action as AttemptAction
from ipop.overlay.attempts import Attempts, Backoff, Bootstraps, Connect
from ipop.overlay.channels import CHANNEL_DROPS, RelayChannels
from ipop.overlay.config import OverlayConfig
from ipop.overlay.ctm import CTM_DROPS, CtmAgent
from ipop.overlay.events import (
    ConnectionAdded,
    ConnectionRemoved,
    Delivered,
    Joined,
    OverlayEvent,
    RelayDatagram,
    Roamed,
    Routable,
)
from ipop.overlay.linkhints import LinkHints, LinkIdsTeller
from ipop.overlay.messages import (
    DECODE_REASONS,
    FLAG_EXACT,
    KIND_CTM,
    KIND_CTM_REPLY,
    MAX_LINK_IDS,
    MAX_TTL,
    TYPE_DIRECT,
    TYPE_RELAY_FORWARD,
    UPPER_KIND_MAX,
    Alive,
    Closing,
    FastPeers,
    LinkIds,
    Neighbours,
    Purpose,
    RelayChannel,
    RelayDeliver,
    RelayForward,
    RelayRefused,
    Routed,
    decode_message,
)
from ipop.overlay.near import NearKeeper, SeenIds
from ipop.overlay.origin import DROP_REASONS as ORIGIN_DROPS
from ipop.overlay.ports import Links, Origins
from ipop.overlay.proven import ProvenIds
from ipop.overlay.relay import RELAY_DROPS, RelayRole, TakeDelivered
from ipop.overlay.ring import (
    estimate_size,
)
from ipop.overlay.roaming import Roaming
from ipop.overlay.routing import ROUTE_DROPS, Deliver, Drop, Forward, Router, Verdict
from ipop.overlay.snapshot import ConnectionInfo, OverlaySnapshot
from ipop.overlay.suspect import SilentHops
from ipop.overlay.table import ConnectionKind, ConnectionTable
from ipop.overlay.upkeep import NEAR_DROPS, RingUpkeep
from ipop.overlay.views import ConnectionViews
from ipop.types import Endpoint, NodeId, RelayPath, is_direct

__all__ = [
    "ConnectionAdded",
    "ConnectionInfo",
    "ConnectionKind",
    "ConnectionRemoved",
    "Delivered",
    "Joined",
    "Links",
    "OverlayConfig",
    "OverlayEvent",
    "OverlayNode",
    "OverlaySnapshot",
    "RelayDatagram",
    "Roamed",
    "Routable",
]

# Every reason the node counts in ``drops``: its own, those of the parts that count into the
# same counter (routing, the relay role, CONNECT_TO_ME, routed origins) and the reasons a
# malformed overlay message raises (ipop.overlay.messages, counted in _on_link_message).
OVERLAY_DROPS: Final = (
    frozenset(
        {
            "unknown_peer",
            "direct_bad_kind",
            "unknown_kind",
            "link_not_up",
        }
    )
    | ROUTE_DROPS
    | RELAY_DROPS
    | CHANNEL_DROPS
    | CTM_DROPS
    | NEAR_DROPS
    | ORIGIN_DROPS
    | DECODE_REASONS
)

_DIRECT_TAG = bytes((TYPE_DIRECT,))
_M = TypeVar("_M", RelayForward, RelayDeliver)


# CLOSING is sent this many times (see OverlayNode._close_link).
_CLOSING_COPIES = 3
# Peers whose LINK_IDS lists we keep at most (ipop.overlay.linkhints): fast ones are a region's
# share of our ~40 links at 1,000 nodes.
_LINK_HINT_PEERS = 32
_INF = float("inf")


# --- internal state ----------------------------------------------------------------------------


class OverlayNode:
    """One node of the ring; see the module docstring for the theory of operation."""

    def __init__(
        self,
        local_id: NodeId,
        links: Links,
        *,
        rng: random.Random,
        config: OverlayConfig,
        bootstrap: Sequence[Endpoint],
        origin: Origins,
    ) -> None:
        if links.local_id != local_id:
            raise LocalProtocolError("links.local_id differs from local_id")
        if origin.local_id != local_id:
            raise LocalProtocolError("origin.local_id differs from local_id")
        self._origin = origin
        self.local_id = local_id
        self.config = config
        self.drops: collections.Counter[str] = collections.Counter()
        # Facts that are not refusals (attempts, failures, relays): for metrics and tests.
        self.stats: collections.Counter[str] = collections.Counter()
        self._links = links
        self._rng = rng
        self._table = ConnectionTable()
        self._events: collections.deque[OverlayEvent] = collections.deque()
        # Links we are trying to bring up (ipop.overlay.attempts), and the bootstraps'.
        self._attempts = Attempts(
            local_id,
            direct=self._direct_peer,
            stats=self.stats,
            connect_timeout_s=config.connect_timeout_s,
            connect_back_timeout_s=config.connect_back_timeout_s,
            relay_after_s=config.relay_after_s,
            relay_yield_s=config.relay_yield_s,
            failed_backoff_s=config.failed_backoff_s,
            near_retry_s=config.near_retry_s,
        )
        self._boot = Bootstraps(
            bootstrap,
            connect_timeout_s=config.connect_timeout_s,
            retry_s=config.bootstrap_retry_s,
        )
        # Near candidates not to ask again for a while.
        self._backoff = Backoff()
        # Ids heard from peers, with who told us, until when we trust the news (the near keeper
        # below keeps them; routing takes hints from them).
        self._seen = SeenIds()
        # Ids that authenticated a link or a routed message to us: see NearKeeper.brackets_linked.
        self._proven = ProvenIds()
        # Peer -> when we last got an overlay message from it (or it became near / linked).
        self._heard: dict[NodeId, float] = {}
        # Next hops we route into without hearing back (ipop.overlay.suspect).
        self._silent_hops = SilentHops(
            rto_min_s=config.hop_rto_min_s,
            rto_max_s=config.hop_rto_max_s,
            rto_initial_s=config.hop_rto_initial_s,
        )
        self._seen_ttl = 3 * config.gossip_interval_s
        # What our fast peers hold links to, and when we tell them ours (ipop.overlay.linkhints).
        hinting = config.proximity and config.link_hints
        self._link_hints = LinkHints(
            self._table,
            rtt_max_s=timing.OVERLAY_LINK_HINT_RTT_S,
            hint_s=timing.OVERLAY_LINK_HINT_S,
            max_peers=_LINK_HINT_PEERS,
        )
        self._link_ids_teller = (
            LinkIdsTeller(
                rtt_max_s=timing.OVERLAY_LINK_HINT_RTT_S,
                min_s=timing.OVERLAY_LINK_IDS_MIN_S,
                refresh_s=timing.OVERLAY_LINK_IDS_REFRESH_S,
            )
            if hinting
            else None
        )
        # Where each routed message goes (ipop.overlay.routing); it owns the reverse hints.
        self._router = Router(
            local_id,
            table=self._table,
            silent=self._silent_hops,
            seen=self._seen,
            check=lambda msg, now: origin.check(msg, now=now),
            stats=self.stats,
            pull_min_s=config.neighbours_reply_min_s,
            proximity=config.proximity,
            hints=self._link_hints if hinting else None,
        )
        # Near upkeep (ipop.overlay.near): candidates, what we asked, the brackets test.
        self._keeper = NearKeeper(
            local_id,
            near_per_side=config.near_per_side,
            seen_ttl_s=self._seen_ttl,
            table=self._table,
            attempts=self._attempts,
            backoff=self._backoff,
            proven=self._proven,
            seen=self._seen,
        )
        # CONNECT_TO_ME: our asks in flight, answering peers' asks, and their bounds
        # (ipop.overlay.ctm).
        self._ctm = CtmAgent(
            local_id,
            config=config,
            rng=rng,
            origin=origin,
            router=self._router,
            table=self._table,
            attempts=self._attempts,
            seen=self._seen,
            keeper=self._keeper,
            drops=self.drops,
            stats=self.stats,
            endpoints=self.endpoints,
            own_endpoints=lambda: self._roaming.known(),
            near_peers=self.near_peers,
            route=self._route,
            send_routed=self._send_routed,
            add_kind=self._add_kind,
            connect=self._connect,
            joined=lambda: self._upkeep.on_joined(),
            update_routable=lambda now: self._upkeep.update_routable(now),
            follow_move=lambda peer, eps, previous, now: self._roaming.follow_move(
                peer, eps, previous, now
            ),
        )
        # Our endpoints, our roams and peers' moves (ipop.overlay.roaming).
        self._roaming = Roaming(
            config.local_endpoints,
            table=self._table,
            links=links,
            ctm=self._ctm,
            backoff=self._backoff,
            keeper=self._keeper,
            heard=self._heard,
            stats=self.stats,
            emit=self._events.append,
            hop_heard=self._hop_heard,
            relay_fallback=lambda peer, now: self._relay.fallback(peer, now=now),
            connect_back_timeout_s=config.connect_back_timeout_s,
        )
        self._started = False
        self._next_tick: float | None = None
        # Our part in relayed links, as the relay and as an end (ipop.overlay.relay).
        self._relay = RelayRole(
            local_id,
            table=self._table,
            links=links,
            attempts=self._attempts,
            seen=self._seen,
            drops=self.drops,
            stats=self.stats,
            send=self._send,
            send_run=self._send_run,
            add_kind=self._add_kind,
            emit=self._events.append,
            connect=self._connect,
            forget=self._forget,
            fallback_retry_s=timing.ROAM_RELAY_RETRY_S,
            silent=self._silent_hops,
            channel_first=rng.getrandbits(32),
            use_channels=config.relay_channels,
        )
        # The table as the policies see it, cached between ticks (ipop.overlay.views).
        self._views = ConnectionViews(self._table, relay_stamp=lambda: self._relay.stamp)
        # The near set, the join, gossip, silent near peers, routable, the policies
        # (ipop.overlay.upkeep).
        self._upkeep = RingUpkeep(
            local_id,
            config=config,
            rng=rng,
            table=self._table,
            keeper=self._keeper,
            ctm=self._ctm,
            attempts=self._attempts,
            views=self._views,
            heard=self._heard,
            drops=self.drops,
            stats=self.stats,
            emit=self._events.append,
            send=self._send,
            close_link=self._close_link,
            drop_kind=self._drop_kind,
        )
        self._link_handlers: dict[type, Callable[[object, float], None]] = {
            LinkUp: self._on_link_up,  # type: ignore[dict-item]
            LinkDown: self._on_link_down,  # type: ignore[dict-item]
            LinkMessage: self._on_link_message,  # type: ignore[dict-item]
            HandshakeFailed: self._on_handshake_failed,  # type: ignore[dict-item]
            ObservedEndpoint: self._roaming.on_observed,  # type: ignore[dict-item]
            LinkPathChanged: self._on_path_changed,  # type: ignore[dict-item]
            LinkPathDisplaced: self._on_path_displaced,  # type: ignore[dict-item]
        }
        self._message_handlers: dict[type, Callable[[object, NodeId, float], None]] = {
            Routed: self._on_routed,  # type: ignore[dict-item]
            RelayForward: self._relay.on_forward,  # type: ignore[dict-item]
            RelayDeliver: self._relay.on_deliver,  # type: ignore[dict-item]
            Neighbours: self._upkeep.on_neighbours,  # type: ignore[dict-item]
            Closing: self._on_closing,  # type: ignore[dict-item]
            RelayRefused: self._relay.on_refused,  # type: ignore[dict-item]
            RelayChannel: self._relay.channels.on_message,  # type: ignore[dict-item]
            Alive: self._on_alive,  # type: ignore[dict-item]
            FastPeers: self._upkeep.on_fast_peers,  # type: ignore[dict-item]
            LinkIds: self._on_link_ids,  # type: ignore[dict-item]
        }
        self._control_handlers: dict[int, Callable[[Routed, float], None]] = {
            KIND_CTM: self._ctm.on_ctm,
            KIND_CTM_REPLY: self._ctm.on_reply,
        }

    # --- commands ---------------------------------------------------------------------------

    def start(self, *, now: float) -> None:
        """Link to the bootstrap endpoints; the join follows over the first link that comes up."""
        if self._started:
            raise LocalProtocolError("start() called twice")
        self._started = True
        self._connect(self._boot.connect(self.endpoints(), now), now)
        self._next_tick = now + self.config.tick_s * self._rng.uniform(0.5, 1.0)
        self._upkeep.start(now)

    def set_remembered(self, endpoints: Sequence[Endpoint]) -> None:
        """Endpoints of peers we once linked to, tried with the bootstraps when we have no link.

        The bootstraps may all be gone for good; any member that still answers at an endpoint
        it had lets us rejoin (the handshake proves who it is). Bounded by the caller (see
        ipop.aio.peerstore); the bootstraps come first.
        """
        self._boot.set_remembered(endpoints)

    def set_local_endpoints(self, endpoints: Sequence[Endpoint]) -> None:
        """Replace our own socket endpoints (e.g. once the driver bound its socket)."""
        self._roaming.set_local(endpoints)

    def send_routed(
        self,
        dst: NodeId,
        payload_kind: int,
        payload: bytes,
        *,
        exact: bool,
        now: float,
        ttl: int | None = None,
        cert_budget: int | None = None,
    ) -> bool:
        """Route ``payload`` toward ``dst``; False if it could not even leave (drop counted).

        Upper layers use kinds 1..127 (messages.KIND_DHT, KIND_IP, KIND_PING, ...). With
        ``exact`` only ``dst`` delivers it; otherwise the node closest to ``dst`` does (which
        can be us: then Delivered is emitted here with ``hops == 0``). ``cert_budget``: see
        :meth:`ipop.overlay.origin.OriginAuth.routed` (None: its default).
        """
        if not 1 <= payload_kind <= UPPER_KIND_MAX:
            raise LocalProtocolError(f"payload kind {payload_kind} not in 1..{UPPER_KIND_MAX}")
        ttl = self.config.ttl if ttl is None else ttl
        if not 1 <= ttl <= MAX_TTL:
            raise LocalProtocolError(f"ttl {ttl} not in 1..{MAX_TTL}")
        flags = FLAG_EXACT if exact else 0
        msg = self._origin.routed(
            flags, ttl, payload_kind, dst, None, payload, now=now, cert_budget=cert_budget
        )
        return self._route(msg, now)

    def send_direct(self, peer: NodeId, payload_kind: int, payload: bytes, *, now: float) -> bool:
        """Send ``payload`` to the linked ``peer`` itself with no routing header (DIRECT).

        False (nothing sent, nothing counted) when no link to ``peer`` is up: the caller routes
        instead. The receiver emits :class:`Delivered` with ``hops == 0``.
        """
        if not 1 <= payload_kind <= UPPER_KIND_MAX:
            raise LocalProtocolError(f"payload kind {payload_kind} not in 1..{UPPER_KIND_MAX}")
        if peer not in self._table:
            return False
        return self._send(peer, bytes((TYPE_DIRECT, payload_kind)) + payload, now)

    def wrap_relay(self, datagram: bytes, path: RelayPath, *, now: float) -> None:
        """Carry one of our link layer's datagrams for a relayed link to its relay node."""
        self._relay.wrap(datagram, path, now=now)

    def wrap_relay_run(self, datagrams: list[bytes], path: RelayPath, *, now: float) -> None:
        """:meth:`wrap_relay` for several datagrams of one relayed link, in one run."""
        self._relay.wrap_run(datagrams, path, now=now)

    @property
    def relay_channels(self) -> RelayChannels:
        """Our part in relay channels (:class:`ipop.overlay.channels.RelayChannels`): the
        core's data path asks it directly, as the relay, an origin and a target."""
        return self._relay.channels

    def relay_run(
        self,
        peer: NodeId,
        payloads: list[bytes],
        *,
        now: float,
        take: TakeDelivered | None = None,
    ) -> None:
        """What :meth:`on_link_event` does with LinkMessages from ``peer`` carrying these
        ``payloads``, all RELAY_FORWARD or all RELAY_DELIVER (the data plane's runs,
        :meth:`ipop.core.NodeCore.receive_direct_run`): the same checks, drops and counters,
        each target's forwards re-sealed in runs (:meth:`RelayRole.on_forward_payloads`);
        the datagrams RELAY_DELIVERs bring are handed to ``take`` instead of emitted as
        :class:`RelayDatagram` events, in order (:meth:`RelayRole.on_deliver_payloads`)."""
        if peer not in self._table:
            self.drops["unknown_peer"] += len(payloads)
            return
        self._heard[peer] = now
        if payloads[0][0] == TYPE_RELAY_FORWARD:
            self._relay.on_forward_payloads(payloads, peer, now)
            self._hop_heard(peer, now)  # after the handlers, as on_link_event
        else:
            if take is None:
                raise LocalProtocolError("relay_run() of RELAY_DELIVER needs take")
            # The hop is heard before each delivered datagram is opened (see there).
            self._relay.on_deliver_payloads(payloads, peer, now, take, self._hop_heard)

    def request_shortcut(self, peer: NodeId, *, now: float) -> None:
        """Ask for a direct SHORTCUT link to ``peer`` (for traffic we exchange with it)."""
        if peer == self.local_id:
            raise LocalProtocolError("shortcut to ourselves")
        if peer in self._table:
            self._add_kind(peer, ConnectionKind.SHORTCUT, now)
        elif (att := self._attempts.get(peer)) is not None:
            # An attempt for another reason (a far link) is under way: the link it brings up
            # is our shortcut too. Dropped, the request was lost: traffic (which asks once)
            # ran over a far link that the trim policy may take away.
            att.kinds.add(ConnectionKind.SHORTCUT)
        else:
            self._ctm.send(peer, Purpose.SHORTCUT, exact=True, now=now)

    def relay_fallback(
        self, peer: NodeId, *, now: float, relays: Collection[NodeId] | None = None
    ) -> bool:
        """Key our link to ``peer`` afresh through a relay: its direct path died under a roam
        of ours. See :meth:`ipop.overlay.relay.RelayRole.fallback`; False if none is tried."""
        return self._relay.fallback(peer, now=now, relays=relays)

    def drop_shortcut(self, peer: NodeId, *, now: float) -> None:
        """We no longer need a shortcut to ``peer``; trimmed later if nothing else holds it."""
        row = self._table.get(peer)
        if row is not None and ConnectionKind.SHORTCUT not in row.remote_kinds:
            self._drop_kind(peer, ConnectionKind.SHORTCUT, now)

    # --- inputs -----------------------------------------------------------------------------

    def on_link_event(self, ev: object, *, now: float) -> None:
        """Feed one event of the link layer. Peer garbage is counted in ``drops``, never raised."""
        handler = self._link_handlers.get(type(ev))
        if handler is None:
            raise LocalProtocolError(f"not a link event: {type(ev).__name__}")
        handler(ev, now)

    def handle_timer(self, *, now: float) -> None:
        for peer, token in self._silent_hops.due(now):
            self.stats["hop_probed"] += 1
            self._send(peer, Alive(True, token).encode(), now)
        if self._next_tick is None or now < self._next_tick:
            return
        self._next_tick = now + self.config.tick_s * self._rng.uniform(0.9, 1.1)
        self._tick(now)

    def get_timer(self) -> float | None:
        probe = self._silent_hops.next_due()
        tick = self._next_tick
        if probe is None or (tick is not None and tick <= probe):
            return tick
        return probe

    def has_events(self) -> bool:
        return bool(self._events)

    def next_event(self) -> OverlayEvent | None:
        return self._events.popleft() if self._events else None

    # --- queries ----------------------------------------------------------------------------

    @property
    def routable(self) -> bool:
        return self._upkeep.routable

    def is_linked(self, peer: NodeId) -> bool:
        """``peer`` is in our table: a link to it is up (what send_direct requires)."""
        return peer in self._table

    def near_peers(self) -> frozenset[NodeId]:
        return self._upkeep.near

    @property
    def roaming(self) -> Roaming:
        """Our endpoints, our roams and peers' moves."""
        return self._roaming

    @property
    def connection_views(self) -> ConnectionViews:
        """The connection table as the policies see it (cached between ticks)."""
        return self._views

    @property
    def attempts(self) -> Attempts:
        """The links we are trying to bring up: their state, paths and relay candidates."""
        return self._attempts

    @property
    def backoff(self) -> Backoff:
        """Near candidates not to ask again before a time."""
        return self._backoff

    @property
    def origin(self) -> Origins:
        """What authenticates our routed messages and checks others' origins."""
        return self._origin

    @property
    def ctm(self) -> CtmAgent:
        """CONNECT_TO_ME: our asks in flight, answers to peers' asks, and their bounds."""
        return self._ctm

    @property
    def near_keeper(self) -> NearKeeper:
        """Near candidates: the ids we heard of, the candidates we want, the brackets test."""
        return self._keeper

    @property
    def near_upkeep(self) -> RingUpkeep:
        """The near set, the join, gossip, silent near peers and routable."""
        return self._upkeep

    def connected_peers(self) -> list[NodeId]:
        return self._table.peers()

    def endpoints(self) -> tuple[Endpoint, ...]:
        """What we advertise: our socket's endpoints, then the newest observed public ones."""
        return self._roaming.endpoints()

    @property
    def local_endpoints(self) -> tuple[Endpoint, ...]:
        """Our own socket's endpoints, as the I/O layer told us."""
        return self._roaming.local_endpoints

    def observed_endpoints(self) -> tuple[Endpoint, ...]:
        """Where peers saw us come from, newest first, minus our own socket's endpoints.

        More than one of them on one host means a mapping per destination (a symmetric NAT).
        """
        return self._roaming.observed_endpoints()

    def peer_hosts(self, peer: NodeId) -> frozenset[str]:
        """The addresses ``peer`` is known at: its direct link's path, and the public ones it
        gave us in a CONNECT_TO_ME or in its answer to ours. Not what any other message names:
        port guessing sends only here (ipop.nat.portguess)."""
        return self._ctm.peer_hosts(peer)

    def snapshot(self) -> OverlaySnapshot:
        conns = tuple(
            ConnectionInfo(c.peer, c.path, tuple(sorted(c.kinds)), c.since)
            for c in sorted(self._table, key=lambda c: c.peer)
        )
        return OverlaySnapshot(
            self.local_id,
            self._upkeep.routable,
            estimate_size(self.local_id, self._upkeep.near),
            conns,
            tuple(sorted(self.drops.items())),
        )

    # --- link events ------------------------------------------------------------------------

    def _on_link_up(self, ev: LinkUp, now: float) -> None:
        peer = ev.peer
        if peer == self.local_id:
            self.stats["linked_to_self"] += 1
            return
        self._origin.learn(ev.cert)  # the handshake verified it: its routed messages check
        self._proven.add(peer)
        if ev.rtt_s is not None:
            self._silent_hops.measured(peer, ev.rtt_s)
        self._roaming.link_up(peer, ev.observed, now)
        pend = self._attempts.linked(peer)
        was_bootstrap = self._boot.settled(ev.path)
        is_new = peer not in self._table
        self._table.add(peer, ev.path, now=now, rtt_s=ev.rtt_s)
        self._heard[peer] = now  # the handshake just came from it
        if pend is not None:
            for k in pend.kinds:
                self._add_kind(peer, k, now)
            for k in pend.remote_kinds:
                self._add_kind(peer, k, now, remote=True)
        if was_bootstrap or (pend is None and is_new):
            # A bootstrap link, or someone linked to us unasked (a joiner, or a CTM whose
            # answer is still on its way): keep it long enough to be useful.
            self._add_kind(peer, ConnectionKind.LEAF, now)
        self._upkeep.refresh(now)
        helped = self._attempts.helper_linked(peer)
        if helped is not None and is_direct(ev.path):
            self._helper_up(peer, helped, now)
        self._upkeep.linked(now)
        if ev.observed is not None and is_direct(ev.path):
            self._roaming.heard_us(peer, now)

    def _on_link_down(self, ev: LinkDown, now: float) -> None:
        self._forget(ev.peer, now)

    def _on_handshake_failed(self, ev: HandshakeFailed, now: float) -> None:
        path = ev.path
        if self._boot.settled(path):
            self.stats["bootstrap_failed"] += 1
        self._connect(self._attempts.path_failed(path, now), now)

    def _on_path_changed(self, ev: LinkPathChanged, now: float) -> None:
        if ev.peer in self._table:
            self._table.add(ev.peer, ev.path, now=now)
            self._relay.path_changed(ev.peer, ev.path)

    def _on_path_displaced(self, ev: LinkPathDisplaced, now: float) -> None:
        """Another peer now owns the endpoint our direct path to ``ev.peer`` leads to (see
        LinkPathDisplaced): key it through a relay, as after a roam of ours; traffic then asks
        for a direct shortcut to wherever its NAT maps it now."""
        if self._relay.fallback(ev.peer, now=now):
            self.stats["displaced_relay_fallbacks"] += 1

    def _on_link_message(self, ev: LinkMessage, now: float) -> None:
        if ev.peer not in self._table:
            self.drops["unknown_peer"] += 1
            return
        self._heard[ev.peer] = now
        data = ev.payload
        if data[:1] == _DIRECT_TAG:  # the data plane's common case: no dataclass decode
            self._hop_heard(ev.peer, now)
            if len(data) < 2 or not 1 <= data[1] <= UPPER_KIND_MAX:
                self.drops["direct_bad_kind"] += 1
                return
            self._events.append(Delivered(ev.peer, self.local_id, data[1], data[2:], 0, True))
            return
        try:
            msg = decode_message(ev.payload)
            self._message_handlers[type(msg)](msg, ev.peer, now)
        except RemoteProtocolError as exc:
            self.drops[exc.reason] += 1
        # After the handler: an ALIVE answer is a round-trip sample first (see _on_alive).
        self._hop_heard(ev.peer, now)

    def hop_heard(self, peer: NodeId, *, now: float) -> None:
        """Anything came from ``peer`` (the relay of :meth:`relay_run`'s datagrams, before
        the core opens each): a silent-hop episode toward it ends."""
        self._hop_heard(peer, now)

    def direct_heard(self, peer: NodeId, *, now: float) -> None:
        """DIRECT messages from linked ``peer`` that the core took without a LinkMessage (a
        relayed link's, which one by one came as events): heard, as :meth:`on_link_event`
        hears them."""
        if peer in self._table:
            self._heard[peer] = now
            self._hop_heard(peer, now)

    def _hop_heard(self, peer: NodeId, now: float) -> None:
        if self._silent_hops.heard(peer, now):
            self.stats["hop_suspect_cleared"] += 1

    # --- overlay messages -------------------------------------------------------------------

    def _on_routed(self, msg: Routed, peer: NodeId, now: float) -> None:
        verdict = self._router.decide(msg, peer, now)
        if type(verdict) is Forward:  # the common case, kept flat
            self._send_routed(verdict.hop, verdict.msg.encode(), now)
        else:
            self._apply_route(verdict, received=True, now=now)

    def _on_alive(self, msg: Alive, peer: NodeId, now: float) -> None:
        if msg.reply_wanted:
            # No larger than the probe, to an authenticated peer: nothing to bound.
            self._send(peer, Alive(False, msg.token).encode(), now)
        else:
            self._silent_hops.answered(peer, msg.token, now)

    def _on_link_ids(self, msg: LinkIds, peer: NodeId, now: float) -> None:
        # Kept only from a peer we measured fast (LinkHints.put): bounded work, no answer.
        if self._link_ids_teller is None or not self._link_hints.put(peer, msg.prefixes, now):
            self.stats["link_ids_ignored"] += 1
        else:
            self.stats["link_ids_heard"] += 1

    def _tell_link_ids(self, now: float) -> None:
        """Send our LINK_IDS list to the fast peers it is due to (ipop.overlay.linkhints)."""
        teller = self._link_ids_teller
        if teller is None or not self._upkeep.joined:
            return
        table = self._table
        # Not over a link younger than OVERLAY_LINK_IDS_SETTLE_S (see timing.py).
        young = now - timing.OVERLAY_LINK_IDS_SETTLE_S
        peers = ((c.peer, c.rtt_s) for c in table if c.since <= young)
        due = teller.due(peers, table.version, now)
        if not due:
            return
        data = LinkIds.of(self._link_ids_listed()).encode()
        for peer in due:
            if self._send(peer, data, now):
                self.stats["link_ids_sent"] += 1
                self.stats["link_ids_bytes"] += len(data)

    def _link_ids_listed(self) -> list[NodeId]:
        """The links we list (at most MAX_LINK_IDS): near ones first (each the only way to
        its part of the ring), then the rest fastest first. Direct links only: a peer that
        takes a message on our word hands it to the target at once, and over a relayed link
        that last hop crosses the relay too (ipop.overlay.linkhints)."""
        rows = sorted(
            (c for c in self._table if c.direct),
            key=lambda c: (
                ConnectionKind.NEAR not in c.kinds,
                _INF if c.rtt_s is None else c.rtt_s,
                c.peer.value,
            ),
        )
        return [c.peer for c in rows[:MAX_LINK_IDS]]

    def _on_closing(self, msg: Closing, peer: NodeId, now: float) -> None:
        if self._forget(peer, now):
            self._links.close(peer, now=now)

    # --- routing ----------------------------------------------------------------------------

    def _route(self, msg: Routed, now: float) -> bool:
        """Route one of our own messages (a peer's go through _on_routed)."""
        return self._apply_route(self._router.decide(msg, None, now), received=False, now=now)

    def _apply_route(self, verdict: Verdict, *, received: bool, now: float) -> bool:
        """Carry out a routing verdict: send the forward, deliver, or count the drop."""
        if type(verdict) is Forward:
            msg, hop = verdict.msg, verdict.hop
            if msg.cert and self._cert_known_at(hop, msg):
                # Decided before encoding: the message is encoded once, without it.
                return self._send_routed(hop, msg.copy_with(cert=b"").encode(), now)
            data = msg.encode()
            if msg.cert and self._cert_too_big(hop, len(data)):
                data = msg.copy_with(cert=b"").encode()
            return self._send_routed(hop, data, now)
        if type(verdict) is Deliver:
            self._deliver(verdict.msg, verdict.hops, received=received, now=now)
            return True
        assert type(verdict) is Drop
        self.drops[verdict.reason] += 1
        if verdict.pull is not None:
            self._pull_around(verdict.pull, now)
        return False

    # A routed message carries its source's certificate for a destination that may not hold
    # it. It stays behind when the hop is the destination and the message is ours (our link's
    # handshake gave it our certificate), or when the whole is bigger than the hop's probed
    # path carries (every datagram has DF: it would vanish). Why: a DHT record, its owner's
    # certificate inside, plus ours overflowed a 1,124-byte path, and no node behind it could
    # claim an address.

    def _cert_known_at(self, hop: NodeId, msg: Routed) -> bool:
        """Does ``hop`` hold the certificate ``msg`` carries (see above)?"""
        if hop == msg.dst and msg.src == self.local_id:
            self.stats["cert_left_known"] += 1
            return True
        return False

    def _cert_too_big(self, hop: NodeId, size: int) -> bool:
        """Is a message of ``size`` bytes with its certificate too big for ``hop``'s path?"""
        limit = self._links.payload_limit(hop)
        if limit is not None and size > limit:
            self.stats["cert_left_for_mtu"] += 1
            return True
        return False

    def _pull_around(self, target: NodeId, now: float) -> None:
        """No hop toward ``target``: pull the neighbour lists of the peers
        :meth:`Router.pull_peers` names (see there why)."""
        peers = self._router.pull_peers(target, now)
        if not peers:
            return
        self._upkeep.pull(peers, now)

    def _send_routed(self, hop: NodeId, data: bytes, now: float) -> bool:
        """Send a routed message into ``hop``; a hop that stays silent becomes suspect."""
        if not self._send(hop, data, now):
            return False
        self._silent_hops.sent(hop, now)
        return True

    def _deliver(self, msg: Routed, hops: int, *, received: bool, now: float) -> None:
        if received:
            # The one place a routed message becomes a fact for us or an upper layer: from
            # here on ``msg.src`` is the node that signed it, whatever the number of hops, and
            # a sealed payload is opened.
            opened = self._origin.open(msg, now=now)
            if type(opened) is str:
                self.drops[opened] += 1
                return
            assert type(opened) is Routed
            msg = opened
            self._proven.add(msg.src)
        if msg.kind <= UPPER_KIND_MAX:
            self._events.append(Delivered(msg.src, msg.dst, msg.kind, msg.payload, hops, msg.exact))
            return
        handler = self._control_handlers.get(msg.kind)
        if handler is None:
            self.drops["unknown_kind"] += 1
            return
        handler(msg, now)  # RemoteProtocolError propagates to _on_link_message's counter

    # --- CONNECT_TO_ME ----------------------------------------------------------------------

    # --- connecting -------------------------------------------------------------------------

    def _connect(self, actions: Sequence[AttemptAction], now: float) -> None:
        """Carry out what the attempts decided, in order."""
        for a in actions:
            if isinstance(a, Connect):
                self._links.connect(
                    a.path, now=now, expected=a.peer, retransmit=a.retransmit, timeout_s=a.timeout_s
                )
            elif a.backoff_until is not None:
                self._backoff.put(a.peer, a.backoff_until)

    def _direct_peer(self, peer: NodeId) -> bool:
        row = self._table.get(peer)
        return row is not None and row.direct

    def _helper_up(self, helper: NodeId, target: NodeId, now: float) -> None:
        """A relay helper linked directly: relay the pending attempt to ``target`` through it."""
        if target in self._table:
            return
        # No attempt left (it gave up before the helper came): ask for ``target`` again now.
        if not self._attempts.helper_up(helper, target, now) and self._backoff.lift(target):
            self._keeper.check_due = True

    # --- the tick ---------------------------------------------------------------------------

    def _tick(self, now: float) -> None:
        cfg = self.config
        self._roaming.tick(now)
        for target in self._ctm.expire(now):
            # A NEAR CTM unanswered: dead, or unreachable through what we know. Stop counting
            # it as a neighbour (it would hide a live one) and do not ask again for a while.
            # Not for long, though: one lost datagram on a multi-hop path does this too.
            self._backoff.put(target, now + cfg.near_retry_s)
            self.stats["ctm_unanswered"] += 1
        self._keeper.expire(now)
        self._backoff.expire(now)
        self._boot.expire(now)
        self._connect(self._attempts.advance(now), now)
        if not len(self._table) and self._boot.due(now):
            self._connect(self._boot.connect(self.endpoints(), now), now)
        upkeep = self._upkeep
        upkeep.refresh(now)
        upkeep.update_routable(now)
        if self._keeper.check_due:
            upkeep.ask(now)
        upkeep.run_policies(now)
        upkeep.ask_fast_peers(now)
        upkeep.check_silent(now)
        upkeep.gossip(now)
        self._tell_link_ids(now)

    def _close_link(self, peer: NodeId, now: float) -> None:
        """Close our link to ``peer`` and tell it so.

        Why several CLOSING copies: a lost one leaves the peer holding a session we have no
        keys for any more; it would route into it (every datagram dropped as unknown_index
        here, never answered) until its link timeout. Copies cost three tiny datagrams.
        """
        closing = Closing().encode()
        for _ in range(_CLOSING_COPIES):
            self._send(peer, closing, now)
        self._forget(peer, now)
        self._links.close(peer, now=now)

    # --- roaming ----------------------------------------------------------------------------

    def local_endpoints_changed(self, endpoints: Sequence[Endpoint], *, now: float) -> None:
        """Our socket's own addresses changed (the I/O layer's address watcher): we roamed.
        See :meth:`ipop.overlay.roaming.Roaming.changed`."""
        self._roaming.changed(endpoints, now=now)

    def woke(self, *, now: float) -> None:
        """We did not run for a while (NodeCore saw a gap of timing.WAKE_GAP_S): peers fell
        silent only in our eyes, so none is closed as dead for the gap; near peers are suspect
        (pulled at once, closed at near_dead_s if still silent). Our NAT mappings may be gone:
        roam, so the endpoints are re-advertised and dead direct paths fall back to relays."""
        self._upkeep.woke(now)
        self._silent_hops.restart()  # the silence was ours
        self._roaming.roam("woke", now)

    # --- helpers ----------------------------------------------------------------------------

    def _decoded(self, decode: Callable[[bytes], _M], data: bytes) -> _M | None:
        """``decode(data)``, or None with the reason counted (malformed peer input)."""
        try:
            return decode(data)
        except RemoteProtocolError as exc:
            self._refused(exc)
            return None

    def _refused(self, exc: RemoteProtocolError) -> None:
        self.drops[exc.reason] += 1

    def _send_run(
        self, peer: NodeId, payloads: list[bytes], now: float, head: bytes, strip: bytes
    ) -> int:
        """:meth:`_send` for each of ``payloads`` (``head`` before each), sealed in one run
        where the link layer can: how many were sent (:class:`ipop.overlay.relay.SendRun`;
        with ``strip``, 0 when the link layer declines: the caller goes one by one)."""
        sent = self._links.send_run(peer, payloads, now=now, head=head, strip=strip)
        if sent or strip:
            return sent
        send = self._send
        return sum(send(peer, head + data, now) for data in payloads)

    def _send(self, peer: NodeId, data: bytes, now: float) -> bool:
        try:
            self._links.send(peer, data, now=now)
        except LocalProtocolError:
            # The link died under us and its LinkDown is still queued below.
            self.drops["link_not_up"] += 1
            return False
        return True

    def _add_kind(
        self, peer: NodeId, kind: ConnectionKind, now: float, *, remote: bool = False
    ) -> None:
        if self._table.add_kind(peer, kind, now=now):
            self._events.append(ConnectionAdded(peer, kind))
            if remote:
                self._table.mark_remote(peer, kind)

    def _drop_kind(self, peer: NodeId, kind: ConnectionKind, now: float) -> None:
        if self._table.drop_kind(peer, kind, now=now):
            self._events.append(ConnectionRemoved(peer, kind))

    def _forget(self, peer: NodeId, now: float) -> bool:
        """Remove ``peer``'s row (its link is gone or going); repair if it was near."""
        row = self._table.remove(peer)
        if row is None:
            return False
        self._relay.forget(peer)
        self._keeper.forget(peer)
        self._upkeep.forget(peer)
        self._silent_hops.forget(peer)
        self._roaming.forget(peer)
        self._link_hints.forget(peer)
        if self._link_ids_teller is not None:
            self._link_ids_teller.forget(peer)
        for kind in row.kinds:
            self._events.append(ConnectionRemoved(peer, kind))
        self._upkeep.removed(peer, was_near=ConnectionKind.NEAR in row.kinds, now=now)
        return True
