"""TCP segments as bytes, for tests of the code that merges and cuts them (ipop.vnet.gro,
router.lan): an IPv4 packet with a real TCP header and correct checksums."""

from __future__ import annotations

from ipaddress import IPv4Address

from ipop.vnet.packet import IPPROTO_TCP, build_ipv4, transport_checksum

__all__ = ["ACK", "DST", "FIN", "PSH", "SRC", "SYN", "TIMESTAMPS", "tcp_segment"]

FIN, SYN, PSH, ACK = 0x01, 0x02, 0x08, 0x10
# The timestamp option, as Linux sends it on every segment (two NOPs first).
TIMESTAMPS = bytes((1, 1, 8, 10)) + (1234).to_bytes(4, "big") + (99).to_bytes(4, "big")
SRC, DST = IPv4Address("100.64.0.1"), IPv4Address("100.64.0.2")


def tcp_segment(
    seq: int,
    data: bytes,
    *,
    src: IPv4Address = SRC,
    dst: IPv4Address = DST,
    flags: int = ACK,
    ident: int = 0,
    options: bytes = TIMESTAMPS,
    ack: int = 777,
    window: int = 500,
    sport: int = 40000,
    dport: int = 5201,
) -> bytes:
    """One IPv4 TCP segment (DF set), both checksums right."""
    thl = 20 + len(options)
    tcp = bytearray(
        sport.to_bytes(2, "big")
        + dport.to_bytes(2, "big")
        + seq.to_bytes(4, "big")
        + ack.to_bytes(4, "big")
        + bytes((thl // 4 << 4, flags))
        + window.to_bytes(2, "big")
        + bytes(4)
        + options
        + data
    )
    csum = transport_checksum(IPPROTO_TCP, int(src), int(dst), tcp)
    tcp[16:18] = csum.to_bytes(2, "big")
    return build_ipv4(src, dst, IPPROTO_TCP, bytes(tcp), ident=ident)
