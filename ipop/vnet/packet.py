"""Byte layouts of the frames on the TAP: Ethernet II, IPv4 and UDP, and the internet checksum.

Pure functions on ``bytes``/``memoryview`` with precompiled :mod:`struct` formats (DESIGN.md
§8: scapy costs 160-650 µs per packet, struct 0.2-0.4 µs). Two speeds:

* the hot path (every frame the kernel writes into the TAP) needs only the ethertype and the
  IPv4 addresses: :func:`frame_ethertype`, :func:`ipv4_src` and :func:`ipv4_dst` read them in
  place with ``unpack_from`` and return plain ints;
* the local services (ARP, DHCP, DNS) parse fully and strictly with :func:`parse_ethernet`,
  :func:`parse_ipv4`, :func:`parse_udp` (or :func:`parse_udp_frame` for all three) and build
  replies with :func:`build_udp_frame`.

Malformed input raises :class:`PacketError`, whose ``reason`` is the counter name callers file
the drop under. Layouts (all integers big-endian)::

    Ethernet  dst(6) src(6) ethertype(2)                                       14 bytes
    IPv4      ver|ihl tos total_len(2) ident(2) flags|frag(2) ttl proto csum(2) src(4) dst(4)
              [options: (ihl - 5) * 4 bytes]                                   20..60 bytes
    UDP       src_port(2) dst_port(2) length(2) checksum(2)                    8 bytes

Ethernet frames shorter than 60 bytes are padded by senders, so an IPv4 packet may be followed
by trailing bytes: the IPv4 total length, not the frame length, bounds the payload.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv4Address

from ipop.errors import RemoteProtocolError

__all__ = [
    "BROADCAST_MAC",
    "ETH_HLEN",
    "ETH_P_ARP",
    "ETH_P_IP",
    "IPPROTO_TCP",
    "IPPROTO_UDP",
    "IPV4_BROADCAST",
    "IPV4_MIN_HLEN",
    "UDP_HLEN",
    "EthernetHeader",
    "Ipv4Header",
    "PacketError",
    "UdpFrame",
    "UdpHeader",
    "build_ethernet",
    "build_ipv4",
    "build_udp",
    "build_udp_frame",
    "format_mac",
    "frame_ethertype",
    "internet_checksum",
    "ipv4_dst",
    "ipv4_src",
    "parse_ethernet",
    "parse_ipv4",
    "parse_mac",
    "parse_udp",
    "parse_udp_frame",
    "transport_checksum",
    "udp_checksum",
]

ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ETH_HLEN = 14
IPV4_MIN_HLEN = 20
UDP_HLEN = 8
IPPROTO_UDP = 17
IPPROTO_TCP = 6
BROADCAST_MAC = b"\xff" * 6
IPV4_BROADCAST = 0xFFFFFFFF

_ETH = struct.Struct("!6s6sH")
_ETHERTYPE = struct.Struct("!H")
_IPV4 = struct.Struct("!BBHHHBBHII")
_U32 = struct.Struct("!I")
_UDP = struct.Struct("!HHHH")
_PSEUDO = struct.Struct("!IIBBH")

_IP_DF = 0x4000
_IP_MF = 0x2000
_IP_FRAG_MASK = 0x1FFF


class PacketError(RemoteProtocolError, ValueError):
    """Bytes from the TAP that do not parse; ``reason`` names the drop counter."""


# --- helpers -----------------------------------------------------------------------------------


def parse_mac(mac: str | bytes) -> bytes:
    """A MAC address as 6 bytes, from ``"02:1b:0a:00:00:01"`` or 6 bytes (API input: raises)."""
    if isinstance(mac, bytes | bytearray):
        if len(mac) != 6:
            raise ValueError(f"a MAC address has 6 bytes, got {len(mac)}")
        return bytes(mac)
    parts = mac.replace("-", ":").split(":")
    if len(parts) != 6 or not all(len(p) in (1, 2) for p in parts):
        raise ValueError(f"{mac!r} is not a MAC address like 02:1b:0a:00:00:01")
    try:
        return bytes(int(p, 16) for p in parts)
    except ValueError:
        raise ValueError(f"{mac!r} is not a MAC address like 02:1b:0a:00:00:01") from None


def format_mac(mac: bytes) -> str:
    """``02:1b:0a:00:00:01``."""
    return ":".join(f"{b:02x}" for b in mac)


def internet_checksum(data: bytes | bytearray | memoryview) -> int:
    """RFC 1071 checksum: the ones' complement of the ones' complement sum of 16-bit words.

    Summing 16-bit words modulo 0xFFFF is the same as taking the whole buffer as one big
    integer modulo 0xFFFF (because 2**16 ≡ 1), which CPython does in C: no per-word loop.
    Checking a received header: the checksum over it, checksum field included, is 0.
    """
    raw = bytes(data)
    if len(raw) & 1:
        raw += b"\x00"
    n = int.from_bytes(raw, "big")
    s = n % 0xFFFF
    if s == 0 and n != 0:
        # Ones' complement addition never yields +0 from nonzero words: it gives -0 (0xFFFF).
        s = 0xFFFF
    return ~s & 0xFFFF


def _ip_int(ip: IPv4Address | int | bytes) -> int:
    if isinstance(ip, int):
        return ip
    if isinstance(ip, bytes):
        return int.from_bytes(ip, "big")
    return int(ip)


# --- hot path ----------------------------------------------------------------------------------


def frame_ethertype(frame: bytes | bytearray | memoryview) -> int:
    """The ethertype of an Ethernet II frame (no VLAN tags on a TAP)."""
    if len(frame) < ETH_HLEN:
        raise PacketError("eth_short", f"{len(frame)} bytes")
    return int(_ETHERTYPE.unpack_from(frame, 12)[0])


def ipv4_src(buf: bytes | bytearray | memoryview, offset: int = 0) -> int:
    """The IPv4 source address as an int; ``offset`` is where the IPv4 header starts.

    Pass ``offset=ETH_HLEN`` for a frame read from the TAP (after checking its ethertype).
    Checks only what reading the field needs: the length and the version nibble.
    """
    if len(buf) < offset + IPV4_MIN_HLEN:
        raise PacketError("ipv4_short", f"{len(buf) - offset} bytes")
    if buf[offset] >> 4 != 4:
        raise PacketError("ipv4_bad_version")
    return int(_U32.unpack_from(buf, offset + 12)[0])


def ipv4_dst(buf: bytes | bytearray | memoryview, offset: int = 0) -> int:
    """The IPv4 destination address as an int; see :func:`ipv4_src` for ``offset``."""
    if len(buf) < offset + IPV4_MIN_HLEN:
        raise PacketError("ipv4_short", f"{len(buf) - offset} bytes")
    if buf[offset] >> 4 != 4:
        raise PacketError("ipv4_bad_version")
    return int(_U32.unpack_from(buf, offset + 16)[0])


# --- Ethernet ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EthernetHeader:
    """The 14-byte Ethernet II header."""

    dst: bytes
    src: bytes
    ethertype: int


def parse_ethernet(frame: bytes | bytearray | memoryview) -> tuple[EthernetHeader, memoryview]:
    """The header and the payload (a view into ``frame``, no copy)."""
    if len(frame) < ETH_HLEN:
        raise PacketError("eth_short", f"{len(frame)} bytes")
    dst, src, ethertype = _ETH.unpack_from(frame, 0)
    return EthernetHeader(dst, src, ethertype), memoryview(frame)[ETH_HLEN:]


def build_ethernet(dst: bytes, src: bytes, ethertype: int, payload: bytes | memoryview) -> bytes:
    """An Ethernet II frame; the kernel pads short frames itself, so no padding here."""
    if len(dst) != 6 or len(src) != 6:
        raise ValueError("MAC addresses have 6 bytes")
    return _ETH.pack(dst, src, ethertype) + bytes(payload)


# --- IPv4 --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ipv4Header:
    """A parsed IPv4 header; ``src``/``dst`` are ints, ``header_len``/``total_len`` bytes."""

    tos: int
    total_len: int
    ident: int
    flags: int
    frag_offset: int
    ttl: int
    protocol: int
    checksum: int
    src: int
    dst: int
    header_len: int
    options: bytes

    @property
    def src_ip(self) -> IPv4Address:
        return IPv4Address(self.src)

    @property
    def dst_ip(self) -> IPv4Address:
        return IPv4Address(self.dst)

    @property
    def src_bytes(self) -> bytes:
        return _U32.pack(self.src)

    @property
    def dst_bytes(self) -> bytes:
        return _U32.pack(self.dst)

    @property
    def is_fragment(self) -> bool:
        """True for any piece of a fragmented datagram (more fragments, or an offset)."""
        return bool(self.flags & (_IP_MF >> 13)) or self.frag_offset != 0


def parse_ipv4(
    packet: bytes | bytearray | memoryview, *, verify_checksum: bool = True
) -> tuple[Ipv4Header, memoryview]:
    """The header and the payload, bounded by the total length (trailing padding is ignored).

    Strict: version 4, a header of 20..60 bytes inside the packet, a total length covering
    the header and inside the packet, and (unless ``verify_checksum`` is False) a header
    checksum that adds up.
    """
    n = len(packet)
    if n < IPV4_MIN_HLEN:
        raise PacketError("ipv4_short", f"{n} bytes")
    ver_ihl, tos, total_len, ident, flags_frag, ttl, proto, csum, src, dst = _IPV4.unpack_from(
        packet, 0
    )
    if ver_ihl >> 4 != 4:
        raise PacketError("ipv4_bad_version", str(ver_ihl >> 4))
    hlen = (ver_ihl & 0x0F) * 4
    if hlen < IPV4_MIN_HLEN:
        raise PacketError("ipv4_bad_ihl", str(hlen))
    if hlen > n:
        raise PacketError("ipv4_short", f"header {hlen} > {n} bytes")
    if total_len < hlen or total_len > n:
        raise PacketError("ipv4_bad_length", f"total length {total_len}, have {n}")
    view = memoryview(packet)
    if verify_checksum and internet_checksum(view[:hlen]) != 0:
        raise PacketError("ipv4_bad_checksum")
    header = Ipv4Header(
        tos=tos,
        total_len=total_len,
        ident=ident,
        flags=flags_frag >> 13,
        frag_offset=flags_frag & _IP_FRAG_MASK,
        ttl=ttl,
        protocol=proto,
        checksum=csum,
        src=src,
        dst=dst,
        header_len=hlen,
        options=bytes(view[IPV4_MIN_HLEN:hlen]),
    )
    return header, view[hlen:total_len]


def build_ipv4(
    src: IPv4Address | int | bytes,
    dst: IPv4Address | int | bytes,
    protocol: int,
    payload: bytes | memoryview,
    *,
    ttl: int = 64,
    ident: int = 0,
    tos: int = 0,
    dont_fragment: bool = True,
) -> bytes:
    """An IPv4 packet with a 20-byte header and a correct header checksum."""
    total = IPV4_MIN_HLEN + len(payload)
    if total > 0xFFFF:
        raise ValueError(f"IPv4 packet too long: {total} bytes")
    flags = _IP_DF if dont_fragment else 0
    header = bytearray(
        _IPV4.pack(0x45, tos, total, ident, flags, ttl, protocol, 0, _ip_int(src), _ip_int(dst))
    )
    csum = internet_checksum(header)
    header[10] = csum >> 8
    header[11] = csum & 0xFF
    return bytes(header) + bytes(payload)


# --- UDP ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UdpHeader:
    """A parsed UDP header (``length`` includes the 8-byte header)."""

    src_port: int
    dst_port: int
    length: int
    checksum: int


def transport_checksum(
    proto: int, src: int, dst: int, segment: bytes | bytearray | memoryview
) -> int:
    """The TCP or UDP checksum of ``segment`` (its checksum field zeroed) over the IPv4
    pseudo-header (src, dst, 0, proto, length). A UDP sender writes a result of 0 as 0xFFFF
    (RFC 768: a zero field means "no checksum"); that is the caller's to do."""
    return internet_checksum(_PSEUDO.pack(src, dst, 0, proto, len(segment)) + bytes(segment))


def udp_checksum(src: int, dst: int, segment: bytes | bytearray | memoryview) -> int:
    """The UDP checksum over the IPv4 pseudo-header and ``segment`` (checksum field zeroed)."""
    return transport_checksum(IPPROTO_UDP, src, dst, segment)


def parse_udp(
    segment: bytes | bytearray | memoryview,
    *,
    src: IPv4Address | int | bytes | None = None,
    dst: IPv4Address | int | bytes | None = None,
) -> tuple[UdpHeader, memoryview]:
    """The header and the payload (bounded by the UDP length field).

    With ``src`` and ``dst`` given, a nonzero checksum is verified over the pseudo-header; a
    zero checksum means the sender did not compute one (allowed over IPv4, RFC 768).
    """
    n = len(segment)
    if n < UDP_HLEN:
        raise PacketError("udp_short", f"{n} bytes")
    sport, dport, length, csum = _UDP.unpack_from(segment, 0)
    if length < UDP_HLEN or length > n:
        raise PacketError("udp_bad_length", f"length {length}, have {n}")
    view = memoryview(segment)[:length]
    if csum != 0 and src is not None and dst is not None:
        total = _PSEUDO.pack(_ip_int(src), _ip_int(dst), 0, IPPROTO_UDP, length) + bytes(view)
        if internet_checksum(total) != 0:
            raise PacketError("udp_bad_checksum")
    return UdpHeader(sport, dport, length, csum), view[UDP_HLEN:]


def build_udp(
    src: IPv4Address | int | bytes,
    dst: IPv4Address | int | bytes,
    src_port: int,
    dst_port: int,
    payload: bytes | memoryview,
) -> bytes:
    """A UDP segment with its checksum (a computed 0 is sent as 0xFFFF, RFC 768)."""
    length = UDP_HLEN + len(payload)
    if length > 0xFFFF:
        raise ValueError(f"UDP datagram too long: {length} bytes")
    body = bytes(payload)
    csum = udp_checksum(_ip_int(src), _ip_int(dst), _UDP.pack(src_port, dst_port, length, 0) + body)
    return _UDP.pack(src_port, dst_port, length, csum or 0xFFFF) + body


@dataclass(frozen=True, slots=True)
class UdpFrame:
    """An Ethernet frame carrying IPv4/UDP, parsed all the way down; ``payload`` is a copy."""

    eth: EthernetHeader
    ip: Ipv4Header
    udp: UdpHeader
    payload: bytes


def parse_udp_frame(frame: bytes | bytearray | memoryview) -> UdpFrame:
    """Parse Ethernet + IPv4 + UDP strictly; fragments are refused (``ipv4_fragment``)."""
    eth, rest = parse_ethernet(frame)
    if eth.ethertype != ETH_P_IP:
        raise PacketError("eth_not_ipv4", f"{eth.ethertype:#06x}")
    ip, seg = parse_ipv4(rest)
    if ip.protocol != IPPROTO_UDP:
        raise PacketError("ipv4_not_udp", str(ip.protocol))
    if ip.is_fragment:
        raise PacketError("ipv4_fragment")
    udp, payload = parse_udp(seg, src=ip.src, dst=ip.dst)
    return UdpFrame(eth, ip, udp, bytes(payload))


def build_udp_frame(
    *,
    dst_mac: bytes,
    src_mac: bytes,
    src_ip: IPv4Address | int | bytes,
    dst_ip: IPv4Address | int | bytes,
    src_port: int,
    dst_port: int,
    payload: bytes | memoryview,
    ttl: int = 64,
) -> bytes:
    """Ethernet + IPv4 + UDP, both checksums filled in."""
    segment = build_udp(src_ip, dst_ip, src_port, dst_port, payload)
    return build_ethernet(
        dst_mac, src_mac, ETH_P_IP, build_ipv4(src_ip, dst_ip, IPPROTO_UDP, segment, ttl=ttl)
    )
