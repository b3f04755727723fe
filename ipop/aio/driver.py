"""The one adapter between a sans-IO core and asyncio (DESIGN.md §3, after aioquic's protocol).

It owns nothing but the plumbing: feed input with ``now``, drain datagrams and events, re-arm
exactly one timer. The same driver runs a node on a real UDP socket (``clock=time.time``) and in
the simulator (``clock=loop.time`` on the virtual-time loop), so protocol behaviour cannot
differ between the two.

Why a UNIX-scale clock: cores check certificate validity and handshake timestamps against
``now``, so ``now`` must be wall-clock-like; timers are converted to loop delays here.
"""

from __future__ import annotations

import asyncio
import operator
from collections.abc import Callable
from typing import Any, Protocol

from ipop.types import Endpoint, Path


class SansIOCore(Protocol):
    def receive_datagram(self, data: bytes, path: Path, *, now: float) -> None: ...
    def handle_timer(self, *, now: float) -> None: ...
    def get_timer(self) -> float | None: ...
    def datagrams_to_send(self, *, now: float) -> list[tuple[bytes, Path]]: ...
    def next_event(self) -> Any: ...


class DatagramSocket(Protocol):
    """What the driver needs of a socket: the real UDP one and the simulator's both fit."""

    def sendto(self, data: bytes, addr: Endpoint) -> None: ...


_FIRST = operator.itemgetter(0)
_SECOND = operator.itemgetter(1)


def _run_end(sizes: list[int], paths: list[Path], i: int, whole: bool = True) -> int:
    """The end (exclusive) of the run from ``i`` of datagrams of one size to one path.

    ``whole``: a run of two or more is first compared in C as the whole rest, or all of it but
    a shorter last one (the common batch: a relay's or a relayed link's run). That costs the
    length of the rest whatever the run's, so a caller allows it once a batch: tried at each
    datagram, a batch of short runs (a cold start's fan-out to many peers) cost its square,
    and a 30-node lab cold start's daemons lagged (echoes answered late, pairs lost)."""
    n, size, path = len(sizes), sizes[i], paths[i]
    j = i + 1
    if j == n or sizes[j] != size or not ((p := paths[j]) is path or p == path):
        return j  # a run of one (checked first, in constant time)
    if whole:
        for k in (n, n - 1):
            m = k - i
            if m > 1 and sizes[i:k] == [size] * m and paths[i:k].count(path) == m:
                return k
    j += 1
    while j < n and sizes[j] == size and ((p := paths[j]) is path or p == path):
        j += 1
    return j


class Driver:
    """Drives one core: call :meth:`datagram_received` for input and :meth:`pump` after commands.

    ``on_event`` sees every event the core emits, in order. Datagrams whose path is not an
    underlay :class:`Endpoint` (relay paths) go to ``on_other_path``; a core that handles relays
    itself never produces them.
    """

    def __init__(
        self,
        core: SansIOCore,
        sock: DatagramSocket,
        *,
        clock: Callable[[], float],
        on_event: Callable[[Any], None] = lambda ev: None,
        on_other_path: Callable[[bytes, Path], None] | None = None,
    ) -> None:
        self.core = core
        self.sock = sock
        self.clock = clock
        self.on_event = on_event
        self.on_other_path = on_other_path
        # A socket that sends runs (ipop.aio.udp.UdpSocket: UDP GSO) gets the core's
        # consecutive datagrams of one size to one address at once (a relay's forwards, a
        # relayed link's runs); the simulator's sends one by one.
        self._send_batch: Callable[[list[bytes], Endpoint], None] | None = getattr(
            sock, "send_batch", None
        )
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._closed = False
        self._handing_up = False  # pump()'s event loop is running (see there)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self._closed:
            return
        # The simulator already hands an Endpoint; a real socket's tuple becomes one.
        path = addr if type(addr) is Endpoint else Endpoint(addr[0], addr[1])
        self.core.receive_datagram(data, path, now=self.clock())
        self.pump()

    def pump(self) -> None:
        """Send what the core queued, hand its events up, and re-arm its timer.

        A handler that commands the core (the DHT answering a request it was just handed, via
        ``send_routed``) calls pump again: that inner call sends what the command queued and
        returns, and the outer loop hands up the next event. Events still go up in order, each
        after the datagrams of the one before. Why not recurse: each inner call used to hand up
        the rest of the queue itself, ~7 frames per event, and a bootstrap handed ~140 DHT
        requests in one batch at a 32-daemon cold start hit the recursion limit, lost the
        batch, and in some labs never got its virtual IP.
        """
        if self._closed:
            return
        self._send(self.core.datagrams_to_send(now=self.clock()))
        if self._handing_up:
            return
        self._handing_up = True
        try:
            while (ev := self.core.next_event()) is not None:
                self.on_event(ev)
        finally:
            self._handing_up = False
        self._arm()

    def _send(self, out: list[tuple[bytes, Path]]) -> None:
        send_batch = self._send_batch
        i, n = 0, len(out)
        sizes: list[int] = []
        paths: list[Path] = []
        whole = True  # _run_end's comparison of the whole rest: once a batch
        if send_batch is not None and n > 1:
            # Each datagram's size and path, read in C (see _run_end).
            sizes = list(map(len, map(_FIRST, out)))
            paths = list(map(_SECOND, out))
        while i < n:
            data, path = out[i]
            if not isinstance(path, Endpoint):
                if self.on_other_path is not None:
                    self.on_other_path(data, path)
                i += 1
                continue
            j = i + 1
            if send_batch is not None and n > 1:
                # Consecutive datagrams of one size to one address: one GSO send. Only of one
                # size: a router forwards or drops a GSO packet whole, so a datagram too big
                # for a hop beyond us (a path MTU probe) would take smaller ones with it.
                j = _run_end(sizes, paths, i, whole)
                whole = whole and j == i + 1  # (a run of one never tries it)
            if j == i + 1:
                self.sock.sendto(data, path)
            else:
                assert send_batch is not None
                send_batch(list(map(_FIRST, out[i:j])), path)
            i = j

    def _arm(self) -> None:
        deadline = self.core.get_timer()
        if deadline == self._timer_at:
            return
        if deadline is not None and self._timer_at is not None and self._timer_at <= deadline:
            # Keep the earlier timer: deadlines mostly move later as traffic flows (keepalive
            # due = last send + interval), and re-arming after every batch would cost a cancel
            # and a new TimerHandle each time. Firing early is harmless: cores act only on
            # what is due, and _fire re-arms for the real deadline.
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is not None:
            self._timer = self._loop.call_later(max(0.0, deadline - self.clock()), self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._timer_at = None
        if self._closed:
            return
        self.core.handle_timer(now=self.clock())
        self.pump()

    def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
