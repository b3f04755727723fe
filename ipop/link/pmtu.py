"""Path MTU of each link, found by probing over the link itself (RFC 8899 style, sans-IO).

Owns the probe messages and the per-peer search. ICMP "fragmentation needed" is never needed:
many paths drop it (a PMTU black hole), so a size counts as usable only once the peer has
acknowledged an authenticated probe of exactly that size. Every overlay datagram carries DF
(:func:`ipop.aio.udp.dont_fragment`), so a probe larger than the path simply never arrives.

Messages (the payload of an authenticated DATA datagram; ``PROBE_TAG`` is a payload type the
overlay's messages never start with, so the link layer takes them before any LinkMessage)::

    probe: | 0x7E | 0x00 | id (u32 BE) | zero padding ... |   sealed to exactly the probed size
    ack:   | 0x7E | 0x01 | id (u32 BE) |                       the probe's id, nothing else

Sizes are whole DATA datagrams (the UDP payload: header, ciphertext, tag) of the session with
the peer itself.

Relayed paths (``RelayPath``: A -> relay R -> B) are probed end to end, like direct ones: the
probe is sealed under the A-B session and crosses both hops inside RELAY_FORWARD and
RELAY_DELIVER, each of which adds :data:`RELAY_OVERHEAD` bytes (their framing and the hop's own
DATA header and tag), so a probe of size s arrives only if every hop carries s +
:data:`RELAY_OVERHEAD`, and B's ack (authenticated under the A-B session) is the proof. Probes
of such a path start at :data:`MAX_DATAGRAM` less that overhead (larger ones could not leave).
Chosen over the other design, a relay that cannot forward a datagram answering "too big, fits
N": that needs a new message, the relay's own probing of every next hop it relays to (it sends
no data of its own there, so nothing probes it), a rate limit per source, and a rule for
trusting a shrink the relay asserts; end-to-end probes need none of it, find the smallest hop
wherever it is, and give nobody a new way to lower a path's size. Only an acknowledged probe
raises a size, and a shrink needs two rounds in a row in which the larger probes went
unanswered: whoever can do that (a relay or anyone on the path) can drop all traffic anyway.
Cost: a round of about ten probes a minute per relayed peer that data flows to. The same
search serves routes over the ring (:mod:`ipop.routes`: no path, a top size of its own, probes
carried as routed messages).

Search: a *round* sends one probe of each coarse size (:data:`COARSE`, 64 bytes apart) below
the path's :func:`ceiling` and one of the ceiling itself, plus
the size confirmed so far and fine sizes every 8 bytes above it, and ends
:data:`ROUND_WAIT_S` later, or a round trip after its first ack; its result is the largest
size acknowledged. The first round starts once data flows to the peer (:meth:`PathMtuProber.want`)
over a link that is up, again whenever its path changes; a link that carries only the
overlay's own small messages is never probed (probing every ring link doubled the datagrams of
a 1,000-node simulation and cost its wall time a third). A round whose result
changed the confirmed size is followed at once by another (fine around the new size), any
other by one :data:`ROUND_INTERVAL_S` later (a path can grow or shrink). A result smaller
than the confirmed size is taken only when the next round, started at once, agrees (a lost
probe alone does not shrink a path); a round with no acknowledgement at all changes nothing.
Until the first result a peer has no limit (what the node did before probing existed).
:attr:`PathMtuProber.limits` maps each peer to its confirmed datagram size: the data plane
reads it for every packet it seals.

Bounds: one entry per peer with an up session (removed with the session; a route prober's
owner bounds its own), and at most one round's probes outstanding per peer.
"""

from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass, field
from typing import Final

from ipop.types import ID_BYTES, NodeId, Path, RelayPath
from ipop.wire.header import DATA_MIN_BYTES

__all__ = [
    "COARSE",
    "MAX_DATAGRAM",
    "MESSAGE_BYTES",
    "MIN_SPREAD_S",
    "PROBE_TAG",
    "RELAY_OVERHEAD",
    "ROUND_INTERVAL_S",
    "ROUND_WAIT_S",
    "PathMtuProber",
    "ack_payload",
    "ceiling",
    "probe_payload",
]

PROBE_TAG: Final = 0x7E
_PROBE: Final = 0x00
_ACK: Final = 0x01
_MSG = struct.Struct("!BBI")
MESSAGE_BYTES: Final = _MSG.size
# The largest datagram worth probing: an IPv4 path of 1500 bytes less IP and UDP headers.
MAX_DATAGRAM: Final = 1500 - 28
# Coarse sizes of a round, largest first; the smallest is what a 576-byte IPv4 path carries.
COARSE: Final = (*range(MAX_DATAGRAM, 1000, -64), 548)
# What a relay hop adds around a datagram of a relayed session: RELAY_FORWARD's (and
# RELAY_DELIVER's) type byte and node id (ipop.overlay.messages), inside the hop's own DATA
# datagram. The largest relayed datagram is MAX_DATAGRAM less this.
RELAY_OVERHEAD: Final = 1 + ID_BYTES + DATA_MIN_BYTES
FINE_STEP: Final = 8
# A round ends this long after its probes left at the latest, and sooner once the first ack
# is in: probes leave together, so the rest arrive within about one round trip of it (at least
# MIN_SPREAD_S). Traffic to the peer runs without a limit until the first result, and on a
# small path its big packets vanish meanwhile: the sooner, the better.
ROUND_WAIT_S: Final = 1.0
MIN_SPREAD_S: Final = 0.05
ROUND_INTERVAL_S: Final = 60.0


def probe_payload(probe_id: int, size: int) -> bytes:
    """A probe whose sealed DATA datagram is exactly ``size`` bytes."""
    pad = size - DATA_MIN_BYTES - MESSAGE_BYTES
    if pad < 0:
        raise ValueError(f"probe of {size} bytes is smaller than its message")
    return _MSG.pack(PROBE_TAG, _PROBE, probe_id) + bytes(pad)


def ack_payload(probe_id: int) -> bytes:
    return _MSG.pack(PROBE_TAG, _ACK, probe_id)


def ceiling(path: Path) -> int:
    """The largest datagram of a session on ``path`` that can leave at all."""
    return MAX_DATAGRAM - RELAY_OVERHEAD if type(path) is RelayPath else MAX_DATAGRAM


@dataclass
class _Search:
    """One path's MTU search: its ceiling, the current round and its probes."""

    path: Path | None  # None: a route over the ring (see ipop.core), not a link's path
    top: int  # the largest size probed (the path's ceiling)
    # When the current round ends (its result is taken) and when the next one starts.
    round_start: float = 0.0
    round_end: float = 0.0
    next_round: float = 0.0
    outstanding: dict[int, int] = field(default_factory=dict)  # probe id -> size
    acked: int = 0  # the largest size acknowledged in the current round
    confirmed: int = 0  # 0: nothing confirmed yet
    shrink_seen: int = 0  # a smaller result waiting for the next round's agreement


class PathMtuProber:
    """The probe search of every peer; :meth:`due` says which probes leave now."""

    def __init__(self) -> None:
        self.limits: dict[NodeId, int] = {}
        self.stats: Counter[str] = Counter()
        self._searches: dict[NodeId, _Search] = {}
        # Peers data flows to (worth probing), and the paths of up peers not probed (yet).
        self.wanted: set[NodeId] = set()
        self._dormant: dict[NodeId, tuple[Path | None, int]] = {}
        self._next_id = 0

    def start(self, peer: NodeId, path: Path | None, *, now: float, top: int | None = None) -> None:
        """``peer``'s path came up or changed: search it from scratch if data flows to it.
        Sizes up to ``top`` are probed (default: :func:`ceiling`; needed without a path)."""
        self.limits.pop(peer, None)
        if top is None:
            if path is None:
                raise ValueError("a search without a path needs its top size")
            top = ceiling(path)
        if peer in self.wanted:
            self._searches[peer] = _Search(path, top, next_round=now)
        else:
            self._searches.pop(peer, None)
            self._dormant[peer] = (path, top)

    def want(self, peer: NodeId, *, now: float) -> bool:
        """Data flows to ``peer``: probe its path. True if a search starts now."""
        self.wanted.add(peer)
        dormant = self._dormant.pop(peer, None)
        if dormant is None:
            return False
        self._searches[peer] = _Search(*dormant, next_round=now)
        return True

    def forget(self, peer: NodeId) -> None:
        self._searches.pop(peer, None)
        self.limits.pop(peer, None)
        self._dormant.pop(peer, None)
        self.wanted.discard(peer)

    def next_time(self) -> float | None:
        times = [s.round_end or s.next_round for s in self._searches.values()]
        return min(times) if times else None

    def on_ack(self, peer: NodeId, payload: bytes, *, now: float) -> bool:
        """An authenticated ack from ``peer``; False if it is malformed. An ack of no
        outstanding probe (late: its round ended; or duplicated) is only counted."""
        if len(payload) != MESSAGE_BYTES:
            return False
        s = self._searches.get(peer)
        size = None if s is None else s.outstanding.pop(_MSG.unpack(payload)[2], None)
        if s is None or size is None or now >= s.round_end:
            self.stats["late_acks"] += 1
            return True
        self.stats["acks"] += 1
        if not s.acked:
            rtt = now - s.round_start
            s.round_end = min(s.round_end, now + max(MIN_SPREAD_S, rtt))
        s.acked = max(s.acked, size)
        return True

    def due(self, now: float) -> list[tuple[NodeId, Path | None, bytes]]:
        """Finish the rounds that ended and start those that are due: the probes to seal and
        send, as ``(peer, path, payload)``."""
        out: list[tuple[NodeId, Path | None, bytes]] = []
        for peer, s in self._searches.items():
            if s.round_end:
                if now < s.round_end:
                    continue
                self._finish(peer, s, now)
            if now < s.next_round:
                continue
            top = s.top
            sizes = {size for size in COARSE if size < top}
            sizes.add(top)
            if s.confirmed:
                sizes.update(range(s.confirmed, min(s.confirmed + 64, top + 1), FINE_STEP))
            # Smallest first: a route's far end checks each probe's origin (ipop.overlay.origin)
            # and may not know us yet; only the small probes carry our certificate, so the
            # larger ones must arrive after it (largest first, all of them were dropped there
            # and the route measured 548 bytes until the next round, a minute later).
            for size in sorted(sizes):
                probe_id = self._next_id
                self._next_id = (self._next_id + 1) & 0xFFFFFFFF
                s.outstanding[probe_id] = size
                out.append((peer, s.path, probe_payload(probe_id, size)))
            s.acked = 0
            s.round_start = now
            s.round_end = now + ROUND_WAIT_S
            self.stats["probes_sent"] += len(sizes)
        return out

    def _finish(self, peer: NodeId, s: _Search, now: float) -> None:
        result, s.acked = s.acked, 0
        s.outstanding.clear()
        s.round_end = 0.0
        s.next_round = now + ROUND_INTERVAL_S
        if not result:
            return  # everything lost: no news about the size
        first = not s.confirmed
        if result < s.confirmed and s.shrink_seen == 0:
            s.shrink_seen = result
            s.next_round = now  # ask again before believing the path shrank
            return
        if result < s.confirmed:
            result = max(result, s.shrink_seen)
            self.stats["shrunk"] += 1
        elif result > s.confirmed and not first:
            self.stats["grown"] += 1
        s.shrink_seen = 0
        if result != s.confirmed:
            s.next_round = now  # a fine round around the new size, at once
        s.confirmed = result
        self.limits[peer] = result
