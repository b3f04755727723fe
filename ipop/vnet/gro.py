"""Receive coalescing for the TAP (sans-IO): the TCP segments of one flow that arrive together
over the overlay become one large packet, written to the TAP once, as a NIC's GRO would.

Why: the kernel runs its whole receive path (IP, TCP, the socket's wake-up) inside each TAP
write. Profiled on ``python -m tools.lab.pmtu`` the receiving daemon spent a third of its time
in those writes, one per inner packet; on a 1124-byte path the same bytes take a third more
packets than on a 1500-byte one, so that cost alone held the small path under 80 % of the
large one. A write of a coalesced packet costs about what one segment's did.

The TAP is opened with ``IFF_VNET_HDR`` (:mod:`ipop.aio.tap`): every frame written starts
with a ``struct virtio_net_hdr`` (host byte order, as :mod:`router.lan` reads one)::

    0      1          2         4          6            8             10
    +------+----------+---------+----------+------------+-------------+--------------
    |flags | gso_type | hdr_len | gso_size | csum_start | csum_offset | frame ...
    +------+----------+---------+----------+------------+-------------+--------------

A frame written as it came gets :data:`NO_GSO` (all zero: the kernel checks its checksum as
it always did). A coalesced one gets ``GSO_TCPV4`` with ``gso_size`` the payload of each
segment, and ``NEEDS_CSUM`` with the TCP checksum field holding only the pseudo-header's sum
(CHECKSUM_PARTIAL, what a local sender hands a NIC); the kernel takes such a packet as a
batch of segments whose checksums were verified. They were not, but every byte came sealed
by the peer that owns the packet's source address (AEAD, and the data plane's owner check
ran on each segment before this): only that peer could make one wrong, and only its own
TCP stream would suffer. The wire is unchanged: peers send plain segments, with or without
this.

What is coalesced (the rules of Linux's own TCP GRO, a little stricter): adjacent packets in
one batch, each IPv4 without options or fragmentation, TCP with ACK and nothing but ACK and
PSH, carrying data; the same IP header but for length, id and checksum; the same TCP header
but for sequence number, checksum and PSH (ack number, window and options, timestamps
included, equal); each segment starting where the previous one ended; every segment of the
same size but the last, which may be shorter; PSH only on the last. At most
:data:`MAX_SEGMENTS` segments and :data:`MAX_BYTES` bytes. Anything else is written as it
came, in the same order.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Final

from ipop.vnet.packet import ETH_HLEN, IPPROTO_TCP, IPV4_MIN_HLEN, internet_checksum

__all__ = [
    "GSO_NONE",
    "GSO_TCPV4",
    "MAX_BYTES",
    "MAX_SEGMENTS",
    "NEEDS_CSUM",
    "NO_GSO",
    "VNET_HDR",
    "coalesce",
]

# struct virtio_net_hdr (linux/virtio_net.h): flags, gso_type, hdr_len, gso_size, csum_start,
# csum_offset, in host byte order (a TAP and a packet socket both use it).
VNET_HDR: Final = struct.Struct("=BBHHHH")
NEEDS_CSUM: Final = 1  # VIRTIO_NET_HDR_F_NEEDS_CSUM: CHECKSUM_PARTIAL
GSO_NONE: Final = 0
GSO_TCPV4: Final = 1
NO_GSO: Final = bytes(VNET_HDR.size)
# One coalesced packet: what Linux's GRO allows (64 kB of IP, 64 segments at most in a GSO
# send), with room for the headers.
MAX_SEGMENTS: Final = 64
MAX_BYTES: Final = 65000
_ACK: Final = 0x10
_PSH: Final = 0x08
# _flow_mask's, per header length (at most 11 of them: 20 to 60 bytes of TCP header).
_MASKS: dict[int, int] = {}
# What decides whether a packet may join a run: IPv4 version and header length, total length,
# flags and fragment offset, protocol; TCP sequence number, data offset, flags.
_FIELDS: Final = struct.Struct("!BxHxxHxBxx8x4xI4xBB")


def _segment(p: bytes | bytearray | memoryview) -> tuple[bytes, int, int, int] | None:
    """``(headers, TCP header length, sequence number, flags)`` of a packet that may be
    coalesced (see the module docstring), else None."""
    if len(p) < _FIELDS.size:
        return None
    vihl, total, frag, proto, seq, off, flags = _FIELDS.unpack_from(p)
    thl = (off >> 4) * 4
    if (
        vihl != 0x45
        or proto != IPPROTO_TCP
        or frag & 0x3FFF  # MF or a fragment offset
        or (flags & ~_PSH) != _ACK
        or total != len(p)  # padded or truncated
        or thl < 20
        or total <= IPV4_MIN_HLEN + thl  # no data: a pure ACK
    ):
        return None
    return bytes(p[: IPV4_MIN_HLEN + thl]), thl, seq, flags


def _flow_mask(hlen: int) -> int:
    """The bits of an ``hlen``-byte IPv4 + TCP header that every segment of a run shares:
    all but total length, IP id and checksum, sequence number, TCP flags and checksum (the
    flags are checked apart: PSH may differ). Version, header lengths, fragment field and
    protocol are among them, so a packet that matches the first's has them right too."""
    mask = _MASKS.get(hlen)
    if mask is None:
        bits = bytearray(b"\xff" * hlen)
        for start, end in ((2, 6), (10, 12), (24, 28), (33, 34), (36, 38)):
            bits[start:end] = bytes(end - start)
        mask = _MASKS[hlen] = int.from_bytes(bits, "big")
    return mask


def _merged(
    first: bytes, run: list[bytes | bytearray | memoryview], hlen: int, psh: int
) -> tuple[bytes, bytes]:
    """The virtio header and the packet for the segments in ``run`` (``first``: the first's
    headers, ``hlen`` bytes of them)."""
    payloads = [p[hlen:] for p in run]
    total = hlen + sum(len(d) for d in payloads)
    head = bytearray(first)
    head[2:4] = total.to_bytes(2, "big")
    head[10:12] = b"\x00\x00"
    head[10:12] = internet_checksum(head[:IPV4_MIN_HLEN]).to_bytes(2, "big")
    head[33] |= psh
    # CHECKSUM_PARTIAL: the pseudo-header's sum (addresses, protocol, TCP length), folded
    # and not complemented; the kernel treats the data as verified.
    tcp_len = total - IPV4_MIN_HLEN
    s = (
        int.from_bytes(head[12:14], "big")
        + int.from_bytes(head[14:16], "big")
        + int.from_bytes(head[16:18], "big")
        + int.from_bytes(head[18:20], "big")
        + IPPROTO_TCP
        + tcp_len
    )
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    head[36:38] = s.to_bytes(2, "big")
    vnet = VNET_HDR.pack(
        NEEDS_CSUM, GSO_TCPV4, ETH_HLEN + hlen, len(payloads[0]), ETH_HLEN + IPV4_MIN_HLEN, 16
    )
    return vnet, b"".join([head, *payloads])


def coalesce(
    packets: Sequence[bytes | bytearray | memoryview],
) -> list[tuple[bytes, bytes | bytearray | memoryview]]:
    """``packets`` (IPv4, in the order they are to be written) as ``(virtio header, packet)``
    pairs to write: runs of one TCP flow's segments merged (see the module docstring), every
    other packet as it came, behind :data:`NO_GSO`."""
    out: list[tuple[bytes, bytes | bytearray | memoryview]] = []
    unpack = _FIELDS.unpack_from
    n = len(packets)
    i = 0
    while i < n:
        p = packets[i]
        seg = _segment(p)
        i += 1
        if seg is None or seg[3] & _PSH:
            out.append((NO_GSO, p))
            continue
        first, thl, seq, _ = seg
        hlen = IPV4_MIN_HLEN + thl
        size = len(p) - hlen
        run = [p]
        total = len(p)
        nxt = (seq + size) & 0xFFFFFFFF
        psh = 0
        # Everything a later segment must share with the first, as one integer (the loop
        # below runs once per segment: one unpack and one integer compare, no calls).
        mask = _flow_mask(hlen)
        flow = int.from_bytes(first, "big") & mask
        while i < n and len(run) < MAX_SEGMENTS:
            q = packets[i]
            qlen = len(q)
            qsize = qlen - hlen
            if qsize > size or qsize <= 0 or total + qsize > MAX_BYTES:
                break
            _, qtotal, _, _, qseq, _, qflags = unpack(q)
            if (
                qseq != nxt
                or qtotal != qlen
                or (qflags & ~_PSH) != _ACK
                or int.from_bytes(q[:hlen], "big") & mask != flow
            ):
                break
            run.append(q)
            total += qsize
            nxt = (nxt + qsize) & 0xFFFFFFFF
            i += 1
            psh = qflags & _PSH
            if psh or qsize < size:  # a pushed or shorter segment ends the run
                break
        if len(run) == 1:
            out.append((NO_GSO, p))
        else:
            out.append(_merged(first, run, hlen, psh))
    return out
