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
from collections import Counter, deque
from pathlib import Path

from ipop.errors import ConfigError
from ipop.vnet.gro import GSO_NONE, GSO_TCPV4, NEEDS_CSUM, VNET_HDR
from ipop.vnet.offload import (
    CSUM_REASONS,
    GSO_UDP_L4,
    CsumDrop,
    finish_frame,
    split_batch,
    split_tcp,
    split_udp,
)
from ipop.vnet.packet import ETH_HLEN

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
# GSO types a TAP uses too come from ipop.vnet.gro; finishing and cutting (shared with the TAP)
# from ipop.vnet.offload.
DATA_VALID = 2  # VIRTIO_NET_HDR_F_DATA_VALID: the kernel or the NIC verified it


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
        self._pending: deque[bytes | bytearray] = deque()
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
