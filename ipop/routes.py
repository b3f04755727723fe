"""Path MTU of routes over the ring: which routes are probed, their probes and acks, and the
certificate rule that keeps every packet below the route's size deliverable.

A pair that cannot link (two symmetric NATs, not near each other: a shortcut is never
relayed) exchanges its IP traffic routed for good, and each hop of the route is another
node's link, whose size nobody probes. So a route that IP flows over is probed like a link,
with the same probe and ack messages (:mod:`ipop.link.pmtu`) as routed messages of kind
KIND_PMTU, authenticated end to end like any routed message (:mod:`ipop.overlay.origin`),
which the destination answers. A probe with an n-byte payload is exactly as large on every
hop as an IP packet of n bytes routed the same way (same header, same authentication, same
certificate rule), so the largest acknowledged n is the route's MTU. Until the first answer:
what a 1,500-byte hop carries around a signed routed message (:data:`ROUTED_IP_MTU`).
Once a route's size is known, IP packets and probes to that peer carry our certificate only
within it (:meth:`RouteProbes.cert_budget`): the certificate rides on small messages only, so
otherwise a message with it could be larger than a bigger one without it.

Bounds: at most :data:`ROUTE_PROBED_MAX` routes are probed at once (the least recently used
goes), and one is forgotten timing.ROUTE_PROBE_IDLE_S after its last packet or once a link
to its peer is up (:meth:`RouteProbes.expire`).

:class:`RouteProbes` owns the table of probed routes and its prober; :class:`ipop.core.NodeCore`
calls it from its packet path (:meth:`RouteProbes.probe`, :meth:`RouteProbes.cert_budget`), its
timer, and for every KIND_PMTU message delivered to us (:meth:`RouteProbes.on_probe`). It counts
into the node's counters (``route_probe_evicted``, ``route_probes_answered``,
``bad_route_probe``), as before it was cut out. Sans-IO: ``now`` comes with every call.
"""

from __future__ import annotations

import collections

from ipop import timing
from ipop.link.pmtu import MAX_DATAGRAM, MESSAGE_BYTES, PROBE_TAG, PathMtuProber, ack_payload
from ipop.overlay.events import Delivered
from ipop.overlay.messages import KIND_PMTU
from ipop.overlay.node import OverlayNode
from ipop.overlay.origin import CERT_BUDGET_BYTES, ROUTED_OVERHEAD, ROUTED_SEALED_OVERHEAD
from ipop.types import NodeId
from ipop.wire.header import DATA_MIN_BYTES

__all__ = ["ROUTED_IP_MTU", "ROUTE_PROBED_MAX", "RouteProbes"]

# The largest inner packet a routed message carries within a 1,500-byte hop (NodeCore.ip_mtu).
# Signed, although routed IP always goes sealed (36 bytes smaller): a route's probes go signed
# until the far end's certificate is known, and the largest must fit a hop then too.
ROUTED_IP_MTU = MAX_DATAGRAM - DATA_MIN_BYTES - ROUTED_OVERHEAD
# The least a routed message of ours adds around its payload: header, nonce, ts and tag (a
# sealed one; a signed one adds more).
_ROUTED_MIN_OVERHEAD = ROUTED_SEALED_OVERHEAD
# Routes probed at once, and how long one stays probed after its last IP packet.
ROUTE_PROBED_MAX = 64


class RouteProbes:
    """The routes over the ring that IP flows over, probed end to end (module docstring)."""

    def __init__(self, overlay: OverlayNode, stats: collections.Counter[str]) -> None:
        self._overlay = overlay
        self._stats = stats  # the node's counters (NodeCore.stats)
        # A size here is a routed probe's payload plus DATA_MIN_BYTES (read like a link's).
        self.prober = PathMtuProber()
        self.used: dict[NodeId, float] = {}  # peer -> last IP packet, oldest first

    def probe(self, dst: NodeId, now: float) -> None:
        """IP flows to ``dst`` over the ring: keep its route probed (see the module docstring)."""
        used = self.used
        if used.pop(dst, None) is not None:
            used[dst] = now  # most recently used last
            return
        if len(used) >= ROUTE_PROBED_MAX:
            oldest = next(iter(used))
            del used[oldest]
            self.prober.forget(oldest)
            self._stats["route_probe_evicted"] += 1
        used[dst] = now
        self.prober.want(dst, now=now)
        self.prober.start(dst, None, now=now, top=ROUTED_IP_MTU + DATA_MIN_BYTES)
        self.send_due(now)

    def next_time(self) -> float | None:
        """When :meth:`send_due` has probes to send (None: none pending)."""
        return self.prober.next_time()

    def send_due(self, now: float) -> None:
        """Send the probes due by ``now``, each as a routed KIND_PMTU message."""
        for peer, _, payload in self.prober.due(now):
            # A probe's payload is its size less DATA_MIN_BYTES: on every hop exactly as
            # large as a routed IP packet of that many bytes.
            budget = self.cert_budget(peer)
            self._overlay.send_routed(
                peer, KIND_PMTU, payload, exact=True, now=now, cert_budget=budget
            )

    def cert_budget(self, dst: NodeId) -> int | None:
        """How large a routed message to ``dst`` may be and still carry our certificate.

        Why: the certificate (~350 bytes) rides on messages up to CERT_BUDGET_BYTES only, so
        on a route smaller than a 1,500-byte hop a message with it can be larger than a bigger
        one without it, and packets well below NodeCore.ip_mtu would vanish. Within the size
        the route was seen to carry, every message below ip_mtu fits. None: the default."""
        limit = self.prober.limits.get(dst)
        if limit is None:
            return None
        return min(CERT_BUDGET_BYTES, limit - DATA_MIN_BYTES + _ROUTED_MIN_OVERHEAD)

    def expire(self, now: float) -> None:
        """Forget routes idle for timing.ROUTE_PROBE_IDLE_S, or replaced by a link to their peer."""
        is_linked = self._overlay.is_linked
        gone = [
            p for p, t in self.used.items() if now - t >= timing.ROUTE_PROBE_IDLE_S or is_linked(p)
        ]
        for peer in gone:
            del self.used[peer]
            self.prober.forget(peer)

    def on_probe(self, ev: Delivered, now: float) -> None:
        """A routed probe (answered with a routed ack) or an ack of ours; else counted."""
        p = ev.payload
        if len(p) >= MESSAGE_BYTES and p[0] == PROBE_TAG and p[1] == 0 and ev.exact:
            ack = ack_payload(int.from_bytes(p[2:6], "big"))
            self._stats["route_probes_answered"] += 1
            self._overlay.send_routed(ev.src, KIND_PMTU, ack, exact=True, now=now)
        elif not (
            len(p) == MESSAGE_BYTES
            and p[0] == PROBE_TAG
            and p[1] == 1
            and self.prober.on_ack(ev.src, p, now=now)
        ):
            self._stats["bad_route_probe"] += 1
