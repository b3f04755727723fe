"""The outer datagram layout: type bytes, demultiplexing from STUN, the DATA header."""

from __future__ import annotations

import dataclasses

import pytest

from ipop.errors import LocalProtocolError, RemoteProtocolError
from ipop.types import Endpoint, NodeId
from ipop.wire.handshake import MAX_CERT_BYTES, CookieReply, HandshakeInit, HandshakeResp
from ipop.wire.header import (
    DATA_HEADER,
    DATA_HEADER_BYTES,
    DATA_MIN_BYTES,
    TYPE_DATA,
    MessageType,
    is_ipop,
    is_stun,
)

CERT = bytes(range(256)) + bytes(150)
INIT = HandshakeInit(
    sender_index=0xDEADBEEF,
    ephemeral=bytes(range(32)),
    timestamp_ms=1_795_305_600_123,
    ciphers=(1, 2),
    responder=NodeId(0x0102030405060708090A0B0C0D0E0F1011121314),
    cert_der=CERT,
    signature=bytes([7]) * 64,
    mac2=bytes([5]) * 16,
)
RESP = HandshakeResp(
    sender_index=1,
    receiver_index=0xDEADBEEF,
    ephemeral=bytes(range(32, 64)),
    cipher=1,
    observed=Endpoint("198.51.100.7", 40000),
    cert_der=CERT,
    signature=bytes([9]) * 64,
)


def test_every_type_byte_is_outside_the_stun_and_rfc7983_ranges() -> None:
    for t in MessageType:
        assert 0xC0 <= t <= 0xFF
        assert is_ipop(bytes([t]))
    assert not is_ipop(b"") and not is_ipop(b"\x00\x01")


def test_stun_binding_request_is_not_ipop() -> None:
    # RFC 5389 header: type 0x0001, length, magic cookie 0x2112A442, transaction id.
    stun = bytes.fromhex("000100002112a442") + bytes(12)
    assert is_stun(stun) and not is_ipop(stun)
    assert not is_stun(bytes([TYPE_DATA]) + bytes(28))


def test_data_header_layout() -> None:
    assert DATA_HEADER_BYTES == 13 and DATA_MIN_BYTES == 29
    raw = DATA_HEADER.pack(TYPE_DATA, 0x01020304, 0x0A0B0C0D0E0F1011)
    assert raw == bytes.fromhex("c3010203040a0b0c0d0e0f1011")


def test_init_layout_and_round_trip() -> None:
    raw = INIT.encode()
    assert raw[0] == MessageType.HANDSHAKE_INIT
    assert raw[1:5] == bytes.fromhex("deadbeef")
    assert raw[5:37] == bytes(range(32))
    assert int.from_bytes(raw[37:45], "big") == 1_795_305_600_123
    assert raw[45:48] == bytes([2, 1, 2])
    assert raw[48] == 1 and raw[49:69] == bytes(range(1, 21))  # responder: a node id
    assert int.from_bytes(raw[69:71], "big") == len(CERT)
    assert raw[-80:-16] == bytes([7]) * 64
    assert raw[-16:] == bytes([5]) * 16
    assert len(raw) == 71 + len(CERT) + 64 + 16
    assert HandshakeInit.parse(raw) == INIT
    assert INIT.signed_part() == raw[:-80]


def test_init_bound_to_an_endpoint() -> None:
    init = dataclasses.replace(INIT, responder=Endpoint("203.0.113.10", 5800))
    raw = init.encode()
    assert raw[48] == 2 and raw[49:55] == bytes([203, 0, 113, 10, 0x16, 0xA8])
    assert raw[55:69] == bytes(14)
    assert HandshakeInit.parse(raw) == init
    for bad in (bytes([3]) + raw[49:69], bytes([2]) + raw[49:68] + b"\x01", bytes(21)):
        with pytest.raises(RemoteProtocolError):
            HandshakeInit.parse(raw[:48] + bad + raw[69:])


def test_cookie_reply_layout_is_smaller_than_any_init() -> None:
    reply = CookieReply(0xDEADBEEF, bytes(range(16)), bytes(range(16, 32)))
    raw = reply.encode()
    assert raw == bytes([0xC4]) + bytes.fromhex("deadbeef") + bytes(range(32))
    assert CookieReply.parse(raw) == reply
    smallest_init = dataclasses.replace(INIT, cert_der=b"x", ciphers=(1,)).encode()
    assert len(raw) == 37 < len(smallest_init)
    for bad in (raw[:-1], raw + b"\x00", bytes([0xC3]) + raw[1:]):
        with pytest.raises(RemoteProtocolError):
            CookieReply.parse(bad)


def test_resp_layout_and_round_trip() -> None:
    raw = RESP.encode()
    assert raw[0] == MessageType.HANDSHAKE_RESP
    assert raw[41] == 1
    assert raw[42:46] == bytes([198, 51, 100, 7]) and raw[46:48] == (40000).to_bytes(2, "big")
    assert HandshakeResp.parse(raw) == RESP
    relayed = dataclasses.replace(RESP, observed=None)
    raw2 = relayed.encode()
    assert raw2[42:48] == bytes(6)
    assert HandshakeResp.parse(raw2) == relayed


@pytest.mark.parametrize("cut", [0, 1, 20, 49, 60, 200, -81, -65, -1])
def test_truncated_init_is_malformed(cut: int) -> None:
    raw = INIT.encode()
    with pytest.raises(RemoteProtocolError) as exc:
        HandshakeInit.parse(raw[:cut])
    assert exc.value.reason == "malformed"


def test_trailing_bytes_are_refused() -> None:
    for msg in (INIT, RESP):
        raw = msg.encode() + b"\x00"
        with pytest.raises(RemoteProtocolError):
            type(msg).parse(raw)


def test_wrong_type_byte_and_bad_fields_are_malformed() -> None:
    raw = bytearray(INIT.encode())
    raw[0] = MessageType.HANDSHAKE_RESP
    with pytest.raises(RemoteProtocolError):
        HandshakeInit.parse(bytes(raw))
    raw = bytearray(INIT.encode())
    raw[45] = 0  # no cipher offered
    with pytest.raises(RemoteProtocolError):
        HandshakeInit.parse(bytes(raw))
    raw = bytearray(RESP.encode())
    raw[46:48] = b"\x00\x00"  # IPv4 without a port
    with pytest.raises(RemoteProtocolError):
        HandshakeResp.parse(bytes(raw))


def test_encoding_refuses_misuse() -> None:
    with pytest.raises(LocalProtocolError):
        dataclasses.replace(INIT, cert_der=bytes(MAX_CERT_BYTES + 1))
    with pytest.raises(LocalProtocolError):
        dataclasses.replace(INIT, ciphers=())
    with pytest.raises(LocalProtocolError):
        dataclasses.replace(INIT, sender_index=1 << 32)
    with pytest.raises(LocalProtocolError):
        dataclasses.replace(RESP, observed=Endpoint("0.0.0.0", 5))


def test_init_with_a_real_certificate_stays_well_under_1200_bytes() -> None:
    # Certificates carry a name, a network, a URI SAN and maybe a hostname: ~400 bytes.
    assert len(INIT.encode()) < 600
    assert len(dataclasses.replace(INIT, cert_der=bytes(MAX_CERT_BYTES)).encode()) < 1100
