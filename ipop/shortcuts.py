"""Shortcut upkeep of one node: when data asks the overlay for a shortcut, and when an idle
or surplus one is released.

The first packet to a peer with no link goes over the ring and asks the overlay for a
shortcut (:meth:`ShortcutKeeper.ask`), so later packets go direct; a peer is asked again
only timing.SHORTCUT_RETRY_S later, and a roam forgets every ask (:meth:`ShortcutKeeper.roamed`:
asks made from the old address no longer hold). A shortcut is released once no data went to
its peer for timing.SHORTCUT_IDLE_S, and the least used go when more than timing.SHORTCUT_MAX
are held (:meth:`ShortcutKeeper.expire`).

Bounds: :attr:`ShortcutKeeper.used` holds at most SHORTCUT_MAX live peers after each timer;
:attr:`ShortcutKeeper.asked` is cut to the asks still within SHORTCUT_RETRY_S once it holds
more than 256.

:class:`ipop.core.NodeCore` owns one: its packet paths mark data to a peer in :attr:`used`
directly (the same dict, no call per packet), and its timer calls :meth:`expire`. Counts into
the node's counters (``shortcut_released``). Sans-IO: ``now`` comes with every call.
"""

from __future__ import annotations

import collections

from ipop import timing
from ipop.overlay.node import OverlayNode
from ipop.types import NodeId

__all__ = ["ShortcutKeeper"]

# How many asks are kept before the old ones are forgotten (see the module docstring).
_ASKED_KEPT = 256


class ShortcutKeeper:
    """Which peers we asked a shortcut to, and which shortcuts we hold (module docstring)."""

    def __init__(self, overlay: OverlayNode, stats: collections.Counter[str]) -> None:
        self._overlay = overlay
        self._stats = stats  # the node's counters (NodeCore.stats)
        # Peers we asked a shortcut to, with when (asked again only SHORTCUT_RETRY_S later).
        self.asked: dict[NodeId, float] = {}
        # Peers we asked a shortcut to, with the last time data went to them (idle expiry).
        # Never rebound: NodeCore's packet paths hold this very dict.
        self.used: dict[NodeId, float] = {}

    def ask(self, dst: NodeId, now: float) -> None:
        """Data to ``dst`` went over the ring: ask for a shortcut unless asked lately."""
        asked = self.asked.get(dst)
        if asked is None or now - asked >= timing.SHORTCUT_RETRY_S:
            self.asked[dst] = now
            self.used[dst] = now
            self._overlay.request_shortcut(dst, now=now)

    def roamed(self) -> None:
        """We roamed: asks made from the old address no longer hold; traffic asks anew."""
        self.asked.clear()

    def peers(self) -> dict[NodeId, float]:
        """Peers we hold (or are forming) a shortcut to, with their last data time."""
        return dict(self.used)

    def expire(self, now: float) -> None:
        """Release shortcuts idle for SHORTCUT_IDLE_S, and the least used past SHORTCUT_MAX."""
        used = self.used
        if not used:
            return
        idle = [p for p, t in used.items() if now - t >= timing.SHORTCUT_IDLE_S]
        excess = len(used) - len(idle) - timing.SHORTCUT_MAX
        if excess > 0:
            live = sorted(
                (p for p, t in used.items() if now - t < timing.SHORTCUT_IDLE_S),
                key=used.__getitem__,
            )
            idle += live[:excess]
        for peer in idle:
            del used[peer]
            self.asked.pop(peer, None)
            self._overlay.drop_shortcut(peer, now=now)
            self._stats["shortcut_released"] += 1

    def forget_old_asks(self, now: float) -> None:
        """Forget old asks so the table cannot grow with every peer ever seen."""
        if len(self.asked) > _ASKED_KEPT:
            self.asked = {
                p: t0 for p, t0 in self.asked.items() if now - t0 < timing.SHORTCUT_RETRY_S
            }
