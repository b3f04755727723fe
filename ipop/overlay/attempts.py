"""Connect attempts of the overlay (sans-IO): direct endpoints first, then relays.

Owns every link the overlay is trying to bring up and has not yet: the :class:`Attempts` table
(one :class:`Attempt` per peer, which path belongs to which attempt, the relay helpers asked to
link to us), the :class:`Bootstraps` under way, and :class:`Backoff`, the near candidates not to
ask again for a while. It decides; :class:`ipop.overlay.node.OverlayNode` acts: every input
returns the actions to take, in order (:class:`Connect`: call ``links.connect``; :class:`GiveUp`:
the attempt is over, back the peer off if told).

An attempt's states (:class:`AttemptState`) and what moves it::

    DIRECT ----- relay_at reached (tick) ------------> DIRECT_AND_RELAY
      |  \\------ direct paths gone or deadline ------> RELAYING   (next relay candidate)
      |                                                   |
      '-- no relay allowed / no candidate left -----------+-------> given up (GiveUp)
    DIRECT_AND_RELAY, RELAYING -- deadline ------------------------> given up
    any state -- a relay path refused -----------------------------> next candidate at once
    any state, no relay path left -- a relay helper linked --------> DIRECT (relay at once)

The theory (why relays start alongside the direct paths, why the larger id yields, why
helpers) is in :mod:`ipop.overlay.node`'s docstring. Counts go to the node's ``stats`` under
the names they always had.
"""

from __future__ import annotations

import collections
import enum
from collections.abc import Callable, Collection, Container, Iterator, Sequence
from dataclasses import dataclass, field

from ipop.overlay.table import ConnectionKind
from ipop.types import Endpoint, NodeId, Path, RelayPath

__all__ = [
    "Action",
    "Attempt",
    "AttemptState",
    "Attempts",
    "Backoff",
    "Bootstraps",
    "Connect",
    "GiveUp",
]

_INF = float("inf")


class AttemptState(enum.Enum):
    """Where an attempt stands; see the module docstring for the transitions."""

    # Direct endpoints only (possibly none left, waiting for our turn to relay: relay_at).
    DIRECT = "direct"
    # A relay path alongside direct endpoints still under way (relay_after_s passed).
    DIRECT_AND_RELAY = "direct_and_relay"
    # The direct endpoints failed or timed out: relay paths only.
    RELAYING = "relaying"


@dataclass(frozen=True, slots=True)
class Connect:
    """Call ``links.connect(path, expected=peer, retransmit=..., timeout_s=...)``."""

    path: Path
    peer: NodeId | None
    retransmit: bool = True
    timeout_s: float | None = None


@dataclass(frozen=True, slots=True)
class GiveUp:
    """The attempt to ``peer`` is over and gone from the table; if ``backoff_until`` is set,
    do not ask ``peer`` as a near candidate before then."""

    peer: NodeId
    backoff_until: float | None


Action = Connect | GiveUp


@dataclass(slots=True)
class Attempt:
    """Our attempt to link to ``peer``: direct endpoints first, then relays if allowed."""

    peer: NodeId
    kinds: set[ConnectionKind]
    remote_kinds: set[ConnectionKind]
    deadline: float
    relay_allowed: bool
    candidates: list[NodeId]
    paths_left: set[Path] = field(default_factory=set)
    state: AttemptState = AttemptState.DIRECT
    relay_at: float = _INF
    # No relay path before this (see OverlayConfig.relay_yield_s).
    relay_not_before: float = 0.0
    # Started only to connect back for someone's CTM (counts against connect_back_inflight).
    connect_back: bool = False

    @property
    def relaying(self) -> bool:
        """A relay path was tried (it decides how long a failure backs the peer off)."""
        return self.state is not AttemptState.DIRECT

    def has_relay_path(self) -> bool:
        return any(isinstance(p, RelayPath) for p in self.paths_left)


class Backoff:
    """Near candidates not to ask for before a time; ``version`` changes whenever a peer comes
    or goes (it keys the node's caches over the set)."""

    __slots__ = ("_until", "version")

    def __init__(self) -> None:
        self._until: dict[NodeId, float] = {}
        self.version = 0

    def __contains__(self, peer: object) -> bool:
        return peer in self._until

    def __len__(self) -> int:
        return len(self._until)

    def __iter__(self) -> Iterator[NodeId]:
        return iter(self._until)

    def until(self, peer: NodeId) -> float | None:
        return self._until.get(peer)

    def put(self, peer: NodeId, until: float) -> None:
        """Do not ask ``peer`` as a near candidate before ``until``."""
        self._until[peer] = until
        self.version += 1

    def lift(self, peer: NodeId) -> bool:
        """Forget ``peer``'s backoff; True if it had one."""
        if self._until.pop(peer, None) is None:
            return False
        self.version += 1
        return True

    def expire(self, now: float) -> None:
        for peer in [peer for peer, t in self._until.items() if t <= now]:
            self.lift(peer)

    def clear(self) -> None:
        for peer in list(self._until):
            self.lift(peer)


class Attempts:
    """Every attempt under way, by peer, with the paths they wait on and the relay helpers.

    ``direct(peer)`` says whether we hold a direct link to ``peer`` (a relay candidate must).
    ``version`` changes whenever an attempt starts or ends (it keys the node's wanted-near
    cache).
    """

    def __init__(
        self,
        local_id: NodeId,
        *,
        direct: Callable[[NodeId], bool],
        stats: collections.Counter[str],
        connect_timeout_s: float,
        connect_back_timeout_s: float,
        relay_after_s: float,
        relay_yield_s: float,
        failed_backoff_s: float,
        near_retry_s: float,
    ) -> None:
        self.local_id = local_id
        self._direct = direct
        self._stats = stats
        self._connect_timeout_s = connect_timeout_s
        self._connect_back_timeout_s = connect_back_timeout_s
        self._relay_after_s = relay_after_s
        self._relay_yield_s = relay_yield_s
        self._failed_backoff_s = failed_backoff_s
        self._near_retry_s = near_retry_s
        self._by_peer: dict[NodeId, Attempt] = {}
        self._path_owner: dict[Path, NodeId] = {}
        # Relay helper we asked to link to -> (the peer it is to relay to, until when).
        self._helpers: dict[NodeId, tuple[NodeId, float]] = {}
        self.version = 0

    # --- queries ----------------------------------------------------------------------------

    def __contains__(self, peer: object) -> bool:
        return peer in self._by_peer

    def __iter__(self) -> Iterator[NodeId]:
        return iter(self._by_peer)

    def __len__(self) -> int:
        return len(self._by_peer)

    def get(self, peer: NodeId) -> Attempt | None:
        return self._by_peer.get(peer)

    def owner(self, path: Path) -> NodeId | None:
        """The peer whose attempt waits on ``path``."""
        return self._path_owner.get(path)

    def connect_backs(self) -> int:
        """Attempts started only to connect back for someone's CTM."""
        return sum(a.connect_back for a in self._by_peer.values())

    def wanting(self, kind: ConnectionKind) -> int:
        """Attempts that are to hold ``kind`` once up."""
        return sum(1 for a in self._by_peer.values() if kind in a.kinds)

    # --- inputs -----------------------------------------------------------------------------

    def start(
        self,
        peer: NodeId,
        endpoints: Sequence[Endpoint],
        kinds: set[ConnectionKind],
        remote_kinds: set[ConnectionKind],
        *,
        own: Collection[Endpoint] = (),
        relay_allowed: bool,
        candidates: list[NodeId],
        now: float,
        connect_back: bool = False,
    ) -> list[Action]:
        """Link to ``peer`` (not us, not linked) at ``endpoints`` other than ``own`` (ours),
        merged into an attempt under way. A ``connect_back`` sends one Init per endpoint and
        waits connect_back_timeout_s for it: its endpoints are a requester's word, not ours to
        retry at."""
        out: list[Action] = []
        eps = [e for e in dict.fromkeys(endpoints) if e not in own]
        att = self._by_peer.get(peer)
        if att is not None:
            att.kinds |= kinds
            att.remote_kinds |= remote_kinds
            att.relay_allowed = att.relay_allowed or relay_allowed
            att.candidates.extend(c for c in candidates if c not in att.candidates)
            if att.connect_back and not connect_back:
                # Our own attempt now: the connect-back's one-shot Inits retry from here on.
                out.extend(Connect(ep, peer) for ep in eps if ep in att.paths_left)
            att.connect_back = att.connect_back and connect_back
            if att.relaying:
                return out
            eps = [e for e in eps if e not in att.paths_left]
        else:
            att = Attempt(
                peer,
                set(kinds),
                set(remote_kinds),
                now + self._connect_timeout_s,
                relay_allowed,
                list(candidates),
                connect_back=connect_back,
            )
            # The larger id lets the smaller one key the relayed link first: two relayed
            # handshakes crossing through different relays can leave the ends sealing with
            # keys the other no longer holds, and the link is dead until a timeout.
            yield_s = self._relay_yield_s if self.local_id > peer else 0.0
            att.relay_at = att.relay_not_before = now + self._relay_after_s + yield_s
            self._by_peer[peer] = att
            self.version += 1
        timeout_s = self._connect_back_timeout_s if connect_back else None
        for ep in eps:
            att.paths_left.add(ep)
            self._path_owner[ep] = peer
            out.append(Connect(ep, peer, retransmit=not connect_back, timeout_s=timeout_s))
        self._stats["connect_attempts"] += len(eps)
        if not att.paths_left:
            self._direct_failed(att, now, out)
        return out

    def linked(self, peer: NodeId) -> Attempt | None:
        """``peer``'s link came up: its attempt (if any) is over and returned."""
        att = self._by_peer.pop(peer, None)
        if att is not None:
            self.version += 1
            for p in att.paths_left:
                self._path_owner.pop(p, None)
        return att

    def path_failed(self, path: Path, now: float) -> list[Action]:
        """The handshake over ``path`` failed."""
        out: list[Action] = []
        owner = self._path_owner.pop(path, None)
        if owner is None:
            return out
        att = self._by_peer.get(owner)
        if att is None or path not in att.paths_left:
            return out
        att.paths_left.discard(path)
        if not att.paths_left:
            self._direct_failed(att, now, out)
        return out

    def relay_refused(self, path: RelayPath, now: float) -> list[Action] | None:
        """The relay of ``path`` cannot reach its peer; None if no attempt waits on it."""
        att = self._by_peer.get(path.peer)
        if att is None or path not in att.paths_left:
            return None
        # A relay attempt through a node that cannot reach the target: the next candidate
        # now, instead of after the handshake timeout.
        out: list[Action] = []
        self._stats["relay_attempt_refused"] += 1
        att.paths_left.discard(path)
        self._path_owner.pop(path, None)
        if not att.has_relay_path():
            self._relay_next(att, now, out, early=True)
        if not att.paths_left and att.peer in self._by_peer:
            self._direct_failed(att, now, out)
        return out

    def advance(self, now: float) -> list[Action]:
        """The timers: helpers expire, relay paths start alongside the direct ones when due,
        and attempts past their deadline move on to a relay or give up."""
        out: list[Action] = []
        for h in [h for h, (_, t) in self._helpers.items() if t <= now]:
            del self._helpers[h]
        for att in [
            a
            for a in self._by_peer.values()
            if a.relay_allowed
            and a.state is AttemptState.DIRECT
            and a.relay_at <= now
            and a.deadline > now
        ]:
            # Direct attempts still running: add a relay path alongside (see timing).
            self._relay_next(att, now, out, early=True)
        for att in [a for a in self._by_peer.values() if a.deadline <= now]:
            for path in att.paths_left:
                self._path_owner.pop(path, None)
            att.paths_left = set()
            if att.relaying:
                self._give_up(att, now, out)
            else:
                self._direct_failed(att, now, out)
        return out

    # --- relay helpers ----------------------------------------------------------------------

    def helper_pool(
        self, listed: Sequence[NodeId], target: NodeId, linked: Container[NodeId]
    ) -> list[NodeId]:
        """Who of ``listed`` may be asked to link to us as a relay toward ``target``: not us,
        not ``target``, not linked, not under an attempt, not asked already."""
        return [
            n
            for n in dict.fromkeys(listed)
            if n not in (self.local_id, target)
            and n not in linked
            and n not in self._by_peer
            and n not in self._helpers
        ]

    def helper_asked(self, helper: NodeId, target: NodeId, now: float) -> None:
        """We asked ``helper`` for a direct link, to relay toward ``target`` through it."""
        self._helpers[helper] = (target, now + self._connect_timeout_s)

    def helping(self, helper: NodeId, now: float) -> bool:
        """``helper`` is a relay helper we asked and still wait for."""
        h = self._helpers.get(helper)
        return h is not None and h[1] > now

    def helper_linked(self, helper: NodeId) -> NodeId | None:
        """``helper`` linked to us: the target it was asked to relay to (forgotten here)."""
        h = self._helpers.pop(helper, None)
        return None if h is None else h[0]

    def helper_up(self, helper: NodeId, target: NodeId, now: float) -> bool:
        """A relay helper linked directly: relay the attempt to ``target`` through it (the
        tick does, at once). False if no attempt to ``target`` is under way."""
        att = self._by_peer.get(target)
        if att is None:
            return False
        if not att.relay_allowed:
            return True
        self._stats["relay_helpers_up"] += 1
        if helper not in att.candidates:
            att.candidates.insert(0, helper)
        if not att.has_relay_path():
            att.relay_at = max(now, att.relay_not_before)
            att.state = AttemptState.DIRECT
        return True

    def cancel(self, peer: NodeId) -> None:
        """Forget ``peer``'s attempt without a GiveUp (no backoff, no count)."""
        att = self._by_peer.pop(peer, None)
        if att is not None:
            self.version += 1
            for p in att.paths_left:
                self._path_owner.pop(p, None)

    # --- transitions ------------------------------------------------------------------------

    def _direct_failed(self, att: Attempt, now: float, out: list[Action]) -> None:
        """Every path tried so far failed: next relay candidate, or give up."""
        if not att.relay_allowed:
            self._give_up(att, now, out)
            return
        if now < att.relay_not_before < att.deadline:
            # Our turn to relay has not come (the peer may be keying one to us): the tick
            # starts ours then, unless its link comes up first.
            att.relay_at = att.relay_not_before
            return
        if not self._relay_next(att, now, out, early=False):
            self._give_up(att, now, out)

    def _next_relay_path(self, att: Attempt) -> RelayPath | None:
        """Pop candidates until one we hold a direct link to: the relay path through it."""
        while att.candidates:
            via = att.candidates.pop(0)
            if via == att.peer or not self._direct(via):
                continue
            return RelayPath(via=via, peer=att.peer)
        return None

    def _relay_next(self, att: Attempt, now: float, out: list[Action], *, early: bool) -> bool:
        """Key the link through the next relay candidate: alongside the paths under way
        (``early``) or instead of them; False if no candidate is left."""
        path = self._next_relay_path(att)
        if path is None:
            if early:
                att.relay_at = _INF  # nobody to relay through (yet): the deadline decides
            return False
        if early:
            att.paths_left.add(path)
            if att.state is AttemptState.DIRECT:
                att.state = AttemptState.DIRECT_AND_RELAY
            self._stats["relay_attempts_early"] += 1
        else:
            att.paths_left = {path}
            att.state = AttemptState.RELAYING
            self._stats["relay_attempts"] += 1
        att.deadline = now + self._connect_timeout_s
        self._path_owner[path] = att.peer
        out.append(Connect(path, att.peer))
        return True

    def _give_up(self, att: Attempt, now: float, out: list[Action]) -> None:
        if self._by_peer.pop(att.peer, None) is not None:
            self.version += 1
        for p in att.paths_left:
            self._path_owner.pop(p, None)
        self._stats["connect_failed"] += 1
        if not att.relay_allowed:
            # A far link, a shortcut or our connect-back for someone's CTM: direct only, so a
            # failure says nothing about whether the peer can be a (relayed) near link, which
            # is all the backoff gates.
            out.append(GiveUp(att.peer, None))
            return
        # A relay was tried too: the peer is out of reach for now. A near peer that only
        # lacked a relay candidate is asked again soon (the ring cannot close without it, and
        # common neighbours to relay through appear as the ring forms).
        self._stats["near_failed_relayed" if att.relaying else "near_failed_no_relay"] += 1
        wait = self._failed_backoff_s if att.relaying else self._near_retry_s
        out.append(GiveUp(att.peer, now + wait))


class Bootstraps:
    """The bootstrap (and remembered) endpoints we are linking to, and when to try again."""

    def __init__(
        self, bootstrap: Sequence[Endpoint], *, connect_timeout_s: float, retry_s: float
    ) -> None:
        self._bootstrap = tuple(bootstrap)
        self._remembered: tuple[Endpoint, ...] = ()
        self._timeout_s = connect_timeout_s
        self._retry_s = retry_s
        self._pending: dict[Endpoint, float] = {}
        self._next_at = 0.0

    def set_remembered(self, endpoints: Sequence[Endpoint]) -> None:
        """Endpoints of peers we once linked to, tried after the bootstraps."""
        boot = set(self._bootstrap)
        self._remembered = tuple(ep for ep in endpoints if ep not in boot)

    def connect(self, own: Collection[Endpoint], now: float) -> list[Connect]:
        """Link to every endpoint not ours and not under way."""
        out = []
        for ep in (*self._bootstrap, *self._remembered):
            if ep in own or ep in self._pending:
                continue
            self._pending[ep] = now + self._timeout_s
            out.append(Connect(ep, None))
        self._next_at = now + self._retry_s
        return out

    def settled(self, path: Path) -> bool:
        """The handshake over ``path`` ended; True if it was a bootstrap's."""
        return isinstance(path, Endpoint) and self._pending.pop(path, None) is not None

    def due(self, now: float) -> bool:
        """None under way and the retry interval passed (the caller checks it has no link)."""
        return not self._pending and now >= self._next_at

    def expire(self, now: float) -> None:
        for ep in [e for e, t in self._pending.items() if t <= now]:
            del self._pending[ep]
