"""Extra UDP sockets read on the event loop: the punching sockets of :mod:`ipop.nat.portguess`.

The main overlay socket belongs to the batched data plane (:mod:`ipop.aio.dataplane`). Punching
sockets carry openers, a handshake, and for a pair that found its path this way that one peer's
traffic, which the node hands to the data plane's fast path as it drains (the data plane handles
a drain's datagrams together): a plain ``add_reader`` with a bounded drain is enough. That
traffic gets the main socket's offloads (:mod:`ipop.aio.udp`): GSO for a run of sealed
datagrams, GRO on the way in, and DF on every datagram.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import Counter
from collections.abc import Callable
from typing import Final

from ipop.aio.udp import GRO_CMSG_SPACE, dont_fragment, enable_gro, gro_split, gso_cmsg, gso_end

__all__ = ["DROP_REASONS", "LoopUdpSocket"]

# Every reason a LoopUdpSocket counts in the errors counter it is given.
DROP_REASONS: Final = frozenset(
    {"punch_send_busy", "punch_send_error", "punch_recv_error", "punch_gso_refused"}
)

# Datagrams read per wake-up at most: a flood on one punching socket must not starve the loop.
_DRAIN_MAX = 64
# What one receive call reads at most: a GRO-coalesced run.
_RECV_MAX = 65535


class LoopUdpSocket:
    """A non-blocking UDP socket bound to ``(host, 0)`` whose datagrams go to ``on_datagram``."""

    def __init__(
        self,
        host: str,
        on_datagram: Callable[[bytes, tuple[str, int]], None],
        errors: Counter[str],
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._on_datagram = on_datagram
        self._errors = errors
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self._sock.setblocking(False)
            dont_fragment(self._sock)
            self._sock.bind((host, 0))
            self._loop.add_reader(self._sock.fileno(), self._readable)
        except OSError:
            self._sock.close()
            raise
        self._gro = enable_gro(self._sock)
        # One peer's path per socket: a GSO send it refuses (a smaller MTU on the way) turns
        # GSO off for this socket only.
        self._gso = True
        self._closed = False

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        if self._closed:
            return
        try:
            self._sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            self._errors["punch_send_busy"] += 1
        except OSError:
            self._errors["punch_send_error"] += 1

    def send_batch(self, datagrams: list[bytes], addr: tuple[str, int]) -> None:
        """Send ``datagrams`` in order, runs of them in one GSO ``sendmsg`` each."""
        n = len(datagrams)
        i = 0
        while i < n:
            j = gso_end(datagrams, i) if self._gso else i + 1
            if j - i == 1 or self._closed:
                self.sendto(datagrams[i], addr)
                i += 1
                continue
            try:
                self._sock.sendmsg(datagrams[i:j], gso_cmsg(len(datagrams[i])), 0, addr)
            except (BlockingIOError, InterruptedError):
                self._errors["punch_send_busy"] += j - i
            except OSError:
                self._errors["punch_gso_refused"] += 1
                self._gso = False
                for data in datagrams[i:j]:
                    self.sendto(data, addr)
            i = j

    def _readable(self) -> None:
        for _ in range(_DRAIN_MAX):
            try:
                if self._gro:
                    raw, anc, _flags, addr = self._sock.recvmsg(_RECV_MAX, GRO_CMSG_SPACE)
                    datagrams = gro_split(raw, anc)
                else:
                    data, addr = self._sock.recvfrom(_RECV_MAX)
                    datagrams = [data]
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._errors["punch_recv_error"] += 1
                return
            for data in datagrams:
                self._on_datagram(data, addr)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
