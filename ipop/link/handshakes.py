"""Handshake driving (sans-IO): both sides of the Init/Resp exchange and what a completed one
does to a session's keys. wireguard-go keeps this in noise-protocol.go (the state of each
handshake) and in the handshake halves of send.go/receive.go; here it is :class:`Handshakes`.

Owns:

- the initiator side: our outstanding initiations (:class:`ipop.link.handshake.Initiation`,
  by the index we chose), their Init retransmissions with the same signed core, cookie
  replies from a loaded responder (:meth:`Handshakes.on_cookie`), crossing Inits (invariant 4
  of :mod:`ipop.link.layer`), the Resp that completes one (:meth:`Handshakes.on_resp`);
- the responder side: Init checks in order of cost (free checks, the flood guard
  :class:`ipop.link.cookie.InitGuard`, certificate, freshness per (initiator, responder
  named), collision, signature), the Inits we answered (:class:`Answered`: the same Resp
  again for a retransmission, one of its own for each other path), pending keys and the
  spare ones a sibling's confirmation left (:meth:`Handshakes.on_older_keys`);
- installing keys into a :class:`ipop.link.peer.Peer` (current, previous, older; LinkUp,
  LinkPathChanged by :func:`ipop.link.paths.better_path`, ObservedEndpoint), and the
  handshakes that repair two ends holding different keys (``rehandshake_diverged``,
  ``rehandshake_stale_keys``, ``rehandshake_relayed_unknown``).

:class:`ipop.link.layer.LinkLayer` stays the owner of the peer table, the index table, the
outputs (datagram outbox, event queue, ``drops``/``stats``), receive dispatch and the timer;
it hands them to :class:`Handshakes` when it makes it (:class:`ipop.link.peer.Shared`), with
the four things a handshake needs of the session layer: seal a DATA, re-push a peer's
deadline, restart a path's MTU search, and mark the timer stale. Every refusal is counted
in the shared ``drops`` under a reason of :data:`ipop.link.config.LINK_DROP_REASONS`;
nothing unauthenticated is answered except by the flood guard's cookie reply (invariant 1
of :mod:`ipop.link.layer`).

Above 600 lines (a quarter of them docstrings and comments) because both sides share one
table and one step: an Init crossing ours (invariant 4) is judged against our initiations and
makes us abandon one, a responder allocates its index out of the same space as the initiator,
and a completed handshake on either side ends in the same key installation. Split in two,
those would travel back and forth between the halves (wireguard-go keeps both sides in one
file too, noise-protocol.go, about 700 lines).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, TypeVar

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ipop import timing
from ipop.errors import RemoteProtocolError
from ipop.identity import NodeIdentity
from ipop.link.cookie import InitGuard, mac2_for
from ipop.link.events import (
    HandshakeFailed,
    LinkPathChanged,
    LinkUp,
    ObservedEndpoint,
)
from ipop.link.handshake import (
    Initiation,
    VerifiedInit,
    check_init_cert,
    check_init_signature,
    check_init_time,
    choose_cipher,
    make_init,
    make_resp,
    verify_resp,
)
from ipop.link.keys import Keypair
from ipop.link.paths import PathQuality, better_path
from ipop.link.peer import LinkPart, Peer, Shared
from ipop.ratelimit import TokenBucket
from ipop.types import Endpoint, NodeId, Path, RelayPath, SocketPath
from ipop.wire.handshake import (
    MAC2_BYTES,
    CookieReply,
    HandshakeInit,
    HandshakeResp,
    init_core,
    init_digest,
)

__all__ = [
    "LAST_INIT_MAX",
    "RELAY_REKEYED_MAX",
    "RELAY_REKEY_BURST",
    "RELAY_REKEY_PER_S",
    "Answered",
    "Handshakes",
]

_INF: Final = float("inf")
_EMPTY = b""
# A Resp or a cookie reply: both name our initiation by its receiver index.
_Answer = TypeVar("_Answer", CookieReply, HandshakeResp)
_NO_MAC2 = bytes(MAC2_BYTES)

# Relayed peers keyed afresh after DATA under an index we never gave out (see
# Handshakes._rekey_relayed), with when: the oldest go first. Behind the per-peer limit a
# global one (a relay names the origin, so a relay that makes ids up could churn the table):
# a restarted node's relayed peers are a handful.
RELAY_REKEYED_MAX: Final = 1024
RELAY_REKEY_PER_S: Final = 2.0
RELAY_REKEY_BURST: Final = 32.0
# Init freshness entries (initiator, responder named) kept at most; the oldest go first. One
# per node for Inits naming us; an insider naming made-up endpoints adds one per verified
# Init (rate-limited by the flood guard), and a forgotten entry only lets a replay within the
# skew window create keys nobody confirms.
LAST_INIT_MAX: Final = 65536


def _responder_of(path: Path, expected: NodeId | None) -> NodeId | Endpoint:
    """Whom an Init toward ``path`` names: the node we expect, else where it goes."""
    if expected is not None:
        return expected
    if isinstance(path, RelayPath):
        return path.peer
    return path.remote if isinstance(path, SocketPath) else path


# --- internal state --------------------------------------------------------------------------


class Answered:
    """An Init core we verified and answered: the Resp and pending index of each path it came
    from (at most ``max_pending_responses`` paths, oldest forgotten first)."""

    __slots__ = ("cipher", "paths", "verified")

    def __init__(self, verified: VerifiedInit, cipher: str) -> None:
        self.verified = verified
        self.cipher = cipher
        self.paths: dict[Path, tuple[bytes, int]] = {}


class Handshakes(LinkPart):
    """Every handshake of one node, both sides (see the module docstring)."""

    def __init__(
        self,
        identity: NodeIdentity,
        shared: Shared,
        *,
        probe_path: Callable[[Peer, float], None],
        relayed: Callable[[Peer, float], None],
    ) -> None:
        super().__init__(shared)
        self._identity = identity
        self._trust = identity.trust
        self.local_id: NodeId = identity.node_id
        self._lookup = shared.keys.lookup
        # Restart the path MTU search of a session that came up or moved (ipop.link.probing).
        self._probe_path = probe_path
        # A session leaves a direct path for a relay (ipop.link.rebind, Rebinding.relayed).
        self._relayed = relayed
        # Our initiations, by the index we chose.
        self._initiations: dict[int, Initiation] = {}
        # (initiator, responder the Init names) -> newest Init timestamp accepted (ms).
        self._last_init_ms: dict[tuple[NodeId, NodeId | Endpoint], int] = {}
        self._last_sent_ms = 0
        # Init cores we answered -> how (see Answered): a retransmitted copy of the same Init
        # (our Resp was lost) gets the same Resp again; a copy from another path gets its own.
        self._answered: dict[bytes, Answered] = {}
        # What an Init may cost before it proved anything (ipop.link.cookie).
        self.guard = InitGuard()
        # Relayed peer -> when _rekey_relayed last keyed it afresh (insertion order), and
        # the global budget of those handshakes (made on first use: it needs ``now``).
        self._relay_rekeyed: dict[NodeId, float] = {}
        self._relay_rekey_budget: TokenBucket | None = None
        # When our own address last changed (LinkLayer.local_address_changed): a direct path
        # that has carried nothing since leads to where we no longer are (see _install).
        self.roamed_at = -_INF

    # --- queries and commands of the layer --------------------------------------------------

    def expecting(self, peer: NodeId) -> bool:
        """Is one of our initiations waiting for ``peer``'s answer?"""
        return any(i.expected == peer for i in self._initiations.values())

    def expecting_on(self, peer: NodeId, path: Path) -> bool:
        """Is one of our initiations toward ``path`` waiting for ``peer``'s answer?"""
        return any(i.expected == peer and i.path == path for i in self._initiations.values())

    def expected_peers(self) -> set[NodeId | None]:
        """The peers our initiations wait for (None: any peer, the path decides)."""
        return {i.expected for i in self._initiations.values()}

    def initiate(
        self,
        path: Path,
        expected: NodeId | None,
        now: float,
        *,
        retransmit: bool = True,
        timeout_s: float | None = None,
    ) -> None:
        """:meth:`ipop.link.layer.LinkLayer.connect` once no up session matched: start a
        handshake toward ``path`` unless one of ours is under way there."""
        for ini in self._initiations.values():
            if ini.path == path and expected in (None, ini.expected):
                if retransmit and ini.next_retry_at == _INF:
                    # A one-shot punch toward where we now want a link ourselves: it retries
                    # from here on, as any of ours.
                    ini.next_retry_at = now + ini.interval
                    wait = self.config.handshake_timeout_s if timeout_s is None else timeout_s
                    ini.deadline = max(ini.deadline, now + wait)
                    self._wake()
                return
        self.start(path, expected, now, retransmit=retransmit, timeout_s=timeout_s)

    def cancel(self, peer: NodeId) -> None:
        """Forget our initiations expecting ``peer`` (no HandshakeFailed for them)."""
        for ini in [i for i in self._initiations.values() if i.expected == peer]:
            del self._initiations[ini.index]

    def next_time(self, t: float) -> float:
        """The earlier of ``t`` and the next retransmission or deadline of an initiation."""
        for ini in self._initiations.values():
            t = min(t, ini.next_retry_at, ini.deadline)
        return t

    def retransmit(self, now: float) -> None:
        """The timer fired: fail initiations past their deadline (HandshakeFailed), resend
        the Init of those whose retry is due (the interval doubles, up to the maximum)."""
        cfg = self.config
        for ini in list(self._initiations.values()):
            if now >= ini.deadline:
                del self._initiations[ini.index]
                self.stats["handshake_failed"] += 1
                self._events.append(HandshakeFailed(ini.path, ini.last_reason))
            elif now >= ini.next_retry_at:
                ini.interval = min(ini.interval * 2, cfg.handshake_retry_max_s)
                ini.next_retry_at = now + ini.interval
                self.stats["handshake_retransmitted"] += 1
                self.send_init(ini, now)

    def forget_old(self, now: float) -> None:
        """Housekeeping, once per handshake timeout: freshness entries older than the skew
        window (an Init that old is refused anyway) and answered Inits whose keys are no longer
        pending."""
        horizon_ms = (now - self.config.handshake_clock_skew_s) * 1000.0
        for key in [k for k, ms in self._last_init_ms.items() if ms < horizon_ms]:
            del self._last_init_ms[key]
        gone = [raw for raw, ans in self._answered.items() if not self._pending_answer(ans)]
        for raw in gone:
            del self._answered[raw]

    def freshness_entries(self) -> int:
        """How many (initiator, responder named) freshness entries are kept (bounded by
        :data:`LAST_INIT_MAX`)."""
        return len(self._last_init_ms)

    def relay_rekeyed_entries(self) -> int:
        """How many relayed peers are remembered as keyed afresh (bounded by
        :data:`RELAY_REKEYED_MAX`)."""
        return len(self._relay_rekeyed)

    # --- receive paths ----------------------------------------------------------------------

    def on_init(self, data: bytes, path: Path, now: float) -> None:
        cfg = self.config
        try:
            init = HandshakeInit.parse(data)
        except RemoteProtocolError as exc:
            self.drops[exc.reason] += 1
            return
        # Free checks first. An Init naming another node is a replay or a mistake; one bound
        # to an endpoint (a bootstrap's, whose id the initiator did not know) is not checked
        # against ours, which a node cannot enumerate (wildcard binds, port forwards, NAT
        # mappings not learned yet): freshness is kept per (node, responder) instead, so a
        # copy replayed here can never make a later Init meant for us look stale.
        responder = init.responder
        if isinstance(responder, NodeId) and responder != self.local_id:
            self.drops["not_for_us"] += 1
            return
        core = init_core(data)
        answered = self._answered.get(core)
        if answered is not None and self._pending_answer(answered):
            entry = answered.paths.get(path)
            if entry is not None:
                # Our Resp to this very Init was lost: the same answer again, nothing new.
                self._outbox.append((entry[0], path))
                self.stats["handshake_reanswered"] += 1
                return
        try:
            check_init_time(init, now=now, skew_s=cfg.handshake_clock_skew_s)
        except RemoteProtocolError as exc:
            self.drops[exc.reason] += 1
            return
        verdict = self.guard.admit(core, init.mac2, path, now)
        if verdict is not None:
            if verdict == "cookie":
                reply = self.guard.cookie_reply(init.sender_index, core, path, now)
                self._outbox.append((reply, path))
                self.stats["cookie_sent"] += 1
                verdict = "under_load"
            self.drops[verdict] += 1
            return
        # From here on an Init costs public-key operations: the guard bounds how many per s.
        self.stats["init_expensive"] += 1
        if answered is not None and self._pending_answer(answered):
            # An Init we verified and answered, unconfirmed yet, arriving from another path:
            # a copy an observer raced ahead of the original, or the original behind the
            # copy. Refusing it as stale would let whoever forwards a copy first block the
            # handshake; answering each path (bounded like retransmissions) lets the real
            # initiator confirm the keys it got, and the copy's keys expire unconfirmed.
            self._answer(answered, path, now)
            return
        try:
            cert = check_init_cert(self._trust, init, now=now)
        except RemoteProtocolError as exc:
            self.drops[exc.reason] += 1
            return
        # Refusals first, before the signature check (the costliest step of an Init, and
        # Inits cross whenever both ends of a new link connect): refusing changes nothing,
        # so it may rest on what the Init merely claims.
        node = cert.node_id
        if node == self.local_id:
            self.drops["own_identity"] += 1
            return
        ts = init.timestamp_ms
        fresh_key = (node, responder)
        last = self._last_init_ms.get(fresh_key)
        if last is not None and ts <= last:
            self.drops["stale_handshake"] += 1
            return
        mine = self._crossing(node, path)
        if mine is not None and self.local_id > node:
            self.drops["handshake_collision"] += 1
            return
        try:
            verified = check_init_signature(init, cert, data)
        except RemoteProtocolError as exc:
            self.drops[exc.reason] += 1
            return
        if mine is not None:
            del self._initiations[mine.index]
            self.stats["collision_yielded"] += 1
        cipher = choose_cipher(verified.init.ciphers, cfg.ciphers)
        if cipher is None:
            self.drops["no_common_cipher"] += 1
            return
        if self._answer(Answered(verified, cipher), path, now):
            last_init = self._last_init_ms
            last_init.pop(fresh_key, None)
            last_init[fresh_key] = ts
            if len(last_init) > LAST_INIT_MAX:
                del last_init[next(iter(last_init))]

    def _pending_answer(self, answered: Answered) -> bool:
        """Are keys we derived for this answered Init still waiting for confirmation?"""
        lookup = self._lookup
        for _, index in answered.paths.values():
            kp = lookup(index)
            if kp is not None and index in kp.peer.pending:
                return True
        return False

    def _answer(self, answered: Answered, path: Path, now: float) -> bool:
        """Resp to the verified Init of ``answered``, arriving over ``path``; keys pending."""
        cfg = self.config
        verified = answered.verified
        index = self._keys.allocate(self._initiations)
        observed: Endpoint | None = None
        if isinstance(path, Endpoint):
            observed = path
        elif isinstance(path, SocketPath):
            observed = path.remote
        try:
            resp, keys = make_resp(
                self._identity, verified, index=index, cipher=answered.cipher, observed=observed
            )
        except RemoteProtocolError as exc:
            self.drops[exc.reason] += 1
            return False
        node = verified.cert.node_id
        st = self._peers.get(node)
        if st is None:
            st = self._peers[node] = Peer(node, verified.cert, path)
        kp = Keypair(keys, st, verified.cert, now, cfg)
        st.pending[index] = kp
        self._keys.add(kp)
        while len(st.pending) > cfg.max_pending_responses:
            oldest = next(iter(st.pending))
            del st.pending[oldest]
            self._keys.retire(oldest, st.node_id)
        paths = answered.paths
        paths.pop(path, None)
        paths[path] = (resp, index)
        while len(paths) > cfg.max_pending_responses:
            del paths[next(iter(paths))]
        self._answered[verified.raw] = answered
        self._outbox.append((resp, path))
        self.stats["handshake_answered"] += 1
        self._touch(st)
        return True

    def _parse_answer(
        self, parse: Callable[[bytes], _Answer], data: bytes
    ) -> tuple[_Answer, Initiation] | None:
        """A Resp or cookie reply and the initiation of ours it names; None (counted as a
        drop) if it does not parse or names none."""
        try:
            msg = parse(data)
        except RemoteProtocolError as exc:
            self.drops[exc.reason] += 1
            return None
        ini = self._initiations.get(msg.receiver_index)
        if ini is None:
            self.drops["unknown_index"] += 1
            return None
        return msg, ini

    def on_cookie(self, data: bytes, path: Path, now: float) -> None:
        """A responder under load sent a cookie for one of our Inits: resend it with mac2."""
        answered = self._parse_answer(CookieReply.parse, data)
        if answered is None:
            return
        reply, ini = answered
        if path != ini.path or not any(init_digest(c) == reply.init_digest for c in ini.sent):
            self.drops["bad_cookie_reply"] += 1
            return
        ini.cookie = reply.cookie
        self.stats["cookie_received"] += 1
        # At once (the cookie round trip is all the delay a loaded responder adds), but at most
        # once per retry interval: cookie replies must not make us send Inits as fast as they
        # come (an on-path sender could otherwise make us flood the responder).
        if now >= ini.cookie_resent_at + self.config.handshake_retry_s:
            ini.cookie_resent_at = now
            self.stats["cookie_resent"] += 1
            self.send_init(ini, now)

    def on_resp(self, data: bytes, path: Path, now: float) -> None:
        answered = self._parse_answer(HandshakeResp.parse, data)
        if answered is None:
            return
        resp, ini = answered
        try:
            cert, keys = verify_resp(
                self._trust, ini, resp, data, now=now, offered=self.config.ciphers
            )
        except RemoteProtocolError as exc:
            self.drops[exc.reason] += 1
            ini.last_reason = exc.reason
            return
        node = cert.node_id
        if node == self.local_id:
            self.drops["own_identity"] += 1
            ini.last_reason = "own_identity"
            return
        del self._initiations[ini.index]
        st = self._peers.get(node)
        if st is None:
            st = self._peers[node] = Peer(node, cert, path)
        kp = Keypair(keys, st, cert, now, self.config)
        self._keys.add(kp)
        # Round trip of this handshake: what path choice compares (a retransmitted Init counts
        # from its first copy, which only makes a lossy path look worse).
        st.rtt = now - ini.started_at
        self._install(st, kp, path, now, resp.observed, rtt=st.rtt)
        # Key confirmation for the responder, which stays silent until it sees our DATA.
        self._outbox.append((self._seal(st, kp, _EMPTY, now), st.path))

    # --- session state changes --------------------------------------------------------------

    def _confirm(self, st: Peer, kp: Keypair[Peer], path: Path, now: float) -> None:
        """Responder side: ``kp`` was just proven by the initiator's first DATA.

        The other pending keys are kept as ``spare`` for ``SPARE_KEYS_S``, not dropped: when
        the initiator's Inits reached us over several paths at once (a shortcut punched to
        every endpoint of ours, a relay alongside), it installs each Resp that gets back, in
        arrival order, and seals with the last. Its confirmation of an earlier one may reach
        us first; dropping the rest made us refuse everything it then sealed with the keys it
        kept (``unknown_index``), pings lost both ways until a rehandshake (cold start of 30
        daemons: 1-4 of 1,190 pairs lost both pings). A spare key becomes current only when
        authenticated DATA under it arrives, as a pending one does.
        """
        del st.pending[kp.local_index]
        # The initiator confirms as soon as our Resp arrives: one round trip since we answered.
        st.rtt = now - kp.created_at
        if st.pending:
            st.spare.update(st.pending)
            st.pending.clear()
            while len(st.spare) > self.config.max_pending_responses:
                oldest = next(iter(st.spare))
                self._keys.retire(st.spare.pop(oldest).local_index, st.node_id)
            st.spare_until = now + timing.SPARE_KEYS_S
        st.spare.pop(kp.local_index, None)
        self._install(st, kp, path, now, None)

    def drop_spare(self, st: Peer) -> None:
        for index in st.spare:
            self._keys.retire(index, st.node_id)
        st.spare.clear()
        st.spare_until = _INF

    def on_older_keys(self, st: Peer, kp: Keypair[Peer], path: Path, now: float) -> None:
        """An authenticated DATA arrived on keys that are not ``current``."""
        if kp.local_index in st.pending:
            self._confirm(st, kp, path, now)
            return
        if st.spare.pop(kp.local_index, None) is not None:
            # The initiator kept these keys (see _confirm): seal with them too.
            self.stats["spare_keys_confirmed"] += 1
            st.rtt = now - kp.created_at
            self._install(st, kp, path, now, None)
            return
        cur = st.current
        # The peer still seals with our previous keys half a grace period after we switched:
        # normal in-flight overlap lasts one round trip, so the two sides disagree on which
        # keys are current (crossing handshakes invariant 4 could not pair up, or our key
        # confirmation was lost). A fresh handshake from here is sequential and converges,
        # and it completes before the previous keys stop opening. Only a handshake of ours
        # toward the session's own path makes it wait (_repairing).
        if (
            cur is not None
            and (kp is st.previous or kp.local_index in st.older)
            and now - cur.created_at > self.config.previous_key_grace_s / 2
            and not st.pending
            and not self._repairing(st)
        ):
            self.stats["rehandshake_diverged"] += 1
            self.start(st.path, st.node_id, now)

    def _install(
        self,
        st: Peer,
        kp: Keypair[Peer],
        path: Path,
        now: float,
        observed: Endpoint | None,
        *,
        rtt: float | None = None,
    ) -> None:
        if type(path) is SocketPath:
            # Where the peer sees a punching socket is that socket's own NAT mapping: nothing
            # to advertise, and compared with the main socket's it looked like a NAT rebinding
            # (a roam, every session re-keyed, at every cold start).
            observed = None
        old = st.current
        heard = st.last_rx  # before this handshake: how long the session had been silent
        if old is not None:
            old.reject_at = min(old.reject_at, now + self.config.previous_key_grace_s)
            prev = st.previous
            if prev is not None:
                # Replaced within its grace period: the peer may still seal with it (it
                # switches when our key confirmation, or its own Resp, arrives).
                older = st.older
                older[prev.local_index] = prev
                while len(older) > self.config.max_pending_responses:
                    self._keys.retire(older.pop(next(iter(older))).local_index, st.node_id)
            st.previous = old
            st.rekeys += 1
        st.current = kp
        st.cert = kp.cert
        st.last_rx = now
        st.tx_first = _INF
        self._touch(st)
        if not st.up:
            st.up = True
            st.path = path
            st.path_rtt = _INF if rtt is None else rtt
            st.path_rx = now
            st.established_at = now
            st.last_tx = now
            st.observed = observed
            self.stats["link_up"] += 1
            self._events.append(LinkUp(st.node_id, kp.cert, path, observed, st.rtt))
            self._probe_path(st, now)
            self._claim(st, path)
            return
        if path == st.path:
            if rtt is not None:
                st.path_rtt = rtt
        elif better_path(
            PathQuality(st.path, st.path_rtt, st.path_rx),
            PathQuality(path, _INF if rtt is None else rtt, now),
            now,
            heard=heard,
            roamed_at=self.roamed_at,
        ):
            st.roam_candidate = None
            if type(path) is RelayPath:
                self._relayed(st, now)
            st.path = path
            st.path_rtt = _INF if rtt is None else rtt
            st.path_rx = now
            self._events.append(LinkPathChanged(st.node_id, path, "handshake"))
            self._probe_path(st, now)
            self._claim(st, path)
        else:
            self.stats["path_kept"] += 1
        if observed is not None and observed != st.observed:
            st.observed = observed
            self._events.append(ObservedEndpoint(observed, st.node_id))

    def unknown_index(self, index: int, path: Path, now: float) -> None:
        """DATA under an index we no longer hold. If it is one we gave out and retired (keys
        we answered but dropped unconfirmed, keys a rekey replaced) and the peer's session is
        up, the two ends hold different keys (crossing handshakes over different relays, a
        lost key confirmation) and the link would stay dead until the link timeout: key it
        afresh toward its path. An index is 32 random bits seen only by the peer, so this is
        no answer to garbage (invariant 1); at most one such handshake per handshake timeout.
        Relayed DATA under an index we never gave out: see :meth:`_rekey_relayed`."""
        self.drops["unknown_index"] += 1
        peer = self._keys.retired_owner(index)
        if peer is None:
            if type(path) is RelayPath:
                self._rekey_relayed(path, now)
            return
        # Our peer seals with keys we dropped: the two ends diverged (tests expect none at a
        # cold start, tests/sim/test_coldstart_keys.py).
        self.stats["data_under_retired_keys"] += 1
        st = self._peers.get(peer)
        if st is None or not st.up or now < st.rekeyed_stale_at + self.config.handshake_timeout_s:
            return
        if st.pending or self._repairing(st):
            return
        st.rekeyed_stale_at = now
        self.stats["rehandshake_stale_keys"] += 1
        self.start(st.path, peer, now)

    def _repairing(self, st: Peer) -> bool:
        """Is a handshake of ours toward ``st``'s own path under way (the one that repairs
        keys the two ends disagree on)? One toward another path does not count: it may never
        be answered (an Init to a port the peer's NAT filters, a punch) and then waits out the
        whole handshake timeout (20 s), past the previous keys' grace (10 s). Counted as
        under way, it held back both repairs while the pair lost every packet both ways
        (tests/unit/test_link_endpoint.py; the lab's shared-NAT case after port guessing
        crossed a punch on another path showed the same counters)."""
        return self.expecting_on(st.node_id, st.path)

    def _rekey_relayed(self, path: RelayPath, now: float) -> None:
        """DATA relayed to us from ``path.peer``, with whom we hold no session, under keys we
        do not hold: the peer still seals with a session we lost (we were restarted: kill -9,
        no goodbye) and will until its silent-peer timer, 20-35 s. A direct peer is re-keyed
        from the remembered peers at start; a relayed one is not remembered (its relay may be
        gone next time), so key it afresh here, through the relay it came by: the peer
        replaces its dead session once our handshake completes (``_confirm``).

        No answer to garbage (invariant 1): the datagram came inside an authenticated link
        from the relay, a member, and our Init goes back through that relay only, to the node
        it named, which alone can complete it. At most one per peer per handshake timeout,
        the table of those is bounded (``RELAY_REKEYED_MAX``), and all of them share one
        budget (``RELAY_REKEY_PER_S``; spent: counted in ``relayed_rekey_over_budget``).
        """
        peer = path.peer
        st = self._peers.get(peer)
        if peer == self.local_id or (st is not None and (st.up or st.pending)):
            return
        if self.expecting(peer):
            return
        rekeyed = self._relay_rekeyed
        last = rekeyed.pop(peer, None)
        if last is not None and now < last + self.config.handshake_timeout_s:
            rekeyed[peer] = last
            return
        budget = self._relay_rekey_budget
        if budget is None:
            budget = self._relay_rekey_budget = TokenBucket(
                RELAY_REKEY_PER_S, RELAY_REKEY_BURST, now
            )
        if not budget.take(now):
            self.stats["relayed_rekey_over_budget"] += 1
            return
        rekeyed[peer] = now
        if len(rekeyed) > RELAY_REKEYED_MAX:
            del rekeyed[next(iter(rekeyed))]
        self.stats["rehandshake_relayed_unknown"] += 1
        self.start(path, peer, now)

    def start(
        self,
        path: Path,
        expected: NodeId | None,
        now: float,
        *,
        retransmit: bool = True,
        timeout_s: float | None = None,
    ) -> None:
        cfg = self.config
        ini = Initiation(
            index=self._keys.allocate(self._initiations),
            path=path,
            expected=expected,
            ephemeral=X25519PrivateKey.generate(),
            started_at=now,
            deadline=now + (cfg.handshake_timeout_s if timeout_s is None else timeout_s),
            next_retry_at=now + cfg.handshake_retry_s if retransmit else _INF,
            interval=cfg.handshake_retry_s,
        )
        self._initiations[ini.index] = ini
        self.send_init(ini, now)
        self._wake()

    def send_init(self, ini: Initiation, now: float) -> None:
        if ini.sent:
            # A retransmission: the same signed core (see the module docstring).
            core = ini.sent[-1]
        else:
            ts = max(int(now * 1000.0), self._last_sent_ms + 1)
            self._last_sent_ms = ts
            core = make_init(
                self._identity,
                index=ini.index,
                ephemeral=ini.ephemeral,
                timestamp_ms=ts,
                ciphers=self.config.ciphers,
                responder=_responder_of(ini.path, ini.expected),
            )
            ini.sent.append(core)
        mac2 = _NO_MAC2 if ini.cookie is None else mac2_for(ini.cookie, core)
        self._outbox.append((core + mac2, ini.path))

    def _crossing(self, node: NodeId, path: Path) -> Initiation | None:
        """Our initiation that an Init from ``node`` over ``path`` crosses, if any.

        Only one toward the same path counts: our Init then travels the reverse of the way
        theirs came, so it should reach them. An initiation toward another path (a punch
        that may never get through) must not make us refuse a handshake that did arrive.
        """
        for ini in self._initiations.values():
            # A single Init that is never retransmitted (a connect-back's punch) does not
            # count: refusing their Init for it would wait on an Init their NAT most likely
            # dropped, and ours comes no more.
            if ini.path == path and ini.expected in (None, node) and ini.next_retry_at != _INF:
                return ini
        return None
