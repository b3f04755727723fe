"""CONNECT_TO_ME (sans-IO): asking a node to link to us, answering such asks, and the bounds.

A CONNECT_TO_ME (CTM) is routed toward a target id (exact) or a ring position (closest
delivery) with our endpoints; whoever takes it answers with a CTM_REPLY carrying its
endpoints and neighbours, and both ends connect toward each other at once (simultaneous open
punches cone NATs). :class:`CtmAgent` owns the exchange for one node:

- **Asking** (:meth:`CtmAgent.send`): the token of each CTM in flight and what it was for
  (JOIN, NEAR, FAR, SHORTCUT), until its answer or ``ctm_timeout_s``; a ``via`` (a node that
  holds a link to the target) goes first, and an exact CTM at a local minimum detours
  (:meth:`ipop.overlay.routing.Router.detour_hop`).
- **Answering** (:meth:`CtmAgent.on_ctm`): the reply, routed back, and a connect-back to the
  requester when we hold no link to it (one Init per endpoint, never retransmitted).
- **Reading answers** (:meth:`CtmAgent.on_reply`): a link attempt to the responder, its relay
  candidates, and relay helpers when the answer names nobody we hold directly.
- **Bounds** (a member may lie; its endpoints are only its word): each requester's CTMs within
  a token bucket, connect-backs to at most ``connect_back_max`` endpoints (one LAN endpoint at
  most) each within its address's bucket, at most ``connect_back_inflight`` at once; LAN
  endpoints of another LAN are not tried (:meth:`CtmAgent.worth_trying`); the endpoints peers
  gave us are kept for at most ``_PEER_ENDPOINTS_MAX`` peers (port guessing reads them,
  :meth:`CtmAgent.peer_hosts`).

The node owns the agent and hands it the node's own ways to route and send, mark kinds, carry
out attempts' actions, learn of the join and of routability, and follow a peer that moved. Its
drop reasons are :data:`CTM_DROPS` (a malformed CTM raises RemoteProtocolError, counted by the
node as every decode error is).
"""

from __future__ import annotations

import collections
import functools
import ipaddress
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from ipop.overlay.attempts import Action as AttemptAction
from ipop.overlay.attempts import Attempts
from ipop.overlay.config import OverlayConfig
from ipop.overlay.messages import (
    FLAG_EXACT,
    FLAG_EXCLUDE_SRC,
    FLAG_VIA,
    KIND_CTM,
    KIND_CTM_REPLY,
    ConnectToMe,
    ConnectToMeReply,
    Purpose,
    Routed,
)
from ipop.overlay.near import NearKeeper, SeenIds
from ipop.overlay.ports import Origins
from ipop.overlay.relay import relay_candidates
from ipop.overlay.routing import Router
from ipop.overlay.table import ConnectionKind, ConnectionTable
from ipop.ratelimit import KeyedBuckets
from ipop.types import Endpoint, NodeId, ring_distance

__all__ = ["CTM_DROPS", "CtmAgent"]

# Every reason the agent drops a CTM, an answer or a connect-back endpoint for.
CTM_DROPS: Final = frozenset(
    {
        "ctm_rate_limited",
        "connect_back_busy",
        "connect_address_over_budget",
        "unknown_token",
        "ctm_wrong_responder",
    }
)
# Peers whose CTM endpoints we remember (see peer_hosts): the oldest go first.
_PEER_ENDPOINTS_MAX = 4096
_NEIGHBOUR_SAMPLE = 32
# Relay helpers recruited per attempt with no common direct neighbour (see _recruit_helpers):
# behind a symmetric NAT only public nodes link to us directly, a third of them or so.
_HELPERS_PER_ATTEMPT = 4


@dataclass(slots=True)
class _Request:
    """A CONNECT_TO_ME we sent: why, toward whom, and until when we wait for its reply."""

    purpose: Purpose
    target: NodeId
    expires: float


def _purpose_kinds(purpose: Purpose) -> set[ConnectionKind]:
    if purpose is Purpose.FAR:
        return {ConnectionKind.FAR}
    if purpose is Purpose.SHORTCUT:
        return {ConnectionKind.SHORTCUT}
    return set()  # JOIN and NEAR: near-ness is computed, never assigned


# Documentation ranges that Python counts as private but that stand for the public internet
# in our simulator and lab (DESIGN.md's underlay addresses).
_PUBLIC_TEST_NETS = (
    ipaddress.IPv4Network("198.51.100.0/24"),
    ipaddress.IPv4Network("203.0.113.0/24"),
)


@functools.lru_cache(maxsize=4096)
def _lan_like(host: str) -> bool:
    """True for an address only reachable from its own LAN (private, link-local, loopback)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv4Address) and any(ip in n for n in _PUBLIC_TEST_NETS):
        return False
    return ip.is_private


class AddKind(Protocol):
    """The node's way to give a linked peer's row a kind (``remote``: the peer asked for it)."""

    def __call__(
        self, peer: NodeId, kind: ConnectionKind, now: float, *, remote: bool = False
    ) -> None: ...


class CtmAgent:
    """One node's CONNECT_TO_ME exchange; see the module docstring."""

    def __init__(
        self,
        local_id: NodeId,
        *,
        config: OverlayConfig,
        rng: random.Random,
        origin: Origins,
        router: Router,
        table: ConnectionTable,
        attempts: Attempts,
        seen: SeenIds,
        keeper: NearKeeper,
        drops: collections.Counter[str],
        stats: collections.Counter[str],
        endpoints: Callable[[], tuple[Endpoint, ...]],
        own_endpoints: Callable[[], Iterable[Endpoint]],
        near_peers: Callable[[], Iterable[NodeId]],
        route: Callable[[Routed, float], bool],
        send_routed: Callable[[NodeId, bytes, float], bool],
        add_kind: AddKind,
        connect: Callable[[Sequence[AttemptAction], float], None],
        joined: Callable[[], None],
        update_routable: Callable[[float], None],
        follow_move: Callable[
            [NodeId, tuple[Endpoint, ...], tuple[Endpoint, ...] | None, float], None
        ],
    ) -> None:
        self.local_id = local_id
        self._config = config
        self._rng = rng
        self._origin = origin
        self._router = router
        self._table = table
        self._attempts = attempts
        self._seen = seen
        self._keeper = keeper
        self._drops = drops
        self._stats = stats
        # What we advertise (socket's and observed public endpoints), and every endpoint of
        # ours we know of (what worth_trying compares with).
        self._endpoints = endpoints
        self._own_endpoints = own_endpoints
        self._near_peers = near_peers
        self._route = route
        self._send_routed = send_routed
        self._add_kind = add_kind
        self._connect = connect
        self._joined = joined
        self._update_routable = update_routable
        self._follow_move = follow_move
        # Our CTMs in flight: token -> what for, until when.
        self._requests: dict[int, _Request] = {}
        # Rate limits on what peers' CTMs make us do (ipop.ratelimit): CTMs acted on per
        # requester, connect-back attempts per destination address.
        self._ctm_budget: KeyedBuckets[NodeId] = KeyedBuckets(
            1 / config.ctm_refill_s, config.ctm_burst
        )
        self._connect_ip_budget: KeyedBuckets[str] = KeyedBuckets(
            1 / config.connect_back_ip_refill_s, config.connect_back_ip_burst
        )
        # Peer -> the endpoints it gave in its last CTM to us or answer to ours (its word,
        # authenticated as its own): where port guessing may send (see peer_hosts).
        self._peer_endpoints: dict[NodeId, tuple[Endpoint, ...]] = {}

    # --- our requests ---------------------------------------------------------------------

    def expire(self, now: float) -> list[NodeId]:
        """Forget the CTMs whose answer is overdue; the targets of NEAR ones, in order."""
        near = []
        for tok in [t for t, r in self._requests.items() if r.expires <= now]:
            req = self._requests.pop(tok)
            if req.purpose is Purpose.NEAR:
                near.append(req.target)
        return near

    def join_outstanding(self, now: float) -> bool:
        """A JOIN of ours is in flight and not yet overdue."""
        return any(r.purpose is Purpose.JOIN and r.expires > now for r in self._requests.values())

    def pending(self, purpose: Purpose) -> int:
        """How many of our CTMs for ``purpose`` are in flight."""
        return sum(1 for r in self._requests.values() if r.purpose is purpose)

    def peer_hosts(self, peer: NodeId) -> frozenset[str]:
        """The addresses ``peer`` is known at: its direct link's path, and the public ones it
        gave us in a CONNECT_TO_ME or in its answer to ours. Not what any other message names:
        port guessing sends only here (ipop.nat.portguess)."""
        hosts = {e.host for e in self._peer_endpoints.get(peer, ()) if not _lan_like(e.host)}
        row = self._table.get(peer)
        if row is not None and type(row.path) is Endpoint:
            hosts.add(row.path.host)
        return frozenset(hosts)

    # --- the exchange -----------------------------------------------------------------------

    def send(
        self,
        target: NodeId,
        purpose: Purpose,
        *,
        exact: bool,
        now: float,
        via: NodeId | None = None,
        avoid_us: bool = False,
    ) -> bool:
        """Route a CONNECT_TO_ME; ``via`` (a node linked to ``target``) goes first if given.

        ``avoid_us``: no hop may hand it back to us (EXCLUDE_SRC), for a roam's
        re-advertisement, which must not come back to our dead link to ``target``.

        Why ``via``: a node we should link to is usually *between* us and our current
        neighbours, and greedy routing from us toward it stops at once (nobody we hold is
        closer to it than we are). The node that told us about it holds a link to it.
        """
        if via == self.local_id or via == target:
            via = None
        detour = False
        if via is not None:
            hop = self._router.next_hop(via, now, exact=True)
        else:
            exclude = None if exact else self.local_id
            hop = self._router.next_hop(target, now, exact=exact, exclude=exclude)
            if hop is None and exact and target != self.local_id:
                # Whoever told us about ``target`` is not linked to us (a joiner whose only
                # links are its bootstraps, a node whose near peers all died). Without the
                # detour such a node never reaches the neighbours it hears of, and stays off
                # the ring for good.
                hop = self._router.detour_hop(target, now)
                detour = hop is not None
        if hop is None:
            self._stats["ctm_no_route"] += 1
            return False
        if detour:
            self._stats["ctm_detour"] += 1
        token = self._rng.getrandbits(32)
        while token in self._requests:
            token = self._rng.getrandbits(32)
        body = ConnectToMe(token, purpose, hop, self._endpoints()).encode()
        flags = FLAG_EXACT if exact else FLAG_EXCLUDE_SRC
        if detour or avoid_us:
            flags |= FLAG_EXCLUDE_SRC
        if via is not None:
            flags |= FLAG_VIA
        msg = self._origin.routed(flags, self._config.ttl, KIND_CTM, target, via, body, now=now)
        if not self._send_routed(hop, msg.encode(), now):
            return False
        self._requests[token] = _Request(purpose, target, now + self._config.ctm_timeout_s)
        self._stats[f"ctm_sent_{purpose.name.lower()}"] += 1
        return True

    def on_ctm(self, msg: Routed, now: float) -> None:
        ctm = ConnectToMe.decode(msg.payload)
        requester = msg.src
        if requester == self.local_id:
            return
        if not self._ctm_budget.take(requester, now):
            # Past its burst a requester gets nothing: no answer, no connect-back.
            self._drops["ctm_rate_limited"] += 1
            return
        previous = self._peer_endpoints.get(requester)
        self._remember_endpoints(requester, ctm.endpoints)
        reply = ConnectToMeReply(ctm.token, self._endpoints(), self._neighbour_sample(requester))
        via = ctm.reply_via if ctm.reply_via not in (self.local_id, requester) else None
        flags = FLAG_EXACT | (FLAG_VIA if via is not None else 0)
        out = self._origin.routed(
            flags, self._config.ttl, KIND_CTM_REPLY, requester, via, reply.encode(), now=now
        )
        self._route(out, now)
        remote = _purpose_kinds(ctm.purpose)
        if requester in self._table:
            for k in remote:
                self._add_kind(requester, k, now, remote=True)
            self._follow_move(requester, ctm.endpoints, previous, now)
        else:
            # Connect back at once: with the requester connecting to us as it reads our
            # answer, the two attempts cross and punch through cone NATs. Relays are the
            # requester's job, so a failure here is simply forgotten. The endpoints are only
            # the requester's word (a member could name anybody's address): a few of them,
            # one Init each, within the per-address budget (see connect_back_endpoints).
            attempt = self._attempts.start(
                requester,
                self.connect_back_endpoints(ctm.endpoints, now),
                set(),
                remote,
                own=self._endpoints(),
                relay_allowed=False,
                candidates=[],
                now=now,
                connect_back=True,
            )
            self._connect(attempt, now)

    def connect_back_endpoints(self, endpoints: Sequence[Endpoint], now: float) -> list[Endpoint]:
        """The endpoints of a CTM we connect back to: what worth_trying keeps, at most one LAN
        endpoint and connect_back_max in all, each within its address's budget, none while
        connect_back_inflight attempts are under way."""
        cfg = self._config
        if self._attempts.connect_backs() >= cfg.connect_back_inflight:
            self._drops["connect_back_busy"] += 1
            return []
        out = []
        for ep in self.few(self.worth_trying(endpoints)):
            # Addresses named by many requesters (or by one, many times) get a bounded number
            # of handshakes from us, whoever named them.
            if self._connect_ip_budget.take(ep.host, now):
                out.append(ep)
            else:
                self._drops["connect_address_over_budget"] += 1
        return out

    def few(self, endpoints: Sequence[Endpoint]) -> list[Endpoint]:
        """At most one LAN endpoint and connect_back_max in all, public ones after the LAN one
        (a node advertises its socket's, then up to three observed ones)."""
        lan = [e for e in endpoints if _lan_like(e.host)][:1]
        public = [e for e in endpoints if not _lan_like(e.host)]
        picked = [*lan, *public][: self._config.connect_back_max]
        self._stats["connect_endpoints_capped"] += len(endpoints) - len(picked)
        return picked

    def worth_trying(self, endpoints: Sequence[Endpoint]) -> list[Endpoint]:
        """A peer's advertised endpoints minus LAN ones that cannot be on our LAN.

        Why: every node advertises its LAN endpoint first, and handshakes to another LAN's
        private address can only time out (a third of a 1,000-node simulation's datagrams).
        A LAN endpoint is kept when the peer's public address is ours (one NAT, one LAN), and
        whenever we cannot tell: the peer advertised no public endpoint, or no peer has told us
        our public address yet.
        """
        peer_public = {e.host for e in endpoints if not _lan_like(e.host)}
        if not peer_public:
            return list(endpoints)
        ours = {e.host for e in self._own_endpoints() if not _lan_like(e.host)}
        if not ours or peer_public & ours:
            return list(endpoints)
        kept = [e for e in endpoints if not _lan_like(e.host)]
        self._stats["lan_endpoints_skipped"] += len(endpoints) - len(kept)
        return kept

    def on_reply(self, msg: Routed, now: float) -> None:
        rep = ConnectToMeReply.decode(msg.payload)
        req = self._requests.pop(rep.token, None)
        if req is None:
            self._drops["unknown_token"] += 1
            return
        responder = msg.src
        if req.purpose in (Purpose.NEAR, Purpose.SHORTCUT) and responder != req.target:
            self._drops["ctm_wrong_responder"] += 1
            return
        self._remember_endpoints(responder, rep.endpoints)
        helping = self._attempts.helping(responder, now) and req.purpose is Purpose.NEAR
        if req.purpose is Purpose.JOIN:
            self._joined()
        if responder != self.local_id:
            kinds = _purpose_kinds(req.purpose)
            if responder in self._table:
                for k in kinds:
                    self._add_kind(responder, k, now)
            else:
                # Last resort: whoever told us about the responder holds a link to it.
                news = self._seen.get(responder)
                candidates = relay_candidates(
                    self.local_id,
                    responder,
                    self._table.direct_peers(),
                    rep.neighbours,
                    fallback=None if news is None else news[0],
                )
                relay_allowed = req.purpose in (Purpose.JOIN, Purpose.NEAR) and not helping
                attempt = self._attempts.start(
                    responder,
                    # Not charged to the addresses' buckets: we asked (one answer per request),
                    # and a member draining a peer's bucket must not stop our own links to it.
                    self.few(self.worth_trying(rep.endpoints)),
                    kinds,
                    set(),
                    own=self._endpoints(),
                    relay_allowed=relay_allowed,
                    candidates=candidates,
                    now=now,
                )
                self._connect(attempt, now)
                if relay_allowed and not candidates:
                    self._recruit_helpers(responder, rep.neighbours, now)
        self._keeper.consider(rep.neighbours, responder, now)
        self._update_routable(now)

    def _recruit_helpers(self, target: NodeId, listed: Sequence[NodeId], now: float) -> None:
        """Link directly to a few of ``target``'s neighbours, to relay our link to it through.

        Why: a relay must hold direct links to both ends, and two near neighbours that cannot
        link directly (symmetric vs port-restricted NAT) often share no such node, above all
        after churn killed the ones they shared; both ends then retried the same empty
        candidate list until the ring gave up on them (400 nodes, 30% churn, seed 3: 20
        violations after 60 s, every one such a pair). A random few of the target's listed
        peers are asked for a link (a NEAR CTM, direct only); whichever comes up directly is
        the relay candidate the pending attempt lacked.
        """
        pool = self._attempts.helper_pool(listed, target, self._table)
        if not pool:
            return
        for n in self._rng.sample(pool, min(_HELPERS_PER_ATTEMPT, len(pool))):
            if self.send(n, Purpose.NEAR, exact=True, now=now):
                self._attempts.helper_asked(n, target, now)
                self._stats["relay_helpers_asked"] += 1

    def _neighbour_sample(self, about: NodeId) -> tuple[NodeId, ...]:
        """Our near set plus the direct peers nearest ``about``: its near and relay candidates."""
        direct = sorted(self._table.direct_peers(), key=lambda p: (ring_distance(p, about), p))
        out = list(dict.fromkeys([*sorted(self._near_peers()), *direct]))
        return tuple(p for p in out if p != about)[:_NEIGHBOUR_SAMPLE]

    def _remember_endpoints(self, peer: NodeId, endpoints: tuple[Endpoint, ...]) -> None:
        table = self._peer_endpoints
        table.pop(peer, None)  # re-inserted last: the dict stays oldest-first
        if len(table) >= _PEER_ENDPOINTS_MAX:
            del table[next(iter(table))]
        table[peer] = endpoints
