"""NAT rebinding detection (sans-IO): when a session gets an echo, what its answer means, and
when other peers are asked as witnesses. The bytes are :mod:`ipop.link.echo`'s; this module
owns the decisions around them (invariant 8 of :mod:`ipop.link.layer`).

:class:`Rebinding` keeps the echo id counter and the witness timers of the node, and each
:class:`ipop.link.peer.Peer`'s echo fields (``watched``, ``rx_gap``, ``rx_streak``,
``tx_first``, ``echo_id``, ``echo_at``, ``echo_witness``, ``observed``).
:class:`ipop.link.layer.LinkLayer` calls :meth:`Rebinding.heard` for every authenticated DATA
(its receive path: kept to one call), :meth:`Rebinding.deadline` when it computes a peer's
deadline, :meth:`Rebinding.due` when that deadline fires, :meth:`Rebinding.relayed` when a
session leaves a direct path for a relay, and :meth:`Rebinding.on_echo` for an
echo, its ack or a *seen* (:mod:`ipop.link.probing` sorts them from path MTU probes). The
sealing side stays in the layer's ``_seal`` (``tx_first``: our first message since the peer
last spoke), and the *seen* a session sends when it follows its peer to a new port in its
``_maybe_roam``.

Counted in the layer's ``stats``: ``echo_sent``, ``echo_answered``, ``echo_unanswered``,
``echo_witness_sent``, ``echo_left_path`` (of ``echo_sent``: :meth:`Rebinding.relayed`),
``echo_late``, ``rebind_suspected``, ``seen_received``, ``seen_refused``, ``echo_retried``
and ``path_silent`` (:meth:`Rebinding.due`); a malformed echo is a ``bad_probe`` drop.
"""

from __future__ import annotations

import heapq
from typing import Final

from ipop import timing
from ipop.link import echo
from ipop.link.events import LinkPathSilent, ObservedEndpoint
from ipop.link.peer import LinkPart, Peer, Shared
from ipop.types import Endpoint, Path, SocketPath, is_direct

__all__ = ["Rebinding"]

_INF: Final = float("inf")
_REBIND_QUIET: Final = timing.REBIND_QUIET_S
_REBIND_ECHO_WAIT: Final = timing.REBIND_ECHO_WAIT_S
_REBIND_BUSY: Final = timing.REBIND_BUSY_PACKETS


class Rebinding(LinkPart):
    """Echoes over one node's sessions, to notice its NAT rebinding (see the module docstring)."""

    def __init__(self, shared: Shared, *, enabled: bool) -> None:
        super().__init__(shared)
        # The last echo id, when witnesses may be asked again, and until when a witness's
        # first answer that differs from every peer's counts as a rebinding
        # (ObservedEndpoint.rebound).
        self._echoes = enabled
        self._echo_seq = 0
        self._witness_ok_at = -_INF
        self._suspect_until = -_INF

    def watch(self, st: Peer) -> None:
        """Upper-layer traffic flows to ``st`` (:meth:`ipop.link.layer.LinkLayer.watch`): echo
        it when it falls silent, unless echoes are off."""
        if self._echoes:
            st.watched = True

    def due(self, st: Peer, now: float) -> None:
        """``st``'s deadline fired: time out its outstanding echo (for a link that was not
        itself a witness: :meth:`_unanswered`), or send the echo that is due."""
        if st.echo_id is not None:
            if now >= st.echo_at + _REBIND_ECHO_WAIT:
                st.echo_id = None
                self.stats["echo_unanswered"] += 1
                if not st.echo_witness:
                    self._unanswered(st, now)
        elif now >= self.deadline(st):
            self._send_echo(st, now, witness=False)

    def _unanswered(self, st: Peer, now: float) -> None:
        """An echo over ``st``'s silent link went unanswered. The first time: ask witnesses
        (our NAT may have rebound) and echo once more (one lost datagram is no silence). The
        second in a row, nothing heard since: the direct path delivers nothing now
        (LinkPathSilent). Why: a path can die without our NAT rebinding, e.g. a NAT shared
        with other hosts gave our flow toward one peer another port after a flush while every
        witness still saw us where it did, and the pair stayed cut off, each end sending into
        the dead path, until the link timed out (50 s; the soak's nat_flush of a NAT with three
        hosts behind it)."""
        st.echo_misses += 1
        if st.echo_misses == 1:
            self._ask_witnesses(st, now)
            if st.up and is_direct(st.path):
                self.stats["echo_retried"] += 1
                self._send_echo(st, now, witness=False)
        elif st.echo_misses == 2 and st.up and is_direct(st.path):
            self.stats["path_silent"] += 1
            self._events.append(LinkPathSilent(st.node_id, st.path))

    def ask(self, st: Peer, now: float) -> bool:
        """Echo ``st`` now, unasked by its silence (:meth:`ipop.link.layer.LinkLayer.echo`);
        False if echoes are off, one is out, or its session is down or not on our main
        socket (a punching socket's mapping is not the one checked)."""
        if not self._echoes or st.echo_id is not None or not st.up or type(st.path) is not Endpoint:
            return False
        self._send_echo(st, now, witness=False)
        return True

    def heard(self, st: Peer, now: float) -> None:
        """An authenticated DATA from ``st`` arrived: liveness and echo bookkeeping."""
        gap = now - st.last_rx
        st.last_rx = now
        st.tx_first = _INF
        st.echo_misses = 0
        st.rx_gap = gap
        if gap > _REBIND_QUIET:
            st.rx_streak = 0
            return
        st.rx_streak += 1
        if st.rx_streak == _REBIND_BUSY and st.watched and now + _REBIND_QUIET < st.due:
            self._touch(st)  # it just got busy: its silence is worth an echo from now on

    def heard_run(self, st: Peer, now: float, n: int) -> None:
        """:meth:`heard` ``n`` times at one ``now`` (a run's datagrams, opened at once): the
        first as one, the rest with no gap, each one more in the streak."""
        self.heard(st, now)
        if n < 2:
            return
        st.rx_gap = 0.0
        before = st.rx_streak
        st.rx_streak = before + n - 1
        if before < _REBIND_BUSY <= before + n - 1 and st.watched and now + _REBIND_QUIET < st.due:
            self._touch(st)

    def deadline(self, st: Peer) -> float:
        """When an echo to up ``st`` is due (inf: none), or its outstanding one times out.

        One echo per silence (none again before the peer spoke), on direct paths only:
        ``REBIND_QUIET_S`` after the last packet of a busy peer (``REBIND_BUSY_PACKETS`` in a
        row, each within ``REBIND_QUIET_S`` of the one before), or after our first message
        since its last packet (nothing at all came back); at once for a busy peer that never
        told us where it sees us (the answer is what a later one is compared with; not over a
        punching socket, whose answers never tell: each answer, heard within the quiet gap,
        kept the peer busy and asked for the next echo at once)."""
        if st.echo_id is not None:
            return st.echo_at + _REBIND_ECHO_WAIT
        if st.echo_at >= st.last_rx or not st.watched or not is_direct(st.path):
            return _INF
        t = _INF
        if st.rx_streak >= _REBIND_BUSY:
            unseen = st.observed is None and type(st.path) is Endpoint
            t = st.last_rx if unseen else st.last_rx + _REBIND_QUIET
        if st.tx_first >= st.last_rx:
            t = min(t, st.tx_first + _REBIND_QUIET)
        return t

    def relayed(self, st: Peer, now: float) -> None:
        """``st``'s session is about to leave its direct path for a relay: the peer's relay
        handshake or relayed DATA won over a path that had fallen silent, so the peer no
        longer reaches us there. Called before the move (``st.path`` is still the direct one).

        Why echo it there: if our NAT gave us another port (a rebinding, or another host
        behind it took ours, which our peers see as a claim on our endpoint,
        :func:`ipop.link.paths.displaced`), every peer outside may key us through a relay
        before our own echoes ask where it sees us, and those go over direct paths only: we
        never learned our new port nor re-advertised it, and in the lab such a pair stayed
        relayed (tests/lab/test_rebind_lab.py, c1). A peer that hears us there answers with
        where it sees us (ObservedEndpoint); one that does not leaves the echo unanswered,
        which asks witnesses as for a silent link. It replaces an echo still out: one sent
        before our port moved is answered where nobody hears it. Not where the peer said it
        left, or where another peer proved the endpoint its own (``path_rx`` is -inf then):
        nobody we know answers there."""
        left = st.path
        if not self._echoes or not st.up or type(left) is not Endpoint or st.path_rx == -_INF:
            return
        self.stats["echo_left_path"] += 1
        self._send_echo(st, now, witness=False, path=left)

    def _send_echo(self, st: Peer, now: float, *, witness: bool, path: Path | None = None) -> None:
        """Echo ``st`` on ``path`` (default: its session's)."""
        kp = st.current
        if kp is None or not st.up:
            return
        self._echo_seq = (self._echo_seq + 1) & 0xFFFFFFFF
        st.echo_id = self._echo_seq
        st.echo_at = now
        st.echo_witness = witness
        self.stats["echo_witness_sent" if witness else "echo_sent"] += 1
        payload = echo.echo_payload(st.echo_id)
        self._outbox.append((self._seal(st, kp, payload, now), st.path if path is None else path))
        self._touch(st)

    def _ask_witnesses(self, silent: Peer, now: float) -> None:
        """A busy direct link answers nothing: if our NAT rebound, peers that can still hear
        us see us elsewhere now. Ask the most recently heard few (their answers go through
        :meth:`on_echo`); at most once per ``REBIND_WITNESS_MIN_S``, whatever went silent."""
        if now < self._witness_ok_at:
            return
        self._witness_ok_at = now + timing.REBIND_WITNESS_MIN_S
        self._suspect_until = now + 2 * _REBIND_ECHO_WAIT
        self.stats["rebind_suspected"] += 1
        candidates = (
            p
            for p in self._peers.values()
            if p is not silent and p.up and p.echo_id is None and is_direct(p.path)
        )
        for p in heapq.nlargest(timing.REBIND_WITNESSES, candidates, key=lambda p: p.last_rx):
            self._send_echo(p, now, witness=True)

    def on_echo(self, st: Peer, payload: bytes, path: Path, now: float) -> None:
        """An echo (answered on the path it came over with where it came from) or our echo's
        answer (a changed observed endpoint is news: ObservedEndpoint)."""
        msg = echo.parse(payload)
        if msg is None:
            self.drops["bad_probe"] += 1
            return
        kind, echo_id, observed = msg
        if kind == echo.ECHO:
            seen = path.remote if type(path) is SocketPath else path
            kp = st.current
            if type(seen) is Endpoint and kp is not None and st.up:
                ack = echo.ack_payload(echo_id, seen)
                if ack is not None:
                    self.stats["echo_answered"] += 1
                    self._outbox.append((self._seal(st, kp, ack, now), path))
            return
        if observed is None:
            return  # parse() gives an endpoint for every ack and seen
        if type(path) is SocketPath:
            # A punching socket's mapping, not our main socket's (see Handshakes._install): no
            # news of where we are, but our echo was answered. Left outstanding, every echo
            # of a port-guessed session timed out as unanswered and asked witnesses (two in
            # three of a symmetric-NAT host's echoes in a 10-minute soak).
            if kind == echo.ECHO_ACK and echo_id == st.echo_id:
                st.echo_id = None
                self._touch(st)
            return
        old = st.observed
        if kind == echo.SEEN:
            # Unasked, but the peer's own observation of our authenticated DATA, as a Resp's
            # is: it followed us to a new port. Without earlier word from it, that move is
            # the news (a port change on one address: our NAT rebound). A port, not an
            # address: where peers have seen us, a seen naming another address is refused,
            # so an insider cannot make us advertise somebody else's.
            hosts = {p.observed.host for p in self._peers.values() if p.observed is not None}
            if hosts and observed.host not in hosts:
                self.stats["seen_refused"] += 1
                return
            self.stats["seen_received"] += 1
            rebound = old is None
        elif echo_id != st.echo_id:
            self.stats["echo_late"] += 1
            return
        else:
            st.echo_id = None
            self._touch(st)
            rebound = (
                old is None
                and now < self._suspect_until
                and all(p.observed != observed for p in self._peers.values() if p is not st)
            )
        if observed != old:
            st.observed = observed
            self._events.append(ObservedEndpoint(observed, st.node_id, rebound))
