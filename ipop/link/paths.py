"""Path choice for one session, as pure functions over value snapshots (sans-IO).

Owns the two decisions :class:`ipop.link.layer.LinkLayer` makes about the path a session
runs over (invariant 7 of its module docstring), in the shape of tailscale's magicsock
``betterAddr``: the caller takes a :class:`PathQuality` snapshot of the path in use and asks

- :func:`better_path`: a handshake completed on another path; move the session there?
- :func:`should_roam`: the newest authenticated DATA came from another path; follow it
  (:class:`Roam` says how)?
- :func:`displaced`: a session just proved a direct path its own; whose sessions held it?

Both are hysteresis: two live paths must never make a session flap. The thresholds are
``timing.PATH_SILENT_S``, ``timing.PATH_SWITCH_RATIO`` and ``timing.RELAY_TAKEOVER_SILENT_S``.
Nothing here reads a clock or mutates a session; the link layer applies the answer.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from ipop import timing
from ipop.types import Endpoint, NodeId, Path, RelayPath, is_direct

__all__ = ["PathQuality", "Roam", "better_path", "displaced", "should_roam"]

_INF: Final = float("inf")


@dataclass(frozen=True, slots=True)
class PathQuality:
    """What path choice knows of one path of a session.

    ``rtt``: the round trip of the handshake that completed on it (inf: not measured, we
    answered that handshake). ``rx``: when an authenticated packet last came in on it (for a
    path just offered by a handshake: now); -inf: the peer said it left that path
    (:meth:`ipop.link.layer.LinkLayer.peer_moved`).
    """

    path: Path
    rtt: float
    rx: float


def better_path(
    current: PathQuality, offered: PathQuality, now: float, *, heard: float, roamed_at: float
) -> bool:
    """Should a session that is up on ``current`` move to ``offered``, whose handshake just
    completed? ``heard``: when anything authenticated last came from the peer before this
    handshake (on any path); ``roamed_at``: when our own address last changed (-inf: never).

    A relay never replaces a working direct path (a relay handshake started alongside a
    direct one may finish last, moments after the direct session carried its first
    messages); but one that nothing has come from for ``RELAY_TAKEOVER_SILENT_S`` is not
    working: the peer was restarted, its punching socket (which the direct path led to)
    died with it, and it keyed us afresh through a relay (kept on the dead path, our
    traffic to it was lost until the link timed out: 15-20 s in tests/sim/
    test_restart_sim.py). Nor is one that carried nothing since we roamed, or that the
    peer told us it left (``current.rx == -inf``): a pair that port guessing had joined
    cannot follow a roam directly, and the overlay keys it through a relay meanwhile
    (:meth:`ipop.overlay.node.OverlayNode.relay_fallback`). A direct path always replaces
    a relay (the upgrade).
    Between direct paths the faster handshake wins, with hysteresis: only a path at least
    ``1 / PATH_SWITCH_RATIO`` times faster replaces one that carries traffic, so two
    near-equal paths do not flap on every rekey, and a LAN path (fewer hops than the public
    one, hairpinned through the NAT) is the one kept when two peers share a LAN. A current
    path silent for ``PATH_SILENT_S``, or whose round trip we never measured, is replaced by
    any direct one.
    """
    if isinstance(offered.path, RelayPath):
        return (
            not is_direct(current.path)
            or now - heard >= timing.RELAY_TAKEOVER_SILENT_S
            # Not working either: nothing came since we roamed away from its end, or the
            # peer said (peer_moved) it left the other end.
            or heard < roamed_at
            or current.rx == -_INF
        )
    if isinstance(current.path, RelayPath):
        return True
    if now - current.rx >= timing.PATH_SILENT_S or current.rtt == _INF:
        return True
    return offered.rtt < current.rtt * timing.PATH_SWITCH_RATIO


class Roam(enum.Enum):
    """What to do about the newest authenticated DATA arriving on another path."""

    STAY = "stay"  # not a move we make on DATA (direct <-> relay is the overlay's decision)
    HOLD = "hold"  # the current direct path still delivers: remember the offer, do not move
    MOVE = "move"  # the current direct path fell silent: the peer moved to another path
    REBOUND = "rebound"  # same address, new port: the peer's NAT rebound; move at once
    FOLLOW_RELAY = "follow_relay"  # the peer fell back to a relay after a roam: follow it


def should_roam(current: PathQuality, offered: Path, now: float) -> Roam:
    """Newest authenticated DATA came from ``offered``, not ``current.path``: follow it if the
    peer's NAT rebound (same address, new port: at once) or if nothing has come on the
    current path for ``PATH_SILENT_S`` (the peer moved to another of its paths; moving at
    once would flap while both paths deliver). DATA through a relay while the current direct
    path has been silent as long means the peer fell back to the relay after a roam
    (:meth:`ipop.overlay.node.OverlayNode.relay_fallback`), and what we send on the direct
    path no longer reaches it."""
    cur = current.path
    if isinstance(offered, RelayPath) and is_direct(cur):
        if now - current.rx >= timing.PATH_SILENT_S:
            return Roam.FOLLOW_RELAY
        return Roam.STAY
    if not (is_direct(offered) and is_direct(cur)):
        return Roam.STAY
    if type(offered) is Endpoint and type(cur) is Endpoint and offered.host == cur.host:
        return Roam.REBOUND
    if now - current.rx < timing.PATH_SILENT_S:
        return Roam.HOLD
    return Roam.MOVE


def displaced(path: Path, owner: NodeId, sessions: Iterable[tuple[NodeId, Path]]) -> list[NodeId]:
    """The peers, other than ``owner``, whose sessions seal to ``path``, once ``owner``'s
    authenticated traffic came from it (a handshake completed or DATA roamed there).

    Why: toward us a NAT maps one public endpoint to one host. Two hosts behind one NAT that
    both use the same port each hold that port toward the peers they reached first; after the
    NAT lost its table (a flush, a reboot) the first to send to us takes it, and the other's
    traffic leaves from a port nobody knows. Our session with the other one still seals to the
    endpoint, which now delivers to the wrong host, and nothing tells it (its own witnesses see
    its old port toward everyone else): in the lab such a pair lost every packet until the
    link timeout. The proof is ``owner``'s, authenticated on that endpoint just now, so a
    member can only claim an endpoint it sends from; the others lose nothing but a path that
    no longer leads to them (the overlay keys them through a relay, and traffic asks for a
    direct path anew). Only our main socket's endpoints: a punching socket's path
    (``SocketPath``) and relays are ours alone.
    """
    if type(path) is not Endpoint:
        return []
    return [peer for peer, held in sessions if held == path and peer != owner]
