"""Mapping checks: a node behind a NAT asks a peer where it sees us, every MAPPING_CHECK_S.

A NAT that drops its mappings (a reboot, a conntrack flush) leaves every inbound path to the
node dead, links and overlay alike, until the node itself sends: its next datagram gets a new
mapping, a peer outside that can hear it follows it there and says so (a *seen* notice, an
echo's answer: :mod:`ipop.link.echo`), and the node, now aware of the rebinding, re-keys every
session from the new mapping. Links that carry traffic notice it on their own (their echoes);
an idle node sent next only with the overlay's gossip (every OVERLAY_GOSSIP_INTERVAL_S) or a
link keepalive, and a peer that wanted to reach it in between could not (the soak's
"pub -> prc6 after prc6's NAT flush" pairs).

:class:`MappingCheck` picks, every MAPPING_CHECK_S while we are behind a NAT, one peer that
has told us where it sees us (it is outside our NAT), in turn, and the node sends it an echo.
An unanswered echo makes the link layer ask witnesses, as for any silent link. The cost is
one 12-byte echo and its answer per check. Pure: the node feeds it the sessions and the
time, and sends the echo.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ipop import timing
from ipop.types import Endpoint, NodeId


@dataclass(frozen=True, slots=True)
class Observer:
    """A session, as far as a mapping check cares: where the peer saw us (None: it never
    said), and whether the session runs over our main socket's direct path."""

    peer: NodeId
    observed: Endpoint | None
    main_socket: bool


class MappingCheck:
    """When the next check is due and whom it asks."""

    def __init__(self, interval_s: float = timing.MAPPING_CHECK_S) -> None:
        self.interval_s = interval_s
        self._due = 0.0
        self._behind_nat = False
        self._last: NodeId | None = None

    def due(self) -> float | None:
        """The next check, for the node's timer: None while we are not behind a NAT (the node
        then looks again whenever its other timers run, at most every interval)."""
        return self._due if self._behind_nat else None

    def ready(self, now: float) -> bool:
        return now >= self._due

    def pick(
        self, observers: Iterable[Observer], *, local: Iterable[Endpoint], now: float
    ) -> NodeId | None:
        """The peer to ask now, or None (no peer outside a NAT of ours, or not due)."""
        if now < self._due:
            return None
        self._due = now + self.interval_s
        mine = set(local)
        # Outside our NAT: it saw us at an endpoint that is not our socket's own. A peer on our
        # LAN sees our own address; a public node sees itself, and has nothing to check.
        outside = sorted(
            o.peer
            for o in observers
            if o.main_socket and o.observed is not None and o.observed not in mine
        )
        self._behind_nat = bool(outside)
        if not outside:
            return None
        # In turn, by id: the peer after the one asked last (a filtering peer we cannot reach
        # any more gets its turn only once per round).
        after = [p for p in outside if self._last is None or p > self._last]
        self._last = after[0] if after else outside[0]
        return self._last
