"""Roaming (sans-IO): where we are on the underlay, and following moves, ours and peers'.

:class:`Roaming` owns what a node knows of its own endpoints and what it does when they change:

- **Our endpoints.** The socket's own (the I/O layer tells us) and the public ones peers saw
  us at (LinkUp, ObservedEndpoint), newest first and at most ``2 * _OBSERVED_KEEP`` of them;
  we advertise the socket's and the ``_OBSERVED_KEEP`` newest observed (:meth:`endpoints`).
- **Our roams.** New socket addresses (:meth:`changed`), a wake-up after a gap (:meth:`roam`
  from the node's ``woke``) or a NAT that rebound our mappings (a peer sees us somewhere new,
  :meth:`on_observed`) each start a roam: backoffs earned from the old address are lifted, near
  candidates are asked again, and our endpoints are re-advertised to every linked peer with a
  CONNECT_TO_ME (:meth:`readvertise`), through the first peer that hears us from the new
  address, or at the latest ``timing.ROAM_ADVERTISE_WAIT_S`` later (:meth:`tick`).
- **Peers' roams.** A linked peer whose CTM names endpoints that no longer include its link's
  path moved: the link layer follows it and we punch back to its new endpoints
  (:meth:`follow_move`).

Bounds: the observed endpoints as above; one view of us per linked peer (:meth:`forget` runs
with the peer's link). The node owns it; it sends through the node's CTM agent and link layer.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Mapping, Sequence

from ipop import timing
from ipop.errors import LocalProtocolError
from ipop.link.events import ObservedEndpoint
from ipop.overlay.attempts import Backoff
from ipop.overlay.ctm import CtmAgent
from ipop.overlay.events import PeerHidden, Roamed
from ipop.overlay.messages import MAX_ENDPOINTS, Purpose
from ipop.overlay.near import NearKeeper
from ipop.overlay.ports import Links
from ipop.overlay.table import ConnectionTable
from ipop.types import Endpoint, NodeId, SocketPath

__all__ = ["Roaming"]

# How many of our own observed public endpoints we advertise (newest first): a node behind a
# NAT that changed its mapping has a stale one or two at most.
_OBSERVED_KEEP = 3
_INF = float("inf")


class Roaming:
    """Our endpoints and our roams, and following peers' moves; see the module docstring."""

    def __init__(
        self,
        local_endpoints: Sequence[Endpoint],
        *,
        table: ConnectionTable,
        links: Links,
        ctm: CtmAgent,
        backoff: Backoff,
        keeper: NearKeeper,
        heard: Mapping[NodeId, float],
        stats: collections.Counter[str],
        emit: Callable[[Roamed | PeerHidden], None],
        hop_heard: Callable[[NodeId, float], None],
        relay_fallback: Callable[[NodeId, float], bool],
        connect_back_timeout_s: float,
    ) -> None:
        self._local_endpoints = tuple(local_endpoints)
        self._table = table
        self._links = links
        self._ctm = ctm
        self._backoff = backoff
        self._keeper = keeper
        # Peer -> when we last heard from it (the node's): who may carry a re-advertisement.
        self._heard = heard
        self._stats = stats
        self._emit = emit
        self._hop_heard = hop_heard
        self._relay_fallback = relay_fallback
        self._connect_back_timeout_s = connect_back_timeout_s
        # Our public endpoints as peers saw them -> when last.
        self._observed: dict[Endpoint, float] = {}
        # Linked peer -> where it last told us it sees us (LinkUp, ObservedEndpoint): a change
        # is our NAT rebinding (see on_observed). Rows leave with the peer's link.
        self._observed_by: dict[NodeId, Endpoint] = {}
        # When our endpoints are re-advertised at the latest (None: nothing pending), when
        # the last roam began, and when a rebinding may start the next one.
        self._readvertise_at: float | None = None
        self._roamed_at = -_INF
        self._rebind_ok_at = -_INF
        # Since the last roam: what we last advertised, the peers that told us where they see
        # us, and how many more advertisements their news earned (see _news_since_roam).
        self._advertised: tuple[Endpoint, ...] = ()
        self._reporters: set[NodeId] = set()
        self._extra_adverts = 0

    # --- our endpoints ----------------------------------------------------------------------

    def endpoints(self) -> tuple[Endpoint, ...]:
        """What we advertise: our socket's endpoints, then the newest observed public ones."""
        observed = sorted(self._observed, key=lambda e: self._observed[e], reverse=True)
        out = list(dict.fromkeys([*self._local_endpoints, *observed[:_OBSERVED_KEEP]]))
        return tuple(out[:MAX_ENDPOINTS])

    @property
    def local_endpoints(self) -> tuple[Endpoint, ...]:
        """Our own socket's endpoints, as the I/O layer told us."""
        return self._local_endpoints

    def set_local(self, endpoints: Sequence[Endpoint]) -> None:
        """Replace our own socket endpoints (e.g. once the driver bound its socket)."""
        if len(endpoints) > MAX_ENDPOINTS:
            raise LocalProtocolError(f"at most {MAX_ENDPOINTS} endpoints")
        self._local_endpoints = tuple(endpoints)

    def observed_endpoints(self) -> tuple[Endpoint, ...]:
        """Where peers saw us come from, newest first, minus our own socket's endpoints.

        More than one of them on one host means a mapping per destination (a symmetric NAT).
        """
        local = set(self._local_endpoints)
        observed = sorted(self._observed, key=lambda e: self._observed[e], reverse=True)
        return tuple(e for e in observed if e not in local)

    def known(self) -> tuple[Endpoint, ...]:
        """Every endpoint of ours we know of: observed ones, then the socket's."""
        return (*self._observed, *self._local_endpoints)

    def forget_observed(self) -> None:
        """Forget where peers saw us (a new address or mapping made it stale)."""
        self._observed.clear()

    # --- link events ------------------------------------------------------------------------

    def link_up(self, peer: NodeId, observed: Endpoint | None, now: float) -> None:
        """A link to ``peer`` came up; its handshake saw us at ``observed`` (if it said)."""
        if observed is not None:
            self.note_observed(observed, now)
            self._observed_by[peer] = observed
            self._news_since_roam(peer, observed, now)

    def heard_us(self, peer: NodeId, now: float) -> None:
        """``peer`` answered us directly from where we are now: a pending re-advertisement
        goes out through it."""
        if self._readvertise_at is not None:
            self.readvertise(now, via=peer)

    def forget(self, peer: NodeId) -> None:
        """``peer``'s link is gone, and its view of us with it."""
        self._observed_by.pop(peer, None)

    def tick(self, now: float) -> None:
        if self._readvertise_at is not None and now >= self._readvertise_at:
            # Nobody told us our new public endpoint in time: advertise what we know.
            self.readvertise(now, via=None)

    # --- roams ------------------------------------------------------------------------------

    def changed(self, endpoints: Sequence[Endpoint], *, now: float) -> None:
        """Our socket's own addresses changed (the I/O layer's address watcher): we roamed.

        Theory: every peer keeps sending to our old address, and a peer behind a filtering NAT
        drops what we send from the new one until it has sent there itself. So: forget what
        peers told us about our old public endpoint, lift backoffs earned from the old address,
        and re-advertise our endpoints to every linked peer with a CONNECT_TO_ME
        (:meth:`readvertise`), which makes each punch back to our new endpoints
        (:meth:`follow_move` on its side). The link layer meanwhile keys every session afresh
        from the new address (NodeCore does that); the first answer tells us our new public
        endpoint, and the re-advertisement goes out at once, through the peer that answered,
        or at the latest ``timing.ROAM_ADVERTISE_WAIT_S`` later with what we know.
        """
        self.set_local(endpoints)
        self.forget_observed()
        self._observed_by.clear()
        self.roam("local", now)

    def roam(self, reason: str, now: float) -> None:
        """Start a roam (``reason``: local, woke, rebound): see the module docstring."""
        self._stats[f"roamed_{reason}"] += 1
        self._roamed_at = now
        self._rebind_ok_at = now + timing.ROAM_REBIND_MIN_S
        self._backoff.clear()
        self._keeper.check_due = True
        self._readvertise_at = now + timing.ROAM_ADVERTISE_WAIT_S
        self._advertised = ()
        self._reporters.clear()
        self._extra_adverts = 0
        self._emit(Roamed(reason))

    def _nat_rebound(self, seen: Endpoint, by: NodeId, now: float) -> None:
        """``by`` now sees us at ``seen``, not where it (or, ObservedEndpoint.rebound, every
        other peer) saw us before: our NAT gave us new mappings, and peers behind filtering
        NATs cannot hear us any more. Every endpoint observed before is stale (a NAT that
        rebinds one flow has usually dropped them all). Roam (NodeCore re-keys our direct
        sessions from the new mappings), and tell the others through ``by``, which just
        heard us."""
        self.forget_observed()
        self.note_observed(seen, now)
        self.roam("rebound", now)
        self.readvertise(now, via=by)

    def readvertise(self, now: float, *, via: NodeId | None) -> None:
        """A CONNECT_TO_ME with our endpoints to every linked peer, ``via`` first.

        Why a CTM: it is the message that already makes a peer connect to the endpoints in it,
        and a peer behind a filtering NAT has to send to our new address before anything of
        ours gets in. Why ``via``: a peer that has just heard us from the new address can
        forward; our own links to filtering peers are dead until they punch back, so the CTMs
        must not be handed back to us (EXCLUDE_SRC). Without ``via`` the most recently heard
        peer since the roam stands in, if any. Why relayed peers too: a peer that lost our
        old endpoint keys us through a relay, often before we know where we are now (another
        host behind our NAT took our port toward it: ipop.link.paths.displaced), and only our
        new endpoints let it go direct again (:meth:`follow_move` on its side).
        """
        self._readvertise_at = None
        self._advertised = self.endpoints()
        if via is None or via not in self._table:
            heard = [(t, p) for p, t in self._heard.items() if t > self._roamed_at]
            via = max(heard)[1] if heard else None
        linked = [row.peer for row in self._table]
        for peer in sorted(linked, key=lambda p: (p != via, p)):
            if self._ctm.send(peer, Purpose.NEAR, exact=True, now=now, via=via, avoid_us=True):
                self._stats["roam_ctm_sent"] += 1

    def follow_move(
        self,
        peer: NodeId,
        endpoints: tuple[Endpoint, ...],
        previous: tuple[Endpoint, ...] | None,
        now: float,
    ) -> None:
        """A linked ``peer`` advertised endpoints that changed and no longer include the path
        our link to it runs over: it roamed. Stop holding on to the old path (the link layer
        follows its next datagram at once) and punch back to its new endpoints: behind a
        filtering NAT nothing from its new address gets in until we have sent there.

        A relayed link is punched back too: we keyed it through a relay when its direct path
        died under the peer's roam (or another host behind the peer's NAT took its endpoint:
        ipop.link.paths.displaced), and the punch makes it direct again (a direct handshake
        always replaces a relay). Not a path port guessing found (a punching socket's): plain
        punches from our main socket did not get through there before.

        An endpoint it names that another linked peer's traffic comes from (a host behind the
        same NAT holds that port toward us: after the NAT lost its table, it sent to us first)
        is the peer's mapping toward others, not toward us, and the one toward us is a port
        nobody can tell us: key a direct link through a relay now, not when our silent path
        times out (4 s of lost traffic in tests/lab/test_rebind_lab.py's shared case), and
        let port guessing find that port with the peer as the opening side (PeerHidden). We
        still punch every endpoint: the other peer may have left that port since, and a
        direct handshake replaces the relay.

        The endpoints are the peer's own word about itself (the CTM is authenticated end to
        end), so it can only misdirect its own link; the punches are connect-backs within the
        usual per-address budget, and the relay fallback is one per peer per
        ``ROAM_RELAY_RETRY_S``.
        """
        row = self._table.get(peer)
        if row is None or type(row.path) is SocketPath:
            return
        if row.path in endpoints or endpoints == previous:
            return
        self._stats["peer_moved"] += 1
        if type(row.path) is Endpoint:
            self._links.peer_moved(peer, now=now)
        held = {r.path for r in self._table if r.peer != peer}
        if any(ep in held for ep in endpoints):
            self._stats["peer_moved_to_taken"] += 1
            self._emit(PeerHidden(peer))
            if type(row.path) is Endpoint and self._relay_fallback(peer, now):
                self._stats["peer_moved_to_taken_relayed"] += 1
        for ep in self._ctm.connect_back_endpoints(endpoints, now):
            self._links.connect(
                ep,
                now=now,
                expected=peer,
                retransmit=False,
                timeout_s=self._connect_back_timeout_s,
            )

    def on_observed(self, ev: ObservedEndpoint, now: float) -> None:
        by = ev.by
        self._hop_heard(by, now)  # from an authenticated answer of its (Resp, echo ack)
        self.note_observed(ev.endpoint, now)
        # A peer that sees us at our own address reached us with no NAT between (a host on
        # our LAN): its view says nothing of our NAT's mappings. Compared with where peers
        # outside see us it looked like a rebinding, and two hosts behind one symmetric NAT
        # re-keyed every session at a cold start.
        lan_view = any(ev.endpoint.host == e.host for e in self._local_endpoints)
        before = self._observed_by.get(by) if by in self._table else None
        if by in self._table and not lan_view:
            self._observed_by[by] = ev.endpoint
        if self._readvertise_at is not None:
            self.readvertise(now, via=by)
        elif (
            not lan_view
            and now >= self._rebind_ok_at
            and (
                (ev.rebound and not self._seen_there_by_others(ev.endpoint, by))
                or (before is not None and before != ev.endpoint)
            )
        ):
            self._nat_rebound(ev.endpoint, by, now)
        elif not lan_view:
            self._news_since_roam(by, ev.endpoint, now)
        self._reporters.add(by)

    def _news_since_roam(self, by: NodeId, seen: Endpoint, now: float) -> None:
        """Soon after a roam, a peer that had not spoken yet sees us at a public endpoint we
        did not advertise: our NAT maps us per destination now, and a peer behind a filtering
        NAT may be reachable only from a mapping like that one. Re-advertise.

        Seen in the lab: two hosts behind one port-preserving NAT whose table was flushed.
        Whichever of them first sends to a peer keeps its port toward that peer; the other
        gets another port toward it, the same one toward each peer where it lost. Peers
        told it only of the kept port, so a filtering peer punched back to the wrong host,
        and the pair stayed cut off until its link timed out. Bounds: once per peer per
        roam, at most _OBSERVED_KEEP times, within ROAM_REBIND_MIN_S of the roam (observed
        endpoints come from authenticated answers only)."""
        if (
            self._readvertise_at is None
            and self._advertised
            and now < self._rebind_ok_at
            and by not in self._reporters
            and seen not in self._advertised
            and self._extra_adverts < _OBSERVED_KEEP
        ):
            self._extra_adverts += 1
            self._stats["roam_readvertised"] += 1
            self.readvertise(now, via=by)
        self._reporters.add(by)

    def _seen_there_by_others(self, endpoint: Endpoint, by: NodeId) -> bool:
        """Does a peer other than ``by`` already see us at ``endpoint``? Then ``by``'s first
        word of it (a "seen" notice, an echo's answer) is no news of a rebinding, however
        the link layer judged it from its own peers' views: at a cold start, a port-
        restricted host that every peer saw at one mapping re-keyed all its sessions."""
        return any(v == endpoint for k, v in self._observed_by.items() if k != by)

    def note_observed(self, ep: Endpoint, now: float) -> None:
        """A peer saw us at ``ep``."""
        self._observed[ep] = now
        if len(self._observed) > 2 * _OBSERVED_KEEP:
            oldest = min(self._observed, key=lambda e: self._observed[e])
            del self._observed[oldest]
