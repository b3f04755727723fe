"""STUN binding messages (RFC 5389, with RFC 3489 and RFC 5780 attributes): a strict codec.

This module owns the bytes of the STUN messages ipop sends and answers on the overlay socket
(first byte 0x00..0x03, see :mod:`ipop.wire.header`). Only what NAT discovery needs: Binding
request, success response and error response, and the attributes below. Anything else is
rejected by :func:`decode` with :class:`StunDecodeError` (the caller counts it and drops it).

Header (20 bytes, all integers big-endian)::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |0 0|     STUN Message Type     |         Message Length        |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                  Magic Cookie 0x2112A442                      |  RFC 5389; in RFC 3489
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+  these 4 bytes are the
    |                                                               |  first 32 bits of a
    |                  Transaction ID (96 bits)                     |  128-bit transaction ID
    |                                                               |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

    Message Type: 0x0001 Binding request, 0x0101 success response, 0x0111 error response.
    Message Length: bytes after the header; a multiple of 4, equal to len(datagram) - 20.

Attributes follow, each padded to a multiple of 4 bytes (the padding is not in Length)::

    +-------------------------------+-------------------------------+
    |         Type (16)             |          Length (16)          |
    +-------------------------------+-------------------------------+
    |                     Value (Length bytes) + padding            |

    0x0001 MAPPED-ADDRESS        address (below)
    0x0020 XOR-MAPPED-ADDRESS    address, port XOR 0x2112, IPv4 XOR the magic cookie
    0x8020 XOR-MAPPED-ADDRESS    the pre-RFC 5389 code some servers (stund) still send
    0x0003 CHANGE-REQUEST        4 bytes: 0x00000004 change IP, 0x00000002 change port
    0x0004 SOURCE-ADDRESS        RFC 3489 name of RESPONSE-ORIGIN (0x802B, RFC 5780)
    0x0005 CHANGED-ADDRESS       RFC 3489 name of OTHER-ADDRESS (0x802C, RFC 5780)
    0x0009 ERROR-CODE            error responses: class*100 + number, reason phrase
    0x0026 PADDING               RFC 5780 §7.6: any bytes, ignored (its length is kept)
    0x8022 SOFTWARE              UTF-8, at most 763 bytes
    0x8028 FINGERPRINT, other 0x8000..0xFFFF: comprehension-optional, skipped

    address value (IPv4 only: IPv6 addresses are skipped, ipop's underlay is IPv4):
    +---------------+---------------+-------------------------------+
    |   0x00        | family 0x01   |            port               |
    +---------------+---------------+-------------------------------+
    |                      IPv4 address (32)                        |

An RFC 3489 message (no magic cookie, as pystun3 sends) is answered with the RFC 3489
attribute codes (MAPPED-ADDRESS, SOURCE-ADDRESS, CHANGED-ADDRESS); an RFC 5389 one with
XOR-MAPPED-ADDRESS (plus MAPPED-ADDRESS for old clients), RESPONSE-ORIGIN and OTHER-ADDRESS.
Requests that ipop sends carry PADDING, so that they are never smaller than the answer: an ipop
server answers only requests at least as large as its response (:mod:`ipop.nat.stun`), which
keeps it from being a reflector that amplifies. It does not echo PADDING into the response
(RFC 5780 makes that optional and it would defeat the purpose).

Unknown comprehension-required attributes (0x0000..0x7FFF) are listed in
:attr:`StunMessage.unknown_required`: a server must refuse such a request (RFC 5389 §7.3.1).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from ipop.types import Endpoint

__all__ = [
    "ATTR_CHANGED_ADDRESS",
    "ATTR_CHANGE_REQUEST",
    "ATTR_ERROR_CODE",
    "ATTR_MAPPED_ADDRESS",
    "ATTR_OTHER_ADDRESS",
    "ATTR_PADDING",
    "ATTR_RESPONSE_ORIGIN",
    "ATTR_SOFTWARE",
    "ATTR_SOURCE_ADDRESS",
    "ATTR_XOR_MAPPED_ADDRESS",
    "BINDING_ERROR",
    "BINDING_INDICATION",
    "BINDING_REQUEST",
    "BINDING_RESPONSE",
    "HEADER_BYTES",
    "MAGIC_COOKIE",
    "StunDecodeError",
    "StunMessage",
    "decode",
    "encode",
]

BINDING_REQUEST = 0x0001
BINDING_RESPONSE = 0x0101
BINDING_ERROR = 0x0111
# Never decoded here (port guessing's knocks are Binding Indications: ipop.nat.portguess).
BINDING_INDICATION = 0x0011
_TYPES = (BINDING_REQUEST, BINDING_RESPONSE, BINDING_ERROR)

MAGIC_COOKIE = 0x2112A442
_COOKIE_BYTES = MAGIC_COOKIE.to_bytes(4, "big")
HEADER_BYTES = 20

ATTR_MAPPED_ADDRESS = 0x0001
ATTR_CHANGE_REQUEST = 0x0003
ATTR_SOURCE_ADDRESS = 0x0004
ATTR_CHANGED_ADDRESS = 0x0005
ATTR_ERROR_CODE = 0x0009
ATTR_PADDING = 0x0026
ATTR_XOR_MAPPED_ADDRESS = 0x0020
_ATTR_XOR_MAPPED_OLD = 0x8020
ATTR_SOFTWARE = 0x8022
ATTR_RESPONSE_ORIGIN = 0x802B
ATTR_OTHER_ADDRESS = 0x802C

_CHANGE_IP = 0x04
_CHANGE_PORT = 0x02
_FAMILY_IPV4 = 0x01
_FAMILY_IPV6 = 0x02
MAX_SOFTWARE_BYTES = 763
_HEADER = struct.Struct(">HH16s")
_ATTR = struct.Struct(">HH")
_ADDR = struct.Struct(">xBH4s")


class StunDecodeError(ValueError):
    """The datagram is not a well-formed STUN Binding message; ``reason`` is a drop counter."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class StunMessage:
    """One Binding message. ``transaction`` is the 16 bytes after Type and Length: the magic
    cookie and a 96-bit ID (RFC 5389), or a 128-bit ID (RFC 3489, :attr:`classic`).

    Address attributes are kept under their RFC 5780 names whatever the code on the wire:
    ``origin`` is RESPONSE-ORIGIN or SOURCE-ADDRESS, ``other`` OTHER-ADDRESS or CHANGED-ADDRESS.
    """

    msg_type: int
    transaction: bytes
    mapped: Endpoint | None = None
    xor_mapped: Endpoint | None = None
    change_ip: bool = False
    change_port: bool = False
    origin: Endpoint | None = None
    other: Endpoint | None = None
    software: str | None = None
    error_code: int | None = None
    unknown_required: tuple[int, ...] = ()
    padding: int = 0  # length of a PADDING attribute's value (0: none)

    @property
    def classic(self) -> bool:
        """True for an RFC 3489 message (no magic cookie)."""
        return self.transaction[:4] != _COOKIE_BYTES

    @property
    def address(self) -> Endpoint | None:
        """The reflexive address: XOR-MAPPED-ADDRESS if present (NATs that rewrite addresses
        inside payloads cannot touch it), else MAPPED-ADDRESS."""
        return self.xor_mapped if self.xor_mapped is not None else self.mapped


def _encode_address(ep: Endpoint, *, xor: bool) -> bytes:
    packed = ipaddress.IPv4Address(ep.host).packed
    port = ep.port
    if xor:
        port ^= MAGIC_COOKIE >> 16
        packed = bytes(a ^ b for a, b in zip(packed, _COOKIE_BYTES, strict=True))
    return _ADDR.pack(_FAMILY_IPV4, port, packed)


def _attr(attr_type: int, value: bytes) -> bytes:
    pad = -len(value) % 4
    return _ATTR.pack(attr_type, len(value)) + value + b"\x00" * pad


def encode(msg: StunMessage) -> bytes:
    """The datagram for ``msg``; attribute codes follow its form (RFC 3489 or 5389).

    Raises ValueError for a message that cannot be encoded (our own bug, never peer input).
    """
    if msg.msg_type not in _TYPES:
        raise ValueError(f"not a Binding message type: {msg.msg_type:#06x}")
    if len(msg.transaction) != 16:
        raise ValueError("transaction must be 16 bytes (cookie + 96-bit ID, or a 128-bit ID)")
    classic = msg.classic
    body: list[bytes] = []
    if msg.xor_mapped is not None and not classic:
        body.append(_attr(ATTR_XOR_MAPPED_ADDRESS, _encode_address(msg.xor_mapped, xor=True)))
    if msg.mapped is not None:
        body.append(_attr(ATTR_MAPPED_ADDRESS, _encode_address(msg.mapped, xor=False)))
    if msg.change_ip or msg.change_port:
        flags = (_CHANGE_IP if msg.change_ip else 0) | (_CHANGE_PORT if msg.change_port else 0)
        body.append(_attr(ATTR_CHANGE_REQUEST, flags.to_bytes(4, "big")))
    if msg.origin is not None:
        code = ATTR_SOURCE_ADDRESS if classic else ATTR_RESPONSE_ORIGIN
        body.append(_attr(code, _encode_address(msg.origin, xor=False)))
    if msg.other is not None:
        code = ATTR_CHANGED_ADDRESS if classic else ATTR_OTHER_ADDRESS
        body.append(_attr(code, _encode_address(msg.other, xor=False)))
    if msg.error_code is not None:
        cls, number = divmod(msg.error_code, 100)
        if not 3 <= cls <= 6:
            raise ValueError(f"error code {msg.error_code} out of range 300..699")
        body.append(_attr(ATTR_ERROR_CODE, bytes((0, 0, cls, number))))
    if msg.software is not None:
        raw = msg.software.encode()
        if len(raw) > MAX_SOFTWARE_BYTES:
            raise ValueError("SOFTWARE longer than 763 bytes")
        body.append(_attr(ATTR_SOFTWARE, raw))
    if msg.padding:
        if not 0 < msg.padding <= 0xFFFF:
            raise ValueError(f"PADDING of {msg.padding} bytes")
        body.append(_attr(ATTR_PADDING, bytes(msg.padding)))
    payload = b"".join(body)
    return _HEADER.pack(msg.msg_type, len(payload), msg.transaction) + payload


def _decode_address(value: bytes, attr: str, *, xor: bool) -> Endpoint | None:
    if len(value) < 4:
        raise StunDecodeError("stun_bad_attr", f"{attr}: {len(value)} bytes")
    family = value[1]
    if family == _FAMILY_IPV6:
        if len(value) != 20:
            raise StunDecodeError("stun_bad_attr", f"{attr}: IPv6 with {len(value)} bytes")
        return None  # not ours to use: the underlay is IPv4
    if family != _FAMILY_IPV4 or len(value) != 8:
        raise StunDecodeError("stun_bad_attr", f"{attr}: family {family}, {len(value)} bytes")
    _, port, packed = _ADDR.unpack(value)
    if xor:
        port ^= MAGIC_COOKIE >> 16
        packed = bytes(a ^ b for a, b in zip(packed, _COOKIE_BYTES, strict=True))
    return Endpoint(str(ipaddress.IPv4Address(packed)), port)


def decode(data: bytes) -> StunMessage:
    """Parse one datagram strictly; :class:`StunDecodeError` (never anything else) if it is
    not a well-formed Binding request or response."""
    if len(data) < HEADER_BYTES:
        raise StunDecodeError("stun_short", f"{len(data)} bytes")
    msg_type, length, transaction = _HEADER.unpack_from(data)
    if msg_type & 0xC000:
        raise StunDecodeError("stun_not_stun", "first two bits are not 00")
    if msg_type not in _TYPES:
        raise StunDecodeError("stun_unknown_method", f"type {msg_type:#06x}")
    if length % 4 or length != len(data) - HEADER_BYTES:
        raise StunDecodeError("stun_bad_length", f"length {length}, {len(data)} bytes")
    classic = transaction[:4] != _COOKIE_BYTES
    mapped = xor_mapped = origin = other = None
    change_ip = change_port = False
    software: str | None = None
    error_code: int | None = None
    padding = 0
    unknown: list[int] = []
    pos = HEADER_BYTES
    end = len(data)
    while pos < end:
        if end - pos < 4:
            raise StunDecodeError("stun_bad_attr", "truncated attribute header")
        attr_type, attr_len = _ATTR.unpack_from(data, pos)
        pos += 4
        padded = attr_len + (-attr_len % 4)
        if pos + padded > end:
            raise StunDecodeError("stun_bad_attr", f"attribute {attr_type:#06x} overruns")
        value = data[pos : pos + attr_len]
        pos += padded
        if attr_type == ATTR_MAPPED_ADDRESS:
            mapped = _decode_address(value, "MAPPED-ADDRESS", xor=False)
        elif attr_type in (ATTR_XOR_MAPPED_ADDRESS, _ATTR_XOR_MAPPED_OLD):
            if not classic:  # the XOR needs the cookie; an RFC 3489 server never sends it
                xor_mapped = _decode_address(value, "XOR-MAPPED-ADDRESS", xor=True)
        elif attr_type == ATTR_CHANGE_REQUEST:
            if attr_len != 4:
                raise StunDecodeError("stun_bad_attr", f"CHANGE-REQUEST: {attr_len} bytes")
            flags = int.from_bytes(value, "big")
            change_ip = bool(flags & _CHANGE_IP)
            change_port = bool(flags & _CHANGE_PORT)
        elif attr_type in (ATTR_SOURCE_ADDRESS, ATTR_RESPONSE_ORIGIN):
            origin = _decode_address(value, "RESPONSE-ORIGIN", xor=False)
        elif attr_type in (ATTR_CHANGED_ADDRESS, ATTR_OTHER_ADDRESS):
            other = _decode_address(value, "OTHER-ADDRESS", xor=False)
        elif attr_type == ATTR_ERROR_CODE:
            if attr_len < 4 or not 3 <= value[2] & 0x07 <= 6 or value[3] > 99:
                raise StunDecodeError("stun_bad_attr", "ERROR-CODE")
            error_code = (value[2] & 0x07) * 100 + value[3]
        elif attr_type == ATTR_SOFTWARE:
            if attr_len > MAX_SOFTWARE_BYTES:
                raise StunDecodeError("stun_bad_attr", "SOFTWARE too long")
            software = value.decode("utf-8", "replace")
        elif attr_type == ATTR_PADDING:
            padding = attr_len
        elif attr_type < 0x8000:
            unknown.append(attr_type)
        # 0x8000..0xFFFF (FINGERPRINT, ...): comprehension-optional, skipped.
    return StunMessage(
        msg_type=msg_type,
        transaction=bytes(transaction),
        mapped=mapped,
        xor_mapped=xor_mapped,
        change_ip=change_ip,
        change_port=change_port,
        origin=origin,
        other=other,
        software=software,
        error_code=error_code,
        unknown_required=tuple(unknown),
        padding=padding,
    )
