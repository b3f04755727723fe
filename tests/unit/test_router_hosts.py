"""ipop.router.hosts: the LAN host table, its per-host Ethernet headers and the source check."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest
from scapy.layers.inet import ICMP, IP
from scapy.layers.l2 import Ether

from ipop.errors import LocalProtocolError
from ipop.router.hosts import LanHost, LanHosts, mac_str

OWN = bytes.fromhex("020000000001")
M1 = bytes.fromhex("0a0000000001")
M2 = bytes.fromhex("0a0000000002")
V1 = IPv4Address("100.64.5.1")
V2 = IPv4Address("100.64.5.2")


def _frame(src_mac: bytes, src: IPv4Address, dst: str = "100.70.0.9") -> memoryview:
    pkt = Ether(src=mac_str(src_mac), dst=mac_str(OWN)) / IP(src=str(src), dst=dst) / ICMP()
    return memoryview(bytes(pkt))


def _table() -> LanHosts:
    t = LanHosts(max_hosts=2)
    t.own_mac = OWN
    t.add(LanHost(M1, V1, "dhcp"))
    return t


def test_header_goes_to_the_host_holding_the_destination() -> None:
    t = _table()
    packet = bytes(IP(src="100.70.0.9", dst=str(V1)) / ICMP())
    assert t.header_for(packet) == M1 + OWN + b"\x08\x00"
    assert t.header_for(bytes(IP(src="100.70.0.9", dst=str(V2)) / ICMP())) is None


def test_admit_only_known_mac_and_address_pairs() -> None:
    t = _table()
    assert t.admit(_frame(M1, V1), now=5.0)
    assert t.by_mac(M1) is not None and t.by_mac(M1).last_seen == 5.0  # type: ignore[union-attr]
    assert not t.admit(_frame(M2, V1), now=6.0)
    assert not t.admit(_frame(M1, V2), now=6.0)
    assert t.drops == {"lan_spoofed_src": 1, "lan_unknown_src": 1}


def test_an_address_is_bound_to_one_mac_and_the_table_is_bounded() -> None:
    t = _table()
    with pytest.raises(LocalProtocolError):
        t.add(LanHost(M2, V1, "static"))
    t.add(LanHost(M1, V2, "dhcp"))  # a MAC rebinding moves its address
    assert t.by_ip(V1) is None and t.by_ip(V2) is not None
    t.add(LanHost(M2, V1, "static"))
    with pytest.raises(LocalProtocolError):
        t.add(LanHost(bytes.fromhex("0a0000000003"), IPv4Address("100.64.5.3"), "dhcp"))
    removed = t.remove(M2)
    assert removed is not None and removed.vip == V1 and len(t) == 1
