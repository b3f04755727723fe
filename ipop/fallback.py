"""Relay fallback: which direct sessions go through a relay, through whom, when: after we
roam (:class:`RoamFallback`), and when one session's path falls silent (:class:`SilentPaths`).

After a roam (a new underlay address, our NAT rebinding, a wake-up) most peers hear the
re-key from our new mapping within a round trip. A peer whose NAT admits only our old
mapping never does: the pair stays cut off until the link times out. :class:`RoamFallback`
decides, from the sessions' last-heard times, which silent direct sessions the node should
key through a relay (:meth:`ipop.overlay.node.OverlayNode.relay_fallback`) and which peers
may carry them: only those heard since the roam, because right after a roam every other
direct peer may be as cut off as the one we fall back for (a handshake through one waits
for its 20 s timeout).

The check runs ROAM_RELAY_AFTER_S after a new address or a wake-up, REBIND_RELAY_AFTER_S
after a rebinding (later, so that a filtering cone that punches back to the mapping we
re-advertise wins first; only for port-guessed sessions then, the rest from
REBIND_RELAY_ALL_AFTER_S), and again every ROAM_RELAY_CHECK_S while a session stays silent,
up to ROAM_FALLBACK_WINDOW_S after the roam: at the first check no relay may have been heard
from yet. Pure: :class:`ipop.core.NodeCore` feeds it the sessions and applies the plan.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from ipop import timing
from ipop.types import NodeId, Path, SocketPath, is_direct

__all__ = ["FallbackPlan", "RoamFallback", "Session", "SilentPaths"]


@dataclass(frozen=True, slots=True)
class Session:
    """What the fallback needs to know of one link-layer session."""

    peer: NodeId
    path: Path
    heard: float | None
    # Our port-guessing knocks found this direct path (PortGuessing.joined).
    knocked: bool = False


@dataclass(frozen=True, slots=True)
class FallbackPlan:
    """Silent sessions to key through a relay, and the peers that may relay them."""

    silent: tuple[NodeId, ...]
    relays: frozenset[NodeId]


class RoamFallback:
    """The pending relay-fallback check after our last roam."""

    def __init__(self) -> None:
        self._due: float | None = None
        self._began = -math.inf
        # The last roam was a NAT rebinding: our address stayed, so only sessions that port
        # guessing joined fall back (see plan()).
        self._rebound_only = False

    @property
    def due(self) -> float | None:
        """When :meth:`plan` should run next, or None when no check is pending."""
        return self._due

    def roamed(self, reason: str, *, now: float) -> None:
        """We roamed for ``reason`` (:class:`ipop.overlay.events.Roamed`): check at the
        reason's delay."""
        self._began = now
        self._rebound_only = reason == "rebound"
        after = timing.REBIND_RELAY_AFTER_S if self._rebound_only else timing.ROAM_RELAY_AFTER_S
        self._due = now + after

    def plan(
        self,
        sessions: Iterable[Session],
        *,
        now: float,
    ) -> FallbackPlan:
        """The sessions to fall back now; schedules the next check while any stays silent."""
        self._due = None
        relays: set[NodeId] = set()
        silent: list[NodeId] = []
        waiting = False
        everyone = not self._rebound_only or now >= self._began + timing.REBIND_RELAY_ALL_AFTER_S
        for s in sessions:
            if s.heard is None or not is_direct(s.path):
                continue
            if s.heard >= self._began:
                relays.add(s.peer)
            elif everyone or (
                # After a rebinding our address stayed, and a peer behind a filtering cone
                # punches back to the mapping we re-advertise (a relay taking over first kept
                # the pair relayed: tests/lab/test_rebind_lab.py). Port guessing joined a
                # pair where our punching socket carries it or our knocks found it: the
                # peer's NAT admits only our old mapping, and only a relay reaches it.
                s.knocked or type(s.path) is SocketPath
            ):
                silent.append(s.peer)
            else:
                waiting = True  # silent too: falls back from REBIND_RELAY_ALL_AFTER_S
        if (silent or waiting) and (
            now + timing.ROAM_RELAY_CHECK_S < self._began + timing.ROAM_FALLBACK_WINDOW_S
        ):
            self._due = now + timing.ROAM_RELAY_CHECK_S
        return FallbackPlan(tuple(silent), frozenset(relays))


class SilentPaths:
    """Direct sessions whose path fell silent (:class:`ipop.link.events.LinkPathSilent`: two
    echoes unanswered, nothing else heard), to key through a relay.

    Each is looked at ``timing.SILENT_PATH_RELAY_AFTER_S`` after it was noted: by then the
    witnesses asked at the first unanswered echo have said whether our NAT rebound, and if it
    did, the roam's own fallback (:class:`RoamFallback`) decides instead (:meth:`roamed`
    forgets every noted session). A session heard from since, or no longer direct, is left
    alone. Bounds: one entry per session (:meth:`forget` runs with its link); the relay
    fallback itself is tried once per peer per ``ROAM_RELAY_RETRY_S``. Pure: NodeCore feeds
    it and applies what :meth:`plan` returns.
    """

    def __init__(self) -> None:
        self._noted: dict[NodeId, float] = {}
        self._due: float | None = None

    @property
    def due(self) -> float | None:
        """When :meth:`plan` should run next, or None when nothing is noted."""
        return self._due

    def noted(self, peer: NodeId, *, now: float) -> None:
        """``peer``'s direct path fell silent at ``now``."""
        if peer not in self._noted:
            self._noted[peer] = now
            self._reschedule()

    def forget(self, peer: NodeId) -> None:
        """``peer``'s link is gone."""
        if self._noted.pop(peer, None) is not None:
            self._reschedule()

    def roamed(self) -> None:
        """We roamed: the roam's fallback looks at every silent session now."""
        self._noted.clear()
        self._due = None

    def plan(self, sessions: Iterable[Session], *, now: float) -> list[NodeId]:
        """The sessions noted long enough ago that are still direct and silent since."""
        after = timing.SILENT_PATH_RELAY_AFTER_S
        ripe = {p: t for p, t in self._noted.items() if now >= t + after}
        for peer in ripe:
            del self._noted[peer]
        self._reschedule()
        return [
            s.peer
            for s in sessions
            if s.peer in ripe and is_direct(s.path) and (s.heard is None or s.heard < ripe[s.peer])
        ]

    def _reschedule(self) -> None:
        first = min(self._noted.values(), default=None)
        self._due = None if first is None else first + timing.SILENT_PATH_RELAY_AFTER_S
