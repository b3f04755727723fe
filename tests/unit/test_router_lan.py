"""router.lan: finishing the TCP/UDP checksums LAN hosts leave to their NIC (PACKET_AUXDATA).

The expected checksums come from scapy (which computes them itself); the "partial" frames are
made as the kernel hands them to a packet socket: the checksum field holding the folded,
not complemented, sum of the pseudo-header.
"""

from __future__ import annotations

import socket
import struct
from collections import Counter, deque
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw

from router.lan import (
    CSUM_REASONS,
    PACKET_AUXDATA,
    SOL_PACKET,
    TP_STATUS_CSUM_VALID,
    TP_STATUS_CSUMNOTREADY,
    CsumDrop,
    LanSocket,
    finish_frame,
    split_tcp,
)

NOT_READY = TP_STATUS_CSUMNOTREADY
ETH = Ether(src="0a:00:00:00:00:01", dst="02:00:00:00:00:01")


def _fold(data: bytes) -> int:
    """Ones' complement sum of 16-bit words, word by word (independent of ipop.vnet.packet)."""
    if len(data) % 2:
        data += b"\x00"
    total = 0
    for (word,) in struct.iter_unpack("!H", data):
        total += word
        total = (total & 0xFFFF) + (total >> 16)
    return total


def _partial(pkt: Packet) -> tuple[bytes, bytes]:
    """(the finished frame as scapy builds it, the same frame as an offloading host sends it)."""
    full = bytes(pkt)
    ip = Ether(full)[IP]  # built: ihl and proto filled in
    ihl = ip.ihl * 4
    seg_len = len(bytes(ip.payload))
    at = 14 + ihl + (16 if TCP in pkt else 6)
    pseudo = socket.inet_aton(ip.src) + socket.inet_aton(ip.dst)
    pseudo += struct.pack("!BBH", 0, ip.proto, seg_len)
    partial = full[:at] + _fold(pseudo).to_bytes(2, "big") + full[at + 2 :]
    return full, partial


def _finish(frame: bytes, status: int) -> tuple[bytes, CsumDrop | None]:
    buf = bytearray(frame)
    got = finish_frame(buf, status)
    return bytes(buf), got


@pytest.mark.parametrize(
    "pkt",
    [
        ETH / IP(src="100.64.0.7", dst="100.64.0.1") / UDP(sport=40000, dport=53) / Raw(b"q" * 29),
        ETH
        / IP(src="100.64.0.7", dst="100.80.1.2")
        / TCP(sport=5555, dport=80, flags="PA")
        / Raw(bytes(range(256)) * 5),
        # IP options (ihl 6), an odd payload length
        ETH
        / IP(src="100.64.0.7", dst="100.80.1.2", options=b"\x94\x04\x00\x00")
        / TCP(sport=1, dport=2, flags="S", options=[("MSS", 1360)])
        / Raw(b"x" * 7),
        # no payload: a bare ACK
        ETH / IP(src="100.64.0.9", dst="100.99.0.1") / TCP(sport=1, dport=2, flags="A"),
    ],
    ids=["udp", "tcp", "tcp-options-odd", "tcp-bare"],
)
def test_a_partial_checksum_is_completed_as_the_nic_would(pkt: Packet) -> None:
    full, partial = _partial(pkt)
    assert partial != full
    assert _finish(partial, NOT_READY) == (full, None)


def test_ethernet_padding_is_not_summed() -> None:
    # A 42-byte frame is padded to 60 on the wire; only the IPv4 total length counts.
    full, partial = _partial(ETH / IP(src="100.64.0.7", dst="100.64.0.1") / UDP(dport=53))
    pad = b"\xee" * (60 - len(full))
    assert _finish(partial + pad, NOT_READY) == (full + pad, None)


def test_a_udp_sum_of_zero_is_sent_as_ffff() -> None:
    pkt = ETH / IP(src="100.64.0.7", dst="100.64.0.1") / UDP(sport=7, dport=9) / Raw(b"\0\0")
    # The payload word that makes the ones' complement sum 0xFFFF: the checksum with it zero.
    word = UDP(bytes(pkt[UDP])).chksum
    pkt[Raw].load = word.to_bytes(2, "big")
    _, partial = _partial(pkt)
    fixed, got = _finish(partial, NOT_READY)
    assert got is None and fixed[40:42] == b"\xff\xff"


@pytest.mark.parametrize("status", [0, TP_STATUS_CSUM_VALID, TP_STATUS_CSUM_VALID | 1])
def test_frames_not_marked_partial_pass_unchanged(status: int) -> None:
    # Even one whose checksum is wrong: the kernel verified it (CSUM_VALID), or a wire carried
    # it finished; checking it is the receiver's business, as on any router.
    _, partial = _partial(ETH / IP(src="100.64.0.7", dst="100.64.0.1") / UDP(dport=53))
    assert _finish(partial, status) == (partial, None)
    assert _finish(b"\x01", status) == (b"\x01", None)


def _ip_frame(**ip: Any) -> bytes:
    return bytes(ETH / IP(src="100.64.0.7", dst="100.64.0.1", **ip) / UDP(dport=53) / Raw(b"a"))


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"", CsumDrop.PROTOCOL),
        (_ip_frame()[:30], CsumDrop.PROTOCOL),  # shorter than Ethernet + IPv4 headers
        (bytes(Ether() / Raw(b"\x60" + b"\0" * 60)), CsumDrop.PROTOCOL),  # IPv6
        (bytes(ETH / IP(dst="100.64.0.1") / ICMP()), CsumDrop.PROTOCOL),
        (_ip_frame()[:40], CsumDrop.MALFORMED),  # total length past the frame's end
        (_ip_frame(len=24), CsumDrop.MALFORMED),  # a UDP header cut short
        (_ip_frame(len=10), CsumDrop.MALFORMED),  # total length below the header's
        (_ip_frame(ihl=4), CsumDrop.MALFORMED),
        (_ip_frame(version=5), CsumDrop.MALFORMED),
        (_ip_frame(flags="MF"), CsumDrop.FRAGMENT),
        (_ip_frame(frag=3), CsumDrop.FRAGMENT),
    ],
)
def test_partial_frames_that_cannot_be_completed_are_refused(
    frame: bytes, reason: CsumDrop
) -> None:
    fixed, got = _finish(frame, NOT_READY)
    assert got is reason and fixed == frame


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=120),
    st.sampled_from([NOT_READY, NOT_READY | TP_STATUS_CSUM_VALID]),
    st.booleans(),
)
def test_garbage_never_raises(data: bytes, status: int, ipv4: bool) -> None:
    # Half the cases start like an IPv4 frame, so the deeper checks are reached.
    frame = (bytes(12) + b"\x08\x00" + data) if ipv4 else data
    _, got = _finish(frame, status)
    assert got is None or got.value in CSUM_REASONS


# --- the socket glue ----------------------------------------------------------------------


class _FakeSock:
    """recvmsg_into as a packet socket with PACKET_AUXDATA answers it."""

    def __init__(self, frame: bytes, status: int | None, flags: int = 0) -> None:
        self.frame, self.status, self.flags = frame, status, flags

    def recvmsg_into(self, bufs: list[bytearray], ancsize: int) -> tuple[Any, ...]:
        n = len(self.frame)
        bufs[0][:n] = self.frame
        anc = []
        if self.status is not None:
            aux = struct.pack("=IIIHHHH", self.status, n, n, 0, 14, 0, 0)
            anc.append((SOL_PACKET, PACKET_AUXDATA, aux))
        return n, anc, self.flags, ("lan0", 3, 0, 1, b"")


def _lan(sock: _FakeSock) -> LanSocket:
    lan = LanSocket.__new__(LanSocket)  # no AF_PACKET socket: that needs root
    lan.sock = sock  # type: ignore[assignment]
    lan.mtu = 1400
    lan.drops = Counter()
    lan.counters = Counter()
    lan._pending = deque()
    return lan


def test_read_into_finishes_partial_frames_and_counts() -> None:
    full, partial = _partial(ETH / IP(src="100.64.0.7", dst="100.64.0.1") / UDP(dport=53))
    buf = bytearray(2048)
    lan = _lan(_FakeSock(partial, NOT_READY))
    assert lan.read_into(buf) == len(full) and bytes(buf[: len(full)]) == full
    assert lan.counters["csum_completed"] == 1 and not lan.drops
    lan = _lan(_FakeSock(partial, TP_STATUS_CSUM_VALID))
    assert lan.read_into(buf) == len(partial) and bytes(buf[: len(partial)]) == partial
    assert lan.counters["csum_valid"] == 1
    lan = _lan(_FakeSock(full, None))  # no control message: taken as finished
    assert lan.read_into(buf) == len(full) and bytes(buf[: len(full)]) == full


def test_read_into_drops_refused_and_truncated_frames_as_zero() -> None:
    buf = bytearray(2048)
    lan = _lan(_FakeSock(_ip_frame(flags="MF"), NOT_READY))
    assert lan.read_into(buf) == 0
    lan.sock = _FakeSock(_ip_frame(), 0, socket.MSG_TRUNC)  # type: ignore[assignment]
    assert lan.read_into(buf) == 0
    assert dict(lan.drops) == {CsumDrop.FRAGMENT: 1, CsumDrop.TRUNCATED: 1}
    assert set(lan.drops) <= CSUM_REASONS


# --- cutting batches (TSO/GSO, GRO) ---------------------------------------------------------


def _check(seg: bytes) -> Ether:
    """``seg`` parsed, after checking its IPv4 and TCP checksums against scapy's own."""
    pkt = Ether(seg)
    again = pkt.copy()
    del again[IP].chksum, again[TCP].chksum
    rebuilt = Ether(bytes(again))
    assert (pkt[IP].chksum, pkt[TCP].chksum) == (rebuilt[IP].chksum, rebuilt[TCP].chksum)
    return pkt


@pytest.mark.parametrize("options", [[], [("NOP", None), ("NOP", None), ("Timestamp", (7, 9))]])
@pytest.mark.parametrize("status", [NOT_READY, 0])
def test_a_tcp_batch_is_cut_into_segments_within_the_mtu(options: list[Any], status: int) -> None:
    data = bytes(range(256)) * 20  # 5120 bytes
    pkt = (
        ETH
        / IP(src="100.64.0.7", dst="100.80.1.2", id=0xFFFE, flags="DF")
        / TCP(sport=5555, dport=80, seq=0xFFFFF000, flags="FPAC", options=options)
        / Raw(data)
    )
    _, partial = _partial(pkt)
    frame = partial if status else bytes(pkt)
    segs = split_tcp(frame, 1400)
    assert isinstance(segs, list)
    parsed = [_check(s) for s in segs]
    thl = len(TCP(options=options)) if options else 20
    assert len(segs) == -(-len(data) // (1400 - 20 - thl))
    assert all(len(p[IP]) <= 1400 and p[IP].len == len(p[IP]) for p in parsed)
    assert b"".join(bytes(p[TCP].payload) for p in parsed) == data
    at = 0
    for i, p in enumerate(parsed):
        assert p[TCP].seq == (0xFFFFF000 + at) & 0xFFFFFFFF
        assert p[IP].id == (0xFFFE + i) & 0xFFFF and p[IP].flags == "DF"
        assert p[TCP].options == TCP(bytes(pkt[TCP])).options
        at += len(p[TCP].payload)
    assert [str(p[TCP].flags) for p in parsed] == ["AC"] + ["A"] * (len(segs) - 2) + ["FPA"]


def test_cutting_refuses_what_is_not_a_whole_tcp_packet() -> None:
    big = ETH / IP(src="100.64.0.7", dst="100.64.0.1")
    assert split_tcp(bytes(big / UDP() / Raw(b"u" * 3000)), 1400) is CsumDrop.OVERSIZE
    tcp = bytes(big / TCP() / Raw(b"t" * 3000))
    assert split_tcp(tcp[:2000], 1400) is CsumDrop.MALFORMED  # total length past the end
    assert split_tcp(bytes(big / TCP(dataofs=15) / Raw(b"t" * 30)), 1400) is CsumDrop.MALFORMED
    assert split_tcp(tcp, 40) is CsumDrop.MALFORMED  # no room for a byte of data
    frag = bytes(ETH / IP(flags="MF") / TCP() / Raw(b"t" * 3000))
    assert split_tcp(frag, 1400) is CsumDrop.FRAGMENT


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.integers(min_value=1, max_value=100))
def test_cutting_garbage_never_raises(data: bytes, mtu: int) -> None:
    got = split_tcp(bytes(12) + b"\x08\x00" + data, mtu)
    assert isinstance(got, list) or got.value in CSUM_REASONS


def test_read_into_hands_a_cut_batch_on_one_segment_a_read() -> None:
    pkt = ETH / IP(src="100.64.0.7", dst="100.80.1.2") / TCP(flags="PA") / Raw(b"d" * 4000)
    _, partial = _partial(pkt)
    expected = split_tcp(partial, 1400)
    assert isinstance(expected, list) and len(expected) == 3
    buf = bytearray(65535)
    lan = _lan(_FakeSock(partial, NOT_READY))
    got = []
    for _ in expected:
        size = lan.read_into(buf)
        got.append(bytes(buf[:size]))
        lan.sock = None  # type: ignore[assignment]  # the rest come without a read
    assert got == expected and not lan.pending()
    assert lan.counters["gso_split"] == 1
    lan.sock = _FakeSock(bytes(ETH / IP() / UDP() / Raw(b"u" * 3000)), NOT_READY)  # type: ignore[assignment]
    assert lan.read_into(buf) == 0 and lan.drops[CsumDrop.OVERSIZE] == 1
