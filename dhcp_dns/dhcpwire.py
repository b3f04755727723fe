"""DHCP's message codec (RFC 2131/2132): the BOOTP fixed part, the options, their numbers.

This module owns the bytes of a DHCP message: :class:`DhcpMessage`, :func:`parse_dhcp` and
:func:`encode_dhcp`, the message types and option codes, the ports. What a server does with a
message is :mod:`ipop.dhcp_dns.dhcp`.

Wire layout (BOOTP fixed part, 236 bytes, then the magic cookie and options)::

    op htype hlen hops | xid(4) | secs(2) flags(2) | ciaddr yiaddr siaddr giaddr (4 each)
    chaddr(16) sname(64) file(128) | 99.130.83.99 | options: code len value ... 255

Options are parsed strictly: every option must fit, the list must end with END (255);
repeated options are concatenated (RFC 3396). Garbage is dropped and counted in ``drops``.
Every reason :func:`parse_dhcp` raises (a :class:`~ipop.vnet.packet.PacketError`) is in
:data:`ipop.dhcp_dns.dhcp.DROP_REASONS`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from ipaddress import IPv4Address

from ipop.errors import LocalProtocolError
from ipop.vnet.packet import PacketError

__all__ = [
    "BOOTREPLY",
    "BOOTREQUEST",
    "CLIENT_PORT",
    "FLAG_BROADCAST",
    "MAGIC_COOKIE",
    "MIN_MESSAGE_LEN",
    "SERVER_PORT",
    "ZERO_IP",
    "DhcpMessage",
    "MessageType",
    "Opt",
    "encode_dhcp",
    "parse_dhcp",
]

SERVER_PORT = 67
CLIENT_PORT = 68
BOOTREQUEST = 1
BOOTREPLY = 2
MAGIC_COOKIE = b"\x63\x82\x53\x63"
FLAG_BROADCAST = 0x8000
# RFC 1542 §2.1: some relays and clients drop BOOTP messages shorter than 300 bytes.
MIN_MESSAGE_LEN = 300
_FIXED = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")
_FIXED_LEN = _FIXED.size  # 236
ZERO_IP = IPv4Address(0)


class MessageType(IntEnum):
    """Option 53 values (RFC 2132 §9.6)."""

    DISCOVER = 1
    OFFER = 2
    REQUEST = 3
    DECLINE = 4
    ACK = 5
    NAK = 6
    RELEASE = 7
    INFORM = 8


class Opt(IntEnum):
    """The option codes this server reads or writes (RFC 2132)."""

    PAD = 0
    SUBNET_MASK = 1
    ROUTER = 3
    DNS_SERVERS = 6
    HOSTNAME = 12
    DOMAIN_NAME = 15
    INTERFACE_MTU = 26
    REQUESTED_IP = 50
    LEASE_TIME = 51
    MESSAGE_TYPE = 53
    SERVER_ID = 54
    PARAMETER_REQUEST_LIST = 55
    RENEWAL_TIME = 58
    REBINDING_TIME = 59
    CLIENT_ID = 61
    END = 255


@dataclass(frozen=True, slots=True)
class DhcpMessage:
    """One DHCP message; ``options`` keeps the order of first appearance, values merged."""

    op: int
    xid: int
    chaddr: bytes
    options: tuple[tuple[int, bytes], ...]
    htype: int = 1
    hlen: int = 6
    hops: int = 0
    secs: int = 0
    flags: int = 0
    ciaddr: IPv4Address = ZERO_IP
    yiaddr: IPv4Address = ZERO_IP
    siaddr: IPv4Address = ZERO_IP
    giaddr: IPv4Address = ZERO_IP
    sname: bytes = b""
    file: bytes = b""

    def option(self, code: int) -> bytes | None:
        for c, v in self.options:
            if c == code:
                return v
        return None

    @property
    def mac(self) -> bytes:
        return self.chaddr[:6]

    @property
    def broadcast(self) -> bool:
        return bool(self.flags & FLAG_BROADCAST)

    @property
    def message_type(self) -> int | None:
        v = self.option(Opt.MESSAGE_TYPE)
        return v[0] if v is not None and len(v) == 1 else None

    def _ip_option(self, code: int) -> IPv4Address | None:
        v = self.option(code)
        return IPv4Address(v) if v is not None and len(v) == 4 else None

    @property
    def requested_ip(self) -> IPv4Address | None:
        return self._ip_option(Opt.REQUESTED_IP)

    @property
    def server_id(self) -> IPv4Address | None:
        return self._ip_option(Opt.SERVER_ID)

    @property
    def client_id(self) -> bytes | None:
        return self.option(Opt.CLIENT_ID)

    @property
    def hostname(self) -> str | None:
        """Option 12 as text; None if absent or not printable ASCII (it is only a hint)."""
        v = self.option(Opt.HOSTNAME)
        if v is None:
            return None
        text = v.rstrip(b"\x00")
        if not text or not all(0x21 <= b < 0x7F for b in text):
            return None
        return text.decode("ascii")

    @property
    def parameter_request_list(self) -> bytes:
        return self.option(Opt.PARAMETER_REQUEST_LIST) or b""


def _parse_options(data: memoryview) -> tuple[tuple[int, bytes], ...]:
    merged: dict[int, bytes] = {}
    i, n = 0, len(data)
    while i < n:
        code = data[i]
        if code == Opt.PAD:
            i += 1
            continue
        if code == Opt.END:
            return tuple(merged.items())
        if i + 1 >= n:
            raise PacketError("dhcp_bad_option", f"option {code} has no length")
        length = data[i + 1]
        if i + 2 + length > n:
            raise PacketError("dhcp_bad_option", f"option {code} overruns the message")
        merged[code] = merged.get(code, b"") + bytes(data[i + 2 : i + 2 + length])
        i += 2 + length
    raise PacketError("dhcp_no_end")


def parse_dhcp(data: bytes | bytearray | memoryview) -> DhcpMessage:
    """Parse a DHCP message strictly; garbage raises :class:`PacketError` naming the reason."""
    if len(data) < _FIXED_LEN + len(MAGIC_COOKIE):
        raise PacketError("dhcp_short", f"{len(data)} bytes")
    view = memoryview(data)
    (op, htype, hlen, hops, xid, secs, flags, ci, yi, si, gi, chaddr, sname, file) = (
        _FIXED.unpack_from(view, 0)
    )
    if bytes(view[_FIXED_LEN : _FIXED_LEN + 4]) != MAGIC_COOKIE:
        raise PacketError("dhcp_bad_magic")
    if op not in (BOOTREQUEST, BOOTREPLY):
        raise PacketError("dhcp_bad_op", str(op))
    if hlen > 16:
        raise PacketError("dhcp_bad_hw", f"hlen {hlen}")
    options = _parse_options(view[_FIXED_LEN + 4 :])
    return DhcpMessage(
        op=op,
        xid=xid,
        chaddr=chaddr,
        options=options,
        htype=htype,
        hlen=hlen,
        hops=hops,
        secs=secs,
        flags=flags,
        ciaddr=IPv4Address(ci),
        yiaddr=IPv4Address(yi),
        siaddr=IPv4Address(si),
        giaddr=IPv4Address(gi),
        sname=sname.rstrip(b"\x00"),
        file=file.rstrip(b"\x00"),
    )


def encode_dhcp(msg: DhcpMessage) -> bytes:
    """Serialise ``msg``; values over 255 bytes are split (RFC 3396); padded to 300 bytes."""
    if len(msg.chaddr) > 16 or len(msg.sname) > 64 or len(msg.file) > 128:
        raise LocalProtocolError("chaddr/sname/file too long")
    out = bytearray(
        _FIXED.pack(
            msg.op,
            msg.htype,
            msg.hlen,
            msg.hops,
            msg.xid,
            msg.secs,
            msg.flags,
            msg.ciaddr.packed,
            msg.yiaddr.packed,
            msg.siaddr.packed,
            msg.giaddr.packed,
            msg.chaddr,
            msg.sname,
            msg.file,
        )
    )
    out += MAGIC_COOKIE
    for code, value in msg.options:
        if code in (Opt.PAD, Opt.END) or not 0 < code < 255:
            raise LocalProtocolError(f"option code {code} cannot carry a value")
        for i in range(0, max(len(value), 1), 255):
            chunk = value[i : i + 255]
            out += bytes((code, len(chunk))) + chunk
    out.append(Opt.END)
    if len(out) < MIN_MESSAGE_LEN:
        out += bytes(MIN_MESSAGE_LEN - len(out))
    return bytes(out)
