"""The node's whole session layer: handshakes, keys, keepalives and liveness (sans-IO).

:class:`LinkLayer` owns every authenticated session of one node, whatever the path each
runs over. A *path* (:data:`ipop.types.Path`, a direct :class:`Endpoint` or a
:class:`RelayPath`) is opaque here: a datagram comes in on a path, answers go back on that
path, and outputs are ``(bytes, path)`` pairs the driver (or the overlay, for relay paths)
delivers.

Beside it, each in its own module: the events it yields (:mod:`ipop.link.events`), its
configuration and drop reasons (:mod:`ipop.link.config`), the per-peer record
(:mod:`ipop.link.peer`), the keys and the index table (:mod:`ipop.link.keys`), path choice
(:mod:`ipop.link.paths`), the per-peer deadline heap (:mod:`ipop.link.timers`), and the three
sub-machines it owns and hands its tables to: both sides of every handshake
(:mod:`ipop.link.handshakes`), NAT-rebinding echoes (:mod:`ipop.link.rebind`) and path MTU
probing (:mod:`ipop.link.probing`). What stays here: the peer table, receive dispatch, the
DATA seal/open paths (kept flat: they are per packet), rekey triggers, liveness and
keepalives, roaming, the timer, and the commands and queries. The module stays above 600
lines because about 200 of them are this theory of operation, which the sub-machines' own
docstrings refer to by invariant number.

Theory of operation
-------------------
Per peer (keyed by the node id its certificate proves) there are at most:

- ``current``: the keys we seal with. Set on the initiator when a valid Resp arrives, on the
  responder when the first DATA sealed with its pending keys arrives (key confirmation).
- ``previous``: the keys ``current`` replaced; they still open packets for
  ``previous_key_grace_s`` (packets in flight during a rekey), never seal. Keys that
  ``previous`` held before (several handshakes completed within a grace period: one per path
  a shortcut dialled) stay in ``older`` until their own grace ends (at most
  ``max_pending_responses``): the peer may not have switched off them yet.
- ``pending``: responder keys derived from verified Inits but not yet confirmed by DATA (one
  per Init retransmission, at most ``max_pending_responses``, each dropped after
  ``handshake_timeout_s``). The first one confirmed becomes ``current``; the others stay
  ``spare`` for ``SPARE_KEYS_S``, and DATA under one of them makes it ``current`` in turn
  (an initiator that dialled several of our paths seals with the last Resp it got).

Every set of keys is registered under the index *we* chose (``receiver_index`` of the DATA
header), so a received DATA finds its keys with one dict lookup, before any crypto
(:class:`ipop.link.keys.IndexTable`, which also remembers the indices we retired).

Invariants:

1. Nothing unauthenticated is answered: a Resp is sent only for an Init whose certificate,
   signature and freshness checked out; DATA is never answered, except an authenticated
   path MTU probe (:mod:`ipop.link.pmtu`), with an ack smaller than any probe, and an
   authenticated echo (:mod:`ipop.link.echo`), with an ack no larger (and a session that
   follows its peer to a new port says so once per move, invariant 8). Every refusal is a
   path MTU probe (:mod:`ipop.link.pmtu`), with an ack smaller than any probe, and relayed
   DATA that only a session we lost can explain (an Init back through the relay, an
   authenticated member, to the node it named: ``Handshakes._rekey_relayed``). Every refusal is a
   ``drops`` counter (a reason of :data:`LINK_DROP_REASONS`) and nothing else. The one
   exception is the flood guard's (:mod:`ipop.link.cookie`): under load, an Init without a
   valid cookie gets a 37-byte COOKIE_REPLY, always smaller than the Init, and no other work.
2. Init freshness and binding: an Init must name us (our node id; an Init bound to an
   endpoint, a bootstrap's, is accepted wherever it lands, see
   :meth:`ipop.link.handshakes.Handshakes.on_init`); its timestamp
   must be within ``handshake_clock_skew_s`` of ``now`` and strictly newer than the last
   Init accepted from that node *naming the same responder* (so a replayed Init gets nothing,
   and a copy of an Init meant for someone else can never make ours look stale); our own
   Init timestamps strictly increase. Exceptions while the keys we derived for an Init are
   unconfirmed: the same Init core from the same path gets the very same Resp again (its
   retransmission; ours was lost), and from another path a Resp of its own (at most
   ``max_pending_responses`` paths): a copy an observer raced ahead must not block the
   original.
3. A replay window is advanced only after the AEAD tag verified.
4. One handshake at a time per pair: when both sides' Inits cross on one path (each has an
   initiation outstanding toward the path the other's Init came from, with that node or no
   node expected), the Init of the node with the LARGER node id wins: the larger drops the
   smaller's Init ("handshake_collision"); the smaller abandons its own initiation and
   answers. Both then complete the same handshake, so both seal with the same keys.
   An initiation that is never retransmitted (``connect(..., retransmit=False)``: the
   overlay's connect-back punch) does not count as crossing: we answer their Init and keep
   ours, since theirs is the retried half (if both complete, the different-keys repair
   below applies). Crossings over different paths (punching both ways) are not refused,
   because the other path may never deliver; if both handshakes complete and the two sides
   end up sealing with different keys, each still opens the other's on ``previous``, and
   the first side to see
   its previous keys still in use half a grace period after switching starts one more
   (sequential, hence converging) handshake ("rehandshake_diverged"); only one of its own
   toward the session's path defers either repair (one toward another path may hang for the
   whole handshake timeout, past the grace). DATA under an index of
   ours that we retired (keys answered but dropped unconfirmed, keys a rekey replaced), for a
   peer whose session is up, starts one too ("rehandshake_stale_keys", one per handshake
   timeout): the two ends hold different keys, and waiting for the link timeout would lose
   everything meanwhile. Relayed DATA from a peer we hold no session with, under an index we
   never gave out, starts one toward that relay path ("rehandshake_relayed_unknown"): the
   peer seals with a session we lost in a restart.
5. Rekey is started by whichever side first reaches ``rekey_after_s`` (on a send or on the
   timer, so idle links rekey too) or ``rekey_after_messages`` on its sending keys, toward
   the peer's current path, with the peer's id expected; traffic keeps flowing on the old
   keys until the new ones are current, and the old ones still open for the grace period
   afterwards, so a rekey loses nothing.
   Keys past ``reject_after_s`` / ``reject_after_messages`` neither seal nor open.
6. Liveness: if we sealed nothing to an up peer for ``keepalive_interval_s`` we send an
   empty DATA (keepalive, never a LinkMessage); if nothing authenticated arrived from it for
   ``link_timeout_s`` the link goes down (LinkDown "timeout").
7. Path choice (decided by :mod:`ipop.link.paths`, applied here): a session is on one path.
   A relay path never replaces a working direct one (nothing came from the peer for
   ``RELAY_TAKEOVER_SILENT_S``: not working), and a direct one always replaces a relay (the
   upgrade). Between direct paths (any socket), a handshake that completes on another path
   moves the session only if its round trip was under ``PATH_SWITCH_RATIO`` of the current
   path's, or the current one has carried nothing authenticated for ``PATH_SILENT_S``
   (hysteresis: two live paths never flap, and the LAN
   path, fastest, is kept when two peers share a LAN). Roaming: the newest authenticated DATA
   arriving from another direct path moves the session there at once if only the port
   changed (NAT rebinding), otherwise only once the current path has been silent for
   ``PATH_SILENT_S`` (the peer moved to another of its paths); counted in ``stats["roamed"]``
   / ``stats["roam_held"]``. Newest authenticated DATA through a relay moves a direct session
   that has carried nothing for ``PATH_SILENT_S`` onto that relay (``relay_followed``): the
   peer fell back to it after a roam. Direct <-> relay moves are the overlay's decision
   (:meth:`LinkLayer.set_path`). When our own address changes,
   :meth:`LinkLayer.local_address_changed` keys every direct session afresh from it
   (``roam_rehandshakes``); when a peer says it left the path we hold for it,
   :meth:`LinkLayer.peer_moved` drops the hysteresis for that session (``peer_moved``); when
   another peer's handshake or roam proves our main socket's endpoint of a session its own
   (two hosts behind one NAT, one port toward us), that session loses its hold on it too
   and a LinkPathDisplaced tells the overlay (``path_displaced``; :func:`ipop.link.paths.
   displaced`).
8. NAT rebinding (:mod:`ipop.link.echo`): a session that carries upper-layer traffic
   (:meth:`LinkLayer.watch`) on a direct path gets one echo when it falls silent (a busy
   peer quiet for ``REBIND_QUIET_S``, or a peer that answered nothing to our message for as
   long), none again before the peer speaks. The answer says where the peer saw the
   echo come from; a change is an ObservedEndpoint (the overlay's cue to roam, see
   ``OverlayNode._on_observed``). An echo unanswered for ``REBIND_ECHO_WAIT_S`` asks up to
   ``REBIND_WITNESSES`` other recently heard peers (once per ``REBIND_WITNESS_MIN_S``): if
   our NAT rebound, they hear us from the new mapping and say so. An ack counts only as the
   answer to the echo we have outstanding with that peer, and nothing unauthenticated ever
   reports an endpoint (``echo_sent``, ``echo_answered``,
   ``echo_unanswered``, ``echo_witness_sent``, ``echo_late``, ``rebind_suspected``). The
   other way round, a session that follows its peer to a new port of the same address
   (invariant 7) tells the peer where its datagrams come from now (a *seen*: ``seen_sent``,
   ``seen_received``; ``seen_refused``: another address than any peer sees us at), so a node
   behind a NAT that rebound learns it from the first peer that can still hear it, whatever
   the traffic.

Drop reasons (``drops``): any datagram: ``empty``, ``unknown_type``, ``malformed``; DATA:
``unknown_index``, ``expired_key``, ``replay``, ``too_old``, ``auth_failed``; Init/Resp:
the certificate reasons of :data:`ipop.identity.CERT_REASONS`, ``bad_signature``,
``stale_handshake``, ``own_identity``, ``not_for_us``, ``handshake_collision``,
``no_common_cipher``, ``bad_cipher``, ``bad_key``, ``unexpected_peer``, ``unknown_index``,
the guard's ``under_load``, ``init_rate_limited``, ``init_overloaded``; cookie replies:
``bad_cookie_reply``; path MTU probes: ``bad_probe``. All of them are in
:data:`LINK_DROP_REASONS`. Facts that are not refusals are counted in ``stats``
(``link_up``, ``link_down_<reason>`` (``revoked``: see :meth:`LinkLayer.close_revoked`;
``stale``: :meth:`LinkLayer.peer_unlinked`), ``rekey_started``,
``roamed``, ``collision_yielded``, ``handshake_answered``, ``handshake_retransmitted``,
``unlinked_checks``,
``handshake_failed``, ``rehandshake_diverged``, ``rehandshake_stale_keys``,
``data_under_retired_keys`` (the peer seals with keys we dropped), ``spare_keys_confirmed``,
``rehandshake_relayed_unknown``,
``init_expensive`` (Inits that reached public-key work), ``cookie_sent``,
``cookie_received``, ``cookie_resent``).

Timer: every peer's earliest deadline lives in a heap (:class:`ipop.link.timers.DeadlineHeap`;
lazy: an entry is live only while its sequence number is the peer's ``due_seq``), so a
firing handles only the peers that are due, in O(log peers) each, instead of scanning every
peer (which made keepalives O(peers²) per node). A deadline is pushed when it moves earlier
(a session or handshake appears, a rekey is scheduled); per-packet updates (``last_tx``,
``last_rx``) only push deadlines later, so the heap entry is at worst early: the peer is then
found not due and re-pushed. This keeps the packet path free of O(peers) work. Initiations
are few and are scanned.

Retransmitted Inits are the same core as the first copy (one signature per handshake, not
one per retry; the handshake timeout is far inside the clock-skew window); a cookie from a
loaded responder changes only the mac2 after it, and the Init is resent with it at once. A
responder that already accepted that exact Init, whose answer was lost, sends its cached Resp
again from the same path while the keys it derived are still pending: no new state, no new
signature.
"""

from __future__ import annotations

import collections
import contextlib
import random
from collections.abc import Callable
from itertools import repeat
from typing import Final

from ipop import timing
from ipop.errors import LocalProtocolError
from ipop.identity import NodeCertificate, NodeIdentity
from ipop.link import echo
from ipop.link.config import LINK_DROP_REASONS, LinkConfig
from ipop.link.cookie import InitGuard
from ipop.link.crypto import InvalidTag, nonce_for
from ipop.link.events import (
    LinkDown,
    LinkEvent,
    LinkInfo,
    LinkPathChanged,
    LinkPathDisplaced,
    link_message,
)
from ipop.link.handshakes import Handshakes
from ipop.link.keys import IndexTable, Keypair
from ipop.link.paths import PathQuality, Roam, displaced, should_roam
from ipop.link.peer import Peer, Shared
from ipop.link.pmtu import PROBE_TAG
from ipop.link.probing import PathProbing
from ipop.link.rebind import Rebinding
from ipop.link.timers import DeadlineHeap
from ipop.types import Endpoint, NodeId, Path, RelayPath, SocketPath, is_direct
from ipop.wire.header import (
    DATA_HEADER,
    DATA_HEADER_BYTES,
    DATA_MIN_BYTES,
    TYPE_COOKIE_REPLY,
    TYPE_DATA,
    TYPE_HANDSHAKE_INIT,
    TYPE_HANDSHAKE_RESP,
)

__all__ = [
    "LINK_DROP_REASONS",
    "LinkConfig",
    "LinkLayer",
]

_INF: Final = float("inf")
_REBIND_QUIET: Final = timing.REBIND_QUIET_S
_HDR_PACK = DATA_HEADER.pack
_HDR_PACK_INTO = DATA_HEADER.pack_into
_HDR_UNPACK_FROM = DATA_HEADER.unpack_from
_EMPTY = b""


# --- the layer -------------------------------------------------------------------------------


class LinkLayer:
    """Every session of one node; see the module docstring for the theory of operation."""

    def __init__(
        self, identity: NodeIdentity, *, rng: random.Random, config: LinkConfig | None = None
    ) -> None:
        self._identity = identity
        self._trust = identity.trust
        self.config = config if config is not None else LinkConfig()
        self.local_id: NodeId = identity.node_id
        self.drops: collections.Counter[str] = collections.Counter()
        # Facts that are not refusals (roaming, rekeys, collisions): for metrics and tests.
        self.stats: collections.Counter[str] = collections.Counter()
        self._peers: dict[NodeId, Peer] = {}
        # Our local indices -> keys, and the indices we retired (see Handshakes.unknown_index).
        self._keys: IndexTable[Peer] = IndexTable(rng)
        self._lookup = self._keys.lookup
        # Never rebound: the sub-machines below append to the same list (datagrams_to_send).
        self._outbox: list[tuple[bytes, Path]] = []
        self._events: collections.deque[LinkEvent] = collections.deque()
        self._timer: float | None = None
        self._timer_dirty = False
        # Each peer's earliest deadline (see _touch and ipop.link.timers).
        self._deadlines: DeadlineHeap[NodeId, Peer] = DeadlineHeap(self._peers.get)
        self._next_gc = 0.0
        self._reject_messages = self.config.reject_after_messages
        shared = Shared(
            config=self.config,
            peers=self._peers,
            keys=self._keys,
            outbox=self._outbox,
            events=self._events,
            drops=self.drops,
            stats=self.stats,
            seal=self._seal,
            touch=self._touch,
            wake=self._wake,
            claim=self._claim,
        )
        # NAT rebinding (ipop.link.rebind): echoes of silent links, witnesses.
        rb = self.rebinding = Rebinding(shared, enabled=self.config.rebind_echoes)
        self._heard = rb.heard  # every authenticated DATA: bound once, one call as before
        self._heard_run = rb.heard_run
        # Path MTU per peer, probed over the session (ipop.link.probing, ipop.link.pmtu).
        self.probing = PathProbing(
            shared, enabled=self.config.path_mtu_probes, watch=self.watch, on_echo=rb.on_echo
        )
        self.pmtu = self.probing.pmtu
        self._on_probe = self.probing.on_probe
        # Both sides of every handshake (ipop.link.handshakes).
        hs = self.handshakes = Handshakes(
            identity, shared, probe_path=self.probing.restart, relayed=rb.relayed
        )
        self._handlers: dict[int, Callable[[bytes, Path, float], None]] = {
            TYPE_HANDSHAKE_INIT: hs.on_init,
            TYPE_HANDSHAKE_RESP: hs.on_resp,
            TYPE_COOKIE_REPLY: hs.on_cookie,
        }

    @property
    def guard(self) -> InitGuard:
        """What an Init may cost before it proved anything (:mod:`ipop.link.cookie`)."""
        return self.handshakes.guard

    @guard.setter
    def guard(self, guard: InitGuard) -> None:
        self.handshakes.guard = guard

    # --- commands ---------------------------------------------------------------------------

    def connect(
        self,
        path: Path,
        *,
        now: float,
        expected: NodeId | None = None,
        retransmit: bool = True,
        timeout_s: float | None = None,
    ) -> None:
        """Start a handshake toward ``path`` unless one is under way or a session is up there.

        With ``expected``, only that node may answer. Outcome: LinkUp or HandshakeFailed (none
        if a session with a matching peer is already up on ``path``: see :meth:`peer_at`).
        ``retransmit=False`` sends one Init only, and ``timeout_s`` waits that long for its
        answer instead of the configured handshake timeout: for endpoints nobody vouched for
        (the overlay's connect-backs), where every Init is sent to an address a peer named.
        """
        if expected == self.local_id:
            raise LocalProtocolError("connect() to our own node id")
        for peer in self._peers.values():
            if peer.up and peer.path == path and expected in (None, peer.node_id):
                return
        self.handshakes.initiate(path, expected, now, retransmit=retransmit, timeout_s=timeout_s)

    def send(self, peer: NodeId, payload: bytes, *, now: float) -> None:
        """Seal ``payload`` to ``peer``'s current path and queue it for datagrams_to_send()."""
        self._outbox.append(self.seal(peer, payload, now=now))

    def seal(self, peer: NodeId, payload: bytes, *, now: float) -> tuple[bytes, Path]:
        """Seal ``payload`` for ``peer``; return the datagram and the path to send it on."""
        st = self._peers.get(peer)
        if st is None or (kp := st.current) is None:
            raise LocalProtocolError(f"no session with {peer!r}")
        return self._seal(st, kp, payload, now), st.path

    def _seal(
        self, st: Peer, kp: Keypair[Peer], payload: bytes | bytearray | memoryview, now: float
    ) -> bytes:
        """Seal one DATA datagram with ``kp`` and do the bookkeeping (counters, rekey)."""
        counter = kp.send_batch.take(1)
        if counter >= kp.rekey_counter_at or now >= kp.rekey_at:
            self._rekey_due(st, kp, now)
        # header + encrypt() beats encrypt_into() into memoryview slices (ipop.link.crypto).
        header = _HDR_PACK(TYPE_DATA, kp.remote_index, counter)
        data = header + kp.send_aead.encrypt(nonce_for(counter), payload, header)
        st.last_tx = now
        st.tx_packets += 1
        st.tx_bytes += len(data)
        if st.tx_first == _INF and payload and st.watched:
            # Our first message since the peer last spoke (a keepalive asks for nothing): if
            # nothing at all comes back, ask (an echo).
            st.tx_first = now
            if now + _REBIND_QUIET < st.due:
                self._touch(st)
        return data

    def seal_direct(
        self, peer: NodeId, payload: bytes | bytearray | memoryview, *, now: float
    ) -> tuple[bytes, Endpoint | SocketPath] | None:
        """Data-plane fast path: :meth:`seal` for a peer whose up session runs on a direct path
        (an :class:`Endpoint` of the main socket, or a :class:`SocketPath` of a punching socket
        that port guessing found); None (nothing sealed, nothing counted) otherwise (no session,
        or a relayed path: the caller takes the slow path, which knows how to wrap it).

        ``payload`` may be any buffer (the data plane seals a slice of its read buffer). All of
        :meth:`seal`'s bookkeeping happens: counters, ``last_tx``, the rekey trigger (whose
        Init lands in the outbox like any other).
        """
        got = self._direct(peer)
        if got is None:
            return None
        st, kp, path = got
        return self._seal(st, kp, payload, now), path

    def _direct(self, peer: NodeId) -> tuple[Peer, Keypair[Peer], Endpoint | SocketPath] | None:
        """``peer``'s up session, its current keys and its path, if that path is direct."""
        st = self._peers.get(peer)
        if st is None or (kp := st.current) is None or not st.up:
            return None
        path = st.path
        if type(path) is not Endpoint and type(path) is not SocketPath:
            return None
        return st, kp, path

    def direct_keys(self, peer: NodeId) -> tuple[Keypair[Peer], Endpoint | SocketPath] | None:
        """``peer``'s current keys and path when :meth:`seal_direct` would seal with them
        (an up session on a direct path): what the lane (:mod:`ipop.link.lane`) may be
        lent, with :meth:`note_lane` told what it did."""
        got = self._direct(peer)
        return None if got is None else (got[1], got[2])

    def note_lane(
        self,
        peer: NodeId,
        sent: tuple[int, int, float, float],
        received: tuple[int, int, float, float],
    ) -> None:
        """What the lane (:mod:`ipop.link.lane`) did with ``peer``'s current keys since it
        was last asked, each as (packets, bytes, first, last): the DATA it sealed, and the
        DATA it opened on the peer's path, with the bookkeeping :meth:`_seal_run` and
        :meth:`open_data` do for their own (what came in first: a send after the last
        datagram heard is one the peer has not answered yet)."""
        st = self._peers.get(peer)
        if st is None:
            return
        n, nbytes, first, last = received
        if n > 0:
            self._heard_run(st, last, n)
            st.rx_packets += n
            st.rx_bytes += nbytes
            st.path_rx = max(st.path_rx, last)
        n, nbytes, first, last = sent
        if n > 0:
            st.last_tx = max(st.last_tx, last)
            st.tx_packets += n
            st.tx_bytes += nbytes
            if last > st.last_rx and st.tx_first == _INF and st.watched:
                first = max(first, st.last_rx)  # as _seal: our first since the peer spoke
                st.tx_first = first
                if first + _REBIND_QUIET < st.due:
                    self._touch(st)

    def seal_run(
        self,
        peer: NodeId,
        payloads: list[bytes],
        *,
        now: float,
        head: bytes = b"",
        strip: bytes = b"",
    ) -> tuple[list[bytes], Endpoint | SocketPath] | None:
        """:meth:`seal_direct` for several payloads to one peer in one native call
        (:mod:`ipop.link.fastpath`), with the same bookkeeping as sealing them one by one.
        None (nothing sealed, nothing counted): the caller seals them one by one instead: no
        direct session, or a rekey threshold falls within the run (the per-packet path
        starts the rekey, or refuses expired keys, at the exact packet). ``head`` and
        ``strip``: each plaintext is ``head`` + the payload after ``strip``, the run ending
        at the first payload that does not start with ``strip`` (:meth:`BatchAead.seal`)."""
        got = self._direct(peer)
        if got is None:
            return None
        st, kp, path = got
        data = self._seal_run(st, kp, payloads, now, head, strip)
        return None if data is None else (data, path)

    def seal_relayed_run(
        self, peer: NodeId, payloads: list[bytes], *, now: float
    ) -> tuple[list[bytes], RelayPath] | None:
        """:meth:`seal_run` for a peer whose up session runs over a relay: the datagrams the
        per-packet :meth:`send` would have queued for its :class:`RelayPath` (the caller wraps
        them for the relay, as the overlay does with the outbox's); None as there."""
        st = self._peers.get(peer)
        if st is None or (kp := st.current) is None or not st.up:
            return None
        path = st.path
        if type(path) is not RelayPath:
            return None
        data = self._seal_run(st, kp, payloads, now, b"", b"")
        return None if data is None else (data, path)

    def send_run(
        self,
        peer: NodeId,
        payloads: list[bytes],
        *,
        now: float,
        head: bytes = b"",
        strip: bytes = b"",
    ) -> int:
        """:meth:`send` for ``head`` + each of several payloads to a peer on a direct path,
        sealed in one run and queued in order: how many (:meth:`seal_run`'s ``strip``); 0
        (nothing sealed, nothing queued): the caller sends them one by one (:meth:`seal_run`'s
        cases)."""
        sealed = self.seal_run(peer, payloads, now=now, head=head, strip=strip)
        if sealed is None:
            return 0
        data, path = sealed
        self._outbox.extend(zip(data, repeat(path)))  # (in C: no Python step per datagram)
        return len(data)

    def _seal_run(
        self,
        st: Peer,
        kp: Keypair[Peer],
        payloads: list[bytes],
        now: float,
        head: bytes,
        strip: bytes,
    ) -> list[bytes] | None:
        counter = kp.send_counter
        n = len(payloads)
        # (With strip the run may end early: the threshold is checked for all of them.)
        if counter + n > kp.rekey_counter_at or now >= kp.rekey_at:
            return None
        # (The counter moves under the key's lock: the lane's thread seals with it too.)
        data = kp.send_batch.seal_next(kp.remote_index, payloads, head, strip)
        n = len(data)
        if not n and strip:
            return None
        st.last_tx = now
        st.tx_packets += n
        st.tx_bytes += sum(map(len, data))
        if st.tx_first == _INF and st.watched and (head or strip or any(payloads)):
            st.tx_first = now  # as _seal: our first message since the peer last spoke
            if now + _REBIND_QUIET < st.due:
                self._touch(st)
        return data

    def open_run(
        self, datagrams: list[bytes], start: int, path: Path, *, now: float, head: bytes = b""
    ) -> tuple[NodeId, int, list[bytes]] | None:
        """:meth:`open_data` for the run of datagrams from ``datagrams[start]`` on that are
        DATA under one index, in one native call (:mod:`ipop.link.fastpath`): ``(peer, stop,
        payloads)``, ``stop`` the first datagram not taken, ``payloads`` the non-empty
        authenticated ones in order: those :meth:`open_data` would have returned, and the
        probes, which the caller hands to :meth:`probe_in` in their place (the rest it
        counted or dropped exactly as there).

        None (nothing taken): the caller hands ``datagrams[start]`` to :meth:`open_data`.
        A run is taken only for the peer's current keys, not past their time, on the
        session's own path, with no event queued: the cases that never confirm keys, roam,
        or queue a message behind an event. Everything else is the per-packet path's.

        ``head``: each datagram of the run follows these bytes in its element (the caller
        checked ``datagrams[start]`` starts with them): a run of RELAY_DELIVER messages from
        one origin, opened as they came (:meth:`ipop.core.NodeCore.receive_direct_run`).
        """
        data = datagrams[start]
        skip = len(head)
        if len(data) < DATA_MIN_BYTES + skip or data[skip] != TYPE_DATA or self._events:
            return None
        index = _HDR_UNPACK_FROM(data, skip)[1]
        kp = self._lookup(index)
        if kp is None:
            return None
        st = kp.peer
        if kp is not st.current or now >= kp.reject_at or not (path is st.path or path == st.path):
            return None
        stop, results = kp.recv_batch.open(
            datagrams, start, index, self._reject_messages, kp.replay, head
        )
        if stop == start:  # not a datagram the run takes (a bytes subclass, say)
            return None
        opened = [p for p in results if type(p) is bytes]
        if len(opened) < len(results):
            drops = self.drops
            for reason in results:
                if type(reason) is str:
                    drops[reason] += 1
        n = len(opened)
        if n:
            # The run's bookkeeping at once, as one by one would have done it (the run began
            # with no event queued, and nothing here queues one: probes are the caller's).
            self._heard_run(st, now, n)
            st.rx_packets += n
            st.rx_bytes += sum(map(len, opened)) + n * DATA_MIN_BYTES
            st.path_rx = now
            if b"" in opened:  # keepalives: counted, nothing to hand on
                opened = [p for p in opened if p]
        return st.node_id, stop, opened

    def probe_in(
        self, peer: NodeId, payload: bytes, path: Path, *, now: float, last: bool = True
    ) -> None:
        """A probe (``PROBE_TAG``) that :meth:`open_run` returned in its place among the
        run's messages, handled as :meth:`open_data` handles one.

        Why the caller: one by one, a probe is answered after every message before it in the
        run was handled (their answers took the counters first, and a relay that delivered
        them was heard before each, :meth:`ipop.core.NodeCore._opened`). Answered while the
        run was opened, its answer went ahead of theirs, and an answer through a relay began
        a silent-hop episode that later messages of the run did not end."""
        st = self._peers.get(peer)
        if st is None:
            return
        self._on_probe(st, payload, path, now)
        if not last:
            # ``last``: no message of the run follows it. One by one, the datagrams after a
            # probe are heard after its answer, and the first of them clears the mark that
            # answer set (tx_first: our first message since the peer spoke); open_run heard
            # them all before. Left set, it echoed REBIND_QUIET_S later a peer that never
            # fell silent (lab cold starts: echoes +40 %, witnesses asked twice as often).
            # (A keepalive after the last probe is not told apart: it clears it one by one.)
            st.tx_first = _INF

    def open_data(self, data: bytes, path: Path, *, now: float) -> tuple[NodeId, bytes] | None:
        """Data-plane fast path: :meth:`receive_datagram` for one datagram, except that an
        authenticated non-empty DATA payload is returned as ``(peer, payload)`` instead of
        being queued as a :class:`ipop.link.events.LinkMessage`.

        It is returned only when nothing else is queued in the event queue (before or because
        of this datagram: key confirmation, roaming), so that the caller handles it in the same
        order as the event would have been; otherwise the LinkMessage is queued as usual and
        None returned. Handshakes, keepalives and every drop behave exactly as in
        :meth:`receive_datagram` (None).

        This is the one DATA authentication path (header, key lookup, expiry, replay window,
        AEAD, key confirmation and older keys, liveness, counters, roaming, probes):
        :meth:`receive_datagram` calls it and queues what it returns, so neither path pays a
        call for the sharing.
        """
        if not data or data[0] != TYPE_DATA:
            self._receive_other(data, path, now)
            return None
        if len(data) < DATA_MIN_BYTES:
            self.drops["malformed"] += 1
            return None
        _, index, counter = _HDR_UNPACK_FROM(data)
        kp = self._lookup(index)
        if kp is None:
            self.handshakes.unknown_index(index, path, now)
            return None
        if now >= kp.reject_at or counter >= self._reject_messages:
            self.drops["expired_key"] += 1
            return None
        replay = kp.replay
        newest = counter > replay.top
        if not newest:  # in-order packets, the common case, skip the window lookup
            reason = replay.reject_reason(counter)
            if reason is not None:
                self.drops[reason] += 1
                return None
        try:
            payload = kp.recv_aead.decrypt(
                nonce_for(counter), data[DATA_HEADER_BYTES:], data[:DATA_HEADER_BYTES]
            )
        except InvalidTag:
            self.drops["auth_failed"] += 1
            return None
        reason = replay.take(counter)
        if reason is not None:  # the lane's thread took that counter meanwhile
            self.drops[reason] += 1
            return None
        return self._opened(kp, payload, len(data), newest, path, now)

    def receive_opened(
        self, index: int, payload: bytes, size: int, newest: bool, path: Path, *, now: float
    ) -> tuple[NodeId, bytes] | None:
        """:meth:`open_data` for a DATA datagram of ``size`` bytes under our ``index`` that
        the lane (:mod:`ipop.link.lane`) already authenticated and marked in the window
        (``newest``: its counter was above the window's top): the steps after that."""
        kp = self._lookup(index)
        if kp is None:  # its keys went away meanwhile, and with them the window's mark
            self.drops["unknown_index"] += 1
            return None
        return self._opened(kp, payload, size, newest, path, now)

    def _opened(
        self, kp: Keypair[Peer], payload: bytes, size: int, newest: bool, path: Path, now: float
    ) -> tuple[NodeId, bytes] | None:
        st = kp.peer
        if kp is not st.current:
            self.handshakes.on_older_keys(st, kp, path, now)
        self._heard(st, now)
        st.rx_packets += 1
        st.rx_bytes += size
        if path is st.path or path == st.path:
            st.path_rx = now
        elif newest:
            self._maybe_roam(st, path, now)
        if not payload:
            return None
        if payload[0] == PROBE_TAG:
            self._on_probe(st, payload, path, now)
            return None
        if self._events:
            # LinkUp / LinkPathChanged (or events queued before) first, then the message,
            # as receive_datagram would have queued them.
            self._events.append(link_message(st.node_id, payload, path))
            return None
        return st.node_id, payload

    def close(self, peer: NodeId, *, now: float) -> None:
        """Forget every key of ``peer`` and cancel our handshakes expecting it (LinkDown if up)."""
        self.handshakes.cancel(peer)
        st = self._peers.get(peer)
        if st is not None:
            self._teardown(st, "closed")
        self._timer_dirty = True

    def close_revoked(
        self,
        is_revoked: Callable[[NodeCertificate], bool],
        *,
        now: float,
        farewell: bytes | None = None,
    ) -> list[NodeId]:
        """End every session whose peer certificate ``is_revoked`` says is revoked now.

        Called when a newer CRL is applied: a handshake checks the certificate once, so a
        session set up before the revocation would otherwise live on until its keys expire.
        ``farewell`` (the overlay's CLOSING) is sealed to each up peer first, so an honest
        holder of a revoked certificate stops at once instead of at its link timeout. Each
        up session ends with LinkDown "revoked"; returns the peers whose state went.
        """
        gone = [st for st in self._peers.values() if is_revoked(st.cert)]
        for st in gone:
            if farewell is not None and st.up and st.current is not None:
                # Keys expired: the peer learns from the silence instead.
                with contextlib.suppress(LocalProtocolError):
                    self._outbox.append(self.seal(st.node_id, farewell, now=now))
            self.handshakes.cancel(st.node_id)
            self._teardown(st, "revoked")
        if gone:
            self._timer_dirty = True
        return [st.node_id for st in gone]

    # --- roaming ------------------------------------------------------------------------------

    def local_address_changed(self, *, now: float) -> int:
        """Our own underlay address changed: key every direct session afresh from it.

        Why: a peer behind a filtering NAT drops whatever we now send from the new address,
        and every peer keeps sending to the old one, until something it trusts shows where we
        are. A fresh Init does that for peers that can hear us (their answer also tells us our
        new public endpoint, ObservedEndpoint); toward filtering peers it keeps knocking
        (retransmitted as any Init) until the overlay's re-advertisement made them punch back
        (:meth:`peer_moved` on their side). Returns how many handshakes were started.
        """
        self.handshakes.roamed_at = now
        started = 0
        for st in list(self._peers.values()):
            # Skipped only while one of ours toward the session's own path is under way: one
            # toward another path (a punch, a port the peer's NAT filters) may never complete.
            if (
                st.up
                and is_direct(st.path)
                and not self.handshakes.expecting_on(st.node_id, st.path)
            ):
                self.handshakes.start(st.path, st.node_id, now)
                started += 1
        self.stats["roam_rehandshakes"] += started
        return started

    def woke(self, *, now: float) -> int:
        """We did not run for a while (the process was stopped, the machine slept): every
        session looks silent for the whole gap, and its link timeout would close them all at
        once. Give each up session one handshake timeout before that, and key every direct
        one afresh (as after a roam: our NAT mappings may be gone, the peer may have dropped
        its side). A live peer answers within a round trip; a dead one times out as usual.
        Returns how many handshakes were started."""
        cfg = self.config
        floor = now - cfg.link_timeout_s + cfg.handshake_timeout_s
        for st in self._peers.values():
            if st.up and st.last_rx < floor:
                st.last_rx = floor
                # The live heap entry is earlier: push the new deadline.
                self._deadlines.forget(st)
                self._touch(st)
        self.stats["woke"] += 1
        return self.local_address_changed(now=now)

    def peer_moved(self, peer: NodeId, *, now: float) -> None:
        """``peer`` says (authenticated, its own word about itself) it is no longer at the path
        our session with it uses: stop holding on to that path.

        Roaming hysteresis (invariant 7) then no longer applies: the next authenticated DATA or
        handshake from another direct path moves the session at once, and if DATA from one has
        already come in (held back by the hysteresis), the session moves to it now.
        """
        st = self._peers.get(peer)
        if st is None or not st.up or not is_direct(st.path):
            return
        st.path_rx = -_INF
        self.stats["peer_moved"] += 1
        cand = st.roam_candidate
        # Only a candidate as fresh as the news: the peer's word came right behind its DATA.
        if cand is not None and cand[0] != st.path and now - cand[1] < timing.PATH_SILENT_S:
            self._move(st, cand[0], now)

    def peer_unlinked(self, peer: NodeId, *, now: float) -> bool:
        """``peer`` sent us something authenticated end to end that came around the session we
        hold with it, not through it: it holds no session with us. It was restarted (kill -9,
        no goodbye), and its punching socket, where our direct path may lead, died with it;
        kept, the session swallows everything we send or route to the peer until the silent-
        peer timer (20-35 s) or the link timeout (50 s), and a peer behind a symmetric NAT
        that re-links through a relay never came back within 30 s (tests/sim/
        test_restart_sim.py).

        So: key it afresh toward its path, and if nothing authenticated comes from the peer
        within ``UNLINKED_CHECK_S`` the session is dead: LinkDown "stale" (the overlay then
        routes around it and links anew). A live peer answers the handshake (or its DATA
        arrives) and nothing changes, so a replayed message gains a forwarder nothing but one
        handshake, at most one per peer and handshake timeout. True if a check started.
        """
        st = self._peers.get(peer)
        if st is None or not st.up or st.unlinked_check is not None:
            return False
        if now < st.rekeyed_stale_at + self.config.handshake_timeout_s:
            return False
        st.rekeyed_stale_at = now
        st.unlinked_check = (now, now + timing.UNLINKED_CHECK_S)
        self.stats["unlinked_checks"] += 1
        # Toward the session's own path, even while one of ours to another path is under way
        # or we answered one of the peer's: the first may never complete (a shortcut dialled
        # the public endpoint of a peer on our LAN, through a NAT without hairpinning), the
        # second may have lost a crossing and never be confirmed, and an idle live peer sends
        # nothing else within the check: its session was torn down on our side only (cold
        # start: pairs on one LAN that lost every ping until the silent-peer timer). A one-shot
        # punch of ours already on that path is made to retry (initiate): sent once, it may have
        # lost a crossing at the peer (the larger id drops the smaller's Init), and waiting on
        # it tore down the session of a live idle peer that still sealed with it.
        self.handshakes.initiate(st.path, peer, now)
        self._touch(st)
        return True

    def set_path(self, peer: NodeId, path: Path) -> None:
        """Move the up session with ``peer`` to ``path`` (a path the caller has confirmed)."""
        st = self._peers.get(peer)
        if st is None or not st.up:
            raise LocalProtocolError(f"no session with {peer!r}")
        st.path = path

    # --- queries ----------------------------------------------------------------------------

    def last_heard(self, peer: NodeId) -> float | None:
        """When anything authenticated last came from up ``peer`` (None: no session)."""
        st = self._peers.get(peer)
        return st.last_rx if st is not None and st.up else None

    def is_up(self, peer: NodeId) -> bool:
        st = self._peers.get(peer)
        return st is not None and st.up

    def payload_limit(self, peer: NodeId) -> int | None:
        """The largest payload a DATA datagram to ``peer`` carries on the path size probing
        confirmed (:mod:`ipop.link.pmtu`; end to end for a relayed path); None: not probed."""
        limit = self.pmtu.limits.get(peer)
        return None if limit is None else limit - DATA_MIN_BYTES

    def path_of(self, peer: NodeId) -> Path | None:
        """The path an up session with ``peer`` seals to; None without one."""
        st = self._peers.get(peer)
        return st.path if st is not None and st.up else None

    def peer_at(self, path: Path) -> NodeId | None:
        """The peer whose up session runs over ``path``, if any."""
        for st in self._peers.values():
            if st.up and st.path == path:
                return st.node_id
        return None

    def index_owner(self, data: bytes, skip: int) -> tuple[NodeId, Path] | None:
        """The peer whose keys the DATA datagram at ``data[skip:]`` names (its receiver
        index) and the path its session runs over; None: not DATA, or no keys of ours. Reads
        the header only (a relay channel's target asks which relay its datagram should have
        come through, :meth:`ipop.core.NodeCore.receive_direct_run`); opening decides."""
        if len(data) < DATA_MIN_BYTES + skip or data[skip] != TYPE_DATA:
            return None
        kp = self._lookup(_HDR_UNPACK_FROM(data, skip)[1])
        if kp is None:
            return None
        st = kp.peer
        return st.node_id, st.path

    def peers(self) -> list[LinkInfo]:
        out = []
        for st in self._peers.values():
            kp = st.current
            if not st.up or kp is None:
                continue
            out.append(
                LinkInfo(
                    peer=st.node_id,
                    name=st.cert.name,
                    hostname=st.cert.hostname,
                    path=st.path,
                    established_at=st.established_at,
                    last_rx=st.last_rx,
                    last_tx=st.last_tx,
                    bytes_in=st.rx_bytes,
                    bytes_out=st.tx_bytes,
                    packets_in=st.rx_packets,
                    packets_out=st.tx_packets,
                    cipher=kp.cipher,
                    observed=st.observed,
                    keys_established_at=kp.created_at,
                    rekeys=st.rekeys,
                    rtt_s=st.rtt,
                )
            )
        return out

    # --- sans-IO plumbing -------------------------------------------------------------------

    def receive_datagram(self, data: bytes, path: Path, *, now: float) -> None:
        """Feed one datagram that arrived on ``path``; never raises on peer input."""
        # DATA takes open_data's path, the only one; it hands back what it did not queue.
        got = self.open_data(data, path, now=now)
        if got is not None:
            self._events.append(link_message(got[0], got[1], path))

    def _receive_other(self, data: bytes, path: Path, now: float) -> None:
        """Any datagram but DATA (handshakes, cookie replies, garbage)."""
        if not data:
            self.drops["empty"] += 1
            return
        handler = self._handlers.get(data[0])
        if handler is None:
            self.drops["unknown_type"] += 1
            return
        handler(data, path, now)

    def has_output(self) -> bool:
        """Datagrams or events queued (the data plane's test before a flush)."""
        return bool(self._outbox or self._events)

    def datagrams_to_send(self, *, now: float) -> list[tuple[bytes, Path]]:
        out = self._outbox.copy()
        self._outbox.clear()
        return out

    def next_event(self) -> LinkEvent | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        if self._timer_dirty:
            self._timer = self._compute_timer()
            self._timer_dirty = False
        return self._timer

    def handle_timer(self, *, now: float) -> None:
        self.handshakes.retransmit(now)
        peers = self._peers
        for st in self._deadlines.pop_due(now):
            self._peer_timer(st, now)
            if peers.get(st.node_id) is st:
                self._touch(st)
        self.probing.send_due(now)
        if now >= self._next_gc:
            self._next_gc = now + self.config.handshake_timeout_s
            self.handshakes.forget_old(now)
        self._timer_dirty = True

    def _peer_timer(self, st: Peer, now: float) -> None:
        """Whatever is due for one peer (its heap entry came up)."""
        cfg = self.config
        timeout = cfg.handshake_timeout_s
        for index, kp in list(st.pending.items()):
            if now >= kp.created_at + timeout:
                del st.pending[index]
                self._keys.retire(index, st.node_id)
        if st.spare and now >= st.spare_until:
            self.handshakes.drop_spare(st)
        cur = st.current
        if not st.up or cur is None:
            if not st.pending:
                del self._peers[st.node_id]
            return
        check = st.unlinked_check
        if check is not None and now >= check[1]:
            st.unlinked_check = None
            if st.last_rx < check[0]:
                self._teardown(st, "stale")
                return
        if now >= cur.reject_at or cur.send_counter >= cfg.reject_after_messages:
            self._teardown(st, "expired")
            return
        # Compared as deadlines (now >= t + x), exactly as _peer_deadline computes them, so a
        # peer found due is always handled and never re-pushed at a time already past.
        if now >= st.last_rx + cfg.link_timeout_s:
            self._teardown(st, "timeout")
            return
        prev = st.previous
        if prev is not None and now >= prev.reject_at:
            self._keys.retire(prev.local_index, st.node_id)
            st.previous = None
        for index, old in list(st.older.items()):
            if now >= old.reject_at:
                del st.older[index]
                self._keys.retire(index, st.node_id)
        if now >= cur.rekey_at:
            # An idle link rekeys too: overlay links live for hours, traffic or not.
            self._rekey_due(st, cur, now)
        if now >= st.last_tx + cfg.keepalive_interval_s:
            self._outbox.append(self.seal(st.node_id, _EMPTY, now=now))
        if st.last_tx > st.last_rx and now >= max(st.last_rx + cfg.silent_peer_s, st.probe_after):
            # We send, nothing comes back: the peer may have dropped our session (restart,
            # trimmed link, lost CLOSING) while we still route into it. A fresh handshake
            # either re-keys a live peer or finds out (WireGuard's rule of the same name).
            st.probe_after = now + cfg.handshake_timeout_s
            if not st.pending and not self.handshakes.expecting(st.node_id):
                self.stats["silent_peer_rehandshake"] += 1
                self.handshakes.start(st.path, st.node_id, now)
        self.rebinding.due(st, now)

    def _peer_deadline(self, st: Peer) -> float:
        cfg = self.config
        t = _INF
        for kp in st.pending.values():
            t = min(t, kp.created_at + cfg.handshake_timeout_s)
        cur = st.current
        if st.up and cur is not None:
            t = min(
                t,
                cur.rekey_at,
                cur.reject_at,
                st.last_rx + cfg.link_timeout_s,
                st.last_tx + cfg.keepalive_interval_s,
            )
            if st.last_tx > st.last_rx:
                t = min(t, max(st.last_rx + cfg.silent_peer_s, st.probe_after))
            if st.previous is not None:
                t = min(t, st.previous.reject_at)
            for old in st.older.values():
                t = min(t, old.reject_at)
            t = min(t, self.rebinding.deadline(st))
            if st.unlinked_check is not None:
                t = min(t, st.unlinked_check[1])
            if st.spare:
                t = min(t, st.spare_until)
        elif not st.pending:
            t = 0.0  # nothing left: forget the peer at the next firing
        return t

    def _wake(self) -> None:
        """Something moved a deadline that is not in the heap: recompute the timer."""
        self._timer_dirty = True

    def _touch(self, st: Peer) -> None:
        """Push ``st``'s deadline if it moved earlier than its live heap entry."""
        if self._deadlines.push(st.node_id, st, self._peer_deadline(st)):
            self._timer_dirty = True

    # --- receive paths ----------------------------------------------------------------------

    def _maybe_roam(self, st: Peer, path: Path, now: float) -> None:
        """Newest authenticated DATA came from ``path``, not the session's: follow it or not
        (:func:`ipop.link.paths.should_roam`)."""
        roam = should_roam(PathQuality(st.path, st.path_rtt, st.path_rx), path, now)
        if roam is Roam.STAY:
            return
        if roam is Roam.HOLD:
            self.stats["roam_held"] += 1
            st.roam_candidate = (path, now)
            return
        if roam is Roam.FOLLOW_RELAY:
            self.stats["relay_followed"] += 1
            self.rebinding.relayed(st, now)
            self._move(st, path, now)
            return
        self._move(st, path, now)
        if roam is Roam.REBOUND and type(path) is Endpoint and st.current is not None:
            # The peer's NAT gave it a new mapping, and it cannot know: peers behind
            # filtering NATs still send to the old one. Say so (ipop.link.echo, "seen").
            seen = echo.ack_payload(0, path, kind=echo.SEEN)
            if seen is not None:
                self.stats["seen_sent"] += 1
                self._outbox.append((self._seal(st, st.current, seen, now), path))

    def _move(self, st: Peer, path: Path, now: float) -> None:
        st.roam_candidate = None
        st.path = path
        st.path_rtt = _INF
        st.path_rx = now
        self.stats["roamed"] += 1
        self._events.append(LinkPathChanged(st.node_id, path, "roamed"))
        self.probing.restart(st, now)
        self._claim(st, path)

    def _claim(self, st: Peer, path: Path) -> None:
        """``st``'s authenticated traffic now comes from ``path``: any other session on it lost
        it (:func:`ipop.link.paths.displaced`). Dropping that session's hold on the path lets a
        relay's handshake take over at once (:func:`ipop.link.paths.better_path`) and the
        peer's DATA from anywhere else move it (``peer_moved`` does the same)."""
        if type(path) is not Endpoint:
            return
        peers = self._peers
        up = ((p.node_id, p.path) for p in peers.values() if p.up)
        for peer in displaced(path, st.node_id, up):
            other = peers[peer]
            other.path_rx = -_INF
            self.stats["path_displaced"] += 1
            self._events.append(LinkPathDisplaced(peer, path))

    def _teardown(self, st: Peer, reason: str) -> None:
        for kp in (
            st.current,
            st.previous,
            *st.pending.values(),
            *st.spare.values(),
            *st.older.values(),
        ):
            if kp is not None:
                self._keys.discard(kp.local_index)
        del self._peers[st.node_id]
        self.pmtu.forget(st.node_id)
        self._timer_dirty = True
        if st.up:
            self.stats[f"link_down_{reason}"] += 1
            self._events.append(LinkDown(st.node_id, reason))

    # --- path MTU and NAT rebinding (ipop.link.probing, ipop.link.rebind) -------------------

    def watch(self, peer: NodeId) -> None:
        """Upper-layer traffic (what a user notices: IP packets, pings) flows to ``peer``:
        notice within about a second when its direct path falls silent, and find out whether
        our NAT rebound (:mod:`ipop.link.echo`). Links that carry only the overlay's own
        messages are not watched: their traffic comes in bursts, and echoing every burst's
        end cost a 150-node simulation 9 echoes per node per second (its wall time doubled);
        the overlay notices their loss on its own timers. Until the session ends."""
        st = self._peers.get(peer)
        if st is not None:
            self.rebinding.watch(st)

    def echo(self, peer: NodeId, *, now: float) -> bool:
        """Ask ``peer`` where it sees us now (an echo, :mod:`ipop.link.echo`), as
        :mod:`ipop.nat.mapping` does on idle nodes: a changed answer is an ObservedEndpoint,
        none within REBIND_ECHO_WAIT_S asks witnesses. False if none went (no direct
        session up, echoes off, one already out)."""
        st = self._peers.get(peer)
        return st is not None and self.rebinding.ask(st, now)

    def want_path_mtu(self, peer: NodeId, *, now: float) -> None:
        """Data flows to ``peer``: probe its path's MTU (see :mod:`ipop.link.pmtu`), and watch
        its session (:meth:`watch`)."""
        self.probing.want(peer, now)

    def _rekey_due(self, st: Peer, kp: Keypair[Peer], now: float) -> None:
        """Called from seal when ``kp`` crossed a rekey threshold (or a retry of it is due)."""
        cfg = self.config
        if now >= kp.reject_at or kp.send_counter >= cfg.reject_after_messages:
            raise LocalProtocolError(f"keys with {st.node_id!r} expired; rekey pending")
        # Ask again only after a handshake could have timed out, and never past rejection.
        kp.rekey_at = min(now + cfg.handshake_timeout_s, kp.reject_at)
        kp.rekey_counter_at = cfg.reject_after_messages
        self._touch(st)
        if st.pending or self.handshakes.expecting(st.node_id):
            return
        self.stats["rekey_started"] += 1
        self.handshakes.start(st.path, st.node_id, now)

    # --- handshakes -------------------------------------------------------------------------

    def _compute_timer(self) -> float | None:
        t = self.handshakes.next_time(self._deadlines.next_deadline())
        probe = self.pmtu.next_time()
        if probe is not None:
            t = min(t, probe)
        return None if t == _INF else t
