"""The router's LAN side: one AF_PACKET socket bound to the LAN interface (a bridge or a NIC),
and the completion of the transport checksums that LAN hosts leave to their NIC.

The data plane reads and writes whole Ethernet frames on its fd as on a TAP, but reads through
:meth:`LanSocket.read_into`. Only frames the interface itself receives arrive (to its MAC,
broadcast, multicast: it is not put in promiscuous mode), so LAN-to-LAN unicast stays on the
LAN; our own transmissions are not looped back (``PACKET_IGNORE_OUTGOING``).

Checksum offload. A host on a veth, a VM's virtio NIC or a container on a bridge hands its
TCP and UDP packets on with the checksum not done (the kernel's CHECKSUM_PARTIAL): the field
holds only the pseudo-header's sum, for a NIC that never comes. A packet socket sees such a
frame as it is, and says so in its ``PACKET_AUXDATA`` control message (``tp_status`` has
``TP_STATUS_CSUMNOTREADY``). :func:`finish_frame` computes the checksum as the NIC would have,
before the frame is handled here (DHCP, DNS) or sealed into the overlay, where a remote
kernel would otherwise drop it as corrupt. ``TP_STATUS_CSUM_VALID`` (the kernel or the NIC
verified it) and frames without either flag (a finished checksum, as a wire carries) are left
as they are. A frame marked partial that cannot be completed is dropped and counted under
:data:`CsumDrop`: it could only arrive corrupt.

Segmentation offload. The same hosts hand on TCP in batches of up to 64 kB (TSO/GSO), and a
NIC may merge what it receives (GRO): the packet socket sees one IPv4 packet larger than the
MTU, which the kernel would cut into segments only on its way out of a NIC. Sealed whole it
would need IP fragmentation on the underlay. :func:`split_tcp` cuts it as a NIC would (each
segment within the MTU the router's DHCP gives its hosts, headers copied, sequence numbers,
IP ids, FIN/PSH on the last and CWR on the first only, both checksums finished); the socket
hands the segments to the data plane one read at a time (:meth:`LanSocket.pending`). A UDP
batch (UDP GSO) cannot be cut without the segment size, which a packet socket does not give:
it is dropped and counted (``lan_oversize``).
"""

from __future__ import annotations

import contextlib
import socket
import struct
from collections import Counter, deque
from enum import StrEnum
from pathlib import Path

from ipop.errors import ConfigError
from ipop.vnet.packet import (
    ETH_HLEN,
    ETH_P_IP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    IPV4_MIN_HLEN,
    internet_checksum,
    transport_checksum,
)

__all__ = [
    "CSUM_REASONS",
    "TP_STATUS_CSUMNOTREADY",
    "TP_STATUS_CSUM_VALID",
    "CsumDrop",
    "LanSocket",
    "finish_frame",
    "split_tcp",
]

ETH_P_ALL = 0x0003
SOL_PACKET = 263
# linux/if_packet.h
PACKET_AUXDATA = 8
PACKET_IGNORE_OUTGOING = 23
TP_STATUS_CSUMNOTREADY = 1 << 3
TP_STATUS_CSUM_VALID = 1 << 7
# struct tpacket_auxdata: tp_status, tp_len, tp_snaplen (u32), tp_mac, tp_net, tp_vlan_tci,
# tp_vlan_tpid (u16); only tp_status is read.
_AUXDATA_LEN = 20
_AUX_STATUS = struct.Struct("=I")
_CMSG_SPACE = socket.CMSG_SPACE(_AUXDATA_LEN)
# Where the checksum field sits in each transport header, and the header's minimum length.
_CSUM_AT = {IPPROTO_TCP: (16, 20), IPPROTO_UDP: (6, 8)}
_IP_FRAG = 0x3FFF  # MF and the fragment offset
_IPV4 = struct.Struct("!BxHxxHxBxx4s4s")  # ver|ihl, total_len, flags|frag, proto, src, dst
_TCP_FIN, _TCP_PSH, _TCP_CWR = 0x01, 0x08, 0x80


class CsumDrop(StrEnum):
    """Why a LAN frame was dropped before any handling (counted as ``lan.<reason>``)."""

    MALFORMED = "csum_malformed"  # marked partial, but its IPv4/TCP/UDP headers do not add up
    FRAGMENT = "csum_fragment"  # marked partial, yet a fragment (the checksum spans others)
    PROTOCOL = "csum_protocol"  # marked partial, not IPv4 TCP or UDP: we cannot complete it
    TRUNCATED = "lan_truncated"  # larger than the read buffer (MSG_TRUNC)
    OVERSIZE = "lan_oversize"  # an IPv4 packet above the MTU that is not TCP (UDP GSO)


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


def finish_frame(frame: bytearray | memoryview, status: int) -> CsumDrop | None:
    """Complete in place the TCP/UDP checksum of ``frame`` (one Ethernet frame, exactly as
    read) if ``status`` (``tp_status``) says the sender left it to a NIC; None when the frame
    is fit to handle, else why it must be dropped. In place because the data plane seals
    straight out of its read buffer; never raises, whatever the bytes."""
    if not status & TP_STATUS_CSUMNOTREADY:
        return None  # finished by the sender, or verified (TP_STATUS_CSUM_VALID)
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


def split_tcp(frame: bytes | bytearray | memoryview, mtu: int) -> list[bytes] | CsumDrop:
    """The IPv4 TCP packet in ``frame`` cut into frames of at most ``mtu`` IP bytes each,
    every checksum finished (whatever the original's held); why not, if it cannot be."""
    ip = _ipv4(frame)
    if isinstance(ip, CsumDrop):
        return ip
    ihl, total, proto, src_n, dst_n = ip
    if proto != IPPROTO_TCP:
        return CsumDrop.OVERSIZE
    start, end = ETH_HLEN + ihl, ETH_HLEN + total
    thl = (frame[start + 12] >> 4) * 4 if end - start >= 20 else 0
    chunk = mtu - ihl - thl
    if thl < 20 or start + thl > end or chunk <= 0:
        return CsumDrop.MALFORMED
    eth_ip = bytearray(frame[:start])
    tcp = bytearray(frame[start : start + thl])
    data = bytes(frame[start + thl : end])
    ident = int.from_bytes(eth_ip[ETH_HLEN + 4 : ETH_HLEN + 6], "big")
    seq = int.from_bytes(tcp[4:8], "big")
    flags = tcp[13]
    out: list[bytes] = []
    offsets = range(0, max(len(data), 1), chunk)
    for i, at in enumerate(offsets):
        piece = data[at : at + chunk]
        last = i == len(offsets) - 1
        eth_ip[ETH_HLEN + 2 : ETH_HLEN + 4] = (ihl + thl + len(piece)).to_bytes(2, "big")
        eth_ip[ETH_HLEN + 4 : ETH_HLEN + 6] = ((ident + i) & 0xFFFF).to_bytes(2, "big")
        eth_ip[ETH_HLEN + 10 : ETH_HLEN + 12] = b"\x00\x00"
        ip_csum = internet_checksum(eth_ip[ETH_HLEN:start])
        eth_ip[ETH_HLEN + 10 : ETH_HLEN + 12] = ip_csum.to_bytes(2, "big")
        tcp[4:8] = ((seq + at) & 0xFFFFFFFF).to_bytes(4, "big")
        # FIN and PSH end the batch: the last segment's; CWR was sent once, with the first.
        tcp[13] = flags & ~(0 if last else _TCP_FIN | _TCP_PSH) & ~(0 if i == 0 else _TCP_CWR)
        tcp[16:18] = b"\x00\x00"
        segment = bytes(tcp) + piece
        csum = transport_checksum(IPPROTO_TCP, src_n, dst_n, segment)
        out.append(bytes(eth_ip) + segment[:16] + csum.to_bytes(2, "big") + segment[18:])
    return out


class LanSocket:
    def __init__(self, ifname: str, *, mtu: int) -> None:
        try:
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        except OSError as exc:
            raise ConfigError(
                "router.interface", f"cannot open a packet socket: {exc}", "run as root"
            ) from exc
        try:
            with contextlib.suppress(OSError):  # older kernels: we only lose a filter
                self.sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            # Without it, hosts that leave checksums to their NIC get no TCP, UDP or DNS.
            self.sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
            self.sock.bind((ifname, ETH_P_ALL))
        except OSError as exc:
            self.sock.close()
            raise ConfigError(
                "router.interface", f"cannot bind to {ifname!r}: {exc}", "name an existing LAN"
            ) from exc
        self.sock.setblocking(False)
        self.name = ifname
        self.fd = self.sock.fileno()
        self.mac: bytes = bytes(self.sock.getsockname()[4][:6])
        # The largest IPv4 packet handed on as it is (what the router's DHCP gives its hosts).
        self.mtu = mtu
        # Segments of one cut batch not read yet: never more than one batch's (split_tcp).
        self._pending: deque[bytes] = deque()
        # Only CsumDrop members: see CSUM_REASONS.
        self.drops: Counter[CsumDrop] = Counter()
        # Frames whose checksum we completed ("csum_completed") or the kernel verified.
        self.counters: Counter[str] = Counter()
        # Router solicitations and the like would only be counted drops.
        with contextlib.suppress(OSError):
            Path(f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6").write_text("1")

    def pending(self) -> bool:
        """True while segments of a cut batch wait to be read (the fd may not be readable)."""
        return bool(self._pending)

    def read_into(self, buf: bytearray) -> int:
        """Read one frame into ``buf`` with its checksum finished (:func:`finish_frame`), or
        the next segment of a cut batch (:func:`split_tcp`); its length, or 0 for a frame
        dropped (counted). Raises as ``os.readv`` does (``BlockingIOError`` once the socket
        is empty)."""
        if self._pending:
            frame = self._pending.popleft()
            buf[: len(frame)] = frame
            return len(frame)
        size, anc, flags, _ = self.sock.recvmsg_into((buf,), _CMSG_SPACE)
        if flags & socket.MSG_TRUNC:
            self.drops[CsumDrop.TRUNCATED] += 1
            return 0
        if size > ETH_HLEN + self.mtu and buf[12:14] == b"\x08\x00":
            segments = split_tcp(memoryview(buf)[:size], self.mtu)
            if isinstance(segments, CsumDrop):
                self.drops[segments] += 1
                return 0
            self.counters["gso_split"] += 1
            self._pending.extend(segments[1:])
            first = segments[0]
            buf[: len(first)] = first
            return len(first)
        status = 0
        for level, kind, data in anc:
            if level == SOL_PACKET and kind == PACKET_AUXDATA and len(data) >= _AUX_STATUS.size:
                status = _AUX_STATUS.unpack_from(data)[0]
        if not status & TP_STATUS_CSUMNOTREADY:
            if status & TP_STATUS_CSUM_VALID:
                self.counters["csum_valid"] += 1
            return size
        dropped = finish_frame(memoryview(buf)[:size], status)
        if dropped is not None:
            self.drops[dropped] += 1
            return 0
        self.counters["csum_completed"] += 1
        return size

    def close(self) -> None:
        self.sock.close()
