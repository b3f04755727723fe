"""The overlay's one UDP socket: non-blocking sends that never raise, and the kernel's UDP
segmentation offloads (GSO on the way out, GRO on the way in), with DF on every datagram.

Also owns those options' pieces that port guessing's punching sockets (:mod:`ipop.aio.sockets`)
share: :func:`dont_fragment`, :func:`enable_gro`, :func:`gro_split` and :func:`gso_end`.

Split from :mod:`ipop.aio.dataplane`, which drains it; :class:`IoDrop` names the counters of
both (I/O refusals, as opposed to the packets' verdicts).
"""

from __future__ import annotations

import errno
import logging
import socket
import struct
import sys
import time
from collections import Counter
from collections.abc import Callable
from enum import StrEnum

from ipop.types import Endpoint

__all__ = [
    "GRO_CMSG_SPACE",
    "GSO_LIMITS_MAX",
    "GSO_MAX_BYTES",
    "GSO_MAX_SEGMENTS",
    "GSO_RETRY_S",
    "IoDrop",
    "UdpSocket",
    "dont_fragment",
    "enable_gro",
    "gro_split",
    "gso_cmsg",
    "gso_end",
    "split_segments",
]

log = logging.getLogger("ipop.aio.dataplane")

_RECV_MAX = 65535
# Linux UDP offload socket options (linux/udp.h); DESIGN.md §8 verified both on this kernel.
_UDP_SEGMENT = 103
_UDP_GRO = 104
_U16 = struct.Struct("=H").pack
GRO_CMSG_SPACE = socket.CMSG_SPACE(4)
# Kernel limits for one GSO send: UDP_MAX_SEGMENTS (64 on older kernels) and the IP length.
GSO_MAX_SEGMENTS = 64
GSO_MAX_BYTES = 65000
# After a destination refused a GSO send, runs to it of that segment size or larger go one
# datagram per call this long; then GSO is tried again (a path's MTU can grow back, and the
# kernel forgets a learned path MTU after 10 minutes).
GSO_RETRY_S = 30.0
# Destinations with a GSO limit remembered at once (one per peer path that refused one).
GSO_LIMITS_MAX = 1024


# linux/in.h (Python 3.11's socket module does not name them).
IP_MTU_DISCOVER = 10
IP_PMTUDISC_PROBE = 3


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


def gso_cmsg(size: int) -> list[tuple[int, int, bytes]]:
    """The ancillary data of a GSO ``sendmsg`` whose segments are ``size`` bytes."""
    return [(socket.SOL_UDP, _UDP_SEGMENT, _U16(size))]


def gso_end(datagrams: list[bytes], i: int) -> int:
    """Where the GSO send that starts at ``datagrams[i]`` ends (exclusive): a run of
    equal-size datagrams, optionally ending with one shorter one, at most
    :data:`GSO_MAX_SEGMENTS` of them and :data:`GSO_MAX_BYTES` in all."""
    n = len(datagrams)
    size = total = len(datagrams[i])
    if size > 0:
        # The common run, compared in C over its sizes: as many of one size as one send
        # takes, then maybe one shorter one. Anything else is the loop below, the definition.
        m = min(GSO_MAX_SEGMENTS, GSO_MAX_BYTES // size, n - i)
        sizes = list(map(len, datagrams[i : i + m + 1]))
        if m > 1 and sizes[:m] == [size] * m:
            j = i + m
            if (
                j < n
                and m < GSO_MAX_SEGMENTS
                and sizes[m] < size
                and m * size + sizes[m] <= GSO_MAX_BYTES
            ):
                j += 1
            return j
    j = i + 1
    while j < n and j - i < GSO_MAX_SEGMENTS:
        length = len(datagrams[j])
        if length > size or total + length > GSO_MAX_BYTES:
            break
        total += length
        j += 1
        if length < size:  # a shorter segment can only be the last one
            break
    return j


def enable_gro(sock: socket.socket) -> bool:
    """Ask the kernel to hand ``sock``'s runs of datagrams back coalesced; False if it can't."""
    try:
        sock.setsockopt(socket.SOL_UDP, _UDP_GRO, 1)
    except OSError:
        return False
    return True


def gro_split(data: bytes, anc: list[tuple[int, int, bytes]]) -> list[bytes]:
    """The datagrams in one ``recvmsg`` result (``data``, its ancillary data), which GRO may
    have coalesced: every segment has the size its ``UDP_GRO`` message gives but the last."""
    for level, kind, cdata in anc:
        if level == socket.SOL_UDP and kind == _UDP_GRO and len(cdata) >= 4:
            seg = int.from_bytes(cdata[:4], sys.byteorder)
            if 0 < seg < len(data):
                return split_segments(data, seg)
    return [data]


def split_segments(data: bytes, seg: int) -> list[bytes]:
    """``data`` cut every ``seg`` bytes (``0 < seg``): a GRO run's datagrams."""
    n = len(data)
    # The segments, cut in C (map over slices): no Python step per datagram.
    cuts = map(slice, range(0, n, seg), range(seg, n + seg, seg))
    return list(map(data.__getitem__, cuts))


class IoDrop(StrEnum):
    """This module's own counter names: I/O refusals (the packets' verdicts are
    :class:`ipop.vnet.filter.Drop` and :class:`ipop.vnet.owners.LookupDrop`)."""

    RECV_ERROR = "recv_error"
    TAP_READ_ERROR = "tap_read_error"
    TAP_WRITE_ERROR = "tap_write_error"
    TAP_WOULD_BLOCK = "tap_would_block"
    TAP_NOT_READY = "tap_not_ready"
    NO_LOCAL_HOST = "no_local_host"
    LOOKUP_FAILED = "lookup_failed"
    SEND_WOULD_BLOCK = "send_would_block"
    SEND_ERROR = "send_error"
    SEND_TOO_BIG = "send_too_big"
    GSO_REFUSED = "gso_refused"
    # Too big for its peer's path and not answerable with ICMP (see ipop.vnet.toobig).
    TOO_BIG_FOR_PATH = "too_big_for_path"
    GRO_UNAVAILABLE = "gro_unavailable"
    # A TAP frame with offloads (a begun checksum, a TCP batch) we could not finish or cut:
    # not IPv4 TCP/UDP, or headers that do not add up (ipop.vnet.offload says which).
    TAP_OFFLOAD = "tap_offload"


class UdpSocket:
    """The overlay's one UDP socket, non-blocking; :meth:`sendto` never raises.

    With ``offload`` (the default) it uses the kernel's UDP segmentation offloads (DESIGN.md
    §8): :meth:`send_batch` hands a run of equal-size datagrams for one address to the kernel
    in one ``sendmsg`` with ``UDP_SEGMENT`` (one trip through the stack instead of one per
    datagram; the wire still carries separate datagrams), and ``UDP_GRO`` lets the kernel hand
    back such runs coalesced, which :meth:`recv_batch` splits again.

    Every datagram carries DF (:func:`dont_fragment`). A refused GSO send
    concerns one destination's route (its interface's MTU is smaller than the segments, or it
    cannot offload): that run leaves one datagram per call, and runs of that segment size or larger
    to that destination do so for :data:`GSO_RETRY_S`; every other destination keeps batching.
    A single datagram larger than its route's MTU (``EMSGSIZE``) is counted as ``send_too_big``
    (the path beyond is probed: :mod:`ipop.link.pmtu`).
    """

    def __init__(
        self,
        listen: Endpoint,
        *,
        offload: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        dont_fragment(self.sock)
        self.sock.bind((listen.host, listen.port))
        self.sock.setblocking(False)
        self.errors: Counter[IoDrop] = Counter()
        self._sendto = self.sock.sendto
        self._clock = clock
        self.gso = offload
        # Destination -> (smallest segment size its path refused in a GSO send, until when).
        # Keyed by peers' endpoints; bounded by GSO_LIMITS_MAX, oldest entry evicted first.
        self._gso_limits: dict[Endpoint, tuple[int, float]] = {}
        self.gro = offload and enable_gro(self.sock)
        if offload and not self.gro:
            self.errors[IoDrop.GRO_UNAVAILABLE] += 1

    @property
    def port(self) -> int:
        port: int = self.sock.getsockname()[1]
        return port

    def sendto(self, data: bytes, addr: Endpoint) -> None:
        try:
            self._sendto(data, (addr.host, addr.port))
        except BlockingIOError:
            self.errors[IoDrop.SEND_WOULD_BLOCK] += 1
        except OSError as exc:
            self._send_failed(exc, addr)

    def _send_failed(self, exc: OSError, addr: Endpoint) -> None:
        if exc.errno == errno.EMSGSIZE:  # larger than the route's MTU
            self.errors[IoDrop.SEND_TOO_BIG] += 1
        else:
            self.errors[IoDrop.SEND_ERROR] += 1
        log.debug("udp send to %s: %s", addr, exc)

    def gso_limit(self, addr: Endpoint) -> int | None:
        """The segment size from which GSO sends to ``addr`` are not tried now (None: any)."""
        limit = self._gso_limits.get(addr)
        if limit is None:
            return None
        if limit[1] <= self._clock():
            del self._gso_limits[addr]
            return None
        return limit[0]

    def _gso_refused(self, size: int, addr: Endpoint, exc: OSError) -> None:
        limits = self._gso_limits
        old = limits.pop(addr, None)
        if old is None:
            log.info("udp GSO to %s refused (%s): one datagram per call there", addr, exc)
            if len(limits) >= GSO_LIMITS_MAX:
                del limits[next(iter(limits))]
        elif old[0] < size:
            size = old[0]
        limits[addr] = (size, self._clock() + GSO_RETRY_S)
        self.errors[IoDrop.GSO_REFUSED] += 1

    def send_batch(self, datagrams: list[bytes], addr: Endpoint) -> None:
        """Send ``datagrams`` to ``addr`` in order, as few ``sendmsg`` calls as GSO allows
        (:func:`gso_end`), with segments smaller than the destination's :meth:`gso_limit`."""
        n = len(datagrams)
        if n == 1 or not self.gso:
            for data in datagrams:
                self.sendto(data, addr)
            return
        limit = self.gso_limit(addr) if self._gso_limits else None
        sendmsg = self.sock.sendmsg
        i = 0
        while i < n:
            size = len(datagrams[i])
            if limit is not None and size >= limit:
                self.sendto(datagrams[i], addr)
                i += 1
                continue
            j = gso_end(datagrams, i)
            if j - i == 1:
                self.sendto(datagrams[i], addr)
            else:
                try:
                    sendmsg(datagrams[i:j], gso_cmsg(size), 0, addr)
                except BlockingIOError:
                    self.errors[IoDrop.SEND_WOULD_BLOCK] += j - i
                except OSError as exc:
                    # This route's MTU is below the segments (EINVAL under DF), or it
                    # cannot offload (EIO): this destination only, and this run goes singly.
                    self._gso_refused(size, addr, exc)
                    limit = self.gso_limit(addr)
                    for data in datagrams[i:j]:
                        self.sendto(data, addr)
            i = j

    def recv_batch(self) -> tuple[list[bytes], tuple[str, int]]:
        """One receive call: the datagrams it carried (several if GRO coalesced a run)."""
        if not self.gro:
            data, addr = self.sock.recvfrom(_RECV_MAX)
            return [data], addr
        data, anc, _flags, addr = self.sock.recvmsg(_RECV_MAX, GRO_CMSG_SPACE)
        return gro_split(data, anc), addr

    def close(self) -> None:
        self.sock.close()
