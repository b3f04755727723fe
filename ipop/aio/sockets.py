"""Extra UDP sockets read on the event loop: the punching sockets of :mod:`ipop.nat.portguess`.

The main overlay socket belongs to the batched data plane (:mod:`ipop.aio.dataplane`). Punching
sockets carry openers, a handshake, and for a pair that found its path this way that one peer's
traffic, which the node hands to the data plane's fast path as it drains (the data plane handles
a drain's datagrams together): a plain ``add_reader`` with a bounded drain is enough.

Also owns :func:`dont_fragment`, the one socket option every overlay socket gets: each datagram
leaves with the IP don't-fragment bit, so no datagram of ours is ever fragmented on the way.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import Counter
from collections.abc import Callable
from typing import Final

__all__ = ["DROP_REASONS", "LoopUdpSocket", "dont_fragment"]

# Every reason a LoopUdpSocket counts in the errors counter it is given.
DROP_REASONS: Final = frozenset({"punch_send_busy", "punch_send_error", "punch_recv_error"})

# linux/in.h (Python 3.11's socket module does not name them).
IP_MTU_DISCOVER = 10
IP_PMTUDISC_PROBE = 3

# Datagrams read per wake-up at most: a flood on one punching socket must not starve the loop.
_DRAIN_MAX = 64


def dont_fragment(sock: socket.socket) -> None:
    """Every datagram ``sock`` sends carries DF, GSO segments included.

    Linux's default (``IP_PMTUDISC_WANT``) sets DF only on a datagram that fits the path MTU the
    kernel knows; a GSO send is one large buffer, so its segments left without DF and were
    fragmented by the first smaller link (many NATs and firewalls drop fragments).

    ``PROBE`` rather than ``DO``: DF, and the kernel ignores the path MTUs it learns from ICMP
    "fragmentation needed" (it limits sends by the outgoing interface's MTU only). Each path's
    size is found by probing instead (:mod:`ipop.link.pmtu`, RFC 8899's choice): ICMP often
    never arrives, a forged one (nothing authenticates it) would otherwise shrink a peer's path
    to 552 bytes for ten minutes, and a learned value would keep probes from finding that a
    path grew back. A send larger than the interface still fails at once (``EMSGSIZE``; a GSO
    send with ``EINVAL``): :class:`ipop.aio.udp.UdpSocket` limits that destination only.
    """
    sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_PROBE)


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

    def _readable(self) -> None:
        for _ in range(_DRAIN_MAX):
            try:
                data, addr = self._sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._errors["punch_recv_error"] += 1
                return
            self._on_datagram(data, addr)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
