"""Port guessing toward a symmetric NAT (sans-IO): a hole punch that relies on the birthday paradox.

"Port guessing" is the one name for it in docs and new identifiers. Older names stay where
renaming would change what operators and tests see: the drop reasons and counters
(``birthday_*``), the timing constants (``ipop.timing.BIRTHDAY_*``), the overlay kind
``KIND_BIRTHDAY``, ``NodeCore.birthday``, and :class:`ipop.types.SocketPath` (the path over
one of the extra sockets; "punch" and "knock" name the two roles' datagrams below).

Owns the protocol by which a node behind a symmetric NAT (S) and a peer whose NAT keeps one port
for every destination (C: open, full, restricted or port-restricted cone) find a direct path
where plain simultaneous punching cannot: S's NAT gives every destination a fresh random port,
and a port-restricted C lets in only the exact address and port it has sent to (measured here:
symmetric x port-restricted cone punched 0 of 3, shared/reference/README.md).

How (the birthday paradox, as Tailscale describes for "hard" NATs):

1. S sends one *opener* from each of :data:`ipop.timing.BIRTHDAY_SOCKETS` extra sockets to C's
   endpoints: S's NAT now holds that many random ports that accept C's endpoint (C's NAT drops
   the openers).
2. S tells C over the overlay: GO, with S's public address and a fresh token.
3. C sends :data:`ipop.timing.BIRTHDAY_KNOCKS` tiny *knocks* from its main socket to random
   ports of S's address, in up to :data:`ipop.timing.BIRTHDAY_ROUNDS` rounds. Each knock opens
   C's NAT toward that port; one that lands on one of S's open ports reaches that socket. Odds
   per round with 256 sockets and 1,024 knocks over 64,512 ports: 1 - exp(-4.06), about 98 %.
4. S, knocked on socket i with its token, starts an ordinary (authenticated) handshake on
   ``SocketPath(i, C's endpoint)``; C's NAT lets it in because C knocked there first.

Who starts: traffic to a peer over a relayed link or over the ring (:meth:`PortGuessing.hello`,
at most once per :data:`ipop.timing.BIRTHDAY_RETRY_S` per peer), on either side. HELLO says
what its sender knows of its NAT and carries its endpoints: *symmetric* (peers saw two ports of
ours: a mapping per destination) and *translated* (the port peers see is not our socket's: a
NAT that keeps ports, as Linux does for a cone, did not). A node with a single direct peer
cannot know it is symmetric, but a translated port next to a peer whose port was kept points at
the side that must open. The side that should be S (symmetric, or translated facing a peer that
is neither) does steps 1-2 when it reads the other's HELLO; otherwise a receiver whose peer
should be S answers with its own HELLO, which makes the peer do them. Two symmetric sides:
nothing guesses both ports at once; remembered (:meth:`peer_symmetric`) so status can say why.

Messages (overlay upper kind KIND_BIRTHDAY, over a link or routed)::

    HELLO  0x01 | flags (1: symmetric, 2: answer wanted, 4: translated) | n | n x (IPv4, port)
    GO     0x02 | IPv4 (S's public address) | token (12 bytes)

A knock (and an opener) is a STUN Binding Indication (RFC 5389 §7: what ICE uses to keep a
binding open) whose transaction id is the token: 20 bytes; nobody answers an indication.

Bounds, because a GO makes us send ~3,000 datagrams to an address a peer named (and a HELLO
makes S send 256 openers per endpoint it names): only certified overlay members can send
either, and

- a GO is acted on only if we asked for it: we said HELLO to its sender within
  :data:`ipop.timing.BIRTHDAY_GO_WAIT_S` (one GO per HELLO), and the roles say we knock (we
  are not symmetric; if the peer told us its flags, it is the side that opens);
- its address must be one the owner saw the peer at (``seen_hosts``: the endpoints the peer
  gave in its CONNECT_TO_ME or its answer to ours, the path of a direct link), never merely
  the address the GO names;
- at most one knock run per peer per :data:`ipop.timing.BIRTHDAY_RETRY_S` (enforced, whatever
  the HELLOs), at most :data:`ipop.timing.BIRTHDAY_MAX_RUNS` runs at once, and a run is at most
  ROUNDS x KNOCKS datagrams of 20 bytes;
- S opens toward at most :data:`ipop.timing.BIRTHDAY_MAX_OPENS` peers per
  BIRTHDAY_WINDOW_S: a burst of HELLOs from a whole network is taken a few at a time;
- openers go only to endpoints of the peer on ``seen_hosts``, at most
  :data:`ipop.timing.BIRTHDAY_OPEN_ENDPOINTS` of them, once per peer per BIRTHDAY_RETRY_S; a
  HELLO is answered at most once per peer per BIRTHDAY_RETRY_S.

Refusals are counted in ``drops`` under the reasons of :data:`DROP_REASONS`.
"""

from __future__ import annotations

import collections
import ipaddress
import random
import struct
from collections.abc import Collection
from dataclasses import dataclass

from ipop import timing
from ipop.types import Endpoint, NodeId, Path, SocketPath
from ipop.wire.stun import BINDING_INDICATION, HEADER_BYTES, MAGIC_COOKIE

__all__ = ["DROP_REASONS", "PortGuessing", "is_knock", "nat_flags", "why_relayed"]

# Every reason a payload or a knock run is refused for (counting any other is a bug).
DROP_REASONS = frozenset(
    {
        "birthday_empty",
        "birthday_unknown_op",
        "birthday_malformed",
        "birthday_bad_address",
        "birthday_no_public_view",
        "birthday_no_endpoints",
        "birthday_busy",
        "birthday_open_busy",
        "birthday_go_unasked",
        "birthday_go_wrong_role",
        "birthday_go_unseen_address",
        "birthday_go_too_soon",
        "birthday_hello_too_soon",
    }
)
# Per-peer tables (when we said HELLO, opened, knocked, answered) keep at most this many peers.
_MAX_PEERS = 4096

OP_HELLO = 0x01
OP_GO = 0x02
FLAG_SYMMETRIC = 0x01
FLAG_ANSWER = 0x02
FLAG_TRANSLATED = 0x04
# "The port you reach me from is none you told us of": another host behind the receiver's NAT
# holds the port the receiver advertised toward us (see PortGuessing.hidden). The receiver
# plays S, whatever its own flags say.
FLAG_HIDDEN = 0x08
MAX_HELLO_ENDPOINTS = 4

_HELLO_HEAD = struct.Struct(">BBB")
_EP = struct.Struct(">4sH")
_GO = struct.Struct(">B4s12s")
# A knock is a bare STUN header: Binding Indication, no attributes, the token as transaction id.
_KNOCK_HEAD = struct.Struct(">HHI")
# What MASQUERADE --random draws from (the kernel's default NAT range for a source port >= 1024).
_PORT_MIN = 1024
_PORT_MAX = 65535


def _knock(token: bytes) -> bytes:
    return _KNOCK_HEAD.pack(BINDING_INDICATION, 0, MAGIC_COOKIE) + token


def is_knock(data: bytes) -> bool:
    """A STUN Binding Indication with no attributes: a knock or an opener, never answered."""
    return len(data) == HEADER_BYTES and _KNOCK_HEAD.unpack_from(data) == (
        BINDING_INDICATION,
        0,
        MAGIC_COOKIE,
    )


def _usable_host(ip: bytes) -> str | None:
    addr = ipaddress.IPv4Address(ip)
    if addr.is_unspecified or addr.is_loopback or addr.is_multicast or addr.is_reserved:
        return None
    return str(addr)


@dataclass(slots=True)
class _Run:
    """One knock run toward a symmetric peer's address."""

    host: str
    token: bytes
    rounds_left: int
    next_at: float


class PortGuessing:
    """Both roles of port guessing for one node; see the module docstring.

    The owner (:class:`ipop.core.NodeCore`) feeds it the node's public view on every call
    (``symmetric``, ``public_host``, ``endpoints``), sends the payloads it returns to the peer
    over the overlay, sends :meth:`datagrams_to_send` (openers on :class:`SocketPath`, knocks on
    plain endpoints) *before* those payloads, and starts a handshake where :meth:`on_knock`
    says.
    """

    def __init__(
        self,
        *,
        rng: random.Random,
        sockets: int = timing.BIRTHDAY_SOCKETS,
        knocks: int = timing.BIRTHDAY_KNOCKS,
        rounds: int = timing.BIRTHDAY_ROUNDS,
    ) -> None:
        self._rng = rng
        self.sockets = sockets
        self.knocks = knocks
        self.rounds = rounds
        self.stats: collections.Counter[str] = collections.Counter()
        self.drops: collections.Counter[str] = collections.Counter()
        self._out: list[tuple[bytes, Path]] = []
        self._hello_at: dict[NodeId, float] = {}
        self._go_at: dict[NodeId, float] = {}
        # When we last opened toward any peer (at most BIRTHDAY_MAX_OPENS, newest last).
        self._opened: collections.deque[float] = collections.deque()
        # Peer -> until when a GO from it answers a HELLO of ours (see _on_go).
        self._go_welcome: dict[NodeId, float] = {}
        # Peer -> when we last started a knock run at it / answered its HELLO.
        self._knocked_at: dict[NodeId, float] = {}
        self._answered_at: dict[NodeId, float] = {}
        self._runs: dict[NodeId, _Run] = {}
        self._expected: dict[bytes, tuple[NodeId, float]] = {}
        self._peer_flags: dict[NodeId, int] = {}
        # Peer -> until when its mapping toward us is one nobody can tell us (hidden()): our
        # HELLOs ask it to open, and its GO is welcome whatever its flags say.
        self._hidden: dict[NodeId, float] = {}
        # Peers whose direct path our knocking found (we are the cone side; the symmetric
        # side's path is a SocketPath). Kept across our roams, unlike everything above: it
        # describes the session, whose peer's NAT admits only the mapping we knocked from.
        self._joined: dict[NodeId, None] = {}
        # When we last sent openers (the I/O layer closes idle punching sockets after it).
        self.last_open_at = float("-inf")

    # --- starting ---------------------------------------------------------------------------

    def hello(
        self,
        peer: NodeId,
        *,
        symmetric: bool,
        translated: bool,
        endpoints: tuple[Endpoint, ...],
        now: float,
    ) -> bytes | None:
        """The HELLO to send ``peer`` now, or None (asked recently, or both known symmetric)."""
        last = self._hello_at.get(peer)
        if last is not None and now - last < timing.BIRTHDAY_RETRY_S:
            return None
        if symmetric and self._peer_flags.get(peer, 0) & FLAG_SYMMETRIC:
            return None
        self._forget_old(now)
        self._hello_at[peer] = now
        self._welcome_go(peer, now)
        self.stats["hello_sent"] += 1
        flags = FLAG_ANSWER | nat_flags(symmetric, translated) | self._hidden_flag(peer, now)
        return _encode_hello(flags, endpoints)

    def hidden(self, peer: NodeId, *, now: float) -> None:
        """``peer`` moved, and an endpoint it named is where another peer's traffic comes from
        (:meth:`ipop.overlay.roaming.Roaming.follow_move`): a host behind its NAT took that
        port toward us (the NAT lost its table, and the other host sent to us first), so the
        peer's mapping toward us is a port nobody can tell us, and a plain punch cannot get
        through our filtering NAT. Ask it to open as S does (FLAG_HIDDEN in our next HELLO,
        which may go at once) and knock at its address.

        A knock run at the peer within BIRTHDAY_RETRY_S (the pair may have been joined by
        guessing before) does not hold this one back: it aimed at a mapping the peer lost.

        Bounds: the flag lasts BIRTHDAY_RETRY_S and ends with a direct path or our roam, and
        only a mark that is not already set lifts the waits for our HELLO and knock run: at
        most one extra of each per peer per BIRTHDAY_RETRY_S."""
        if self._hidden_flag(peer, now):
            return
        self._hidden.pop(peer, None)
        self._hidden[peer] = now + timing.BIRTHDAY_RETRY_S
        self._knocked_at.pop(peer, None)
        self._hello_at.pop(peer, None)
        self._peer_flags.pop(peer, None)  # what it said of its NAT described another mapping
        self.stats["peer_hidden"] += 1
        self._forget_old(now)

    def _hidden_flag(self, peer: NodeId, now: float) -> int:
        until = self._hidden.get(peer)
        return FLAG_HIDDEN if until is not None and now <= until else 0

    def _welcome_go(self, peer: NodeId, now: float) -> None:
        """We said HELLO to ``peer``: one GO from it is welcome for a while."""
        self._go_welcome.pop(peer, None)
        self._go_welcome[peer] = now + timing.BIRTHDAY_GO_WAIT_S

    # --- overlay messages -------------------------------------------------------------------

    def receive(
        self,
        peer: NodeId,
        payload: bytes,
        *,
        symmetric: bool,
        translated: bool,
        public_host: str | None,
        endpoints: tuple[Endpoint, ...],
        now: float,
        seen_hosts: Collection[str] = frozenset(),
    ) -> bytes | None:
        """A KIND_BIRTHDAY payload from ``peer``; returns what to send back, if anything.

        ``seen_hosts``: the addresses the owner saw ``peer`` at (not what the payload says);
        openers and knocks go nowhere else.
        """
        if not payload:
            self._drop("birthday_empty")
            return None
        mine = nat_flags(symmetric, translated)
        if payload[0] == OP_HELLO:
            return self._on_hello(peer, payload, mine, public_host, endpoints, seen_hosts, now)
        if payload[0] == OP_GO:
            self._on_go(peer, payload, mine, seen_hosts, now)
            return None
        self._drop("birthday_unknown_op")
        return None

    def _drop(self, reason: str) -> None:
        if reason not in DROP_REASONS:
            raise AssertionError(f"drop reason {reason!r} not in DROP_REASONS")
        self.drops[reason] += 1

    def _on_hello(
        self,
        peer: NodeId,
        payload: bytes,
        mine: int,
        public_host: str | None,
        endpoints: tuple[Endpoint, ...],
        seen_hosts: Collection[str],
        now: float,
    ) -> bytes | None:
        decoded = _decode_hello(payload)
        if decoded is None:
            self._drop("birthday_malformed")
            return None
        theirs_flags, theirs = decoded
        self._forget_old(now)
        self._peer_flags[peer] = theirs_flags & (FLAG_SYMMETRIC | FLAG_TRANSLATED)
        if mine & theirs_flags & FLAG_SYMMETRIC:
            self.stats["both_symmetric"] += 1
            return None
        if _should_open(mine, theirs_flags) or theirs_flags & FLAG_HIDDEN:
            seen = [e for e in theirs if e.host in seen_hosts][: timing.BIRTHDAY_OPEN_ENDPOINTS]
            if theirs_flags & FLAG_HIDDEN and not _should_open(mine, theirs_flags):
                self.stats["hello_hidden_open"] += 1
            return self._open(peer, public_host, seen, now)
        hidden = self._hidden_flag(peer, now)
        if (_should_open(theirs_flags, mine) or hidden) and theirs_flags & FLAG_ANSWER:
            last = self._answered_at.get(peer)
            if last is not None and now - last < timing.BIRTHDAY_RETRY_S:
                self._drop("birthday_hello_too_soon")
                return None
            self._answered_at[peer] = now
            self._welcome_go(peer, now)
            self.stats["hello_answered"] += 1
            return _encode_hello(mine | hidden, endpoints)
        self.stats["hello_nothing_to_do"] += 1
        return None

    def _open(
        self, peer: NodeId, public_host: str | None, theirs: list[Endpoint], now: float
    ) -> bytes | None:
        """We are S: openers from every punching socket toward ``theirs``, then GO."""
        if public_host is None:
            self._drop("birthday_no_public_view")
            return None
        last = self._go_at.get(peer)
        if last is not None and now - last < timing.BIRTHDAY_RETRY_S:
            self.stats["go_recent"] += 1
            return None
        if not theirs:
            # None of its endpoints is where we saw it: openers would go to whoever it named.
            self._drop("birthday_no_endpoints")
            return None
        opened = self._opened
        while opened and now - opened[0] >= timing.BIRTHDAY_WINDOW_S:
            opened.popleft()
        if len(opened) >= timing.BIRTHDAY_MAX_OPENS:
            self._drop("birthday_open_busy")
            return None
        opened.append(now)
        self._go_at[peer] = now
        self.last_open_at = now
        token = self._rng.randbytes(12)
        self._expected[token] = (peer, now + timing.BIRTHDAY_WINDOW_S)
        opener = _knock(self._rng.randbytes(12))
        out = self._out
        for ep in theirs:
            for i in range(1, self.sockets + 1):
                out.append((opener, SocketPath(i, ep)))
        self.stats["openers_sent"] += len(theirs) * self.sockets
        self.stats["go_sent"] += 1
        return _GO.pack(OP_GO, ipaddress.IPv4Address(public_host).packed, token)

    def _on_go(
        self, peer: NodeId, payload: bytes, mine: int, seen_hosts: Collection[str], now: float
    ) -> None:
        if len(payload) != _GO.size:
            self._drop("birthday_malformed")
            return
        _, ip, token = _GO.unpack(payload)
        host = _usable_host(ip)
        if host is None:
            self._drop("birthday_bad_address")
            return
        if mine & FLAG_SYMMETRIC:
            # Our knocks would leave through fresh ports too, which S's NAT does not expect.
            self.stats["go_ignored_symmetric"] += 1
            return
        if peer in self._runs:
            self.stats["go_while_knocking"] += 1
            return
        welcome = self._go_welcome.pop(peer, None)
        if welcome is None or now > welcome:
            self._drop("birthday_go_unasked")  # no HELLO of ours for it to answer
            return
        theirs = self._peer_flags.get(peer)
        if (
            theirs is not None
            and not _should_open(theirs, mine)
            and not self._hidden_flag(peer, now)
        ):
            self._drop("birthday_go_wrong_role")  # by what it told us, it should knock
            return
        if host not in seen_hosts:
            self._drop("birthday_go_unseen_address")
            return
        last = self._knocked_at.get(peer)
        if last is not None and now - last < timing.BIRTHDAY_RETRY_S:
            self._drop("birthday_go_too_soon")
            return
        if len(self._runs) >= timing.BIRTHDAY_MAX_RUNS:
            self._drop("birthday_busy")
            return
        self._knocked_at[peer] = now
        self._runs[peer] = _Run(host, token, self.rounds, now)
        self.stats["runs_started"] += 1

    # --- knocks -----------------------------------------------------------------------------

    def on_knock(self, data: bytes, path: Path, *, now: float) -> NodeId | None:
        """A knock (or an opener) arrived on ``path``: the peer to handshake with there, if any.

        Only a knock with a token we gave out, on a punching socket, within its window counts;
        the first one wins (the token is then spent).
        """
        if type(path) is not SocketPath:
            self.stats["knock_on_main_socket"] += 1
            return None
        entry = self._expected.pop(data[8:20], None)
        if entry is None:
            # Mostly a second hit of a run whose token is spent (about four per round).
            self.stats["knock_unexpected"] += 1
            return None
        peer, until = entry
        if now > until:
            self.stats["knock_late"] += 1
            return None
        self.stats["knock_hit"] += 1
        return peer

    def roamed(self) -> None:
        """Our address changed: forget every peer's guessing state and NAT flags.

        Why: they describe our old address and NAT (a run aimed at it, a HELLO sent from it,
        a verdict such as "a NAT filters too strictly" drawn from it); kept, they would hold
        back a new attempt for BIRTHDAY_RETRY_S and keep a stale reason in status.
        """
        for table in (
            self._hello_at,
            self._go_at,
            self._go_welcome,
            self._knocked_at,
            self._answered_at,
            self._runs,
            self._expected,
            self._peer_flags,
            self._hidden,
        ):
            table.clear()
        self.stats["roamed"] += 1

    def linked(self, peer: NodeId, *, now: float) -> bool:
        """A direct path to ``peer`` is up: knocking on would only spray. True if a run was
        going (the guessing found the path, or ran alongside whatever did).

        The path counts as found by our knocking (:meth:`joined`) when a run at the peer
        started within the time a run lasts plus a handshake: the hit may come in the last
        round, after the run itself has ended."""
        started = self._knocked_at.get(peer)
        window = self.rounds * timing.BIRTHDAY_ROUND_S + timing.BIRTHDAY_JOIN_SLACK_S
        if started is not None and now - started <= window:
            self._joined[peer] = None
        else:
            self._joined.pop(peer, None)
        self._hidden.pop(peer, None)
        if self._runs.pop(peer, None) is None:
            return False
        self.stats["runs_ended_linked"] += 1
        return True

    def unlinked(self, peer: NodeId) -> None:
        """The session with ``peer`` is gone: so is what we knew of how it was joined."""
        self._joined.pop(peer, None)

    def joined(self, peer: NodeId) -> bool:
        """Whether our knocking found the direct path to ``peer`` that is up. Such a path
        passes the peer's symmetric NAT only from the mapping we knocked from: after our NAT
        rebinds, the peer cannot reach us directly any more (:mod:`ipop.fallback`)."""
        return peer in self._joined

    def get_timer(self) -> float | None:
        if not self._runs:  # almost always: asked after every input the node gets
            return None
        return min(r.next_at for r in self._runs.values())

    def handle_timer(self, *, now: float) -> None:
        for peer, run in list(self._runs.items()):
            if run.next_at > now:
                continue
            knock = _knock(run.token)
            host = run.host
            ports = self._rng.sample(range(_PORT_MIN, _PORT_MAX + 1), self.knocks)
            self._out.extend((knock, Endpoint(host, port)) for port in ports)
            self.stats["knocks_sent"] += self.knocks
            run.rounds_left -= 1
            if run.rounds_left <= 0:
                del self._runs[peer]
            else:
                run.next_at = now + timing.BIRTHDAY_ROUND_S

    def datagrams_to_send(self) -> list[tuple[bytes, Path]]:
        out, self._out = self._out, []
        return out

    # --- what status shows ------------------------------------------------------------------

    def why_relayed(self, peer: NodeId, *, symmetric: bool, translated: bool) -> str:
        """Why a link to ``peer`` is still relayed, from both sides' NATs as far as known."""
        return why_relayed(nat_flags(symmetric, translated), self._peer_flags.get(peer))

    def peer_flags(self) -> dict[NodeId, int]:
        """What each peer's last HELLO said of its NAT (FLAG_SYMMETRIC | FLAG_TRANSLATED), for
        :func:`why_relayed` in status (a copy; bounded like the table it copies)."""
        return dict(self._peer_flags)

    def _forget_old(self, now: float) -> None:
        """Bound the per-peer memory: drop what no longer gates anything, then, should peers
        still be too many, the oldest entries (which at worst lets one more HELLO through)."""
        keep = timing.BIRTHDAY_RETRY_S
        tables = (self._hello_at, self._go_at, self._knocked_at, self._answered_at)
        if max(len(t) for t in tables) > 1024:
            for t in tables:
                for p in [p for p, t0 in t.items() if now - t0 >= keep]:
                    del t[p]
            self._go_welcome = {p: u for p, u in self._go_welcome.items() if u >= now}
            self._expected = {k: v for k, v in self._expected.items() if v[1] >= now}
        bounded: tuple[dict[NodeId, float] | dict[NodeId, int] | dict[NodeId, None], ...] = (
            *tables,
            self._go_welcome,
            self._peer_flags,
            self._joined,
            self._hidden,
        )
        for table in bounded:
            while len(table) > _MAX_PEERS:
                del table[next(iter(table))]


def why_relayed(mine: int, theirs: int | None) -> str:
    """The reason status gives for a relayed path, from HELLO flags (None: peer never said)."""
    hard = FLAG_SYMMETRIC | FLAG_TRANSLATED
    if (
        theirs is not None
        and mine & hard
        and theirs & hard
        and not _should_open(mine, theirs)
        and not _should_open(theirs, mine)
    ):
        return (
            "no direct path: both sides symmetric NAT (each picks a new random port per peer, "
            "so there is no fixed port to guess)"
        )
    if theirs is None:
        return (
            "no direct path: punching through both NATs failed; port guessing starts when "
            "traffic flows"
        )
    if _should_open(mine, theirs) or _should_open(theirs, mine):
        return "no direct path yet: guessing the symmetric side's port (retried every 30 s)"
    return "no direct path: punching through both NATs failed (a NAT filters too strictly)"


def nat_flags(symmetric: bool, translated: bool) -> int:
    """Our side's HELLO flags from what peers' echoes say of our NAT."""
    return (FLAG_SYMMETRIC if symmetric else 0) | (FLAG_TRANSLATED if translated else 0)


def _should_open(a: int, b: int) -> bool:
    """Should the side with flags ``a`` play S against the side with flags ``b``?"""
    if a & FLAG_SYMMETRIC:
        return not b & FLAG_SYMMETRIC
    return bool(a & FLAG_TRANSLATED) and not b & (FLAG_SYMMETRIC | FLAG_TRANSLATED)


def _encode_hello(flags: int, endpoints: tuple[Endpoint, ...]) -> bytes:
    eps = [e for e in endpoints if _is_ipv4(e.host)][:MAX_HELLO_ENDPOINTS]
    body = b"".join(_EP.pack(ipaddress.IPv4Address(e.host).packed, e.port) for e in eps)
    return _HELLO_HEAD.pack(OP_HELLO, flags, len(eps)) + body


def _decode_hello(payload: bytes) -> tuple[int, list[Endpoint]] | None:
    if len(payload) < _HELLO_HEAD.size:
        return None
    _, flags, n = _HELLO_HEAD.unpack_from(payload)
    if n > MAX_HELLO_ENDPOINTS or len(payload) != _HELLO_HEAD.size + n * _EP.size:
        return None
    eps = []
    for k in range(n):
        ip, port = _EP.unpack_from(payload, _HELLO_HEAD.size + k * _EP.size)
        host = _usable_host(ip)
        if host is None or port == 0:
            return None
        eps.append(Endpoint(host, port))
    return flags, eps


def _is_ipv4(host: str) -> bool:
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return True
