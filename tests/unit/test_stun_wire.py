"""ipop.wire.stun: byte-exact RFC 5389 / RFC 3489 Binding messages, strict decoding, garbage."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipop.types import Endpoint
from ipop.wire.header import is_stun
from ipop.wire.stun import (
    BINDING_ERROR,
    BINDING_REQUEST,
    BINDING_RESPONSE,
    MAGIC_COOKIE,
    StunDecodeError,
    StunMessage,
    decode,
    encode,
)

COOKIE = MAGIC_COOKIE.to_bytes(4, "big")
TID = COOKIE + bytes(range(12))
CLASSIC_TID = bytes(range(100, 116))


def test_rfc5769_style_response_bytes() -> None:
    """XOR-MAPPED-ADDRESS by hand: 32853 ^ 0x2112 = 0xa147; cb.00.71.05 ^ 21.12.a4.42."""
    msg = StunMessage(BINDING_RESPONSE, TID, xor_mapped=Endpoint("203.0.113.5", 32853))
    data = encode(msg)
    assert data[:4] == bytes.fromhex("01010000")[:2] + (12).to_bytes(2, "big")
    assert data[20:32] == bytes.fromhex("002000080001a147ea12d547")
    assert decode(data) == msg


def test_pystun3_request_is_understood() -> None:
    # What pystun3 sends for Test II: classic 128-bit ID, CHANGE-REQUEST ip+port.
    raw = bytes.fromhex("00010008") + CLASSIC_TID + bytes.fromhex("0003000400000006")
    msg = decode(raw)
    assert msg.msg_type == BINDING_REQUEST and msg.classic
    assert msg.change_ip and msg.change_port
    assert encode(msg) == raw


def test_classic_response_uses_rfc3489_codes() -> None:
    msg = StunMessage(
        BINDING_RESPONSE,
        CLASSIC_TID,
        mapped=Endpoint("203.0.113.101", 5800),
        xor_mapped=Endpoint("203.0.113.101", 5800),
        origin=Endpoint("203.0.113.10", 5800),
        other=Endpoint("203.0.113.20", 5801),
    )
    data = encode(msg)
    codes = []
    pos = 20
    while pos < len(data):
        codes.append(int.from_bytes(data[pos : pos + 2], "big"))
        pos += 4 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    assert codes == [0x0001, 0x0004, 0x0005]  # no XOR-MAPPED-ADDRESS without the cookie
    got = decode(data)
    assert got.mapped == msg.mapped and got.xor_mapped is None
    assert got.origin == msg.origin and got.other == msg.other


def test_rfc5389_response_round_trip() -> None:
    msg = StunMessage(
        BINDING_RESPONSE,
        TID,
        mapped=Endpoint("198.51.100.7", 1),
        xor_mapped=Endpoint("198.51.100.7", 1),
        origin=Endpoint("203.0.113.10", 3478),
        other=Endpoint("203.0.113.20", 3479),
        software="ipop test",
    )
    assert decode(encode(msg)) == msg
    assert decode(encode(msg)).address == Endpoint("198.51.100.7", 1)


def test_error_response_and_optional_attributes() -> None:
    err = StunMessage(BINDING_ERROR, TID, error_code=420)
    assert decode(encode(err)).error_code == 420
    # FINGERPRINT (0x8028) is skipped; an unknown required attribute is listed.
    data = encode(StunMessage(BINDING_REQUEST, TID))
    extra = bytes.fromhex("8028000412345678") + bytes.fromhex("0006000161000000")
    data = data[:2] + len(extra).to_bytes(2, "big") + data[4:] + extra
    got = decode(data)
    assert got.unknown_required == (0x0006,)


def test_ipv6_address_is_skipped() -> None:
    v6 = bytes.fromhex("00010014") + bytes.fromhex("0002") + (80).to_bytes(2, "big") + bytes(16)
    data = bytes.fromhex("0101") + len(v6).to_bytes(2, "big") + TID + v6
    assert decode(data).mapped is None


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "stun_short"),
        (bytes(19), "stun_short"),
        (b"\x40\x01\x00\x00" + TID, "stun_not_stun"),
        (b"\x00\x02\x00\x00" + TID, "stun_unknown_method"),
        (b"\x00\x01\x00\x04" + TID, "stun_bad_length"),
        (b"\x00\x01\x00\x03" + TID + b"abc", "stun_bad_length"),
        (b"\x00\x01\x00\x04" + TID + b"\x00\x01\x00\x08", "stun_bad_attr"),
        (b"\x00\x01\x00\x08" + TID + b"\x00\x03\x00\x02\x00\x00\x00\x00", "stun_bad_attr"),
        (b"\x01\x01\x00\x08" + TID + b"\x00\x01\x00\x04\x00\x01\x00\x00", "stun_bad_attr"),
        (
            b"\x01\x01\x00\x0c" + TID + b"\x00\x01\x00\x08\x00\x03\x00\x01\x01\x02\x03\x04",
            "stun_bad_attr",
        ),
    ],
)
def test_malformed_is_rejected_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(StunDecodeError) as info:
        decode(data)
    assert info.value.reason == reason


def test_encode_refuses_our_own_mistakes() -> None:
    with pytest.raises(ValueError):
        encode(StunMessage(0x0002, TID))
    with pytest.raises(ValueError):
        encode(StunMessage(BINDING_REQUEST, TID[:12]))
    with pytest.raises(ValueError):
        encode(StunMessage(BINDING_ERROR, TID, error_code=200))


endpoints = st.builds(
    Endpoint,
    st.ip_addresses(v=4).map(str),
    st.integers(min_value=1, max_value=65535),
)
messages = st.builds(
    StunMessage,
    st.sampled_from([BINDING_REQUEST, BINDING_RESPONSE]),
    st.one_of(
        st.binary(min_size=12, max_size=12).map(lambda b: COOKIE + b),
        st.binary(min_size=16, max_size=16).filter(lambda b: b[:4] != COOKIE),
    ),
    mapped=st.none() | endpoints,
    change_ip=st.booleans(),
    change_port=st.booleans(),
    origin=st.none() | endpoints,
    other=st.none() | endpoints,
    software=st.none() | st.text(max_size=40),
    padding=st.integers(min_value=0, max_value=96),
)


@settings(max_examples=300, deadline=None)
@given(messages)
def test_round_trip(msg: StunMessage) -> None:
    data = encode(msg)
    assert is_stun(data)
    assert decode(data) == msg


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=120))
def test_garbage_raises_only_decode_error(data: bytes) -> None:
    try:
        msg = decode(data)
    except StunDecodeError:
        return
    assert decode(encode(msg)).address == msg.address


@settings(max_examples=1000, deadline=None)
@given(messages, st.integers(min_value=0, max_value=200), st.integers(min_value=0, max_value=255))
def test_mutated_messages_never_crash(msg: StunMessage, pos: int, byte: int) -> None:
    data = bytearray(encode(msg))
    data[pos % len(data)] = byte
    with contextlib.suppress(StunDecodeError):
        decode(bytes(data))
