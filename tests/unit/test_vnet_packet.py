"""ipop.vnet.packet and ipop.vnet.arp: our struct codecs against scapy's, and garbage."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import ARP, Ether

from ipop.vnet.arp import VIRTUAL_MAC, ArpResponder, arp_target
from ipop.vnet.packet import (
    ETH_HLEN,
    ETH_P_ARP,
    ETH_P_IP,
    IPPROTO_UDP,
    PacketError,
    build_ipv4,
    build_udp,
    build_udp_frame,
    format_mac,
    frame_ethertype,
    internet_checksum,
    ipv4_dst,
    ipv4_src,
    parse_ethernet,
    parse_ipv4,
    parse_mac,
    parse_udp,
    parse_udp_frame,
)

TAP_MAC = "52:54:00:12:34:56"
SUBNET = IPv4Network("100.64.0.0/10")
OWN = IPv4Address("100.64.1.2")


def _scapy_udp_frame(payload: bytes = b"hello", **ip_kw: Any) -> bytes:
    return bytes(
        Ether(src=TAP_MAC, dst="02:1b:0a:00:00:01")
        / IP(src="100.64.1.2", dst="100.64.0.1", **ip_kw)
        / UDP(sport=40000, dport=53)
        / payload
    )


def test_parse_scapy_frame() -> None:
    frame = _scapy_udp_frame(b"payload!", ttl=17, id=4242)
    assert frame_ethertype(frame) == ETH_P_IP
    assert ipv4_src(frame, ETH_HLEN) == int(IPv4Address("100.64.1.2"))
    assert ipv4_dst(frame, ETH_HLEN) == int(IPv4Address("100.64.0.1"))
    uf = parse_udp_frame(frame)
    assert uf.eth.src == parse_mac(TAP_MAC) and uf.eth.dst == VIRTUAL_MAC
    assert uf.ip.ttl == 17 and uf.ip.ident == 4242 and uf.ip.protocol == IPPROTO_UDP
    assert uf.ip.src_ip == OWN and uf.ip.dst_bytes == IPv4Address("100.64.0.1").packed
    assert uf.ip.header_len == 20 and uf.ip.total_len == 20 + 8 + 8
    assert (uf.udp.src_port, uf.udp.dst_port, uf.udp.length) == (40000, 53, 16)
    assert uf.payload == b"payload!"


def test_build_matches_scapy() -> None:
    ours = build_udp_frame(
        dst_mac=VIRTUAL_MAC,
        src_mac=parse_mac(TAP_MAC),
        src_ip=OWN,
        dst_ip=IPv4Address("100.64.0.1"),
        src_port=40000,
        dst_port=53,
        payload=b"hello",
    )
    parsed = Ether(ours)
    # scapy recomputes checksums when we delete them: equal values mean ours are right.
    ip_sum, udp_sum = parsed[IP].chksum, parsed[UDP].chksum
    del parsed[IP].chksum
    del parsed[UDP].chksum
    again = Ether(bytes(parsed))
    assert (again[IP].chksum, again[UDP].chksum) == (ip_sum, udp_sum)
    assert parsed[IP].flags == "DF" and parsed[IP].ttl == 64
    assert bytes(parsed[UDP].payload) == b"hello"


def test_ipv4_options_and_padding() -> None:
    # Options (ihl 6) and trailing Ethernet padding: the payload is bounded by total length.
    pkt = bytes(IP(src="100.64.1.2", dst="100.64.0.1", options=b"\x01\x01\x01\x00") / b"xy")
    hdr, payload = parse_ipv4(pkt + b"\x00" * 10)
    assert hdr.header_len == 24 and hdr.options == b"\x01\x01\x01\x00"
    assert bytes(payload) == b"xy"


def test_checksum_rfc1071_example() -> None:
    # RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2 (ones' complement).
    assert internet_checksum(bytes.fromhex("0001f203f4f5f6f7")) == ~0xDDF2 & 0xFFFF
    assert internet_checksum(b"") == 0xFFFF
    assert internet_checksum(b"\x01") == ~0x0100 & 0xFFFF


@given(st.binary(max_size=200))
def test_checksum_matches_word_loop(data: bytes) -> None:
    padded = data + b"\x00" * (len(data) & 1)
    s = 0
    for i in range(0, len(padded), 2):
        s += (padded[i] << 8) | padded[i + 1]
        s = (s & 0xFFFF) + (s >> 16)
    assert internet_checksum(data) == ~s & 0xFFFF


@given(
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.integers(0, 65535),
    st.integers(0, 65535),
    st.binary(max_size=300),
)
def test_udp_roundtrip(src: int, dst: int, sport: int, dport: int, payload: bytes) -> None:
    pkt = build_ipv4(src, dst, IPPROTO_UDP, build_udp(src, dst, sport, dport, payload))
    hdr, seg = parse_ipv4(pkt)
    assert (hdr.src, hdr.dst) == (src, dst)
    assert ipv4_src(pkt) == src and ipv4_dst(pkt) == dst
    udp, body = parse_udp(seg, src=src, dst=dst)
    assert (udp.src_port, udp.dst_port) == (sport, dport) and bytes(body) == payload
    scapy_ip = IP(pkt)
    assert scapy_ip[UDP].sport == sport and bytes(scapy_ip[UDP].payload) == payload


def test_bad_checksums_rejected() -> None:
    frame = bytearray(_scapy_udp_frame())
    frame[ETH_HLEN + 8] ^= 1  # TTL changes, header checksum does not
    with pytest.raises(PacketError) as e:
        parse_udp_frame(frame)
    assert e.value.reason == "ipv4_bad_checksum"
    frame = bytearray(_scapy_udp_frame())
    frame[-1] ^= 0xFF
    with pytest.raises(PacketError) as e:
        parse_udp_frame(frame)
    assert e.value.reason == "udp_bad_checksum"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x45" + bytes(10), "ipv4_short"),
        (b"\x65" + bytes(19), "ipv4_bad_version"),
        (b"\x44" + bytes(19), "ipv4_bad_ihl"),
        (b"\x4f" + bytes(19), "ipv4_short"),
        (b"\x45\x00\x00\x30" + bytes(16), "ipv4_bad_length"),
    ],
)
def test_ipv4_malformed(data: bytes, reason: str) -> None:
    with pytest.raises(PacketError) as e:
        parse_ipv4(data, verify_checksum=False)
    assert e.value.reason == reason
    assert isinstance(e.value, ValueError)


@given(st.binary(max_size=120))
def test_garbage_only_raises_packet_error(data: bytes) -> None:
    # Anything else escaping (struct.error, IndexError) would fail the test.
    fns = (parse_udp_frame, parse_ipv4, parse_ethernet, parse_udp, ipv4_src, ipv4_dst)
    for fn in (*fns, frame_ethertype):
        try:
            fn(data)
        except PacketError as exc:
            assert exc.reason and exc.reason.replace("_", "").isalnum()


def test_mac_helpers() -> None:
    assert parse_mac("02:1b:0a:00:00:01") == VIRTUAL_MAC
    assert format_mac(VIRTUAL_MAC) == "02:1b:0a:00:00:01"
    with pytest.raises(ValueError):
        parse_mac("02:1b:0a:00:00")
    with pytest.raises(ValueError):
        parse_mac(b"\x00" * 5)


# --- ARP ---------------------------------------------------------------------------------------


def _who_has(target: str, sender: str = "100.64.1.2") -> bytes:
    return bytes(
        Ether(src=TAP_MAC, dst="ff:ff:ff:ff:ff:ff")
        / ARP(op=1, hwsrc=TAP_MAC, psrc=sender, hwdst="00:00:00:00:00:00", pdst=target)
    )


def test_arp_answers_for_subnet_addresses() -> None:
    arp = ArpResponder(OWN, SUBNET, VIRTUAL_MAC)
    for target in ("100.64.0.1", "100.64.1.3", "100.127.255.254"):
        req = _who_has(target)
        assert arp_target(req) == int(IPv4Address(target))
        reply = arp.reply(req)
        assert reply is not None
        r = Ether(reply)
        assert r.dst == TAP_MAC and r.src == "02:1b:0a:00:00:01" and r.type == ETH_P_ARP
        assert r[ARP].op == 2 and r[ARP].hwsrc == "02:1b:0a:00:00:01"
        assert r[ARP].psrc == target and r[ARP].pdst == "100.64.1.2" and r[ARP].hwdst == TAP_MAC
    assert not arp.drops


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (_who_has("100.64.1.2", sender="100.64.1.5"), "arp_local"),
        (_who_has("100.64.1.9", sender="0.0.0.0"), "arp_probe"),
        (_who_has("100.64.1.9", sender="100.64.1.9"), "arp_gratuitous"),
        (_who_has("198.18.0.1"), "arp_outside_subnet"),
        (_who_has("100.64.0.0"), "arp_not_host"),
        (_who_has("100.127.255.255"), "arp_not_host"),
        (bytes(Ether(src=TAP_MAC) / ARP(op=2, psrc="100.64.1.2", pdst="100.64.0.1")), None),
        (_who_has("100.64.0.1")[:30], "arp_short"),
        (_scapy_udp_frame(), "not_arp"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_arp_silences(frame: bytes, reason: str | None) -> None:
    arp = ArpResponder(OWN, SUBNET)
    assert arp.reply(frame) is None
    assert arp.drops[reason or "arp_not_request"] == 1


def test_arp_local_addresses_change() -> None:
    arp = ArpResponder(None, SUBNET)
    assert arp.reply(_who_has("100.64.1.2", sender="100.64.1.5")) is not None
    arp.set_own_ip(OWN)
    assert arp.reply(_who_has("100.64.1.2", sender="100.64.1.5")) is None
    arp.set_own_ip(IPv4Address("100.64.1.7"), previous=OWN)
    assert arp.reply(_who_has("100.64.1.2", sender="100.64.1.5")) is not None


@given(st.binary(max_size=80))
def test_arp_garbage_never_raises(data: bytes) -> None:
    arp = ArpResponder(OWN, SUBNET)
    reply = arp.reply(data)
    assert reply is None or len(reply) == 42
