"""ipop.router.lan: finishing the TCP/UDP checksums LAN hosts leave to their NIC, and cutting the
batches they hand on (TSO, UDP GSO, GRO), as the packet socket's virtio header says.

The expected checksums come from scapy (which computes them itself); the "partial" frames are
made as the kernel hands them to a packet socket: the checksum field holding the folded,
not complemented, sum of the pseudo-header.
"""

from __future__ import annotations

import errno
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

from ipop.router.lan import (
    CSUM_REASONS,
    DATA_VALID,
    GSO_NONE,
    GSO_TCPV4,
    GSO_UDP_L4,
    NEEDS_CSUM,
    VNET_HDR,
    CsumDrop,
    LanSocket,
    finish_frame,
    split_batch,
    split_tcp,
    split_udp,
)

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


def _finish(frame: bytes) -> tuple[bytes, CsumDrop | None]:
    buf = bytearray(frame)
    got = finish_frame(buf)
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
    assert _finish(partial) == (full, None)


def test_ethernet_padding_is_not_summed() -> None:
    # A 42-byte frame is padded to 60 on the wire; only the IPv4 total length counts.
    full, partial = _partial(ETH / IP(src="100.64.0.7", dst="100.64.0.1") / UDP(dport=53))
    pad = b"\xee" * (60 - len(full))
    assert _finish(partial + pad) == (full + pad, None)


def test_a_udp_sum_of_zero_is_sent_as_ffff() -> None:
    pkt = ETH / IP(src="100.64.0.7", dst="100.64.0.1") / UDP(sport=7, dport=9) / Raw(b"\0\0")
    # The payload word that makes the ones' complement sum 0xFFFF: the checksum with it zero.
    word = UDP(bytes(pkt[UDP])).chksum
    pkt[Raw].load = word.to_bytes(2, "big")
    _, partial = _partial(pkt)
    fixed, got = _finish(partial)
    assert got is None and fixed[40:42] == b"\xff\xff"


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
    fixed, got = _finish(frame)
    assert got is reason and fixed == frame


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120), st.booleans())
def test_garbage_never_raises(data: bytes, ipv4: bool) -> None:
    # Half the cases start like an IPv4 frame, so the deeper checks are reached.
    frame = (bytes(12) + b"\x08\x00" + data) if ipv4 else data
    _, got = _finish(frame)
    assert got is None or got.value in CSUM_REASONS


# --- the socket glue ----------------------------------------------------------------------


class _FakeSock:
    """recvmsg_into as a packet socket with PACKET_VNET_HDR answers it: the virtio header
    into the first buffer, the frame into the second."""

    def __init__(
        self, frame: bytes, flags: int = 0, gso: tuple[int, int] = (GSO_NONE, 0), msg: int = 0
    ) -> None:
        self.frame, self.flags, self.gso, self.msg = frame, flags, gso, msg

    def recvmsg_into(self, bufs: tuple[bytearray, bytearray]) -> tuple[Any, ...]:
        vnet, buf = bufs
        gso_type, gso_size = self.gso
        vnet[:] = VNET_HDR.pack(self.flags, gso_type, 0, gso_size, 34, 6)
        n = min(len(self.frame), len(buf))
        buf[:n] = self.frame[:n]
        return VNET_HDR.size + n, [], self.msg, ("lan0", 3, 0, 1, b"")


class _RefusingSock:
    """What recvmsg_into does when the kernel cannot describe a batch in a virtio header."""

    def recvmsg_into(self, bufs: tuple[bytearray, bytearray]) -> tuple[Any, ...]:
        raise OSError(errno.EINVAL, "Invalid argument")


def _lan(sock: _FakeSock | _RefusingSock) -> LanSocket:
    lan = LanSocket.__new__(LanSocket)  # no AF_PACKET socket: that needs root
    lan.sock = sock  # type: ignore[assignment]
    lan.mtu = 1400
    lan.drops = Counter()
    lan.counters = Counter()
    lan._pending = deque()
    lan._vnet = bytearray(VNET_HDR.size)
    return lan


def _read_all(lan: LanSocket, buf: bytearray) -> list[bytes]:
    """Every frame one read of the socket gives (a cut batch: one piece a read)."""
    got = [bytes(buf[: lan.read_into(buf)])]
    lan.sock = None  # type: ignore[assignment]  # the rest come without a read
    while lan.pending():
        got.append(bytes(buf[: lan.read_into(buf)]))
    return got


def test_read_into_finishes_partial_frames_and_counts() -> None:
    full, partial = _partial(ETH / IP(src="100.64.0.7", dst="100.64.0.1") / UDP(dport=53))
    buf = bytearray(2048)
    lan = _lan(_FakeSock(partial, NEEDS_CSUM))
    assert lan.read_into(buf) == len(full) and bytes(buf[: len(full)]) == full
    assert lan.counters["csum_completed"] == 1 and not lan.drops


@pytest.mark.parametrize("flags", [0, DATA_VALID])
def test_frames_not_marked_partial_pass_unchanged(flags: int) -> None:
    # Even one whose checksum is wrong: the kernel verified it (DATA_VALID), or a wire carried
    # it finished; checking it is the receiver's business, as on any router.
    _, partial = _partial(ETH / IP(src="100.64.0.7", dst="100.64.0.1") / UDP(dport=53))
    buf = bytearray(2048)
    lan = _lan(_FakeSock(partial, flags))
    assert lan.read_into(buf) == len(partial) and bytes(buf[: len(partial)]) == partial
    assert lan.counters["csum_valid"] == (1 if flags else 0) and not lan.drops


def test_read_into_drops_refused_and_truncated_frames_as_zero() -> None:
    buf = bytearray(2048)
    lan = _lan(_FakeSock(_ip_frame(flags="MF"), NEEDS_CSUM))
    assert lan.read_into(buf) == 0
    lan.sock = _FakeSock(_ip_frame(), 0, msg=socket.MSG_TRUNC)  # type: ignore[assignment]
    assert lan.read_into(buf) == 0
    lan.sock = _RefusingSock()  # type: ignore[assignment]
    assert lan.read_into(buf) == 0
    assert dict(lan.drops) == {
        CsumDrop.FRAGMENT: 1,
        CsumDrop.TRUNCATED: 1,
        CsumDrop.GSO_TYPE: 1,
    }
    assert set(lan.drops) <= CSUM_REASONS


# --- cutting batches (TSO/GSO, GRO) ---------------------------------------------------------


def _check(seg: bytes, layer: type[Packet] = TCP) -> Ether:
    """``seg`` parsed, after checking its IPv4 and TCP/UDP checksums against scapy's own."""
    pkt = Ether(seg)
    again = pkt.copy()
    del again[IP].chksum, again[layer].chksum
    rebuilt = Ether(bytes(again))
    assert (pkt[IP].chksum, pkt[layer].chksum) == (rebuilt[IP].chksum, rebuilt[layer].chksum)
    return pkt


@pytest.mark.parametrize("options", [[], [("NOP", None), ("NOP", None), ("Timestamp", (7, 9))]])
@pytest.mark.parametrize("partial", [True, False])
def test_a_tcp_batch_is_cut_into_segments_within_the_mtu(options: list[Any], partial: bool) -> None:
    data = bytes(range(256)) * 20  # 5120 bytes
    pkt = (
        ETH
        / IP(src="100.64.0.7", dst="100.80.1.2", id=0xFFFE, flags="DF")
        / TCP(sport=5555, dport=80, seq=0xFFFFF000, flags="FPAC", options=options)
        / Raw(data)
    )
    frame = _partial(pkt)[1] if partial else bytes(pkt)
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


def test_a_tcp_batch_is_cut_at_its_gso_size() -> None:
    # The sender's MSS (gso_size) is what a NIC would cut at, when it is below the MTU's room.
    pkt = ETH / IP(src="100.64.0.7", dst="100.80.1.2") / TCP(flags="A") / Raw(b"m" * 3000)
    segs = split_batch(_partial(pkt)[1], GSO_TCPV4, 1000, 1400)
    assert isinstance(segs, list)
    assert [len(_check(s)[TCP].payload) for s in segs] == [1000, 1000, 1000]
    assert split_batch(bytes(pkt), GSO_TCPV4, 9000, 1400) == split_tcp(bytes(pkt), 1400)
    # The ECN flag (the batch's first segment carries CWR): split_tcp clears CWR after it.
    assert split_batch(bytes(pkt), GSO_TCPV4 | 0x80, 1000, 1400) == segs


def test_a_tcp_segment_summing_to_zero_gets_0000_as_from_the_kernel() -> None:
    # A payload word that makes the sum 0xFFFF: the field is 0 (csum_fold), as scapy gives.
    pkt = ETH / IP(src="100.64.0.7", dst="100.80.1.2") / TCP(flags="A") / Raw(b"\0\0")
    pkt[Raw].load = TCP(bytes(pkt[TCP])).chksum.to_bytes(2, "big")
    segs = split_tcp(bytes(pkt), 1400)
    assert isinstance(segs, list) and segs[0][50:52] == b"\x00\x00"
    assert _check(segs[0])[TCP].chksum == 0


def test_cutting_refuses_what_is_not_a_whole_tcp_packet() -> None:
    big = ETH / IP(src="100.64.0.7", dst="100.64.0.1")
    assert split_tcp(bytes(big / UDP() / Raw(b"u" * 3000)), 1400) is CsumDrop.OVERSIZE
    tcp = bytes(big / TCP() / Raw(b"t" * 3000))
    assert split_tcp(tcp[:2000], 1400) is CsumDrop.MALFORMED  # total length past the end
    assert split_tcp(bytes(big / TCP(dataofs=15) / Raw(b"t" * 30)), 1400) is CsumDrop.MALFORMED
    assert split_tcp(tcp, 40) is CsumDrop.MALFORMED  # no room for a byte of data
    frag = bytes(ETH / IP(flags="MF") / TCP() / Raw(b"t" * 3000))
    assert split_tcp(frag, 1400) is CsumDrop.FRAGMENT


def _udp_batch(payload: bytes, ident: int = 7) -> Packet:
    """A UDP GSO batch as the packet socket sees it: one IPv4 packet holding every datagram's
    payload, its UDP checksum the pseudo-header's sum only (CHECKSUM_PARTIAL)."""
    return (
        ETH
        / IP(src="100.64.0.7", dst="100.80.1.2", id=ident, flags="DF", ttl=63)
        / UDP(sport=4433, dport=443)
        / Raw(payload)
    )


@pytest.mark.parametrize(
    ("size", "total"),
    [(1200, 24000), (1200, 24001), (1001, 5000), (1372, 65507), (700, 700)],
    ids=["even", "last-shorter", "odd-size", "64k", "one"],
)
def test_a_udp_batch_is_cut_into_its_datagrams(size: int, total: int) -> None:
    payload = bytes((i * 7 + i // 251) & 0xFF for i in range(total))
    batch = _udp_batch(payload, ident=0xFFFF)
    segs = split_batch(_partial(batch)[1], GSO_UDP_L4, size, 1400)
    assert isinstance(segs, list) and len(segs) == -(-total // size)
    for i, seg in enumerate(segs):
        p = _check(seg, UDP)
        piece = payload[i * size : (i + 1) * size]
        # Each datagram is exactly what the sender's i-th send() would have put on a wire.
        expected = _udp_batch(piece, ident=(0xFFFF + i) & 0xFFFF)
        assert seg == bytes(expected), i
        assert p[IP].len == 28 + len(piece) and p[UDP].len == 8 + len(piece)
        assert p[IP].flags == "DF" and p[IP].ttl == 63 and p[UDP].chksum != 0


def test_a_udp_datagram_summing_to_zero_gets_ffff() -> None:
    # Find a payload whose datagram's checksum computes as 0: it must go out as 0xFFFF.
    word = UDP(bytes(_udp_batch(b"\0\0")[UDP])).chksum
    segs = split_udp(bytes(_udp_batch(word.to_bytes(2, "big"))), 2, 1400)
    assert isinstance(segs, list) and segs[0][40:42] == b"\xff\xff"


def test_udp_batches_that_cannot_be_cut_are_refused() -> None:
    batch = bytes(_udp_batch(b"u" * 6000))
    assert split_udp(batch, 1400, 1400) is CsumDrop.OVERSIZE  # 1428-byte datagrams
    assert split_udp(batch, 0, 1400) is CsumDrop.MALFORMED
    assert split_udp(batch[:3000], 1000, 1400) is CsumDrop.MALFORMED
    tcp = bytes(ETH / IP() / TCP() / Raw(b"t" * 3000))
    assert split_batch(tcp, GSO_UDP_L4, 1000, 1400) is CsumDrop.MALFORMED
    assert split_batch(batch, 4, 1000, 1400) is CsumDrop.GSO_TYPE  # TCPv6
    assert split_batch(batch, GSO_NONE, 0, 1400) is CsumDrop.OVERSIZE  # no gso_size: no cut


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=200),
    st.integers(min_value=1, max_value=100),
    st.sampled_from([GSO_NONE, GSO_TCPV4, GSO_UDP_L4, GSO_TCPV4 | 0x80, 3, 4]),
    st.integers(min_value=0, max_value=0xFFFF),
)
def test_cutting_garbage_never_raises(data: bytes, mtu: int, gso_type: int, size: int) -> None:
    got = split_batch(bytes(12) + b"\x08\x00" + data, gso_type, size, mtu)
    assert isinstance(got, list) or got.value in CSUM_REASONS


def test_read_into_hands_a_cut_batch_on_one_segment_a_read() -> None:
    pkt = ETH / IP(src="100.64.0.7", dst="100.80.1.2") / TCP(flags="PA") / Raw(b"d" * 4000)
    _, partial = _partial(pkt)
    expected = split_tcp(partial, 1400)
    assert isinstance(expected, list) and len(expected) == 3
    lan = _lan(_FakeSock(partial, NEEDS_CSUM, (GSO_TCPV4, 1360)))
    assert _read_all(lan, bytearray(65549)) == expected
    assert lan.counters["gso_split"] == 1
    # The same without the virtio header's word (a host with a larger MTU than DHCP gave).
    lan = _lan(_FakeSock(partial, NEEDS_CSUM))
    assert _read_all(lan, bytearray(65549)) == expected


@pytest.mark.parametrize("merged", [False, True], ids=["gso-from-host", "gro-from-nic"])
def test_read_into_hands_a_udp_batch_on_one_datagram_a_read(merged: bool) -> None:
    """Issue 14, finding 6: a LAN host's UDP_SEGMENT batch was dropped as oversize. A NIC's
    GRO merge of UDP comes the same way, its checksum verified (DATA_VALID), not partial."""
    payload = bytes(range(256)) * 94  # 24064 bytes: 20 datagrams of 1200, one of 64
    full, partial = _partial(_udp_batch(payload))
    frame, flags = (full, DATA_VALID) if merged else (partial, NEEDS_CSUM)
    lan = _lan(_FakeSock(frame, flags, (GSO_UDP_L4, 1200)))
    got = _read_all(lan, bytearray(65549))
    assert len(got) == 21 and b"".join(bytes(_check(f, UDP)[UDP].payload) for f in got) == payload
    assert all(len(f) <= 14 + 1400 for f in got)
    assert lan.counters["uso_split"] == 1 and not lan.drops
    # The largest batch there is (a 64 kB IPv4 packet) fits the data plane's read buffer.
    _, partial = _partial(_udp_batch(b"x" * (65535 - 28)))
    lan = _lan(_FakeSock(partial, NEEDS_CSUM, (GSO_UDP_L4, 1372)))
    assert len(_read_all(lan, bytearray(65535 + 14))) == 48 and not lan.drops
    # No gso_size: a UDP packet above the MTU is dropped, not cut (datagrams are the sender's).
    lan = _lan(_FakeSock(bytes(_udp_batch(b"u" * 3000)), NEEDS_CSUM))
    assert lan.read_into(bytearray(65549)) == 0 and lan.drops[CsumDrop.OVERSIZE] == 1
