"""Overlay codecs: round trips, strict refusals, and garbage that never escapes a parser."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ipop.errors import RemoteProtocolError
from ipop.overlay.messages import (
    FLAG_CERT,
    FLAG_EXACT,
    FLAG_EXCLUDE_SRC,
    FLAG_VIA,
    KIND_CTM,
    KIND_IP,
    Alive,
    Closing,
    ConnectToMe,
    ConnectToMeReply,
    Neighbours,
    Purpose,
    RelayDeliver,
    RelayForward,
    Routed,
    decode_message,
)
from ipop.types import RING, Endpoint, NodeId

ids = st.integers(min_value=0, max_value=RING - 1).map(NodeId)
endpoints = st.builds(
    Endpoint,
    st.sampled_from(["198.51.100.7", "203.0.113.200", "198.18.3.4"]),
    st.integers(min_value=1, max_value=65535),
)


@st.composite
def routed(draw: st.DrawFn) -> Routed:
    via = draw(st.one_of(st.none(), ids))
    flags = draw(st.sampled_from([0, FLAG_EXACT, FLAG_EXCLUDE_SRC, FLAG_EXACT | FLAG_EXCLUDE_SRC]))
    if via is not None:
        flags |= FLAG_VIA
    return Routed(
        flags,
        draw(st.integers(0, 255)),
        draw(st.integers(1, 255)),
        draw(st.integers(1, 255)),
        draw(ids),
        draw(ids),
        via,
        draw(st.binary(max_size=64)),
        draw(st.integers(0, 2**32 - 1)),
        draw(st.binary(min_size=64, max_size=64))
        if not flags & FLAG_EXACT or draw(st.booleans())
        else draw(st.binary(min_size=16, max_size=16)),
        draw(st.one_of(st.just(b""), st.binary(min_size=1, max_size=400))),
    )


messages = st.one_of(
    routed(),
    st.builds(RelayForward, ids, st.binary(min_size=1, max_size=64)),
    st.builds(RelayDeliver, ids, st.binary(min_size=1, max_size=64)),
    st.builds(Neighbours, st.booleans(), st.lists(ids, max_size=10).map(tuple)),
    st.just(Closing()),
    st.builds(Alive, st.booleans(), st.integers(0, 0xFFFF)),
)


@given(messages)
def test_messages_round_trip(msg: object) -> None:
    assert hasattr(msg, "encode")
    assert decode_message(msg.encode()) == msg


@given(
    st.builds(
        ConnectToMe,
        st.integers(0, 2**32 - 1),
        st.sampled_from(list(Purpose)),
        ids,
        st.lists(endpoints, max_size=8).map(tuple),
    )
)
def test_ctm_round_trip(ctm: ConnectToMe) -> None:
    assert ConnectToMe.decode(ctm.encode()) == ctm


@given(
    st.builds(
        ConnectToMeReply,
        st.integers(0, 2**32 - 1),
        st.lists(endpoints, max_size=8).map(tuple),
        st.lists(ids, max_size=48).map(tuple),
    )
)
def test_ctm_reply_round_trip(rep: ConnectToMeReply) -> None:
    assert ConnectToMeReply.decode(rep.encode()) == rep


def test_alive_byte_layout() -> None:
    assert Alive(True, 0x0102).encode() == b"\x09\x01\x01\x02"
    assert Alive(False, 7).encode() == b"\x09\x00\x00\x07"


def test_routed_byte_layout() -> None:
    src, dst = NodeId(1), NodeId(2)
    sig = bytes(range(64))
    data = Routed(FLAG_EXACT, 3, 64, KIND_IP, src, dst, None, b"xy", 0x01020304, sig).encode()
    assert data[:5] == bytes([0x01, FLAG_EXACT, 3, 64, KIND_IP])
    assert data[5:25] == src.to_bytes() and data[25:45] == dst.to_bytes()
    assert data[45:] == b"xy" + b"\x01\x02\x03\x04" + sig
    # With the certificate: the CERT flag, a u16 length and the DER before the payload.
    with_cert = Routed(FLAG_EXACT, 3, 64, KIND_IP, src, dst, None, b"xy", 5, sig, b"DER").encode()
    assert with_cert[1] == FLAG_EXACT | FLAG_CERT
    assert with_cert[45:50] == b"\x00\x03DER" and with_cert[50:52] == b"xy"
    assert Routed.decode(with_cert).cert == b"DER" and Routed.decode(with_cert).flags == FLAG_EXACT


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"\x3f", "unknown_type"),
        (b"\x01\x00\x00\x40\x02", "truncated"),
        (bytes([1, 0x80, 0, 64, 2]) + bytes(108), "bad_flags"),
        (bytes([1, 0, 0, 0, 2]) + bytes(108), "bad_ttl"),
        (bytes([1, 0, 0, 64, 0]) + bytes(108), "bad_kind"),
        (bytes([1, 0, 0, 64, 2]) + bytes(40), "truncated"),
        (bytes([1, FLAG_VIA, 0, 64, 2]) + bytes(108), "truncated"),
        (bytes([1, FLAG_CERT, 0, 64, 2]) + bytes(108), "truncated"),
        (bytes([1, FLAG_CERT, 0, 64, 2]) + bytes(40) + b"\x00\x00" + bytes(68), "bad_cert_length"),
        (bytes([1, FLAG_CERT, 0, 64, 2]) + bytes(40) + b"\x00\x09" + bytes(70), "truncated"),
        (bytes([4, 2, 0]), "bad_flags"),
        (bytes([4, 0, 49]) + bytes(49 * 20), "too_many_ids"),
        (bytes([4, 0, 2]) + bytes(20), "truncated"),
        (bytes([2]) + bytes(20), "truncated"),
        (bytes([9, 1, 0]), "truncated"),
        (bytes([9, 2, 0, 0]), "bad_flags"),
    ],
)
def test_refusals_name_their_reason(data: bytes, reason: str) -> None:
    with pytest.raises(RemoteProtocolError) as exc:
        decode_message(data)
    assert exc.value.reason == reason


def test_ctm_refusals() -> None:
    good = ConnectToMe(7, Purpose.NEAR, NodeId(3), (Endpoint("198.51.100.1", 5800),)).encode()
    with pytest.raises(RemoteProtocolError, match="bad_purpose"):
        ConnectToMe.decode(good[:4] + b"\x09" + good[5:])
    with pytest.raises(RemoteProtocolError, match="bad_endpoint"):
        ConnectToMe.decode(good[:-2] + b"\x00\x00")
    with pytest.raises(RemoteProtocolError, match="too_many_endpoints"):
        ConnectToMe.decode(good[:25] + b"\x09")
    assert ConnectToMe.decode(good + b"trailing") == ConnectToMe.decode(good)
    assert KIND_CTM == 0x80


@given(st.binary(max_size=120))
def test_random_bytes_only_raise_remote_errors(data: bytes) -> None:
    for parse in (decode_message, ConnectToMe.decode, ConnectToMeReply.decode):
        with contextlib.suppress(RemoteProtocolError):
            parse(data)


@given(messages, st.integers(0, 200), st.integers(0, 255))
def test_mutated_messages_only_raise_remote_errors(msg: object, pos: int, byte: int) -> None:
    assert hasattr(msg, "encode")
    data = bytearray(msg.encode())
    data[pos % len(data)] = byte
    for cut in (len(data), pos % (len(data) + 1)):
        with contextlib.suppress(RemoteProtocolError):
            decode_message(bytes(data[:cut]))
