"""The lane: a native thread that reads the TAP and the UDP socket and handles the lone
packets Python routed to it, and its pure-Python twin, the definition (issue 16, the latency
target; DESIGN.md §8).

Why: a lone packet (a ping) crosses four Python wake-ups per round trip. Measured on the
lab's pair (tcpdump on both ends, 40 pings at 50 ms, medians): a Python wake-up after the
idle gap took 180-370 µs from the datagram's or frame's arrival to the write on the other
side, the four together most of ipop's 0.65-0.86 ms of added RTT, above tinc's 0.31 and a
bare Python tunnel's 0.44-0.53. No event loop in Python removes that; a thread that never
takes the GIL does (its wake-up and work: 60-150 µs).

What the thread does (``_fastpath.Lane``, ``ipop/link/_fastpath.c``): it alone reads the TAP
and the UDP socket (the data plane's readers move to the other ends of two ``SOCK_SEQPACKET``
pairs). A route is one peer's current keys on the main socket's direct path: its addresses
(``vips``, at most 8), its keys both ways (the same objects the link seals and opens with:
the send counter and the replay window each have one owner, whichever thread takes from them,
under their locks), the peer's address, and the limits below.

- A frame read (virtio header, then Ethernet) is the lane's to send (:meth:`PyLane.process`)
  only if the virtio header asks for nothing (no offload batch, no checksum to finish), it is
  IPv4 of at least an IP header, Python has no frame the lane handed up still in hand
  (``done``: so a lone packet never overtakes a batch Python is sealing), its destination is
  one of a route's ``vips``, now is before the route's ``expires``, the frame is at most
  ``max_frame`` and the send counter is below ``counter_limit`` (the rekey threshold: past
  it, Python sees the frame and starts the rekey). Then it is sealed as the DIRECT message
  the data plane seals (``lead``, the two DIRECT bytes, in place of the ethertype, then the
  IP packet) and sent to the route's address.
- A datagram read (:meth:`PyLane.receive`) that the kernel did not coalesce, is DATA under a
  route's receiver index, below its ``recv_limit`` (the keys' message limit) and before its
  ``expires``, while Python has no datagram of the lane's in hand, is checked against the
  replay window, opened and marked, as the link does; if it came from the route's address,
  is a DIRECT IP message whose packet is IPv4, to one of this node's addresses
  (``set_local``), from one of the route's ``vips``, it is written to the TAP behind the
  header the data plane writes (``set_local``), as the data plane's own check delivers it.
- Anything else goes up: a frame as read, a datagram as read (with its source address and
  its GRO segment size) or, once opened, as plaintext with its receiver index and whether it
  was the newest counter (the link's roaming rule needs it): Python handles each as it
  handled what it read itself (:meth:`ipop.core.NodeCore.receive_opened`), then calls
  ``done`` with how many it finished.

Who owns what: Python owns every decision. :class:`ipop.aio.lane.LaneRoutes` routes a peer
only when the data plane would send its frames on the same keys to the same address and
deliver its packets as the lane would; it re-checks every route after each batch and on a
short timer, and unroutes what changed. What the lane sent and received is counted by the
link as its own (``harvest``), so keepalives, liveness, rekeys by count, idle shortcuts and
the path checks see the same traffic as without it.

The native lane and this twin are held equal by ``tests/unit/test_lane.py`` (the same
routes, frames and datagrams: the same datagrams out, packets in, hand-ups, windows and
counters) and fuzzed by ``tools/bench/fastpath_fuzz.py``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Protocol

from ipop.link.fastpath import BatchAead, Payload
from ipop.link.replay import Window
from ipop.wire.header import DATA_MIN_BYTES, TYPE_DATA

__all__ = [
    "FRAME_MAX",
    "ROUTES_MAX",
    "UP",
    "UP_HEADER",
    "UP_OPENED",
    "UP_RAW",
    "VIPS_MAX",
    "VNET_BYTES",
    "Counts",
    "Lane",
    "NativeLane",
    "PyLane",
    "Received",
    "native_lane",
]

VNET_BYTES = 10  # the virtio header before every frame (IFF_VNET_HDR)
FRAME_MAX = 65550 - VNET_BYTES  # the largest frame (Ethernet header included) a route takes
ROUTES_MAX = 256  # routes a lane holds; past it route() returns False
VIPS_MAX = 8  # addresses per route, and of this node
# A datagram handed up: kind, newest, port, IPv4, GRO segment size, two zero bytes, receiver
# index; then the datagram as read (UP_RAW) or, once opened, its plaintext (UP_OPENED).
UP = struct.Struct("!BBH4sH2xI")
UP_HEADER = UP.size
UP_RAW = 0
UP_OPENED = 1
_ETH = 14
_IP_MIN = 20

# (local_index, sent, bytes sent, first, last sent, received, bytes received, first, last
# received): what a route did since it was last harvested (monotonic times; 0.0: none).
Counts = tuple[int, int, int, float, float, int, int, float, float]
# receive(): None (up as read), ("opened", index, newest, plaintext) or ("tap", packet).
Received = tuple[str, int, int, bytes] | tuple[str, bytes] | None


class Lane(Protocol):
    """What both lanes offer (the native one runs them on its thread)."""

    def route(
        self,
        local_index: int,
        vips: tuple[int, ...],
        send: BatchAead,
        remote_index: int,
        host: str,
        port: int,
        max_frame: int,
        counter_limit: int,
        expires: float,
        recv: BatchAead,
        window: Window,
        recv_limit: int,
    ) -> bool:
        """Take the peer whose keys receive under ``local_index`` (replacing its route,
        keeping what it did but was not harvested); False: the table is full."""
        ...

    def unroute(self, local_index: int) -> Counts | None:
        """Forget a route: what it did since the last harvest, or None."""
        ...

    def harvest(self) -> list[Counts]:
        """What each route that sent or received did since the last call."""
        ...

    def set_local(self, accepted: tuple[int, ...], eth: bytes) -> None:
        """This node's addresses, and the header the data plane writes packets behind."""
        ...

    def done(self, which: int, n: int) -> None:
        """``n`` frames (``which`` 0) or datagrams (1) handed up are finished."""
        ...

    def process(self, frame: Payload, now: float) -> tuple[bytes, str, int] | None:
        """A frame read: the datagram and its address, or None (hand it up)."""
        ...

    def receive(self, datagram: bytes, host: str, port: int, now: float) -> Received:
        """A datagram read (not coalesced): what becomes of it."""
        ...

    def stats(self) -> dict[str, int]:
        """Counters: fast, up, send_errors, io_errors, delivered, udp_up, inflight,
        udp_inflight."""
        ...


class NativeLane(Lane, Protocol):
    """The native lane: :class:`Lane` on its thread."""

    def start(self) -> None:
        """Start the thread (it reads the TAP and the UDP socket from now on)."""
        ...

    def stop(self) -> None:
        """Stop the thread and wait for it (before the fds close)."""
        ...


@dataclass(slots=True)
class _Route:
    """One route of :class:`PyLane` (what :meth:`PyLane.route` was given), and what it did
    since the last harvest: ``n`` sent, bytes sent, received, bytes received; ``t`` first
    and last sent, first and last received."""

    local_index: int
    vips: tuple[int, ...]
    send: BatchAead
    remote_index: int
    host: str
    port: int
    max_frame: int
    counter_limit: int
    expires: float
    recv: BatchAead
    window: Window
    recv_limit: int
    n: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    t: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0, 0.0])

    def note(self, k: int, nbytes: int, now: float) -> None:
        self.n[k] += 1
        self.n[k + 1] += nbytes
        if self.t[k] == 0.0:
            self.t[k] = now
        self.t[k + 1] = now

    def counts(self) -> Counts:
        n, t = self.n, self.t
        return (self.local_index, n[0], n[1], t[0], t[1], n[2], n[3], t[2], t[3])


class PyLane:
    """The definition of the native lane, with no thread: :meth:`process` and
    :meth:`receive` are what the thread does with one frame or datagram (the caller sends,
    writes or handles it; :meth:`hand_up` is the thread's count of what went up)."""

    def __init__(self, lead: bytes) -> None:
        if len(lead) != 2:
            raise ValueError("lead must be 2 bytes")
        self._lead = bytes(lead)
        self._routes: dict[int, _Route] = {}
        self._accepted: tuple[int, ...] = ()
        self._eth = b""
        self._inflight = [0, 0]
        self._stats = dict.fromkeys(
            ("fast", "up", "send_errors", "io_errors", "delivered", "udp_up"), 0
        )

    def route(
        self,
        local_index: int,
        vips: tuple[int, ...],
        send: BatchAead,
        remote_index: int,
        host: str,
        port: int,
        max_frame: int,
        counter_limit: int,
        expires: float,
        recv: BatchAead,
        window: Window,
        recv_limit: int,
    ) -> bool:
        _check_vips(vips)
        try:
            IPv4Address(host)
        except ValueError:
            raise ValueError("route out of range") from None
        if (
            not 0 <= local_index <= 0xFFFFFFFF
            or not 0 <= remote_index <= 0xFFFFFFFF
            or not 1 <= port <= 65535
            or not _ETH + _IP_MIN <= max_frame <= FRAME_MAX
        ):
            raise ValueError("route out of range")
        new = _Route(
            local_index, tuple(vips), send, remote_index, host, port, max_frame,
            counter_limit, expires, recv, window, recv_limit,
        )  # fmt: skip
        old = self._routes.get(local_index)
        if old is not None:
            new.n, new.t = old.n, old.t
        elif len(self._routes) >= ROUTES_MAX:
            return False
        self._routes[local_index] = new
        return True

    def unroute(self, local_index: int) -> Counts | None:
        r = self._routes.pop(local_index, None)
        return None if r is None else r.counts()

    def harvest(self) -> list[Counts]:
        out = []
        for r in self._routes.values():
            if r.n[0] or r.n[2]:
                out.append(r.counts())
                r.n, r.t = [0, 0, 0, 0], [0.0, 0.0, 0.0, 0.0]
        return out

    def set_local(self, accepted: tuple[int, ...], eth: bytes) -> None:
        _check_vips(accepted)
        if len(eth) not in (0, VNET_BYTES + _ETH):
            raise ValueError("eth must be a virtio and an Ethernet header")
        self._accepted, self._eth = tuple(accepted), bytes(eth)

    def done(self, which: int, n: int) -> None:
        if which not in (0, 1) or not 0 <= n <= self._inflight[which]:
            raise ValueError("done() more than were handed up")
        self._inflight[which] -= n

    def hand_up(self, which: int) -> None:
        """What the thread does with what :meth:`process` (0) or :meth:`receive` (1) did not
        take: hands it up, and counts it in flight until :meth:`done`."""
        self._inflight[which] += 1
        self._stats["udp_up" if which else "up"] += 1

    def process(self, frame: Payload, now: float) -> tuple[bytes, str, int] | None:
        f = memoryview(frame)
        flen = len(f) - VNET_BYTES
        if len(f) > VNET_BYTES + FRAME_MAX or flen < _ETH + _IP_MIN:
            return None
        if f[0] or f[1] or f[VNET_BYTES + 12] != 8 or f[VNET_BYTES + 13]:
            return None
        if self._inflight[0]:
            return None
        dst = int.from_bytes(f[VNET_BYTES + 30 : VNET_BYTES + 34], "big")
        r = next((r for r in self._routes.values() if dst in r.vips), None)
        if r is None or now >= r.expires or flen > r.max_frame:
            return None
        if r.send.counter >= r.counter_limit:
            return None
        data = r.send.seal_next(r.remote_index, [self._lead + f[VNET_BYTES + _ETH :]])[0]
        r.note(0, len(data), now)
        return data, r.host, r.port

    def receive(self, datagram: bytes, host: str, port: int, now: float) -> Received:
        d = datagram
        if len(d) < DATA_MIN_BYTES or d[0] != TYPE_DATA or self._inflight[1]:
            return None
        index = int.from_bytes(d[1:5], "big")
        r = self._routes.get(index)
        counter = int.from_bytes(d[5:13], "big")
        if r is None or now >= r.expires or counter >= r.recv_limit:
            return None
        top = r.window.top
        _stop, got = r.recv.open([d], 0, index, r.recv_limit, r.window)
        if not got or isinstance(got[0], str):  # refused or forged: Python opens and counts
            return None
        plain = got[0]
        r.note(2, len(d), now)
        if (
            host == r.host
            and port == r.port
            and len(plain) >= 2 + _IP_MIN
            and plain[:2] == self._lead
            and plain[2] >> 4 == 4
            and self._eth
            and int.from_bytes(plain[18:22], "big") in self._accepted
            and int.from_bytes(plain[14:18], "big") in r.vips
        ):
            return ("tap", plain[2:])
        return ("opened", index, int(counter > top), plain)

    def stats(self) -> dict[str, int]:
        return {**self._stats, "inflight": self._inflight[0], "udp_inflight": self._inflight[1]}


def _check_vips(vips: tuple[int, ...]) -> None:
    if len(vips) > VIPS_MAX or not all(0 <= v <= 0xFFFFFFFF for v in vips):
        raise ValueError("at most 8 IPv4 addresses")


def native_lane(
    tap_fd: int, udp_fd: int, tap_up: int, udp_up: int, lead: bytes
) -> NativeLane | None:
    """A native lane over these fds (not started), or None when the native module is not
    the backend (``IPOP_FASTPATH=python``, or not built): the data plane reads the fds
    itself then."""
    from ipop.link import fastpath

    if fastpath.BACKEND != "native":
        return None
    from ipop.link import _fastpath  # type: ignore[attr-defined]

    lane: NativeLane = _fastpath.Lane(tap_fd, udp_fd, tap_up, udp_up, lead)
    return lane
