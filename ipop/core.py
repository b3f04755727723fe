"""One node's protocol stack below the DHT, as a single sans-IO core: link layer + overlay.

:class:`NodeCore` owns the wiring that every node needs and that must not be written twice
(the daemon and the simulator both drive this object through :class:`ipop.aio.driver.Driver`):

- link events go to the overlay;
- link datagrams for a relayed path (``RelayPath``) are handed to the overlay, which carries
  them to the relay node inside RELAY_FORWARD; RELAY_DELIVER datagrams that the overlay
  unwraps (``RelayDatagram`` events) are fed back into the link layer as if they had arrived
  on that relay path. The data plane's runs of IP for a relayed link leave on the relay's
  channel instead once it bound one (:mod:`ipop.overlay.channels`), and channel datagrams
  that arrive are passed on as the relay or opened as the target (:meth:`_channel_run`).
  Only underlay datagrams leave through :meth:`datagrams_to_send`;
- upper-layer traffic (:meth:`send`) goes DIRECT over a link to the destination when one is
  up (a shortcut or any other link) and is routed over the ring otherwise. The first packet to
  a peer with no link asks the overlay for a shortcut, so later packets go direct;
- IP is routed over the ring only sealed end to end (:mod:`ipop.overlay.origin`), so only under
  the pairwise key, which needs the destination's certificate: the caller hands it over with the
  DHT record that named the destination (:meth:`NodeCore.learn_certificate`); a packet sent
  before is dropped (``ip_unsealable``) while the route probe and the shortcut request fetch it;
- traffic to a peer over a relayed link or over the ring also starts port guessing
  (:mod:`ipop.punching`). Its openers leave from punching sockets (``SocketPath``), which the
  I/O layer opens on first use; a knock on one of them starts a handshake there;
- inner IP packets (:meth:`send_ip`) are held to the size that the path to their destination
  carries without fragmentation (:meth:`ip_mtu`); a larger one is not sent, and the caller
  answers it with ICMP "fragmentation needed" (:mod:`ipop.vnet.toobig`). The size comes from
  the path the packet takes now: a direct or relayed link's probed size
  (:mod:`ipop.link.pmtu`, end to end through the relay), a relayed link's first hop until its
  probe answers, and for a packet routed over the ring, the route's size probed end to end
  (:mod:`ipop.routes`).

Routes over the ring that IP flows over are probed end to end like links; their table, probes
and certificate rule are :class:`ipop.routes.RouteProbes`. Shortcut upkeep (when data asks
for one, when an idle one goes) is :class:`ipop.shortcuts.ShortcutKeeper`; port guessing's
messages over the overlay are :class:`ipop.punching.Punching`. NodeCore keeps the wiring
(:meth:`_settle`), the commands and the timer.

Theory of operation: every input (datagram, timer, command) ends with :meth:`_settle`, which
moves events and datagrams between the two layers until neither has anything left. Both layers
only queue work, so the loop is bounded by what the input caused. The core reads no clock:
``now`` comes with every call.

Why over 600 lines: the data path's run forms (:meth:`NodeCore.seal_ip_run`,
:meth:`NodeCore.receive_direct_run`, :meth:`NodeCore.send_relayed_run` and the relayed
receive) sit beside the one-packet forms they must equal (``tests/unit/test_fastpath_diff.py``,
``tests/unit/test_relay_runs_diff.py``); each is the one place that asks the link layer, the
overlay and the shortcuts together whether a packet may skip the event path. Route probes,
shortcuts, punching, relay fallback and the CRL already live in modules of their own; the next
seam is the run forms as one object over the core (about 150 lines).
"""

from __future__ import annotations

import collections
import math
import operator
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import repeat

from ipop import timing
from ipop.errors import LocalProtocolError
from ipop.fallback import RoamFallback, Session, SilentPaths
from ipop.identity import CertificateError, NodeIdentity, VerifiedCrl
from ipop.journal import Journal
from ipop.link.events import (
    LinkDown,
    LinkInfo,
    LinkMessage,
    LinkPathChanged,
    LinkPathSilent,
    LinkUp,
)
from ipop.link.keys import Keypair
from ipop.link.layer import LinkConfig, LinkLayer
from ipop.link.peer import Peer
from ipop.link.pmtu import MAX_DATAGRAM, PROBE_TAG, RELAY_OVERHEAD
from ipop.nat.mapping import MappingCheck, Observer
from ipop.nat.portguess import PortGuessing, is_knock
from ipop.nat.stun import SOURCE_PRIMARY, StunAgent
from ipop.overlay.events import Delivered, OverlayEvent, PeerHidden, RelayDatagram, Roamed
from ipop.overlay.messages import (
    CRL_OP_NETWORK,
    IP_KINDS,
    KIND_BIRTHDAY,
    KIND_IP,
    KIND_IP_NET,
    KIND_PING,
    KIND_PMTU,
    TYPE_CRL,
    TYPE_DIRECT,
    TYPE_RELAY_DELIVER,
    TYPE_RELAY_FORWARD,
    Closing,
)
from ipop.overlay.node import OverlayConfig, OverlayNode, OverlaySnapshot
from ipop.overlay.origin import OriginAuth
from ipop.punching import NO_VIEW, PublicView, Punching, public_view
from ipop.revocation import CrlGossip, NetworkCrls
from ipop.routes import ROUTED_IP_MTU, RouteProbes
from ipop.shortcuts import ShortcutKeeper
from ipop.types import Endpoint, NodeId, Path, RelayPath, SocketPath, is_direct
from ipop.wire.header import (
    CHANNEL_HEADER,
    CHANNEL_HEADER_BYTES,
    DATA_MIN_BYTES,
    TYPE_CHANNEL_FROM_RELAY,
    TYPE_CHANNEL_TO_RELAY,
)

__all__ = ["ROUTED_IP_MTU", "NodeCore", "NodeSnapshot", "PublicView"]

_CRL_TAG = bytes([TYPE_CRL])
_CRL_NETWORK_OP = bytes([CRL_OP_NETWORK])
# A DIRECT message's datagram is its inner packet plus this (DIRECT header, DATA header, tag).
_DIRECT_GROWTH = DATA_MIN_BYTES + 2


# A run's message types and DIRECT kinds, read in C: bytes(map(_FIRST_BYTE, payloads)).
_FIRST_BYTE = operator.itemgetter(0)
_CHANNEL_TYPES = (TYPE_CHANNEL_TO_RELAY, TYPE_CHANNEL_FROM_RELAY)
_FROM_RELAY = bytes((TYPE_CHANNEL_FROM_RELAY,))
_CHANNEL_MIN = CHANNEL_HEADER_BYTES + DATA_MIN_BYTES  # a header and a keepalive
_SECOND_BYTE = operator.itemgetter(1)


def _all_of_kinds(messages: list[bytes], kinds: tuple[int, ...]) -> bool:
    """Every one of ``messages`` (DIRECT) has a kind byte, and it is one of ``kinds``."""
    try:
        got = bytes(map(_SECOND_BYTE, messages))
    except IndexError:  # a bare DIRECT type byte: the one-by-one path's
        return False
    return not got.translate(None, bytes(kinds))  # (in C: nothing left once they go)


def _kind_also(kinds: tuple[int, ...]) -> tuple[int, int]:
    """``kinds`` (one or two: :meth:`NodeCore.receive_direct_run`'s ``kind`` and ``also``) as
    the ``kind`` and ``also`` of :meth:`NodeCore.receive_direct` for a datagram a run does not
    take (one kind: ``also`` is that kind again, which matches nothing more)."""
    assert 1 <= len(kinds) <= 2, kinds
    return kinds[0], kinds[-1]


@dataclass(frozen=True, slots=True)
class NodeSnapshot:
    """Status material of the whole core, each layer's part from that layer's own reading
    (:meth:`NodeCore.snapshot`); :func:`ipop.report.build_status` turns it into ``ipop status``.
    Taken when status is asked for, never on a packet path. Drops and counters are per layer
    (``{"link": {...}, "overlay": {...}}``), in the order status lists them."""

    node_id: NodeId
    overlay: OverlaySnapshot  # connections with their kinds, routable
    links: tuple[LinkInfo, ...] = ()  # up sessions
    endpoints: tuple[Endpoint, ...] = ()  # what we advertise: our socket's, then observed ones
    public: PublicView = NO_VIEW
    shortcuts: dict[NodeId, float] = field(default_factory=dict)  # peer -> last data time
    peer_nat: dict[NodeId, int] = field(default_factory=dict)  # port guessing's HELLO flags
    drops: dict[str, dict[str, int]] = field(default_factory=dict)
    counters: dict[str, dict[str, int]] = field(default_factory=dict)
    crl_number: int = 0  # the revocation list in force (0: none)
    # On a shared overlay, our network CA's list in force (None: the network is the overlay).
    network_crl_number: int | None = None


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
        member: NodeIdentity | None = None,
        random_bytes: Callable[[int], bytes] | None = None,
    ) -> None:
        """``identity``: the overlay identity (links, origin auth, the CRL gossiped here);
        ``member``: the network identity over the same key (its CA's CRL is installed by
        :meth:`apply_crl`), the same object when the network is its own overlay (default).
        ``random_bytes``: where the nonces of routed messages sealed end to end come from
        (:mod:`ipop.overlay.origin`; they must never repeat under a pair's key, across
        restarts too: the daemon passes the OS's). None: drawn from ``rng`` (the simulator's
        runs replay from their seed)."""
        if member is not None and member.node_id != identity.node_id:
            raise LocalProtocolError("overlay and network identities hold different keys")
        self.identity = identity
        self.member = identity if member is None else member
        # Our other networks' identities (a daemon in several, issue 17; add_network).
        self.other_members: list[NodeIdentity] = []
        self.local_id = identity.node_id
        self.link = LinkLayer(identity, rng=random.Random(rng.random()), config=link_config)
        # Seeded after every other part's generator, so that their seeds are what they were.
        seal_rng = random.Random(0)
        self.origin = OriginAuth(
            identity,
            revoked=identity.trust.is_revoked,
            random_bytes=seal_rng.randbytes if random_bytes is None else random_bytes,
        )
        self.overlay = OverlayNode(
            identity.node_id,
            self.link,
            rng=random.Random(rng.random()),
            config=overlay_config or OverlayConfig(),
            bootstrap=bootstrap,
            origin=self.origin,
        )
        self.shortcuts = shortcuts
        self.stats: collections.Counter[str] = collections.Counter()
        self._out: list[tuple[bytes, Path]] = []
        self._events: collections.deque[OverlayEvent] = collections.deque()
        self.shortcut_keeper = ShortcutKeeper(self.overlay, self.stats)
        # The keeper's own dict (never rebound): the packet paths mark data without a call.
        self._shortcut_used = self.shortcut_keeper.used
        self.fallback = RoamFallback()
        self.silent_paths = SilentPaths()
        self.mapping = MappingCheck()
        # The last handle_timer: a gap past timing.WAKE_GAP_S means we did not run (_woke).
        self._last_timer = math.inf
        # STUN on the overlay socket (ipop.nat.stun): answered here, never seen by the link layer.
        # ``stun_alt_send`` is the I/O layer's way to send from a node's alternate sockets.
        # Answered only with ``stun_serve`` (``[stun] serve``): see ipop.nat.stun.
        self.stun = StunAgent(rng=random.Random(rng.random()), serve=stun_serve)
        self.stun_alt_send: Callable[[int, bytes, Endpoint], None] | None = None
        self.birthday = PortGuessing(rng=random.Random(rng.random()))
        # Links up and down, path changes and punching, for the adapter to log (ipop.journal).
        self.journal = Journal()
        # Port guessing's HELLO/GO over the overlay (ipop.punching).
        self.punching = Punching(self.overlay, self.birthday, self.journal, self._emit)
        # The revocation list epidemic (ipop.revocation): TYPE_CRL link messages stop here.
        self.revocation = CrlGossip(identity.trust)
        # Virtual networks' lists on a shared overlay (TYPE_CRL NETWORK), ours pinned.
        self.network_crls = NetworkCrls()
        if self.member.trust is not identity.trust:
            self.network_crls.pin(self.member.trust)
        # Routes over the ring that IP flows over, probed end to end (ipop.routes); ip_mtu
        # reads their prober's limits.
        self.routes = RouteProbes(self.overlay, self.stats)
        self.route_pmtu = self.routes.prober
        seal_rng.seed(rng.random())

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
        if kind in IP_KINDS and dst not in self.link.pmtu.wanted:
            self.link.want_path_mtu(dst, now=now)
        elif kind == KIND_PING:
            self.link.watch(dst)  # pings are what users measure reachability with
        if overlay.send_direct(dst, kind, payload, now=now):
            self.stats["sent_direct"] += 1
            if self.shortcuts and type(self.link.path_of(dst)) is RelayPath:
                self.punching.guess(dst, now)
            self._settle(now)
            return True
        budget = None
        ok = True
        if kind in IP_KINDS and dst != self.local_id:
            budget = self.routes.cert_budget(dst)
            if not self.origin.sealable(dst):
                # IP is never routed in the clear (every forwarder could read it): without
                # dst's certificate there is no pair key to seal it under. The caller hands
                # it over with the DHT record that named dst (learn_certificate); until then
                # the route probe and the shortcut's CONNECT_TO_ME below, both signed and
                # carrying ours, are answered sealed with dst's certificate attached.
                self.stats["ip_unsealable"] += 1
                self.routes.probe(dst, now)
                ok = False
        if ok:
            ok = overlay.send_routed(dst, kind, payload, exact=True, now=now, cert_budget=budget)
            self.stats["sent_routed"] += 1
        if self.shortcuts and dst != self.local_id:
            self.shortcut_keeper.ask(dst, now)
            self.punching.guess(dst, now)
        self._settle(now)
        return ok

    def learn_certificate(self, node: NodeId, der: bytes, *, now: float) -> bool:
        """``der`` is ``node``'s certificate as a verified DHT record carried it (the owner of
        a vIP): kept for routed messages to ``node`` if it verifies against our trust and is
        ``node``'s, so that IP routed to it before any link is sealed from the first packet
        (see :meth:`send`). False (counted) if it is not.

        On a shared overlay the record carries the owner's network certificate, from another
        CA than the overlay certificates the origin checks use: it is verified against the
        network's CA instead. Either certificate certifies the one key the pair key comes from
        (the node id is its hash), so a node already known needs nothing more."""
        if self.origin.knows(node) or self.origin.learn_der(node, der, now=now) is None:
            return True
        if self.member is not self.identity:  # a shared overlay: one of our networks' CAs
            for member in (self.member, *self.other_members):
                try:
                    cert = member.trust.verify(der, now=now)
                except CertificateError:
                    continue
                if cert.node_id == node:
                    self.origin.learn(cert)
                    return True
        self.stats["cert_refused"] += 1
        return False

    def add_network(self, member: NodeIdentity) -> None:
        """One more network of ours (same key, that network's certificate): the DHT records
        of its members name certificates of its CA, which :meth:`learn_certificate` takes."""
        if member.node_id != self.local_id:
            raise LocalProtocolError("a network identity of another key")
        self.other_members.append(member)
        self.network_crls.pin(member.trust)  # its list travels and is in force here

    def ip_mtu(self, dst: NodeId) -> int | None:
        """The largest inner IP packet for node ``dst`` that no hop of its current path has to
        fragment (see the module docstring); None: no limit known yet (a direct link whose
        first probe round has not answered: sent as before probing existed)."""
        if not self.overlay.is_linked(dst):
            routed = self.route_pmtu.limits.get(dst)
            return ROUTED_IP_MTU if routed is None else routed - DATA_MIN_BYTES
        pmtu = self.link.pmtu
        limit = pmtu.limits.get(dst)
        if limit is None:
            path = self.link.path_of(dst)
            if type(path) is not RelayPath:
                return None
            # Not probed end to end yet: what the first hop carries around a relayed datagram.
            limit = pmtu.limits.get(path.via, MAX_DATAGRAM) - RELAY_OVERHEAD
        return limit - _DIRECT_GROWTH

    def send_ip(self, dst: NodeId, packet: bytes, *, now: float, tag: bytes = b"") -> int | None:
        """:meth:`send` an inner IP ``packet`` to node ``dst``, unless it is larger than
        :meth:`ip_mtu`: then nothing leaves, and the MTU that fits is returned for the caller
        to answer with ICMP "fragmentation needed" (:func:`ipop.vnet.toobig.frag_needed`).

        ``tag``: the packet's network, from a node in several (:mod:`ipop.vnet.networks`): it
        goes as KIND_IP_NET, the tag before the packet, and the MTU is the tag's less."""
        mtu = self.ip_mtu(dst)
        if not self.overlay.is_linked(dst) and dst != self.local_id:
            self.routes.probe(dst, now)
        if mtu is not None and len(packet) + len(tag) > mtu:
            self.stats["ip_too_big"] += 1
            return mtu - len(tag)
        if tag:
            self.send(dst, KIND_IP_NET, tag + packet, now=now)
        else:
            self.send(dst, KIND_IP, packet, now=now)
        return None

    def apply_crl(self, data: bytes, *, now: float) -> VerifiedCrl:
        """Install a CRL (DER or PEM) handed over locally (bundle, file, operator), then end
        revoked peers' sessions and spread it. Raises :class:`ipop.identity.CrlError`.

        On a shared overlay a CRL of one of our networks' CAs goes to that network's trust
        instead: it refuses the revoked members' DHT records; links are the overlay CA's to
        cut, and the network lists travel apart (ipop.revocation.NetworkCrls; both trusts are
        one object when the network is its own overlay)."""
        peers = [p.peer for p in self.link.peers()]
        crl = self.network_crls.install_local(data, now=now, peers=peers)
        if crl is not None:
            self.stats["network_crl_installed"] += 1
            self._send_crl_output(now)
            return crl
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

    def lane_keys(self, dst: NodeId) -> tuple[Keypair[Peer], Endpoint, int, int] | None:
        """``dst``'s keys, address, probed path MTU (a DATA datagram's largest size) and the
        keys' message limit when :meth:`seal_ip` would seal for it on the main socket's
        direct path: a route of the lane (:mod:`ipop.aio.lane`); None otherwise."""
        if not self.overlay.is_linked(dst):
            return None
        got = self.link.direct_keys(dst)
        limit = self.link.pmtu.limits.get(dst)
        if got is None or type(got[1]) is not Endpoint or limit is None:
            return None
        return got[0], got[1], limit, self.link.config.reject_after_messages

    def lane_did(
        self,
        dst: NodeId,
        sent: tuple[int, int, float, float],
        received: tuple[int, int, float, float],
    ) -> None:
        """What the lane did with ``dst``'s keys (:meth:`lane_keys`), each as (packets, bytes,
        first, last): counted as :meth:`seal_ip` and :meth:`receive_direct` count their own."""
        if sent[0]:
            self.stats["sent_direct"] += sent[0]
            used = self._shortcut_used
            if dst in used:
                used[dst] = max(used[dst], sent[3])
        self.link.note_lane(dst, sent, received)

    def receive_opened(
        self,
        index: int,
        payload: bytes,
        size: int,
        newest: bool,
        path: Path,
        *,
        now: float,
        kind: int,
        also: int | None = None,
    ) -> tuple[NodeId, bytes] | None:
        """:meth:`receive_direct` for a DATA datagram the lane opened (:mod:`ipop.link.lane`:
        ``payload`` is its plaintext, ``size`` its length, under our ``index``)."""
        got = self.link.receive_opened(index, payload, size, newest, path, now=now)
        return self._direct_of(got, path, now, kind, also)

    def receive_direct(
        self, data: bytes, path: Path, *, now: float, kind: int, also: int | None = None
    ) -> tuple[NodeId, bytes] | None:
        """:meth:`receive_datagram`, except that a DIRECT message of upper-layer ``kind`` (or
        ``also``: KIND_IP_NET for a daemon in several networks) from a linked peer is returned
        as ``(peer, message)`` (``message`` still starts with the two DIRECT bytes) instead of
        becoming a Delivered event. Everything else takes the usual path (None). Call
        :meth:`flush` after a batch.
        """
        if data and data[0] < 4:  # STUN (RFC 7983 demultiplexing): not for the link layer
            self._stun_in(data, path, now)
            return None
        if data and data[0] in _CHANNEL_TYPES:
            out: list[tuple[NodeId, bytes]] = []
            kinds = (kind,) if also is None else (kind, also)
            self._channel_run([data], 0, path, now, kinds, out)
            return out[0] if out else None
        return self._open_one(data, path, now=now, kind=kind, also=also)

    def _open_one(
        self, data: bytes, path: Path, *, now: float, kind: int, also: int | None = None
    ) -> tuple[NodeId, bytes] | None:
        """:meth:`receive_direct` of a link datagram (a relayed link's come here straight, as
        the slow path feeds them to the link layer: no STUN inside a relay)."""
        got = self.link.open_data(data, path, now=now)
        return self._direct_of(got, path, now, kind, also)

    def _direct_of(
        self,
        got: tuple[NodeId, bytes] | None,
        path: Path,
        now: float,
        kind: int,
        also: int | None,
    ) -> tuple[NodeId, bytes] | None:
        """An authenticated message ``got``: returned if DIRECT of ``kind`` (or ``also``)
        from a linked peer, else the usual path's."""
        if got is None:
            self._settle(now)
            return None
        peer, payload = got
        if (
            payload[0] == TYPE_DIRECT
            and len(payload) > 1
            and (payload[1] == kind or payload[1] == also)
            and self.overlay.is_linked(peer)  # what the overlay checks first
        ):
            return got
        self._message_in(peer, payload, path, now)
        return None

    def _message_in(self, peer: NodeId, payload: bytes, path: Path, now: float) -> None:
        """An authenticated message the fast path does not return: the usual path's."""
        if payload[0] == TYPE_CRL:
            self._on_crl(peer, payload, now)
        else:
            self.overlay.on_link_event(LinkMessage(peer, payload, path), now=now)
        self._settle(now)

    # --- runs of packets (ipop.link.fastpath; the data plane uses them when it is native) ---

    def seal_ip_run(
        self, dst: NodeId, messages: list[bytes], *, now: float
    ) -> tuple[list[bytes], Endpoint | SocketPath] | None:
        """:meth:`seal_ip` for several DIRECT messages to ``dst`` in one native call
        (:meth:`LinkLayer.seal_run`), with the same effects as calling it for each. None:
        nothing sealed, nothing counted; the caller calls :meth:`seal_ip` for each instead."""
        if not self.overlay.is_linked(dst):
            return None
        link = self.link
        if dst not in link.pmtu.wanted:
            link.want_path_mtu(dst, now=now)
        sealed = link.seal_run(dst, messages, now=now)
        if sealed is not None:
            self.stats["sent_direct"] += len(messages)
            used = self._shortcut_used
            if dst in used:
                used[dst] = now
        return sealed

    def receive_direct_run(
        self,
        datagrams: list[bytes],
        path: Path,
        *,
        now: float,
        kind: int,
        also: int | None = None,
    ) -> list[tuple[NodeId, bytes]]:
        """:meth:`receive_direct` for every datagram of ``datagrams`` (one path), in order:
        the DIRECT messages of ``kind`` (or ``also``) it would have returned, in that order.
        Runs under one key are opened in one native call (:meth:`LinkLayer.open_run`); the
        rest go through :meth:`receive_direct` one by one. Call :meth:`flush` after a batch."""
        out: list[tuple[NodeId, bytes]] = []
        kinds = (kind,) if also is None else (kind, also)  # (once a batch)
        self._open_runs(datagrams, path, now, kinds, out, self.receive_direct)
        return out

    def _open_runs(
        self,
        datagrams: list[bytes],
        path: Path,
        now: float,
        kinds: tuple[int, ...],
        out: list[tuple[NodeId, bytes]],
        one: Callable[..., tuple[NodeId, bytes] | None],
    ) -> None:
        """Open ``datagrams`` (one path) in runs, ``one`` for those a run does not take; the
        DIRECT messages of ``kinds`` go to ``out``. A run's RELAY_FORWARD and RELAY_DELIVER
        messages are handled a run at a time too (:meth:`_relay_run`)."""
        kind, also = _kind_also(kinds)
        open_run = self.link.open_run
        i, n = 0, len(datagrams)
        while i < n:
            run = open_run(datagrams, i, path, now=now)
            if run is None:
                if datagrams[i][:1] and datagrams[i][0] in _CHANNEL_TYPES:
                    i = self._channel_run(datagrams, i, path, now, kinds, out)
                    continue
                got = one(datagrams[i], path, now=now, kind=kind, also=also)
                if got is not None:
                    out.append(got)
                i += 1
                continue
            peer, i, payloads = run
            self._opened(peer, payloads, path, now, kinds, out)

    def _opened(
        self,
        peer: NodeId,
        payloads: list[bytes],
        path: Path,
        now: float,
        kinds: tuple[int, ...],
        out: list[tuple[NodeId, bytes]],
        relay: NodeId | None = None,
    ) -> None:
        """The payloads a run opened from ``peer`` on ``path``: DIRECT messages of ``kinds``
        to ``out``, RELAY_FORWARD and RELAY_DELIVER a run at a time (:meth:`_relay_run`),
        probes to the link layer in their place (:meth:`LinkLayer.probe_in`), the rest as
        one by one.

        ``relay``: the node that delivered them (:meth:`_relay_run`), where one by one each
        came as an event after its RELAY_DELIVER: the relay is heard before each message that
        may answer through it and before each group of messages after one (an answer never
        finds it suspect; the episode an answer begins ends with the relay's next message),
        and DIRECT messages hear ``peer``, as the event path's overlay does."""
        overlay = self.overlay
        linked = overlay.is_linked(peer)
        # Each message's type and, for DIRECT ones, kind, read in C (map over itemgetter):
        # a run is mostly one type, taken at once below (a run's payloads are never empty).
        tags = bytes(map(_FIRST_BYTE, payloads))
        j, m = 0, len(payloads)
        while j < m:
            tag = tags[j]
            k = m - len(tags[j:].lstrip(tags[j : j + 1]))  # this type's run: [j, k)
            run = payloads[j:k] if j or k < m else payloads
            j = k
            if relay is not None:
                overlay.hop_heard(relay, now=now)
            if tag in (TYPE_RELAY_FORWARD, TYPE_RELAY_DELIVER):
                self._relay_run(peer, run, now, kinds, out)
                linked = overlay.is_linked(peer)
            elif tag == TYPE_DIRECT and linked and _all_of_kinds(run, kinds):
                out.extend(zip(repeat(peer), run))
                if relay is not None:
                    overlay.direct_heard(peer, now=now)
            else:  # one by one, as the event path would take them
                for i, payload in enumerate(run):
                    if i and relay is not None:
                        overlay.hop_heard(relay, now=now)
                    if linked and tag == TYPE_DIRECT and len(payload) > 1 and payload[1] in kinds:
                        out.append((peer, payload))
                        if relay is not None:
                            overlay.direct_heard(peer, now=now)
                        continue
                    if tag == PROBE_TAG:  # (answered here, after the messages before it)
                        last = j == m and i == len(run) - 1
                        self.link.probe_in(peer, payload, path, now=now, last=last)
                        self._settle(now)
                        continue
                    self._message_in(peer, payload, path, now)
                    linked = overlay.is_linked(peer)

    def _relay_run(
        self,
        peer: NodeId,
        payloads: list[bytes],
        now: float,
        kinds: tuple[int, ...],
        out: list[tuple[NodeId, bytes]],
    ) -> None:
        """Relay messages of one type from ``peer`` (:meth:`OverlayNode.relay_run`): as the
        relay, each target's forwards re-sealed in runs; as an end, the datagrams delivered
        for each relayed link opened in runs straight from the messages, as the slow path
        opens them one by one (``relay`` of :meth:`_opened`)."""
        overlay = self.overlay
        kind, also = _kind_also(kinds)

        def take(payloads: list[bytes], start: int, path: RelayPath, head: bytes) -> int:
            run = self.link.open_run(payloads, start, path, now=now, head=head)
            if run is None:
                data = payloads[start][len(head) :]
                got = self._open_one(data, path, now=now, kind=kind, also=also)
                if got is not None:
                    out.append(got)
                    overlay.direct_heard(got[0], now=now)  # (the event path's overlay's)
                return start + 1
            origin, stop, opened = run
            if opened:
                self._opened(origin, opened, path, now, kinds, out, peer)
            return stop

        overlay.relay_run(peer, payloads, now=now, take=take)
        self._settle(now)

    # --- relay channels (ipop.overlay.channels) -----------------------------------------------

    def _channel_run(
        self,
        datagrams: list[bytes],
        start: int,
        path: Path,
        now: float,
        kinds: tuple[int, ...] | None,
        out: list[tuple[NodeId, bytes]],
    ) -> int:
        """The relay channel datagrams from ``datagrams[start]`` on with its header (one
        path): the index after the last. As the relay (CHANNEL_TO_RELAY), passed on to the
        channel's target after the overlay's checks, unopened, the type byte rewritten. As the
        target (CHANNEL_FROM_RELAY), opened like a RELAY_DELIVER's datagrams (in runs where
        the link layer can) as relayed through the node linked at ``path`` (the session's
        relay if it is there); their DIRECT messages of ``kinds`` go to ``out`` (``kinds``
        None: the slow path's, everything as events)."""
        data = datagrams[start]
        overlay = self.overlay
        if len(data) < _CHANNEL_MIN:
            overlay.relay_channels.drop("relay_channel_malformed")
            return start + 1
        head = data[:CHANNEL_HEADER_BYTES]
        stop, n = start + 1, len(datagrams)
        while (
            stop < n and len(datagrams[stop]) >= _CHANNEL_MIN and datagrams[stop].startswith(head)
        ):
            stop += 1
        if data[0] == TYPE_CHANNEL_TO_RELAY:
            run = datagrams[start:stop] if start or stop < n else datagrams
            number = CHANNEL_HEADER.unpack_from(data)[1]
            target = overlay.relay_channels.forward(number, path, run, now=now)
            if target is not None:
                self._out.extend(zip([_FROM_RELAY + d[1:] for d in run], repeat(target)))
            return stop
        link = self.link
        looked, here = False, None
        i = start
        while i < stop:
            owner = link.index_owner(datagrams[i], CHANNEL_HEADER_BYTES)
            if owner is None:
                overlay.relay_channels.drop("relay_channel_unknown")
                i += 1
                continue
            origin, session_path = owner
            rpath = session_path if type(session_path) is RelayPath else None
            if rpath is None or not overlay.relay_channels.from_relay(rpath.via, path, 0):
                # The session runs elsewhere: through another relay (each end keys through
                # one of its choice, and either may be the one a datagram used) or direct
                # now (a shortcut). As for RELAY_DELIVER, what counts is the node that
                # passed it on, found by its address once a run.
                if not looked:
                    looked, here = True, link.peer_at(path)
                rpath = RelayPath(via=here, peer=origin) if here is not None else None
                if rpath is None or not overlay.relay_channels.from_relay(rpath.via, path, 1):
                    if rpath is None:
                        overlay.relay_channels.drop("relay_channel_relay")
                    i += 1
                    continue
            via = rpath.via
            run_of = None
            if kinds is not None:
                run_of = link.open_run(datagrams, i, rpath, now=now, head=head)
            if run_of is None:
                self._channel_one(datagrams[i][CHANNEL_HEADER_BYTES:], rpath, now, kinds, out)
                i += 1
                continue
            peer, j, opened = run_of
            if opened:
                overlay.relay_channels.opened(via, len(opened), now)
                self._opened(peer, opened, rpath, now, kinds or (), out, via)
            i = max(j, i + 1)
        return stop

    def _channel_one(
        self,
        inner: bytes,
        rpath: RelayPath,
        now: float,
        kinds: tuple[int, ...] | None,
        out: list[tuple[NodeId, bytes]],
    ) -> None:
        """One DATA datagram that came on a relay channel through ``rpath.via``, opened as a
        RELAY_DELIVER's would be (:meth:`_channel_run`)."""
        got = self.link.open_data(inner, rpath, now=now)
        if got is None:
            self._settle(now)
            return
        peer, payload = got
        overlay = self.overlay
        overlay.relay_channels.opened(rpath.via, 1, now)
        overlay.hop_heard(rpath.via, now=now)
        if (
            kinds is not None
            and payload[0] == TYPE_DIRECT
            and len(payload) > 1
            and payload[1] in kinds
            and overlay.is_linked(peer)
        ):
            out.append(got)
            overlay.direct_heard(peer, now=now)
            return
        self._message_in(peer, payload, rpath, now)

    # --- a relayed link's runs (the data plane's sender) ---------------------------------------

    def send_relayed_run(self, dst: NodeId, messages: list[bytes], *, now: float) -> bool:
        """:meth:`send_ip` for several DIRECT messages (``TYPE_DIRECT, KIND_IP``, packet) to a
        peer whose link runs over a relay, with the same effects as sending them one by one:
        sealed end to end in one run, wrapped for the relay and sealed for it in one more
        (:meth:`OverlayNode.wrap_relay_run`); they leave on the next :meth:`flush`. False
        (nothing sent, nothing counted): the caller sends them one by one. Taken only once the
        relayed path's MTU was probed end to end (the data plane checked each packet against
        it, as :meth:`ip_mtu` would have)."""
        link = self.link
        if not self.overlay.is_linked(dst) or dst not in link.pmtu.limits:
            return False
        sealed = link.seal_relayed_run(dst, messages, now=now)
        if sealed is None:
            return False
        used = self._shortcut_used
        if dst in used:
            used[dst] = now
        if dst not in link.pmtu.wanted:
            link.want_path_mtu(dst, now=now)
        self.stats["sent_direct"] += len(messages)
        on_channel = self.overlay.relay_channels.run(sealed[0], sealed[1], now=now)
        if on_channel is None:
            self.overlay.wrap_relay_run(sealed[0], sealed[1], now=now)
        else:
            self._out.extend(zip(on_channel[0], repeat(on_channel[1])))
        if self.shortcuts:
            self.punching.guess(dst, now)
        self._settle(now)
        return True

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
        if data and data[0] in _CHANNEL_TYPES:
            self._channel_run([data], 0, path, now, None, [])
            self._settle(now)
            return
        self.link.receive_datagram(data, path, now=now)
        self._settle(now)

    def handle_timer(self, *, now: float) -> None:
        if now - self._last_timer >= timing.WAKE_GAP_S:
            self._woke(now)
        self._last_timer = now
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
        t = self.routes.next_time()
        if t is not None and now >= t:
            self.routes.send_due(now)
        if self.fallback.due is not None and now >= self.fallback.due:
            self._relay_fallbacks(now)
        if self.silent_paths.due is not None and now >= self.silent_paths.due:
            self._silent_path_fallbacks(now)
        if self.mapping.ready(now):
            self._check_mapping(now)
        self.shortcut_keeper.expire(now)
        if self.routes.used:
            self.routes.expire(now)
        self.shortcut_keeper.forget_old_asks(now)
        self._settle(now)

    def shortcut_peers(self) -> dict[NodeId, float]:
        """Peers we hold (or are forming) a shortcut to, with their last data time."""
        return self.shortcut_keeper.peers()

    def snapshot(self) -> NodeSnapshot:
        """Every layer's status material at once (see NodeSnapshot)."""
        link, overlay, revocation = self.link, self.overlay, self.revocation
        return NodeSnapshot(
            node_id=self.local_id,
            overlay=overlay.snapshot(),
            links=tuple(link.peers()),
            endpoints=overlay.endpoints(),
            public=self.public_view(),
            shortcuts=self.shortcut_peers(),
            peer_nat=self.birthday.peer_flags(),
            drops={
                "link": dict(link.drops),
                "overlay": dict(overlay.drops),
                "stun": dict(self.stun.drops),
                "crl": dict(revocation.drops),
                "network_crl": dict(self.network_crls.drops),
            },
            counters={
                "link": dict(link.stats),
                "overlay": dict(overlay.stats),
                "node": dict(self.stats),
                "crl": dict(revocation.stats),
                "network_crl": dict(self.network_crls.stats),
            },
            crl_number=self.identity.trust.crl_number,
            network_crl_number=(
                self.member.trust.crl_number
                if self.member.trust is not self.identity.trust
                else None
            ),
        )

    def get_timer(self) -> float | None:
        # Asked after every input (the driver re-arms its timer): no list, no min() call.
        due = self.overlay.get_timer()
        for t in (
            self.link.get_timer(),
            self.stun.get_timer(),
            self.birthday.get_timer(),
            self.routes.next_time(),
            self.fallback.due,
            self.silent_paths.due,
            self.mapping.due(),
        ):
            if t is not None and (due is None or t < due):
                due = t
        return due

    def _emit(self, datagrams: Iterable[tuple[bytes, Path]]) -> None:
        self._out.extend(datagrams)

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

    # --- port guessing (ipop.nat.portguess) -------------------------------------------------------

    def public_view(self) -> PublicView:
        """What peers' echoes say of our NAT (the one reading of them; see PublicView)."""
        return public_view(self.overlay)

    def _on_roamed(self, now: float, reason: str) -> None:
        """We roamed (a new address, or our NAT rebound): what port guessing learned and the
        shortcut requests made from the old address no longer hold; traffic asks anew. Direct
        sessions that hear nothing since go through a relay meanwhile
        (:meth:`_relay_fallbacks`): ROAM_RELAY_AFTER_S after a new address or a wake-up,
        REBIND_RELAY_AFTER_S after a rebinding."""
        self.birthday.roamed()
        self.shortcut_keeper.roamed()
        self.fallback.roamed(reason, now=now)
        self.silent_paths.roamed()

    def _woke(self, now: float) -> None:
        """Our timers (due at least every overlay tick) did not run for WAKE_GAP_S: the process
        was stopped or the machine slept. Before the link timeout closes every session at once
        (each looks silent for the whole gap), key them afresh and re-advertise as after a
        roam (LinkLayer.woke, OverlayNode.woke); dead ones still time out as usual."""
        self.stats["woke"] += 1
        self.link.woke(now=now)
        self.overlay.woke(now=now)
        self._settle(now)

    def _relay_fallbacks(self, now: float) -> None:
        """Key every direct session silent since the roam through a relay (:mod:`ipop.fallback`
        says which, and through whom)."""
        plan = self.fallback.plan(self._sessions(), now=now)
        for peer in plan.silent:
            if self.overlay.relay_fallback(peer, relays=plan.relays, now=now):
                self.stats["roam_relay_fallbacks"] += 1

    def _sessions(self) -> Iterator[Session]:
        link, joined = self.link, self.birthday.joined
        return (
            Session(i.peer, i.path, link.last_heard(i.peer), joined(i.peer)) for i in link.peers()
        )

    def _silent_path_fallbacks(self, now: float) -> None:
        """Key each direct session whose path fell silent through a relay (not a roam of ours:
        :class:`ipop.fallback.SilentPaths`); traffic then asks for a direct shortcut anew."""
        for peer in self.silent_paths.plan(self._sessions(), now=now):
            if self.overlay.relay_fallback(peer, now=now):
                self.stats["silent_path_relay_fallbacks"] += 1

    def _check_mapping(self, now: float) -> None:
        """Behind a NAT, ask one peer outside it where it sees us (:mod:`ipop.nat.mapping`)."""
        observers = (
            Observer(i.peer, i.observed, type(i.path) is Endpoint) for i in self.link.peers()
        )
        peer = self.mapping.pick(observers, local=self.overlay.local_endpoints, now=now)
        if peer is not None and self.link.echo(peer, now=now):
            self.stats["mapping_checks"] += 1

    def _on_link_path(self, peer: NodeId, now: float) -> None:
        """A session with ``peer`` is up or moved: a direct one ends our knocking at it."""
        path = self.link.path_of(peer)
        if path is not None and is_direct(path) and self.birthday.linked(peer, now=now):
            self.journal.punch_linked(peer, path, now=now)

    # --- revocation (ipop.revocation) ------------------------------------------------------

    def _on_crl(self, peer: NodeId, payload: bytes, now: float) -> None:
        if payload[1:2] == _CRL_NETWORK_OP:
            self._on_network_crl(peer, payload, now)
        elif self.revocation.receive(peer, payload, now=now) is not None:
            self._crl_installed(peer, now)
        self._send_crl_output(now)

    def _on_network_crl(self, peer: NodeId, payload: bytes, now: float) -> None:
        got = self.network_crls.receive(peer, payload, now=now)
        if got is not None:
            # Passed on to every other linked peer; a member's own list is now in force in its
            # network trust (ipop.dht.policy refuses the revoked members' records).
            peers = [p.peer for p in self.link.peers()]
            self.network_crls.announce(got[0], peers, source=peer)

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
        for peer, payload in (*self.revocation.outgoing(), *self.network_crls.outgoing()):
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
                if type(lev) is LinkPathSilent:
                    self.journal.path_silent(lev.peer, lev.path, now=now)
                    self.silent_paths.noted(lev.peer, now=now)
                    continue
                if type(lev) is LinkUp:
                    self.journal.link_up(lev.peer, lev.path, now=now)
                elif type(lev) is LinkPathChanged:
                    self.journal.path_changed(lev.peer, lev.path, lev.reason, now=now)
                if type(lev) is LinkUp or type(lev) is LinkPathChanged:
                    self._on_link_path(lev.peer, now)
                if type(lev) is LinkUp:
                    self.revocation.link_up(lev.peer, now=now)
                    self.network_crls.link_up(lev.peer, now=now)
                    self._send_crl_output(now)
                elif type(lev) is LinkDown:
                    self.journal.link_down(lev.peer, lev.reason, now=now)
                    self.revocation.link_down(lev.peer)
                    self.network_crls.link_down(lev.peer)
                    self.birthday.unlinked(lev.peer)
                    self.silent_paths.forget(lev.peer)
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
                    self.punching.on_birthday(oev, now)
                elif isinstance(oev, Delivered) and oev.kind == KIND_PMTU:
                    busy = True
                    self.routes.on_probe(oev, now)
                elif type(oev) is PeerHidden:
                    self.birthday.hidden(oev.peer, now=now)
                elif type(oev) is Roamed:
                    self._on_roamed(now, oev.reason)
                    if oev.reason == "rebound":
                        # Our NAT rebound: key every direct session afresh from the new
                        # mappings, as after a roam (local_endpoints_changed does it there).
                        busy = True
                        link.local_address_changed(now=now)
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
        the link layer checks (:meth:`LinkLayer.peer_unlinked`)."""
        if ev.hops > 1 and self.link.is_up(ev.src) and self.link.peer_unlinked(ev.src, now=now):
            self.stats["routed_around_link"] += 1

    def __repr__(self) -> str:
        return f"NodeCore({self.local_id.short()})"
