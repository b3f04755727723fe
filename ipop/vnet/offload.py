"""Offloads of the kernel's checksum and segmentation work, undone in software (sans-IO): a
frame read with a ``struct virtio_net_hdr`` (:mod:`ipop.vnet.gro` draws it) may hold a TCP or UDP
packet whose checksum is only begun (``NEEDS_CSUM``: the kernel's CHECKSUM_PARTIAL), or a batch
of segments as one packet up to 64 kB (``gso_type``/``gso_size``). Before such a frame may be
handled here or sealed into the overlay, the checksum must be finished and the batch cut, as a
NIC would on its way out: a remote kernel would drop the one as corrupt, and the other needs IP
fragmentation on the underlay.

The router's LAN packet socket reads such frames (:mod:`ipop.router.lan`: hosts on veth, VMs
and containers hand on their offloads), and so does the daemon's own TAP (``TUNSETOFFLOAD``:
the kernel's TCP hands over 64 kB at a time, a TAP read saved per segment;
:class:`ipop.aio.dataplane.DataPlane`). In Python that did not pay: the TCP checksum of every
segment cost more than the read it saved (commit 911a964 and its revert), so the data plane
cuts and finishes with the native twins of :func:`split_tcp` and :func:`finish_frame`
(``ipop/link/_fastpath.c``, kept equal by ``tests/unit/test_fastpath_diff.py`` and
``tools/bench/fastpath_fuzz.py``) when the native backend runs, and with these, the
definitions, when ``IPOP_FASTPATH=python``. ``split_tcp``'s ``lead`` is the DIRECT header the
data plane seals each segment behind.

* :func:`finish_frame` completes a ``NEEDS_CSUM`` frame's TCP/UDP checksum in place;
* :func:`split_tcp` cuts a TCP batch (TSO) into segments of ``gso_size`` data that also fit an
  MTU: sequence numbers, IP ids (one up per segment), lengths, FIN and PSH on the last segment
  and CWR on the first only, every checksum finished, whatever the batch's own held;
* :func:`split_udp` cuts a UDP batch (``UDP_SEGMENT``) into its datagrams;
* :func:`split_batch` picks one by ``gso_type``.

Malformed input is never raised: each function returns the :class:`CsumDrop` to count.

Checksums: the RFC 1071 sum of 16-bit words modulo 0xFFFF is the sum of the whole buffer as one
integer modulo 0xFFFF (2**16 ≡ 1), which CPython computes in C. The modulo of a ~1 kB integer
divides once per 30-bit digit, though; :func:`_sum16` first folds the integer by halves
(shifts, masks and an addition: no division) down to 2,048 bits. Measured on a 1,045-byte
segment (a loaded machine): 0.8-1.4 µs for ``int.from_bytes``, then 1.9-2.8 µs for the modulo
alone against 1.4-1.8 µs folded and reduced.
"""

from __future__ import annotations

import struct
from enum import StrEnum

from ipop.vnet.gro import GSO_NONE, GSO_TCPV4
from ipop.vnet.packet import (
    ETH_HLEN,
    ETH_P_IP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    IPV4_MIN_HLEN,
)

__all__ = [
    "CSUM_REASONS",
    "GSO_UDP_L4",
    "CsumDrop",
    "finish_frame",
    "split_batch",
    "split_tcp",
    "split_udp",
    "sum16",
]

GSO_UDP_L4 = 5  # UDP_SEGMENT batches and UDP GRO (not 3: the old UFO, IP fragments)
_GSO_ECN = 0x80  # a flag on TCP batches (CWR set): the split handles CWR itself
# Where the checksum field sits in each transport header, and the header's minimum length.
_CSUM_AT = {IPPROTO_TCP: (16, 20), IPPROTO_UDP: (6, 8)}
_IP_FRAG = 0x3FFF  # MF and the fragment offset
_IPV4 = struct.Struct("!BxHxxHxBxx4s4s")  # ver|ihl, total_len, flags|frag, proto, src, dst
_TCP_FIN, _TCP_PSH, _TCP_CWR = 0x01, 0x08, 0x80
# IPv4 from the total length to the checksum; TCP from the sequence number to the checksum.
_IP_FIELDS = struct.Struct("!HHHBBH")
_TCP = struct.Struct("!IIBBHH")


class CsumDrop(StrEnum):
    """Why a frame marked partial or a batch was dropped before any handling (the router counts
    them as ``lan.<reason>``; the daemon's data plane as ``tap_offload``)."""

    MALFORMED = "csum_malformed"  # partial or a batch, but its IPv4/TCP/UDP headers do not add up
    FRAGMENT = "csum_fragment"  # partial or a batch, yet a fragment (the checksum spans others)
    PROTOCOL = "csum_protocol"  # partial or a batch, not IPv4 TCP or UDP: we cannot finish it
    TRUNCATED = "lan_truncated"  # larger than the read buffer (MSG_TRUNC)
    OVERSIZE = "lan_oversize"  # UDP above the MTU: a datagram is not ours to cut smaller
    GSO_TYPE = "lan_gso_type"  # a batch of a kind we do not cut (TCPv6, UFO)


# Every name ipop.router.lan.LanSocket.drops may hold.
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
    # Summed again from the pseudo-header's fields rather than trusting the field's partial
    # sum: a frame is finished right whatever the field held.
    frame[field : field + 2] = b"\x00\x00"
    csum = _csum(src + dst + proto + end - start + _sum16(frame[start:end]))
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


# (1 << n) - 1 for the fold widths of sum16: the integer is halved (in bits) while larger.
_FOLD_4096 = (1 << 4096) - 1
_FOLD_2048 = (1 << 2048) - 1


def sum16(data: bytes | bytearray | memoryview) -> int:
    """The ones' complement sum of ``data``'s 16-bit words, modulo 0xFFFF (0 stands for
    0xFFFF): 2**16 ≡ 1, so the whole buffer as one integer, in C (as
    ``ipop.vnet.packet.internet_checksum`` does); an odd last byte is a word's high half.
    Folded before the modulo (see the module docstring): every fold keeps the value modulo
    0xFFFF, as 2**2048 ≡ 1 too."""
    n = int.from_bytes(data, "big")
    if len(data) & 1:
        n <<= 8
    if len(data) > 256:
        if len(data) > 512:
            n = (n >> 4096) + (n & _FOLD_4096)
        n = (n >> 2048) + (n & _FOLD_2048)
    return n % 0xFFFF


_sum16 = sum16


def _csum(total: int) -> int:
    """The checksum field for words summing to ``total`` (any nonzero sum, before the modulo):
    the complement of their ones' complement sum, 0 when that sum is 0xFFFF (as the kernel's
    csum_fold gives; UDP then writes 0xFFFF, RFC 768)."""
    s = total % 0xFFFF
    return 0xFFFF - s if s else 0


def split_tcp(
    frame: bytes | bytearray | memoryview, mtu: int, mss: int = 0, *, lead: bytes | None = None
) -> list[bytearray] | CsumDrop:
    """The IPv4 TCP packet in ``frame`` (an Ethernet frame) cut into frames of at most ``mtu``
    IP bytes and, if ``mss`` is given (a batch's ``gso_size``), ``mss`` bytes of data each,
    every checksum finished (whatever the original's held); why not, if it cannot be. Each
    segment is one new buffer: ``frame``'s Ethernet header, or ``lead`` in its place (the
    data plane's DIRECT header: the buffer is then the message it seals), and the packet."""
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
    frag, ttl = int.from_bytes(head[ETH_HLEN + 6 : ETH_HLEN + 8], "big"), head[ETH_HLEN + 8]
    seq, ack, off, flags, window, _ = _TCP.unpack_from(head, start + 4)
    ip_sum = _ip_sum(head, ihl)
    # The pseudo-header's addresses and protocol, and the TCP header but for its sequence
    # number, flags and checksum; each segment adds those, its length and its data. Summed
    # modulo 0xFFFF.
    tcp = bytearray(head[start:])
    tcp[4:8] = bytes(4)
    tcp[13] = 0
    tcp[16:18] = b"\x00\x00"
    base = src_n + dst_n + IPPROTO_TCP + _sum16(tcp)
    ipo, tcpo = ETH_HLEN, start  # where the IPv4 and TCP headers sit in a segment
    if lead is not None:
        head[:ETH_HLEN] = lead
        ipo, tcpo = len(lead), start - ETH_HLEN + len(lead)
    view = memoryview(frame)
    hlen = start + thl
    offsets = range(hlen, max(end, hlen + 1), chunk)
    last = offsets[-1]
    seq -= hlen  # so that a segment's is seq + its offset in ``frame``
    out: list[bytearray] = []
    # FIN and PSH end the batch: the last segment's; CWR was sent once, with the first.
    mid = flags & ~(_TCP_FIN | _TCP_PSH)
    # One loop pass per segment on the data plane's hot path: two packs in place, the
    # checksums inline (sum16's folds over the data alone), no calls but the C ones.
    pack_ip, pack_tcp = _IP_FIELDS.pack_into, _TCP.pack_into
    from_bytes = int.from_bytes
    for i, at in enumerate(offsets):
        stop = at + chunk if at + chunk < end else end
        data = view[at:stop]
        size = stop - at
        n = from_bytes(data, "big")
        if size & 1:
            n <<= 8
        if size > 256:
            if size > 512:
                n = (n >> 4096) + (n & _FOLD_4096)
            n = (n >> 2048) + (n & _FOLD_2048)
        s = (seq + at) & 0xFFFFFFFF
        f = (flags if at == last else mid) & (0xFF if i == 0 else ~_TCP_CWR)
        c = (base + thl + size + n + (s >> 16) + (s & 0xFFFF) + f) % 0xFFFF
        seg = head + data
        pack_tcp(seg, tcpo + 4, s, ack, off, f, window, 0xFFFF - c if c else 0)
        ident = (ident + 1) & 0xFFFF if i else ident
        c = (ip_sum + ihl + thl + size + ident) % 0xFFFF
        pack_ip(
            seg,
            ipo + 2,
            ihl + thl + size,
            ident,
            frag,
            ttl,
            IPPROTO_TCP,
            0xFFFF - c if c else 0,
        )
        out.append(seg)
    return out


def split_udp(
    frame: bytes | bytearray | memoryview, size: int, mtu: int
) -> list[bytearray] | CsumDrop:
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
    out: list[bytearray] = []
    for i, at in enumerate(range(0, max(len(data), 1), size)):
        piece = data[at : at + size]
        ulen = 8 + len(piece)
        _set_ip(head, ip_sum, ihl + ulen, ident + i)
        head[start + 4 : start + 6] = ulen.to_bytes(2, "big")
        csum = _csum(base + 2 * ulen + _sum16(piece)) or 0xFFFF  # 0 would say "none"
        head[start + 6 : start + 8] = csum.to_bytes(2, "big")
        out.append(head + piece)
    return out


def split_batch(
    frame: bytes | bytearray | memoryview, gso_type: int, gso_size: int, mtu: int
) -> list[bytearray] | CsumDrop:
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
