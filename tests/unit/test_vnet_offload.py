"""Cutting TCP batches and finishing begun checksums (ipop.vnet.offload), as pure functions.

Every segment's headers, lengths, sequence numbers and both checksums are checked against an
independent computation (a word-by-word RFC 1071 loop, not the module's integer folding);
cutting then merging again (ipop.vnet.gro) gives back the batch's stream bytes.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipop.testing.tcp import ACK, DST, FIN, PSH, SRC, TIMESTAMPS, tcp_segment
from ipop.vnet.gro import GSO_TCPV4, VNET_HDR, coalesce
from ipop.vnet.offload import CsumDrop, finish_frame, split_tcp, sum16
from ipop.vnet.packet import IPPROTO_TCP, IPPROTO_UDP, build_ipv4

CWR = 0x80
ETH = bytes(6) + bytes(range(1, 7)) + b"\x08\x00"


def _ones(data: bytes) -> int:
    """The ones' complement sum of 16-bit words, one word at a time with end-around carry."""
    if len(data) % 2:
        data += b"\x00"
    s = 0
    for i in range(0, len(data), 2):
        s += data[i] << 8 | data[i + 1]
        s = (s & 0xFFFF) + (s >> 16)
    return s


def _ip_ok(ip: bytes) -> bool:
    return _ones(ip[: (ip[0] & 15) * 4]) == 0xFFFF


def _tcp_ok(ip: bytes) -> bool:
    ihl = (ip[0] & 15) * 4
    tcp = ip[ihl:]
    pseudo = ip[12:20] + bytes((0, IPPROTO_TCP)) + len(tcp).to_bytes(2, "big")
    return _ones(pseudo + tcp) == 0xFFFF


def _batch(data: bytes, *, flags: int = ACK | PSH, seq: int = 5000, ident: int = 7) -> bytes:
    """One TCP batch as the kernel hands it over: a packet as long as ``data`` asks, its TCP
    checksum only begun (here: garbage, which no segment may keep)."""
    packet = bytearray(tcp_segment(seq, data, flags=flags, ident=ident))
    packet[36:38] = b"\xab\xcd"
    return ETH + bytes(packet)


@pytest.mark.parametrize(
    ("size", "mss", "mtu"),
    [
        (1, 1000, 1500),
        (1000, 1000, 1500),  # exactly one segment
        (1001, 1000, 1500),  # one byte over
        (10_000, 1013, 1500),  # an odd segment size: words straddle segments
        (64_000, 1348, 1500),  # a whole 64 kB batch on a 1500-byte path
        (64_000, 1348, 1065),  # cut smaller than the batch's own size: what the path fits
        (4097, 999, 1500),  # odd size and odd total
    ],
)
def test_a_batch_is_cut_into_segments_each_right(size: int, mss: int, mtu: int) -> None:
    data = random.Random(size).randbytes(size)
    seq = 0xFFFFF000  # sequence numbers wrap inside the batch
    frame = _batch(data, flags=ACK | PSH | FIN | CWR, seq=seq, ident=0xFFFE)
    segs = split_tcp(frame, mtu, mss)
    assert not isinstance(segs, CsumDrop)
    thl = 20 + len(TIMESTAMPS)
    chunk = min(mss, mtu - 20 - thl)
    assert len(segs) == -(-size // chunk)
    got = b""
    for i, seg in enumerate(segs):
        assert seg[:14] == ETH
        ip = bytes(seg[14:])
        last = i == len(segs) - 1
        body = ip[20 + thl :]
        assert len(body) == (chunk if not last else size - chunk * i)
        assert int.from_bytes(ip[2:4], "big") == len(ip) <= mtu
        assert int.from_bytes(ip[4:6], "big") == (0xFFFE + i) & 0xFFFF
        assert ip[6:8] == frame[14 + 6 : 14 + 8]  # DF kept, no fragment
        assert int.from_bytes(ip[24:28], "big") == (seq + i * chunk) & 0xFFFFFFFF
        flags = ip[33]
        assert bool(flags & (PSH | FIN)) == last  # both only on the last
        assert bool(flags & CWR) == (i == 0)  # once, on the first
        assert flags & ACK
        # Ports, ack number, window, options: as in the batch.
        assert ip[20:24] + ip[28:33] + ip[34:36] + ip[40 : 20 + thl] == (
            frame[34:38] + frame[42:47] + frame[48:50] + frame[54 : 34 + thl]
        )
        assert _ip_ok(ip) and _tcp_ok(ip), i
        got += body
    assert got == data


def test_a_lead_takes_the_ethernet_headers_place() -> None:
    """The data plane's DIRECT header in place of the Ethernet one: the same packets."""
    frame = _batch(bytes(range(256)) * 10)
    plain = split_tcp(frame, 1500, 1000)
    led = split_tcp(frame, 1500, 1000, lead=b"\x01\x02")
    assert not isinstance(plain, CsumDrop) and not isinstance(led, CsumDrop)
    assert [b"\x01\x02" + p[14:] for p in plain] == led


def test_what_is_not_an_ipv4_tcp_batch_is_refused_not_cut() -> None:
    data = bytes(3000)
    udp = ETH + build_ipv4(SRC, DST, IPPROTO_UDP, bytes(8) + data)
    assert split_tcp(udp, 1500, 1000) is CsumDrop.OVERSIZE
    ipv6 = bytearray(_batch(data))
    ipv6[12:14] = b"\x86\xdd"
    assert split_tcp(ipv6, 1500, 1000) is CsumDrop.PROTOCOL
    fragment = bytearray(_batch(data))
    fragment[14 + 6] |= 0x20  # MF
    assert split_tcp(fragment, 1500, 1000) is CsumDrop.FRAGMENT
    assert split_tcp(_batch(data)[:-1], 1500, 1000) is CsumDrop.MALFORMED  # cut short
    short_header = bytearray(_batch(data))
    short_header[14 + 20 + 12] = 4 << 4  # a 16-byte TCP header
    assert split_tcp(short_header, 1500, 1000) is CsumDrop.MALFORMED


def test_a_begun_checksum_is_finished_in_place() -> None:
    packet = bytearray(tcp_segment(1, b"hello world", ident=3))
    right = bytes(packet)
    # What the kernel hands over with NEEDS_CSUM: the pseudo-header's sum only.
    packet[36:38] = b"\x12\x34"
    frame = bytearray(ETH + packet)
    assert finish_frame(memoryview(frame)) is None
    assert bytes(frame[14:]) == right


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000))
def test_sum16_is_the_ones_complement_sum(data: bytes) -> None:
    s = sum16(data)
    assert s % 0xFFFF == _ones(data) % 0xFFFF


@settings(max_examples=150, deadline=None)
@given(
    data=st.binary(min_size=1, max_size=6000),
    mss=st.integers(min_value=64, max_value=1460),
    seq=st.integers(min_value=0, max_value=0xFFFFFFFF),
    push=st.booleans(),
)
def test_cut_then_coalesced_gives_back_the_stream(
    data: bytes, mss: int, seq: int, push: bool
) -> None:
    """What the sender cuts, the receiver's GRO merges back: same bytes, same order, every
    merged packet announcing the segment size it was cut at."""
    frame = _batch(data, flags=ACK | (PSH if push else 0), seq=seq)
    segs = split_tcp(frame, 65535, mss)
    assert not isinstance(segs, CsumDrop)
    merged = coalesce([memoryview(s)[14:] for s in segs])
    stream = b""
    for vnet, packet in merged:
        p = bytes(packet)
        _, gso_type, _, gso_size, _, _ = VNET_HDR.unpack(vnet)
        if gso_type == GSO_TCPV4:
            assert gso_size == min(mss, len(data))
        else:
            assert _tcp_ok(p)
        stream += p[20 + 32 :]
    assert stream == data
    first = bytes(merged[0][1])
    assert int.from_bytes(first[24:28], "big") == seq
