"""The router's LAN side: a packet socket bound to the LAN interface (a bridge or a NIC) that
reads whole frames with the kernel's offload metadata, a send-only one that writes them, and
what that metadata asks of us before a frame may be handled or routed: checksums to finish and
batches to cut.

The data plane reads through :meth:`LanSocket.read_into` (on :attr:`LanSocket.fd`) and writes
plain Ethernet frames to :attr:`LanSocket.out_fd`. Only frames the interface itself receives
arrive (to its MAC, broadcast, multicast: it is not put in promiscuous mode), so LAN-to-LAN
unicast stays on the LAN; transmissions (ours included) are not looped back
(``PACKET_IGNORE_OUTGOING``).

The metadata. With ``PACKET_VNET_HDR`` every frame read comes after a ``struct
virtio_net_hdr``, as a VM's virtio NIC would get it (host byte order)::

    0      1          2         4          6            8             10
    +------+----------+---------+----------+------------+-------------+--------------
    |flags | gso_type | hdr_len | gso_size | csum_start | csum_offset | frame ...
    +------+----------+---------+----------+------------+-------------+--------------

Only ``flags`` (``NEEDS_CSUM``, ``DATA_VALID``), ``gso_type`` and ``gso_size`` are used. The
header cannot be switched off per direction, and a frame written without one would be parsed
as one: that is why writes go through a second socket (protocol 0: it receives nothing).

Checksum offload. A host on a veth, a VM's virtio NIC or a container on a bridge hands its
TCP and UDP packets on with the checksum not done (the kernel's CHECKSUM_PARTIAL): the field
holds only the pseudo-header's sum, for a NIC that never comes (``NEEDS_CSUM``).
:func:`finish_frame` computes the checksum as the NIC would have, before the frame is handled
here (DHCP, DNS) or sealed into the overlay, where a remote kernel would otherwise drop it as
corrupt. ``DATA_VALID`` (the kernel or the NIC verified it) and frames without either flag (a
finished checksum, as a wire carries) are left as they are. A frame marked partial that cannot
be completed is dropped and counted under :data:`CsumDrop`: it could only arrive corrupt.

Segmentation offload. The same hosts hand on TCP in batches of up to 64 kB (TSO/GSO), UDP in
batches of equal datagrams (``UDP_SEGMENT``: QUIC stacks, iperf3), and a NIC may merge what it
receives (GRO): the packet socket sees one IPv4 packet larger than the MTU, which the kernel
would cut only on its way out of a NIC; ``gso_type`` says which kind and ``gso_size`` the
payload of each segment. Sealed whole it would need IP fragmentation on the underlay.
:func:`split_batch` cuts it as the kernel's software GSO would, every checksum finished: TCP
(:func:`split_tcp`) into segments of ``gso_size`` that also fit the MTU the router's DHCP
gives its hosts (sequence numbers, IP ids, FIN/PSH on the last and CWR on the first only); UDP
(:func:`split_udp`) into datagrams of ``gso_size`` payload each (the last one shorter), each
with its own IP total length, IP id, UDP length and checksum. A datagram's size is the
sender's: one that does not fit the MTU is dropped as any oversize frame. The socket hands the
pieces to the data plane one read at a time (:meth:`LanSocket.pending`). A frame above the MTU
not marked as a batch (a host with a larger MTU than DHCP gave) is cut if it is TCP, dropped
(``lan_oversize``) otherwise, as a NIC with that MTU would. The kernel charges a batch whole
to the read socket's buffer, so that buffer is sized for bursts of batches (:data:`RCVBUF`).
"""

from __future__ import annotations

import contextlib
import errno
import socket
import struct
from collections import Counter, deque
from enum import StrEnum
from pathlib import Path

from ipop.errors import ConfigError
from ipop.vnet.gro import GSO_NONE, GSO_TCPV4, NEEDS_CSUM, VNET_HDR
from ipop.vnet.packet import (
    ETH_HLEN,
    ETH_P_IP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    IPV4_MIN_HLEN,
    transport_checksum,
)

__all__ = [
    "CSUM_REASONS",
    "DATA_VALID",
    "GSO_NONE",
    "GSO_TCPV4",
    "GSO_UDP_L4",
    "NEEDS_CSUM",
    "VNET_HDR",
    "CsumDrop",
    "LanSocket",
    "finish_frame",
    "split_batch",
    "split_tcp",
    "split_udp",
]

ETH_P_ALL = 0x0003
SO_RCVBUFFORCE = 33  # asm-generic/socket.h: past rmem_max (the router runs as root)
# The read socket's buffer, as the overlay socket's: the kernel counts a batch whole (up to
# 64 kB), so the default (~200 kB) overflows after a few batches in one burst.
RCVBUF = 4 << 20
SOL_PACKET = 263
# linux/if_packet.h
PACKET_VNET_HDR = 15
PACKET_IGNORE_OUTGOING = 23
# struct virtio_net_hdr: VNET_HDR, NEEDS_CSUM (the sender left the checksum to a NIC) and the
# GSO types a TAP uses too come from ipop.vnet.gro.
DATA_VALID = 2  # VIRTIO_NET_HDR_F_DATA_VALID: the kernel or the NIC verified it
GSO_UDP_L4 = 5  # UDP_SEGMENT batches and UDP GRO (not 3: the old UFO, IP fragments)
_GSO_ECN = 0x80  # a flag on TCP batches (CWR set): the split handles CWR itself
# Where the checksum field sits in each transport header, and the header's minimum length.
_CSUM_AT = {IPPROTO_TCP: (16, 20), IPPROTO_UDP: (6, 8)}
_IP_FRAG = 0x3FFF  # MF and the fragment offset
_IPV4 = struct.Struct("!BxHxxHxBxx4s4s")  # ver|ihl, total_len, flags|frag, proto, src, dst
_TCP_FIN, _TCP_PSH, _TCP_CWR = 0x01, 0x08, 0x80


class CsumDrop(StrEnum):
    """Why a LAN frame was dropped before any handling (counted as ``lan.<reason>``)."""

    MALFORMED = "csum_malformed"  # partial or a batch, but its IPv4/TCP/UDP headers do not add up
    FRAGMENT = "csum_fragment"  # partial or a batch, yet a fragment (the checksum spans others)
    PROTOCOL = "csum_protocol"  # partial or a batch, not IPv4 TCP or UDP: we cannot finish it
    TRUNCATED = "lan_truncated"  # larger than the read buffer (MSG_TRUNC)
    OVERSIZE = "lan_oversize"  # UDP above the MTU: a datagram is not ours to cut smaller
    GSO_TYPE = "lan_gso_type"  # a batch of a kind we do not cut (TCPv6, UFO)


# Every name LanSocket.drops may hold.
CSUM_REASONS: frozenset[str] = frozenset(r.value for r in CsumDrop)


def _ipv4(frame: bytes | bytearray | memoryview) -> tuple[int, int, int, int, int] | CsumDrop:
    """(header length, total length, protocol, src, dst) of the unfragmented IPv4 packet in
    ``frame``, checked to lie inside it; else why not."""
    if len(frame) < ETH_HLEN + IPV4_MIN_HLEN or (frame[12] << 8 | frame[13]) != ETH_P_IP:
        return CsumDrop.PROTOCOL  # IPv6, VLAN-in-frame...: the data plane routes none of it
    vihl, total, frag, proto, src, dst = _IPV4.unpack_from(frame, ETH_HLEN)
    ihl = (vihl & 0x0F) * 4
    if vihl >> 4 != 4 or ihl < IPV4_MIN_HLEN or total < ihl or ETH_HLEN + total > len(frame):
        return CsumDrop.MALFORMED
    if frag & _IP_FRAG:
        return CsumDrop.FRAGMENT
    return ihl, total, proto, int.from_bytes(src, "big"), int.from_bytes(dst, "big")


def finish_frame(frame: bytearray | memoryview) -> CsumDrop | None:
    """Complete in place the TCP/UDP checksum of ``frame`` (one Ethernet frame, exactly as
    read, that the kernel marked ``NEEDS_CSUM``); None when the frame is fit to handle, else
    why it must be dropped. In place because the data plane seals straight out of its read
    buffer; never raises, whatever the bytes."""
    ip = _ipv4(frame)
    if isinstance(ip, CsumDrop):
        return ip
    ihl, total, proto, src, dst = ip
    where = _CSUM_AT.get(proto)
    if where is None:
        return CsumDrop.PROTOCOL
    at, min_len = where
    start, end = ETH_HLEN + ihl, ETH_HLEN + total  # bytes past ``end``: Ethernet padding
    if end - start < min_len:
        return CsumDrop.MALFORMED
    field = start + at
    frame[field : field + 2] = b"\x00\x00"
    csum = transport_checksum(proto, src, dst, frame[start:end])
    if csum == 0 and proto == IPPROTO_UDP:
        csum = 0xFFFF  # a zero UDP checksum says "none" (RFC 768)
    frame[field : field + 2] = csum.to_bytes(2, "big")
    return None


def _ip_sum(head: bytearray, ihl: int) -> int:
    """Zero the total length, id and checksum of the IPv4 header after the Ethernet one in
    ``head``; the sum of what is left (:func:`_sum16`), which no segment changes."""
    ip = ETH_HLEN
    head[ip + 2 : ip + 6] = bytes(4)
    head[ip + 10 : ip + 12] = b"\x00\x00"
    return _sum16(head[ip : ip + ihl])


def _set_ip(head: bytearray, ip_sum: int, total: int, ident: int) -> None:
    """Give the IPv4 header in ``head`` (whose other words sum to ``ip_sum``) a total length,
    an id and the checksum that goes with them."""
    ip = ETH_HLEN
    ident &= 0xFFFF
    head[ip + 2 : ip + 4] = total.to_bytes(2, "big")
    head[ip + 4 : ip + 6] = ident.to_bytes(2, "big")
    head[ip + 10 : ip + 12] = _csum(ip_sum + total + ident).to_bytes(2, "big")


def _sum16(data: bytes | bytearray | memoryview) -> int:
    """The ones' complement sum of ``data``'s 16-bit words, modulo 0xFFFF (0 stands for
    0xFFFF): 2**16 ≡ 1, so the whole buffer as one integer, in C (as
    ``ipop.vnet.packet.internet_checksum`` does); an odd last byte is a word's high half."""
    n = int.from_bytes(data, "big")
    return (n << 8 if len(data) & 1 else n) % 0xFFFF


def _csum(total: int) -> int:
    """The checksum field for words summing to ``total`` (any nonzero sum, before the modulo):
    the complement of their ones' complement sum, 0 when that sum is 0xFFFF (as the kernel's
    csum_fold gives; UDP then writes 0xFFFF, RFC 768)."""
    s = total % 0xFFFF
    return 0xFFFF - s if s else 0


def split_tcp(
    frame: bytes | bytearray | memoryview, mtu: int, mss: int = 0
) -> list[bytes] | CsumDrop:
    """The IPv4 TCP packet in ``frame`` cut into frames of at most ``mtu`` IP bytes and, if
    ``mss`` is given (a batch's ``gso_size``), ``mss`` bytes of data each, every checksum
    finished (whatever the original's held); why not, if it cannot be."""
    ip = _ipv4(frame)
    if isinstance(ip, CsumDrop):
        return ip
    ihl, total, proto, src_n, dst_n = ip
    if proto != IPPROTO_TCP:
        return CsumDrop.OVERSIZE
    start, end = ETH_HLEN + ihl, ETH_HLEN + total
    thl = (frame[start + 12] >> 4) * 4 if end - start >= 20 else 0
    chunk = mtu - ihl - thl
    if mss > 0:
        chunk = min(chunk, mss)
    if thl < 20 or start + thl > end or chunk <= 0:
        return CsumDrop.MALFORMED
    head = bytearray(frame[: start + thl])  # Ethernet, IPv4 and TCP headers, per segment
    ident = int.from_bytes(head[ETH_HLEN + 4 : ETH_HLEN + 6], "big")
    seq = int.from_bytes(head[start + 4 : start + 8], "big")
    flags = head[start + 13]
    ip_sum = _ip_sum(head, ihl)
    # The pseudo-header's addresses and protocol; each segment adds its length, its header
    # (sequence number and flags change) and its data. Summed modulo 0xFFFF.
    base = src_n + dst_n + IPPROTO_TCP
    data = memoryview(frame)[start + thl : end]
    out: list[bytes] = []
    offsets = range(0, max(len(data), 1), chunk)
    for i, at in enumerate(offsets):
        piece = data[at : at + chunk]
        last = i == len(offsets) - 1
        _set_ip(head, ip_sum, ihl + thl + len(piece), ident + i)
        head[start + 4 : start + 8] = ((seq + at) & 0xFFFFFFFF).to_bytes(4, "big")
        # FIN and PSH end the batch: the last segment's; CWR was sent once, with the first.
        head[start + 13] = (
            flags & ~(0 if last else _TCP_FIN | _TCP_PSH) & ~(0 if i == 0 else _TCP_CWR)
        )
        head[start + 16 : start + 18] = b"\x00\x00"
        csum = _csum(base + thl + len(piece) + _sum16(head[start:]) + _sum16(piece))
        head[start + 16 : start + 18] = csum.to_bytes(2, "big")
        out.append(bytes(head) + piece)
    return out


def split_udp(frame: bytes | bytearray | memoryview, size: int, mtu: int) -> list[bytes] | CsumDrop:
    """The IPv4 UDP batch in ``frame`` cut into datagrams of ``size`` payload bytes each (the
    last one shorter), as the sender's ``send`` calls would have been: each with its IP total
    length, IP id (one up per datagram), IP checksum, UDP length and full UDP checksum; why
    not, if it cannot be (a datagram above ``mtu`` IP bytes: ``OVERSIZE``)."""
    ip = _ipv4(frame)
    if isinstance(ip, CsumDrop):
        return ip
    ihl, total, proto, src_n, dst_n = ip
    start, end = ETH_HLEN + ihl, ETH_HLEN + total
    if proto != IPPROTO_UDP or end - start < 8 or size <= 0:
        return CsumDrop.MALFORMED
    if ihl + 8 + min(size, end - start - 8) > mtu:
        return CsumDrop.OVERSIZE
    head = bytearray(frame[: start + 8])  # Ethernet, IPv4 and UDP headers, rewritten per datagram
    ident = int.from_bytes(head[ETH_HLEN + 4 : ETH_HLEN + 6], "big")
    ip_sum = _ip_sum(head, ihl)
    # Pseudo-header (addresses, protocol) and ports; each datagram adds its length twice
    # (pseudo-header and UDP header) and its payload. Words are summed modulo 0xFFFF.
    base = src_n + dst_n + IPPROTO_UDP + int.from_bytes(head[start : start + 4], "big")
    data = memoryview(frame)[start + 8 : end]
    out: list[bytes] = []
    for i, at in enumerate(range(0, max(len(data), 1), size)):
        piece = data[at : at + size]
        ulen = 8 + len(piece)
        _set_ip(head, ip_sum, ihl + ulen, ident + i)
        head[start + 4 : start + 6] = ulen.to_bytes(2, "big")
        csum = _csum(base + 2 * ulen + _sum16(piece)) or 0xFFFF  # 0 would say "none"
        head[start + 6 : start + 8] = csum.to_bytes(2, "big")
        out.append(bytes(head) + piece)
    return out


def split_batch(
    frame: bytes | bytearray | memoryview, gso_type: int, gso_size: int, mtu: int
) -> list[bytes] | CsumDrop:
    """The batch in ``frame`` cut as its ``gso_type`` says (:func:`split_tcp`,
    :func:`split_udp`); ``GSO_NONE``: a frame above ``mtu``, cut if it is TCP."""
    kind = gso_type & ~_GSO_ECN
    if kind == GSO_NONE:
        return split_tcp(frame, mtu)
    if kind == GSO_TCPV4:
        return split_tcp(frame, mtu, gso_size)
    if kind == GSO_UDP_L4:
        return split_udp(frame, gso_size, mtu)
    return CsumDrop.GSO_TYPE


def _packet_socket(proto: int) -> socket.socket:
    try:
        return socket.socket(socket.AF_PACKET, socket.SOCK_RAW, proto)
    except OSError as exc:
        raise ConfigError(
            "router.interface", f"cannot open a packet socket: {exc}", "run as root"
        ) from exc


class LanSocket:
    def __init__(self, ifname: str, *, mtu: int) -> None:
        self.sock = _packet_socket(socket.htons(ETH_P_ALL))
        try:
            # Protocol 0: a socket that sends and never receives (see the module docstring).
            self.out = _packet_socket(0)
        except ConfigError:
            self.sock.close()
            raise
        try:
            with contextlib.suppress(OSError):  # older kernels: we only lose a filter
                self.sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            # Without it, hosts that leave checksums or segmentation to their NIC get no TCP,
            # UDP or DNS.
            self.sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
            except OSError:  # without CAP_NET_ADMIN: as much as rmem_max allows
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
            self.sock.bind((ifname, ETH_P_ALL))
            self.out.bind((ifname, 0))
        except OSError as exc:
            self.close()
            raise ConfigError(
                "router.interface", f"cannot bind to {ifname!r}: {exc}", "name an existing LAN"
            ) from exc
        self.sock.setblocking(False)
        self.out.setblocking(False)
        self.name = ifname
        self.fd = self.sock.fileno()
        self.out_fd = self.out.fileno()
        self.mac: bytes = bytes(self.sock.getsockname()[4][:6])
        # The largest IPv4 packet handed on as it is (what the router's DHCP gives its hosts).
        self.mtu = mtu
        # Each read's virtio_net_hdr, reused (read_into scatters the frame behind it).
        self._vnet = bytearray(VNET_HDR.size)
        # Pieces of one cut batch not read yet: never more than one batch's (split_batch).
        self._pending: deque[bytes] = deque()
        # Only CsumDrop members: see CSUM_REASONS.
        self.drops: Counter[CsumDrop] = Counter()
        # Frames whose checksum we completed ("csum_completed") or the kernel verified, and
        # batches cut ("gso_split" for TCP, "uso_split" for UDP).
        self.counters: Counter[str] = Counter()
        # Router solicitations and the like would only be counted drops.
        with contextlib.suppress(OSError):
            Path(f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6").write_text("1")

    def pending(self) -> bool:
        """True while pieces of a cut batch wait to be read (the fd may not be readable)."""
        return bool(self._pending)

    def read_into(self, buf: bytearray) -> int:
        """Read one frame into ``buf`` with its checksum finished (:func:`finish_frame`), or
        the next piece of a cut batch (:func:`split_batch`); its length, or 0 for a frame
        dropped (counted). Raises as ``os.readv`` does (``BlockingIOError`` once the socket
        is empty)."""
        if self._pending:
            frame = self._pending.popleft()
            buf[: len(frame)] = frame
            return len(frame)
        try:
            size, _, msg_flags, _ = self.sock.recvmsg_into((self._vnet, buf))
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            # The kernel had no virtio header for the frame (a batch of a kind virtio has no
            # type for: SCTP, ESP) and consumed it.
            self.drops[CsumDrop.GSO_TYPE] += 1
            return 0
        size -= VNET_HDR.size
        if msg_flags & socket.MSG_TRUNC or size < 0:
            self.drops[CsumDrop.TRUNCATED] += 1
            return 0
        flags, gso_type, _, gso_size, _, _ = VNET_HDR.unpack(self._vnet)
        if gso_type != GSO_NONE or (size > ETH_HLEN + self.mtu and buf[12:14] == b"\x08\x00"):
            pieces = split_batch(memoryview(buf)[:size], gso_type, gso_size, self.mtu)
            if isinstance(pieces, CsumDrop):
                self.drops[pieces] += 1
                return 0
            self.counters["uso_split" if gso_type == GSO_UDP_L4 else "gso_split"] += 1
            self._pending.extend(pieces[1:])
            first = pieces[0]
            buf[: len(first)] = first
            return len(first)
        if not flags & NEEDS_CSUM:
            if flags & DATA_VALID:
                self.counters["csum_valid"] += 1
            return size
        dropped = finish_frame(memoryview(buf)[:size])
        if dropped is not None:
            self.drops[dropped] += 1
            return 0
        self.counters["csum_completed"] += 1
        return size

    def close(self) -> None:
        self.sock.close()
        self.out.close()
