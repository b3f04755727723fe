"""Relay channels: a relayed link's data through its relay without a seal for the relay.

A relayed link's datagrams are sealed end to end (origin A to target T) and, without a
channel, sealed once more inside RELAY_FORWARD for the relay X, which opens that, re-seals it
as RELAY_DELIVER for T, and T opens both: three AEAD passes and a Python message per datagram
that the end-to-end seal already made unnecessary. With a channel (TURN's idea, RFC 8656 §12)
A sends the end-to-end DATA datagram behind a 5-byte header (:mod:`ipop.wire.header`) straight
to X's address; X checks the header against what it agreed with A and passes the bytes on to
T's address; T opens the DATA inside with the session its receiver index names. The relay
does no crypto at all, and a run of them leaves in one GSO send.

Set-up (over A's authenticated link with X, :class:`ipop.overlay.messages.RelayChannel`): A
asks BIND(T); X, if it would forward A's RELAY_FORWARD to T (both direct, see
:func:`ipop.overlay.relay.forward_refusal`) and both links run on its main socket, answers
BOUND(T, c). A re-asks every :data:`REFRESH_S` while it sends over the channel; X forgets a
channel not asked for in :data:`TTL_S`, and any whose origin or target link is gone. A
datagram on a number X does not hold (X restarted, or forgot the channel) gets its origin an
UNKNOWN(c) over their link, at most one per origin per :data:`RETRY_S`, and A asks afresh at
once instead of at its next refresh.

What each check stops (a channel header is not authenticated: it only steers):

- X forwards a channel's datagram only if it came from the address X's link with the
  channel's origin runs on, and only to the address its link with the channel's target runs
  on: a stranger, or another member, cannot use a channel it did not set up, nor send anything
  anywhere but to a target the origin could have reached through X anyway.
- T opens a datagram from X only if X holds a direct link with it at the address the
  datagram came from (:meth:`RelayChannels.from_relay`; the session's own relay first, else
  whichever linked node is there: each end keys a relayed link through a relay of its own
  choice, as RELAY_DELIVER from any linked relay is opened), as relayed through that node, and
  the end-to-end AEAD and replay window decide the rest: a relay (or anyone at its address)
  can drop, delay or repeat what it was given, as it could before, and forge nothing; an
  address where T holds no link gets nothing opened.
- Every datagram costs one lookup at X and one at T; X's table is bounded
  (:data:`MAX_CHANNELS`, :data:`MAX_PER_ORIGIN`), a full table answers "no channel" and A keeps
  to RELAY_FORWARD.

Only the data plane's runs of a relayed link's IP use a channel (and the one-by-one IP send
that stands for them, :meth:`ipop.core.NodeCore.send_ip`); handshakes, keepalives, path MTU
probes and overlay messages keep to RELAY_FORWARD. Why: the path MTU a relayed link probes is
then the one RELAY_FORWARD allows, larger than a channel needs, so a lost channel falls back
without a datagram that no longer fits; and the link's liveness is never a channel's.

This module owns the two tables and :class:`RelayChannels`, the checks and messages around
them; :class:`ipop.overlay.relay.RelayRole` owns it and lends it the relay's own rules.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from ipop import timing
from ipop.errors import LocalProtocolError
from ipop.overlay.messages import (
    CHANNEL_BIND,
    CHANNEL_BOUND,
    CHANNEL_UNKNOWN,
    RelayChannel,
)
from ipop.overlay.table import Connection, ConnectionTable
from ipop.types import Endpoint, NodeId, Path, RelayPath
from ipop.wire.header import CHANNEL_HEADER, TYPE_CHANNEL_TO_RELAY

__all__ = [
    "CHANNEL_DROPS",
    "MAX_CHANNELS",
    "MAX_PER_ORIGIN",
    "REFRESH_S",
    "RETRY_S",
    "TTL_S",
    "USE_S",
    "Channel",
    "ChannelBindings",
    "ChannelTable",
    "RelayChannels",
]

# The origin asks again this often while it sends over a channel (the relay's proof that the
# channel is wanted; the answer also repairs one the relay lost).
REFRESH_S: Final = timing.RELAY_CHANNEL_REFRESH_S
# An unanswered BIND is asked again after this long (a lost message).
RETRY_S: Final = timing.RELAY_CHANNEL_RETRY_S
# The relay forgets a channel nobody asked for in this long; the origin stops using a binding
# that old (it missed the refreshes' answers, so the relay may have forgotten it).
TTL_S: Final = 3 * REFRESH_S
# The origin sends on a channel only this long after the relay last confirmed it (well
# inside TTL_S, which the relay counts from the BIND it answered).
USE_S: Final = 2 * REFRESH_S
# Bounds on the relay's table: each entry is a few dozen bytes.
MAX_CHANNELS: Final = 4096
MAX_PER_ORIGIN: Final = 64
_ID_SPACE: Final = 1 << 32
# UNKNOWN names no target.
_NO_TARGET: Final = NodeId(0)
# Every reason a channel datagram or message is dropped for (in the node's drops).
CHANNEL_DROPS: Final = frozenset(
    {
        "relay_channel_unknown",
        "relay_channel_source",
        "relay_channel_stale",
        "relay_channel_relay",
        "relay_channel_malformed",
        "relay_channel_unasked",
    }
)


@dataclass(slots=True)
class Channel:
    """A channel at its relay: the datagrams ``origin`` sends on it go to ``target``."""

    origin: NodeId
    target: NodeId
    asked: float


class ChannelTable:
    """The relay's channels, by number and by (origin, target); bounded, expiring."""

    def __init__(self, first: int) -> None:
        # Numbers are handed out in turn from a random start (the node's seeded rng: a
        # simulated run repeats); 0 is never one (it means "no channel" in BOUND).
        self._next = first % _ID_SPACE or 1
        self._by_id: dict[int, Channel] = {}
        self._by_pair: dict[tuple[int, int], int] = {}
        self._per_origin: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def bind(self, origin: NodeId, target: NodeId, *, now: float) -> int:
        """The channel from ``origin`` to ``target``, made if need be; 0 if the table is full.
        Asking again for a pair keeps its number and renews it."""
        key = (origin.value, target.value)
        number = self._by_pair.get(key)
        if number is not None:
            self._by_id[number].asked = now
            return number
        self._expire(now)
        if len(self._by_id) >= MAX_CHANNELS or self._per_origin.get(origin.value, 0) >= (
            MAX_PER_ORIGIN
        ):
            return 0
        number = self._next
        while number in self._by_id:  # (at most MAX_CHANNELS steps, once in 2**32 numbers)
            number = number % (_ID_SPACE - 1) + 1
        self._next = number % (_ID_SPACE - 1) + 1
        self._by_id[number] = Channel(origin, target, now)
        self._by_pair[key] = number
        self._per_origin[origin.value] = self._per_origin.get(origin.value, 0) + 1
        return number

    def get(self, number: int, *, now: float) -> Channel | None:
        """The live channel ``number``; one not asked for within :data:`TTL_S` is dropped."""
        ch = self._by_id.get(number)
        if ch is not None and now - ch.asked > TTL_S:
            self.drop(number)
            return None
        return ch

    def drop(self, number: int) -> None:
        ch = self._by_id.pop(number, None)
        if ch is None:
            return
        del self._by_pair[(ch.origin.value, ch.target.value)]
        left = self._per_origin[ch.origin.value] - 1
        if left:
            self._per_origin[ch.origin.value] = left
        else:
            del self._per_origin[ch.origin.value]

    def forget(self, peer: NodeId) -> None:
        """``peer``'s link is gone: every channel from or to it."""
        value = peer.value
        gone = [n for n, ch in self._by_id.items() if value in (ch.origin.value, ch.target.value)]
        for number in gone:
            self.drop(number)

    def _expire(self, now: float) -> None:
        stale = [n for n, ch in self._by_id.items() if now - ch.asked > TTL_S]
        for number in stale:
            self.drop(number)


@dataclass(slots=True)
class _Binding:
    """One relayed link's channel as the origin knows it: when it last asked and was told."""

    channel: int  # 0 until BOUND names one (or while the relay has none for us)
    asked: float
    bound: float


class ChannelBindings:
    """The origin's side: the channel each relayed link of ours may use, by (relay, peer)."""

    def __init__(self) -> None:
        self._by_pair: dict[tuple[int, int], _Binding] = {}

    def __len__(self) -> int:
        return sum(1 for b in self._by_pair.values() if b.channel)

    def use(self, via: NodeId, peer: NodeId, *, now: float) -> tuple[int, bool]:
        """``(channel, ask)`` for sending to ``peer`` through ``via`` now: the channel to
        send on (0: none, use RELAY_FORWARD) and whether to send the relay a BIND first (none
        asked yet, an answer overdue, or a refresh due)."""
        key = (via.value, peer.value)
        b = self._by_pair.get(key)
        if b is None:
            self._by_pair[key] = _Binding(0, now, -TTL_S)
            return 0, True
        channel = b.channel if now - b.bound <= USE_S else 0
        # Answered (a channel or none for now): again in REFRESH_S; unanswered: RETRY_S.
        wait = REFRESH_S if b.bound >= b.asked else RETRY_S
        if now - b.asked >= wait:
            b.asked = now
            return channel, True
        return channel, False

    def bound(self, via: NodeId, peer: NodeId, channel: int, *, now: float) -> bool:
        """``via`` answered: ``channel`` (0: none) for ``peer``. False (nothing changed) if we
        never asked it for one."""
        b = self._by_pair.get((via.value, peer.value))
        if b is None:
            return False
        b.channel = channel
        b.bound = now
        return True

    def lost(self, via: NodeId, channel: int) -> bool:
        """``via`` holds no channel ``channel`` (it restarted, or forgot it): every binding of
        ours through it on that number is asked for afresh at its next use. False if none."""
        found = False
        for (v, _), b in self._by_pair.items():
            if v == via.value and b.channel == channel:
                b.channel, b.asked, b.bound = 0, -TTL_S, -TTL_S
                found = True
        return found

    def forget(self, node: NodeId) -> None:
        """``node``'s link is gone or moved: every binding through it or to it."""
        value = node.value
        for key in [k for k in self._by_pair if value in k]:
            del self._by_pair[key]


class RelayChannels:
    """Our part in relay channels: as a relay (BIND answered, channels checked and passed on,
    UNKNOWN told), as an origin (a relayed link's runs on its channel, BOUND and UNKNOWN
    taken) and as a target (whether a channel datagram may open). The relay role owns it and
    lends it its own rules: whether it would forward from one peer to another, what a
    datagram sent through a relay or forwarded counts for, and holding a relay's link."""

    def __init__(
        self,
        *,
        table: ConnectionTable,
        drops: collections.Counter[str],
        stats: collections.Counter[str],
        send: Callable[[NodeId, bytes, float], bool],
        may_forward: Callable[[NodeId, NodeId, float], bool],
        wrapped: Callable[[Connection, RelayPath, float], None],
        forwarded: Callable[[NodeId, NodeId, list[bytes], float], None],
        hold: Callable[[Connection, float], None],
        first: int = 1,
        use: bool = True,
    ) -> None:
        self._table = table
        self._drops = drops
        self._stats = stats
        self._send = send
        self._may_forward = may_forward
        self._wrapped = wrapped
        self._forwarded = forwarded
        self._hold = hold
        self._use = use
        self.table = ChannelTable(first)  # ours, as the relay
        self.bindings = ChannelBindings()  # the ones our relayed links may send on
        # When each origin was last told UNKNOWN (by the id's int; rows only, so bounded).
        self._told_unknown: dict[int, float] = {}

    def forget(self, peer: NodeId) -> None:
        """``peer``'s link is gone: every channel and binding from, to or through it."""
        self.table.forget(peer)
        self.bindings.forget(peer)
        self._told_unknown.pop(peer.value, None)

    def path_changed(self, peer: NodeId) -> None:
        """Our link to ``peer`` moved: our bindings to it or through it are asked afresh (the
        relay checks addresses)."""
        self.bindings.forget(peer)

    def drop(self, reason: str) -> None:
        """One channel datagram the core dropped before the checks here, under ``reason`` (one
        of :data:`CHANNEL_DROPS`)."""
        if reason not in CHANNEL_DROPS:
            raise LocalProtocolError(f"not a relay channel drop reason: {reason}")
        self._drops[reason] += 1

    def run(
        self, datagrams: list[bytes], path: RelayPath, *, now: float
    ) -> tuple[list[bytes], Endpoint] | None:
        """A run of our DATA datagrams for the relayed link over ``path`` (sealed end to
        end) on its channel: the datagrams to send and the relay's address. None: no channel
        now, the caller wraps them (:meth:`ipop.overlay.relay.RelayRole.wrap_run`). Asks the
        relay for one, or renews it, when due."""
        via = path.via
        row = self._table.get(via)
        if not self._use or row is None or type(row.path) is not Endpoint:
            return None
        channel, ask = self.bindings.use(via, path.peer, now=now)
        if ask:
            self._stats["relay_channel_asked"] += 1
            self._send(via, RelayChannel(CHANNEL_BIND, path.peer).encode(), now)
        if not channel:
            return None
        head = CHANNEL_HEADER.pack(TYPE_CHANNEL_TO_RELAY, channel)
        self._wrapped(row, path, now)
        self._stats["relay_channel_sent"] += len(datagrams)
        return [head + d for d in datagrams], row.path

    def on_message(self, msg: RelayChannel, peer: NodeId, now: float) -> None:
        """BIND from ``peer``: as its relay, a channel to the target if we would forward
        there (a refusal as for RELAY_FORWARD) and both links run on our main socket (where
        the channel's datagrams arrive). BOUND from our relay ``peer``: taken only if we asked
        it, for a link of ours that still runs through it."""
        target = msg.target
        if msg.op == CHANNEL_BIND:
            if not self._may_forward(peer, target, now):
                return
            number = 0
            origin_row, target_row = self._table.get(peer), self._table.get(target)
            if (
                origin_row is not None
                and target_row is not None
                and type(origin_row.path) is Endpoint
                and type(target_row.path) is Endpoint
            ):
                number = self.table.bind(peer, target, now=now)
            self._stats["relay_channel_binds"] += 1
            self._send(peer, RelayChannel(CHANNEL_BOUND, target, number).encode(), now)
            return
        if msg.op == CHANNEL_UNKNOWN:
            if self.bindings.lost(peer, msg.channel):
                self._stats["relay_channel_lost"] += 1
            else:
                self._drops["relay_channel_unasked"] += 1
            return
        row = self._table.get(target)
        path = row.path if row is not None else None
        if (
            type(path) is not RelayPath
            or path.via != peer
            or not self.bindings.bound(peer, target, msg.channel, now=now)
        ):
            self._drops["relay_channel_unasked"] += 1
            return
        self._stats["relay_channel_bound" if msg.channel else "relay_channel_none"] += 1

    def forward(
        self, number: int, source: Path, datagrams: list[bytes], *, now: float
    ) -> Endpoint | None:
        """As a relay: where ``datagrams`` (CHANNEL_TO_RELAY on channel ``number``, from
        ``source``) go, the address of our link with the channel's target; None: dropped
        (counted). Only from the address our link with the channel's origin runs on."""
        n = len(datagrams)
        ch = self.table.get(number, now=now)
        if ch is None:
            self._drops["relay_channel_unknown"] += n
            self._tell_unknown(number, source, now)
            return None
        table = self._table
        origin_row = table.get(ch.origin)
        if origin_row is None or origin_row.path != source:
            self._drops["relay_channel_source"] += n
            return None
        target_row = table.get(ch.target)
        if target_row is None or type(target_row.path) is not Endpoint:
            # The target's link went relayed or away: so does the channel (the origin's next
            # BIND is refused, or gets a new channel on a new direct link).
            self._drops["relay_channel_stale"] += n
            self.table.drop(number)
            return None
        self._forwarded(ch.origin, ch.target, datagrams, now)
        self._stats["relay_channel_forwarded"] += n
        return target_row.path

    def _tell_unknown(self, number: int, source: Path, now: float) -> None:
        """Tell the direct peer whose link runs on ``source`` (if any) that we hold no
        channel ``number``: at most once per peer per RETRY_S (a spoofed source gets that
        peer one small authenticated message a while, never more)."""
        for row in self._table:
            if row.path == source:
                key = row.peer.value
                if now - self._told_unknown.get(key, -RETRY_S) >= RETRY_S:
                    self._told_unknown[key] = now
                    self._stats["relay_channel_told_unknown"] += 1
                    msg = RelayChannel(CHANNEL_UNKNOWN, _NO_TARGET, number)
                    self._send(row.peer, msg.encode(), now)
                return

    def from_relay(self, via: NodeId, source: Path, n: int) -> bool:
        """As the target: may ``n`` CHANNEL_FROM_RELAY datagrams from ``source`` be opened as
        relayed through ``via``? Only if our link with ``via`` runs on that address (else
        counted; with ``n`` 0 not: the caller looks further). Nothing else changes before one
        of them opens (:meth:`opened`)."""
        row = self._table.get(via)
        if row is None or row.path != source:
            if n:
                self._drops["relay_channel_relay"] += n
            return False
        return True

    def opened(self, via: NodeId, n: int, now: float) -> None:
        """``n`` datagrams that came on a channel through ``via`` opened: hold its link, as a
        RELAY_DELIVER does."""
        row = self._table.get(via)
        if row is not None:
            self._hold(row, now)
        self._stats["relay_channel_received"] += n
