"""ICMP "fragmentation needed" toward an inner sender whose packet does not fit its peer's path."""

from __future__ import annotations

import struct

import pytest

from ipop.vnet.packet import IPPROTO_UDP, build_ipv4, internet_checksum, parse_ipv4
from ipop.vnet.toobig import MIN_INNER_MTU, frag_needed

SRC, DST = bytes([100, 64, 0, 20]), bytes([100, 64, 0, 10])
_TCP = 6


def _int(addr: bytes) -> int:
    return int.from_bytes(addr, "big")


def test_the_answer_is_a_valid_icmp_3_4_from_the_destination_quoting_the_packet() -> None:
    tcp = struct.pack("!HHII", 40000, 5201, 0x11223344, 0) + bytes(1380)
    packet = build_ipv4(SRC, DST, _TCP, tcp)
    answer = frag_needed(packet, 1065)
    assert answer is not None
    header, body = parse_ipv4(answer)  # a correct IP header checksum, or it raises
    assert (header.src, header.dst, header.protocol) == (_int(DST), _int(SRC), 1)
    icmp = bytes(body)
    assert icmp[:2] == b"\x03\x04"
    assert internet_checksum(icmp) == 0
    assert struct.unpack("!H", icmp[6:8])[0] == 1065
    assert icmp[8:] == packet[:28]  # the header and the ports and sequence number
    assert len(answer) < MIN_INNER_MTU


def test_the_mtu_never_goes_below_what_every_host_accepts() -> None:
    answer = frag_needed(build_ipv4(SRC, DST, IPPROTO_UDP, bytes(600)), 300)
    assert answer is not None and struct.unpack("!H", answer[26:28])[0] == MIN_INNER_MTU


def _fragment(packet: bytes) -> bytes:
    out = bytearray(packet)
    out[7] = 185  # offset 1480: a later fragment
    return bytes(out)


@pytest.mark.parametrize(
    "packet",
    [
        build_ipv4(SRC, DST, 1, bytes([3, 4]) + bytes(1400)),  # an ICMP error: never answered
        _fragment(build_ipv4(SRC, DST, IPPROTO_UDP, bytes(1400))),
        bytes(19),
        b"\x60" + bytes(1400),  # IPv6
        b"\x4f" + bytes(30),  # a header longer than the packet
    ],
)
def test_packets_that_must_not_be_answered_are_not(packet: bytes) -> None:
    assert frag_needed(packet, 1065) is None


def test_an_icmp_echo_is_answered() -> None:
    echo = build_ipv4(SRC, DST, 1, bytes([8, 0]) + bytes(1400))
    assert frag_needed(echo, 1065) is not None
