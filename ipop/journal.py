"""Notable facts of a node's links, for its adapter to log as structured events (sans-IO).

Counters say how often; a user diagnosing one peer needs what happened to it and when. The
core appends :class:`Note` records here as link events pass through it; the adapter drains
them and logs one ``event=<name> peer=<id> key=value ...`` line each.

Levels keep logs quiet by default: a note is ``rare`` (logged at info) only for a first link
to a peer this node never linked to before, a path becoming direct or relayed, a link lost
to revocation, and a port-guessing run that ended in a direct path; everything else (links
coming back, links closing, roaming between endpoints, punching started, a direct path gone
silent) is debug.

Bounds: at most :data:`MAX_NOTES` notes wait (the oldest are dropped and counted in
``dropped``: an adapter that stopped draining must not grow the core); the peers ever linked
are remembered up to :data:`MAX_KNOWN` (oldest forgotten first: a forgotten peer's next link
is merely logged at info again); the current path of each linked peer lives only while it is
linked.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Final

from ipop.types import Endpoint, NodeId, Path, RelayPath, SocketPath

__all__ = ["MAX_KNOWN", "MAX_NOTES", "NOTE_EVENTS", "Journal", "Note", "describe_path"]

MAX_NOTES = 1024
MAX_KNOWN = 4096
# Every event name a note may carry (what a log reader can grep for).
NOTE_EVENTS: Final = frozenset(
    {"link_up", "link_down", "path_changed", "path_silent", "punch_started", "punch_linked"}
)


@dataclass(frozen=True, slots=True)
class Note:
    """One link event to log (``event=… peer=…``), with its fields and its level."""

    at: float
    event: str  # one of NOTE_EVENTS
    peer: NodeId
    fields: tuple[tuple[str, str], ...]
    rare: bool  # info level; else debug

    def line(self) -> str:
        """``event=… peer=… k=v …`` (the daemon's key=value log format)."""
        extra = "".join(f" {k}={v}" for k, v in self.fields)
        return f"event={self.event} peer={self.peer.short()}{extra}"


def describe_path(path: Path) -> tuple[str, str]:
    """(kind, where): ``("direct", "198.51.100.7:5800")`` or ``("relayed", "via <id>")``."""
    if isinstance(path, RelayPath):
        return "relayed", f"via:{path.via.short()}"
    if isinstance(path, SocketPath):
        return "direct", f"{path.remote.host}:{path.remote.port}/sock{path.socket}"
    assert isinstance(path, Endpoint)
    return "direct", f"{path.host}:{path.port}"


class Journal:
    def __init__(self, *, max_notes: int = MAX_NOTES, max_known: int = MAX_KNOWN) -> None:
        self._notes: collections.deque[Note] = collections.deque(maxlen=max_notes)
        self._max_known = max_known
        # Peers ever linked, oldest first (a dict as an ordered set).
        self._known: dict[NodeId, None] = {}
        self._paths: dict[NodeId, Path] = {}
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._notes)

    def drain(self) -> list[Note]:
        out = list(self._notes)
        self._notes.clear()
        return out

    def _add(self, note: Note) -> None:
        if len(self._notes) == self._notes.maxlen:
            self.dropped += 1
        self._notes.append(note)

    def link_up(self, peer: NodeId, path: Path, *, now: float) -> None:
        new = peer not in self._known
        if new:
            self._known[peer] = None
            if len(self._known) > self._max_known:
                del self._known[next(iter(self._known))]
        self._paths[peer] = path
        kind, where = describe_path(path)
        fields = (("path", kind), ("at", where), ("first", "yes" if new else "no"))
        self._add(Note(now, "link_up", peer, fields, rare=new))

    def link_down(self, peer: NodeId, reason: str, *, now: float) -> None:
        path = self._paths.pop(peer, None)
        fields: tuple[tuple[str, str], ...] = (("reason", reason),)
        if path is not None:
            fields += (("path", describe_path(path)[0]),)
        self._add(Note(now, "link_down", peer, fields, rare=reason == "revoked"))

    def path_changed(self, peer: NodeId, path: Path, reason: str, *, now: float) -> None:
        old = self._paths.get(peer)
        self._paths[peer] = path
        kind, where = describe_path(path)
        old_kind = describe_path(old)[0] if old is not None else "none"
        fields = (("path", kind), ("was", old_kind), ("at", where), ("reason", reason))
        # Direct <-> relayed is what a user notices; endpoint to endpoint (roaming) is not.
        self._add(Note(now, "path_changed", peer, fields, rare=kind != old_kind))

    def punch_started(self, peer: NodeId, *, now: float) -> None:
        self._add(Note(now, "punch_started", peer, (), rare=False))

    def punch_linked(self, peer: NodeId, path: Path, *, now: float) -> None:
        self._add(Note(now, "punch_linked", peer, (("at", describe_path(path)[1]),), rare=True))

    def path_silent(self, peer: NodeId, path: Path, *, now: float) -> None:
        """Two echoes over ``path`` went unanswered (ipop.fallback.SilentPaths then keys the
        peer through a relay: the path_changed that follows says where)."""
        self._add(Note(now, "path_silent", peer, (("at", describe_path(path)[1]),), rare=False))
