"""ipop.vnet.gro: a batch's TCP segments of one flow coalesced into one packet for the TAP.

The proof that a coalesced packet is right: cutting it again as the kernel's GSO would
(ipop.router.lan.split_tcp, checked against the kernel by the router's lab tests) gives back the
very segments that were merged, checksums included; and the checksum a NIC would finish from
its CHECKSUM_PARTIAL field is the packet's true checksum.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from ipaddress import IPv4Address
from typing import Any

import pytest

from ipop.link import fastpath
from ipop.router.lan import split_tcp
from ipop.testing.tcp import ACK, FIN, PSH, SYN, TIMESTAMPS, tcp_segment
from ipop.vnet import gro
from ipop.vnet.gro import (
    GSO_TCPV4,
    MAX_BYTES,
    MAX_SEGMENTS,
    NEEDS_CSUM,
    NO_GSO,
    VNET_HDR,
)
from ipop.vnet.packet import (
    ETH_HLEN,
    IPPROTO_TCP,
    IPPROTO_UDP,
    build_ipv4,
    internet_checksum,
    transport_checksum,
)

Coalesce = Callable[[Sequence[bytes]], list[tuple[bytes, Any]]]


@pytest.fixture(params=["python", "native"])
def coalesce(request: pytest.FixtureRequest) -> Coalesce:
    """Each test runs on ipop.vnet.gro.coalesce, the definition, and on its native twin
    (ipop.link._fastpath.coalesce, through ipop.link.fastpath.native_coalesce)."""
    if request.param == "python":
        return gro.coalesce
    native = fastpath.native_coalesce()
    if native is None:
        pytest.skip("ipop.link._fastpath was not built (gcc, python3-dev, libssl-dev)")
    return native


SRC, DST = IPv4Address("100.64.0.1"), IPv4Address("100.64.0.2")
ETH = bytes(12) + b"\x08\x00"
TS = TIMESTAMPS


def segment(seq: int, data: bytes, **kw: Any) -> bytes:
    return tcp_segment(seq, data, src=kw.pop("src", SRC), dst=DST, **kw)


def stream(count: int, size: int, *, seq: int = 1000, last: int | None = None) -> list[bytes]:
    """``count`` back-to-back segments of ``size`` bytes (the last one ``last`` bytes), ids
    one up each, PSH on the last: what one TSO send of the peer's kernel becomes."""
    rng = random.Random(count * 7 + size)
    sizes = [size] * (count - 1) + [size if last is None else last]
    out = []
    for i, n in enumerate(sizes):
        flags = ACK | (PSH if i == count - 1 else 0)
        out.append(segment(seq, rng.randbytes(n), flags=flags, ident=100 + i))
        seq += n
    return out


def full_checksum(packet: bytes) -> int:
    """The TCP checksum of ``packet`` as a NIC finishes a CHECKSUM_PARTIAL one: the sum from
    the TCP header on, whose checksum field holds the pseudo-header's sum, complemented."""
    return internet_checksum(packet[20:])


def test_one_flows_segments_become_one_packet_that_cuts_back_into_them(coalesce: Coalesce) -> None:
    segs = stream(10, 1013, last=500)
    out = coalesce(segs)
    assert len(out) == 1
    vnet, merged = out[0]
    flags, gso_type, hdr_len, gso_size, csum_start, csum_offset = VNET_HDR.unpack(vnet)
    thl = 20 + len(TS)
    assert (flags, gso_type, gso_size) == (NEEDS_CSUM, GSO_TCPV4, 1013)
    assert (hdr_len, csum_start, csum_offset) == (ETH_HLEN + 20 + thl, ETH_HLEN + 20, 16)
    merged = bytes(merged)
    assert len(merged) == 20 + thl + 9 * 1013 + 500
    assert int.from_bytes(merged[2:4], "big") == len(merged)
    assert internet_checksum(merged[:20]) == 0  # a valid IPv4 header checksum
    assert merged[33] == ACK | PSH  # the last segment's PSH
    # The partial checksum, finished, is the packet's true one.
    true = bytearray(merged)
    true[36:38] = b"\x00\x00"
    assert full_checksum(merged) == transport_checksum(IPPROTO_TCP, int(SRC), int(DST), true[20:])
    # Cut as the kernel's GSO would: the same segments, byte for byte.
    again = split_tcp(ETH + merged, 1500, gso_size)
    assert isinstance(again, list)
    assert [bytes(f[ETH_HLEN:]) for f in again] == segs


def test_a_shorter_segment_ends_the_run_and_the_next_one_starts_another(coalesce: Coalesce) -> None:
    head = stream(4, 1000, last=600)
    tail = [segment(1000 + 3 * 1000 + 600 + i * 1000, bytes(1000)) for i in range(3)]
    out = coalesce(head + tail)
    assert [VNET_HDR.unpack(v)[1] for v, _ in out] == [GSO_TCPV4, GSO_TCPV4]
    assert [len(p) for _, p in out] == [
        sum(len(s) - 52 for s in head) + 52,
        sum(len(s) - 52 for s in tail) + 52,
    ]


@pytest.mark.parametrize(
    ("name", "second"),
    [
        ("a gap in the sequence", segment(1000 + 1000 + 1, bytes(1000))),
        ("a retransmission", segment(1000, bytes(1000))),
        ("another flow", segment(2000, bytes(1000), sport=40001)),
        ("another sender", segment(2000, bytes(1000), src=IPv4Address("100.64.0.9"))),
        ("another ack number", segment(2000, bytes(1000), ack=778)),
        ("another window", segment(2000, bytes(1000), window=501)),
        ("other timestamps", segment(2000, bytes(1000), options=TS[:-1] + b"\x01")),
        ("other options", segment(2000, bytes(1000), options=b"")),
        ("a FIN", segment(2000, bytes(1000), flags=ACK | FIN)),
        ("a SYN", segment(2000, bytes(1000), flags=ACK | SYN)),
        ("a pure ACK", segment(2000, b"")),
        ("a larger segment", segment(2000, bytes(1001))),
    ],
)
def test_what_may_not_join_a_run_is_written_as_it_came(
    coalesce: Coalesce, name: str, second: bytes
) -> None:
    first = segment(1000, bytes(1000))
    assert coalesce([first, second]) == [(NO_GSO, first), (NO_GSO, second)], name


def test_packets_that_are_not_plain_tcp_data_pass_through_in_order(coalesce: Coalesce) -> None:
    udp = build_ipv4(SRC, DST, IPPROTO_UDP, bytes(100))
    options = bytearray(segment(1000, bytes(1000)))
    options[0] = 0x46  # an IP header with options: never merged
    fragment = bytearray(segment(1000, bytes(1000)))
    fragment[6] |= 0x20  # MF
    padded = segment(1000, bytes(1000)) + b"\x00\x00"
    pushed = segment(1000, bytes(1000), flags=ACK | PSH)  # PSH ends a run: nothing after it
    after = segment(2000, bytes(1000))
    packets = [udp, bytes(options), bytes(fragment), padded, pushed, after, b"\x45", b""]
    assert coalesce(packets) == [(NO_GSO, p) for p in packets]


def test_interleaved_flows_and_a_run_between_other_packets(coalesce: Coalesce) -> None:
    a = stream(3, 800)
    udp = build_ipv4(SRC, DST, IPPROTO_UDP, bytes(10))
    b = [segment(5000 + i * 800, bytes(800), sport=40001) for i in range(3)]
    out = coalesce([udp, *a, udp, *b, b[0]])
    kinds = [(VNET_HDR.unpack(v)[1], len(p)) for v, p in out]
    assert kinds == [
        (0, len(udp)),
        (GSO_TCPV4, 52 + 3 * 800),
        (0, len(udp)),
        (GSO_TCPV4, 52 + 3 * 800),
        (0, len(b[0])),
    ]


def test_a_run_is_capped_in_segments_and_bytes(coalesce: Coalesce) -> None:
    small = stream(MAX_SEGMENTS + 6, 100)
    out = coalesce(small)
    assert [VNET_HDR.unpack(v)[1] for v, _ in out] == [GSO_TCPV4, GSO_TCPV4]
    assert len(out[0][1]) == 52 + MAX_SEGMENTS * 100
    big = stream(60, 1400)
    sizes = [len(p) for _, p in coalesce(big)]
    assert all(size <= MAX_BYTES + 52 for size in sizes)
    assert sum(size - 52 for size in sizes) == 60 * 1400
    assert len(sizes) == 2


def test_random_batches_cut_back_into_exactly_what_came(coalesce: Coalesce) -> None:
    """Whatever the mix, writing the output and cutting each batch again (the kernel's side)
    gives the input packets, in order."""
    rng = random.Random(5)
    for _ in range(200):
        packets: list[bytes] = []
        seq = rng.randrange(1 << 32)
        for _ in range(rng.randrange(1, 30)):
            roll = rng.random()
            if roll < 0.1:
                packets.append(build_ipv4(SRC, DST, IPPROTO_UDP, rng.randbytes(20)))
                continue
            size = rng.choice((1000, 1000, 1000, rng.randrange(1, 1400)))
            if roll < 0.15:
                seq += 1  # a gap
            flags = ACK | (PSH if rng.random() < 0.1 else 0)
            packets.append(segment(seq & 0xFFFFFFFF, rng.randbytes(size), flags=flags))
            seq += size
        got: list[bytes] = []
        for vnet, packet in coalesce(packets):
            _, gso_type, _, gso_size, _, _ = VNET_HDR.unpack(vnet)
            if gso_type == GSO_TCPV4:
                cut = split_tcp(ETH + bytes(packet), 65535, gso_size)
                assert isinstance(cut, list)
                got += [_no_id(bytes(f[ETH_HLEN:])) for f in cut]
            else:
                assert vnet == NO_GSO
                got.append(_no_id(bytes(packet)))
        assert got == [_no_id(p) for p in packets]


def _no_id(packet: bytes) -> bytes:
    """``packet`` without its IP id and header checksum: ids of a cut batch are the kernel's
    to give."""
    return packet[:4] + packet[6:10] + packet[12:]
