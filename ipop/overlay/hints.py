"""Reverse-path hints: which peer last handed us a routed message from a node we hold no link to.

Why: a node that joined a moment ago sends requests before the ring around it has formed, and
the answers stop at a local minimum of greedy routing. The forwarders its requests crossed know
the way back; an answer at a local minimum takes it (:meth:`ReverseHints.hop`).

A hint steers traffic for its node, so it is taken only from a message that node really signed
(issue 13, finding 2: forged origins planted hints for ids nobody holds, or pulled a real node's
answers to an insider). Checking a signature costs ~85 us, and hints are noted on every forwarded
message but used only at a local minimum, so the check is lazy: a hint keeps the message it came
from and is checked when first used. A new hint replaces a live one toward another peer only
after its own signature checks. Messages authenticated by a pairwise MAC
(:mod:`ipop.overlay.origin`) cannot be checked in transit and leave no hint; a node whose ring is
still forming signs its messages, since it holds nobody's certificate yet.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from ipop import timing
from ipop.overlay.messages import MAC_BYTES, Routed
from ipop.types import NodeId

__all__ = ["ReverseHints"]

# The cap bounds the memory a node routing for many sources spends on hints (how long one is
# kept: ipop.timing.OVERLAY_REVERSE_HINT_S).
HINTS_MAX: Final = 4096


@dataclass(slots=True)
class _Hint:
    """The way back to a node: the peer its message came through, until when, its check."""

    peer: NodeId
    until: float
    unchecked: Routed | None  # the message to check before first use; None once checked


class ReverseHints:
    """Bounded (``max_entries``, oldest out) and lazily checked; see the module docstring."""

    def __init__(
        self,
        check: Callable[[Routed, float], str | None],
        *,
        hint_s: float = timing.OVERLAY_REVERSE_HINT_S,
        max_entries: int = HINTS_MAX,
    ) -> None:
        self._check = check
        self._hint_s = hint_s
        self._max = max_entries
        self._hints: collections.OrderedDict[NodeId, _Hint] = collections.OrderedDict()
        self.stats: collections.Counter[str] = collections.Counter()

    def __len__(self) -> int:
        return len(self._hints)

    def note(self, msg: Routed, peer: NodeId, now: float) -> None:
        """``msg`` (from a node we hold no link to) reached us through ``peer``."""
        if len(msg.sig) == MAC_BYTES:
            return
        hints = self._hints
        old = hints.get(msg.src)
        until = now + self._hint_s
        if old is not None and old.until >= now:
            if old.peer == peer:
                old.until = until
                hints.move_to_end(msg.src)
                return
            # Another way back is claimed while the one we hold is live: believe it only if
            # its source really sent it (else anyone could pull the hint away).
            if self._check(msg, now) is not None:
                self.stats["hint_refused"] += 1
                return
            hints[msg.src] = _Hint(peer, until, None)
            hints.move_to_end(msg.src)
            return
        hints[msg.src] = _Hint(peer, until, msg)
        hints.move_to_end(msg.src)
        while len(hints) > self._max:
            hints.popitem(last=False)

    def hop(self, target: NodeId, now: float) -> NodeId | None:
        """The peer to hand a message for ``target`` to, if a live, authentic hint names one."""
        hint = self._hints.get(target)
        if hint is None or hint.until < now:
            return None
        if hint.unchecked is not None:
            if self._check(hint.unchecked, now) is not None:
                self.stats["hint_forged"] += 1
                del self._hints[target]
                return None
            hint.unchecked = None
        return hint.peer
