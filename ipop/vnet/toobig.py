"""ICMP "fragmentation needed" for an inner packet too big for its peer's path (sans-IO).

Owns one choice, made for the path MTU work (:mod:`ipop.link.pmtu`): the TAP keeps its MTU
(1400 by default) and a packet too big for the path to its destination's node (direct,
through a relay, or routed over the ring: :meth:`ipop.core.NodeCore.ip_mtu`) is answered
the way a router answers it, with ICMP type 3 code 4 carrying the MTU that fits, toward the
inner sender. The sender's kernel then keeps that MTU for that destination (TCP lowers its
segment size; a UDP socket without DF fragments its later datagrams itself), so a peer on a
small path costs only that peer's packets a smaller size. The other choice, lowering the
TAP's MTU to what every path allows, is simpler but makes one small path shrink the packets
to every peer, and must change as peers come and go.

The answer comes from the destination's address (the hop that cannot carry the packet is
the tunnel toward it; kernels match such an error by the quoted header, not by its source).
No answer for an ICMP error (never an error about an error), a fragment after the first, or
anything that is not a whole IPv4 header.
"""

from __future__ import annotations

import struct

from ipop.vnet.packet import build_ipv4, internet_checksum

__all__ = ["MIN_INNER_MTU", "frag_needed"]

# RFC 791's minimum: every IPv4 host accepts 576-byte packets.
MIN_INNER_MTU = 576
_ICMP = 1
_ERROR_TYPES = frozenset({3, 4, 5, 11, 12})
_HDR = struct.Struct("!BBHHH")


def frag_needed(packet: bytes | bytearray | memoryview, mtu: int) -> bytes | None:
    """The ICMP "fragmentation needed, next-hop MTU ``mtu``" answering IPv4 ``packet``, or None
    when it must not be answered (see the module docstring)."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return None
    ihl = (packet[0] & 0x0F) * 4
    if ihl < 20 or len(packet) < ihl:
        return None
    if (packet[6] & 0x1F) or packet[7]:  # fragment offset: not the first fragment
        return None
    if packet[9] == _ICMP and (len(packet) <= ihl or packet[ihl] in _ERROR_TYPES):
        return None
    # The header and the first 8 bytes of data: enough for any kernel to find the socket
    # (ports; TCP's sequence number).
    quoted = bytes(packet[: ihl + 8])
    body = bytearray(_HDR.pack(3, 4, 0, 0, max(mtu, MIN_INNER_MTU)) + quoted)
    csum = internet_checksum(body)
    body[2], body[3] = csum >> 8, csum & 0xFF
    return build_ipv4(bytes(packet[16:20]), bytes(packet[12:16]), _ICMP, bytes(body))
