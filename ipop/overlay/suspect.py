"""Silent next hops: which linked peers we route into without hearing back (sans-IO).

A node that dies without a word (kill -9, power loss) leaves its links up until a silence
timer closes them: ``near_dead_s`` for a near peer, the link layer's ``link_timeout_s`` for
the rest. Meanwhile greedy routing keeps choosing it whenever it is the neighbour nearest a
key, and everything routed that way is lost. :class:`SilentHops` notices sooner, from what
routing itself does: an *episode* starts with the first routed message we send to a peer
since we last heard anything from it (a peer we send nothing to never becomes suspect). A
forward needs no answer, so silence alone proves nothing; one retransmission timeout into the
episode we ask (an ALIVE probe, :class:`ipop.overlay.messages.Alive`), one timeout later we
ask once more, and a peer that answered neither by ``SUSPECT_RTOS`` timeouts is *suspect*:
routing prefers any other hop that makes progress (:func:`ipop.overlay.ring.next_hop_sorted`
with ``avoid``) and uses a suspect only when nothing else does, so suspicion can reroute but
never drop or loop. Anything from the peer ends the episode; while it stays suspect it is
probed again at doubling intervals (up to ``OVERLAY_HOP_PROBE_MAX_S``), and it is closed, if
dead, by the existing silence timers, not here: a suspicion costs a detour, a wrong close a
handshake.

The timeout is the peer's own, from the round trips of its probe answers (RFC 6298's srtt +
4 rttvar; each probe carries a token its answer echoes, so a late answer to an earlier probe
is never taken for a fast one) or at first its link's handshake, clamped to
``[rto_min_s, rto_max_s]``: a 10 ms link is suspect after 0.6 s (the floor: a busy peer
answers late), a 300 ms one after about 1.5 s, and a 5 %-lossy one only when both probes or
both answers are lost (about 1 % of its episodes, and then for one round trip of the next
probe).

Bounds: state exists only for peers we route to (the caller forgets a peer with its link), at
most one episode each and ``_TOKENS_KEPT`` probe tokens each; the timer heap holds at most
one live entry per episode and is rebuilt when stale entries outnumber live ones.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from ipop.timing import OVERLAY_HOP_PROBE_MAX_S
from ipop.types import NodeId

__all__ = ["SUSPECT_RTOS", "SilentHops"]

# Unanswered retransmission timeouts into an episode before the peer is suspect: probes go out
# at 1 and 2, so each had at least one timeout to be answered.
SUSPECT_RTOS = 3
# Probes per peer whose answers still give a round-trip sample (older answers only end the
# episode, as anything from the peer does).
_TOKENS_KEPT = 4
_RTT_ALPHA = 1 / 8
_RTT_BETA = 1 / 4


@dataclass(slots=True)
class _Episode:
    """A linked peer we route into without hearing back: when it turns suspect, its probes."""

    since: float
    suspect_at: float
    probe_due: float
    probe_gap: float
    probes: int = 0


@dataclass(slots=True)
class _Rtt:
    """A peer's smoothed round trip and its variation (RFC 6298), for the silence timeout."""

    srtt: float
    rttvar: float


class SilentHops:
    """Per linked peer: are we routing into it without hearing back? See the module docstring."""

    def __init__(self, *, rto_min_s: float, rto_max_s: float, rto_initial_s: float) -> None:
        self._rto_min = rto_min_s
        self._rto_max = rto_max_s
        self._rto_initial = rto_initial_s
        self._episodes: dict[NodeId, _Episode] = {}
        self._rtt: dict[NodeId, _Rtt] = {}
        # Peer -> token of each recent probe -> when it left (oldest first).
        self._tokens: dict[NodeId, dict[int, float]] = {}
        self._next_token = 0
        # (probe due, seq, peer): live iff the peer's episode still has that probe_due.
        self._heap: list[tuple[float, int, NodeId]] = []
        self._seq = 0

    def __len__(self) -> int:
        return len(self._episodes)

    def rto(self, peer: NodeId) -> float:
        """srtt + 4 rttvar, but at least 1.5 srtt: on a steady path rttvar decays to nothing,
        and an answer due exactly when the next probe leaves would leave the second probe no
        time to count."""
        est = self._rtt.get(peer)
        raw = self._rto_initial if est is None else est.srtt + max(4 * est.rttvar, est.srtt / 2)
        return min(self._rto_max, max(self._rto_min, raw))

    def sent(self, peer: NodeId, now: float) -> None:
        """We routed a message into ``peer`` (the hot path: O(1) unless an episode starts)."""
        if peer in self._episodes:
            return
        rto = self.rto(peer)
        ep = _Episode(now, now + SUSPECT_RTOS * rto, now + rto, rto)
        self._episodes[peer] = ep
        self._push(ep.probe_due, peer)

    def heard(self, peer: NodeId, now: float) -> bool:
        """Anything came from ``peer``: its episode ends. True if it was suspect until now."""
        ep = self._episodes.pop(peer, None)
        return ep is not None and now >= ep.suspect_at

    def answered(self, peer: NodeId, token: int, now: float) -> None:
        """``peer`` answered the probe ``token``: a round-trip sample (the caller then calls
        :meth:`heard`, as for anything from the peer)."""
        sent = self._tokens.get(peer, {}).pop(token, None)
        if sent is not None:
            self.measured(peer, now - sent)

    def measured(self, peer: NodeId, sample: float) -> None:
        """A round trip to ``peer`` (a probe's, or the link's handshake)."""
        est = self._rtt.get(peer)
        if est is None:
            self._rtt[peer] = _Rtt(sample, sample / 2)
        else:
            est.rttvar += _RTT_BETA * (abs(est.srtt - sample) - est.rttvar)
            est.srtt += _RTT_ALPHA * (sample - est.srtt)

    def suspect(self, peer: NodeId, now: float) -> bool:
        ep = self._episodes.get(peer)
        return ep is not None and now >= ep.suspect_at

    def forget(self, peer: NodeId) -> None:
        """``peer``'s link is gone."""
        self._episodes.pop(peer, None)
        self._rtt.pop(peer, None)
        self._tokens.pop(peer, None)

    def restart(self) -> None:
        """Every episode ends (we did not run for a while: the silence was ours)."""
        self._episodes.clear()
        self._heap.clear()

    def next_due(self) -> float | None:
        """When :meth:`due` next has a probe to send (None: no episode)."""
        heap = self._heap
        while heap:
            due, _, peer = heap[0]
            ep = self._episodes.get(peer)
            if ep is not None and ep.probe_due == due:
                return due
            heapq.heappop(heap)
        return None

    def due(self, now: float) -> list[tuple[NodeId, int]]:
        """(peer, token) of each probe to send now; each peer's next probe is scheduled."""
        out: list[tuple[NodeId, int]] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            due, _, peer = heapq.heappop(heap)
            ep = self._episodes.get(peer)
            if ep is None or ep.probe_due != due:
                continue  # stale: the episode ended or was rescheduled
            token = self._next_token
            self._next_token = (token + 1) & 0xFFFF
            tokens = self._tokens.setdefault(peer, {})
            tokens[token] = now
            if len(tokens) > _TOKENS_KEPT:
                del tokens[next(iter(tokens))]
            out.append((peer, token))
            ep.probes += 1
            if ep.probes >= SUSPECT_RTOS:
                ep.probe_gap = min(OVERLAY_HOP_PROBE_MAX_S, 2 * ep.probe_gap)
            ep.probe_due = now + ep.probe_gap
            self._push(ep.probe_due, peer)
        return out

    def _push(self, due: float, peer: NodeId) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (due, self._seq, peer))
        if len(self._heap) > 2 * len(self._episodes) + 32:
            # Episodes that ended left their entries behind: keep the heap O(episodes).
            self._heap = [(e.probe_due, i, p) for i, (p, e) in enumerate(self._episodes.items())]
            heapq.heapify(self._heap)
            self._seq = len(self._heap)
