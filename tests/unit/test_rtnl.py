"""ipop.aio.rtnl: the daemon's rtnetlink requests, byte by byte, and one real address dump.

The kernel state the requests leave was compared with pyroute2's (``ip -d -j link/addr/route/
neigh`` in a namespace, identical); these tests pin the bytes so that cannot drift.
"""

from __future__ import annotations

import asyncio
import errno
import json
import shutil
import socket
import struct
import subprocess
from ipaddress import IPv4Address, IPv4Network

import pytest

from ipop.aio import rtnl
from ipop.aio.rtnl import IfAddr, Rtnl


def _attrs(body: bytes, head: int) -> dict[int, bytes]:
    return dict(rtnl._attrs(body[head:]))


def test_request_header_and_parse_round_trip() -> None:
    msg = rtnl.request(rtnl.RTM_GETADDR, rtnl.NLM_F_DUMP, 7, b"\x02" + bytes(7))
    length, kind, flags, seq, pid = struct.unpack_from("=IHHII", msg)
    assert (length, kind, seq, pid) == (len(msg), rtnl.RTM_GETADDR, 7, 0)
    assert flags == rtnl.NLM_F_REQUEST | rtnl.NLM_F_DUMP
    # Two messages in one datagram, the first padded to 4 bytes.
    two = rtnl.request(1, 0, 1, b"abc") + b"\0" + rtnl.request(2, 0, 2, b"")
    assert [(k, s, p) for k, _f, s, p in rtnl.parse(two)] == [(1, 1, b"abc"), (2, 2, b"")]


def test_parse_stops_at_a_truncated_message() -> None:
    msg = rtnl.request(1, 0, 1, b"abcd")
    assert list(rtnl.parse(msg[:-1])) == []
    assert list(rtnl.parse(b"\xff" * 3)) == []


def test_addr_body_carries_flags_above_a_byte_as_ifa_flags() -> None:
    body = rtnl.addr_body(5, IPv4Address("100.64.3.4"), 10, flags=0x200)
    family, prefixlen, flags8, scope, index = struct.unpack_from("=BBBBI", body)
    assert (family, prefixlen, flags8, scope, index) == (socket.AF_INET, 10, 0, 0, 5)
    attrs = _attrs(body, 8)
    assert attrs[rtnl.IFA_LOCAL] == attrs[rtnl.IFA_ADDRESS] == bytes([100, 64, 3, 4])
    assert attrs[rtnl.IFA_FLAGS] == struct.pack("=I", 0x200)
    assert rtnl.IFA_FLAGS not in _attrs(rtnl.addr_body(5, IPv4Address("100.64.3.4"), 10), 8)


def test_route_body_main_table_static_unicast() -> None:
    body = rtnl.route_body(
        IPv4Network("100.64.0.0/10"),
        oif=3,
        prefsrc=IPv4Address("100.64.3.4"),
        gateway=IPv4Address("100.64.0.1"),
    )
    fields = struct.unpack_from("=BBBBBBBBI", body)
    assert fields == (socket.AF_INET, 10, 0, 0, 254, rtnl.RTPROT_STATIC, 0, rtnl.RTN_UNICAST, 0)
    attrs = _attrs(body, 12)
    assert attrs[rtnl.RTA_DST] == bytes([100, 64, 0, 0])
    assert attrs[rtnl.RTA_OIF] == struct.pack("=I", 3)
    assert attrs[rtnl.RTA_PREFSRC] == bytes([100, 64, 3, 4])
    assert attrs[rtnl.RTA_GATEWAY] == bytes([100, 64, 0, 1])
    on_link = rtnl.route_body(
        IPv4Network("100.64.0.1/32"),
        oif=3,
        prefsrc=IPv4Address("100.64.3.4"),
        scope=rtnl.RT_SCOPE_LINK,
    )
    assert struct.unpack_from("=BBBBBBBBI", on_link)[6] == rtnl.RT_SCOPE_LINK
    assert rtnl.RTA_GATEWAY not in _attrs(on_link, 12)


def test_link_and_neigh_bodies() -> None:
    link = rtnl.link_set_body(4, mtu=1380, txqlen=2048, up=True)
    assert struct.unpack_from("=BxHiII", link) == (0, 0, 4, rtnl.IFF_UP, rtnl.IFF_UP)
    attrs = _attrs(link, 16)
    assert attrs[rtnl.IFLA_MTU] == struct.pack("=I", 1380)
    assert attrs[rtnl.IFLA_TXQLEN] == struct.pack("=I", 2048)
    mac = bytes.fromhex("021b0a000001")
    neigh = rtnl.neigh_body(4, IPv4Address("100.64.0.1"), mac, 0x80)
    assert struct.unpack_from("=BxxxiHBB", neigh) == (socket.AF_INET, 4, 0x80, 0, 0)
    assert _attrs(neigh, 12) == {rtnl.NDA_DST: bytes([100, 64, 0, 1]), rtnl.NDA_LLADDR: mac}


def test_parse_addr() -> None:
    payload = struct.pack("=BBBBI", socket.AF_INET, 24, 0, 0, 9)
    payload += rtnl._attr(rtnl.IFA_ADDRESS, bytes([203, 0, 113, 5]))
    assert rtnl.parse_addr(payload) == IfAddr(9, 24, "203.0.113.5")
    assert rtnl.parse_addr(struct.pack("=BBBBI", socket.AF_INET6, 64, 0, 0, 9)) is None
    assert rtnl.parse_addr(b"\x02") is None
    # An attribute whose length runs past the end is not read (and nothing raises).
    bad = struct.pack("=BBBBI", socket.AF_INET, 24, 0, 0, 9) + struct.pack("=HH", 40, 1)
    assert rtnl.parse_addr(bad) == IfAddr(9, 24, None)


def test_check_ack() -> None:
    rtnl.check_ack(struct.pack("=i", 0) + bytes(16))
    with pytest.raises(OSError) as err:
        rtnl.check_ack(struct.pack("=i", -errno.EEXIST) + bytes(16))
    assert err.value.errno == errno.EEXIST


@pytest.mark.skipif(shutil.which("ip") is None, reason="needs iproute2's ip")
def test_dump_lists_the_same_ipv4_addresses_as_ip() -> None:
    """A real RTM_GETADDR dump in this process's namespace (reading needs no privilege)."""

    async def dump() -> list[IfAddr]:
        async with Rtnl() as nl:
            return await nl.ipv4_addresses()

    ours = {(a.index, a.address, a.prefixlen) for a in asyncio.run(dump())}
    shown = json.loads(
        subprocess.run(["ip", "-j", "-4", "addr"], capture_output=True, text=True).stdout
    )
    theirs = {
        (link["ifindex"], a.get("address", a["local"]), a["prefixlen"])
        for link in shown
        for a in link["addr_info"]
    }
    assert ours == theirs
    assert any(address == "127.0.0.1" for _i, address, _p in ours)


def test_rule_body_from_an_address_or_out_of_an_interface_looks_up_a_table() -> None:
    by_src = rtnl.rule_body(table=201, priority=201, src=IPv4Address("100.64.3.4"))
    fields = struct.unpack_from("=BBBBBBBBI", by_src)
    assert fields == (socket.AF_INET, 0, 32, 0, 201, 0, 0, rtnl.FR_ACT_TO_TBL, 0)
    attrs = _attrs(by_src, 12)
    assert attrs[rtnl.FRA_SRC] == bytes([100, 64, 3, 4])
    assert attrs[rtnl.FRA_TABLE] == struct.pack("=I", 201)
    assert attrs[rtnl.FRA_PRIORITY] == struct.pack("=I", 201)
    by_oif = rtnl.rule_body(table=201, priority=201, oifname="ipop1")
    assert struct.unpack_from("=BBBBBBBBI", by_oif)[2] == 0  # no source length
    assert _attrs(by_oif, 12)[rtnl.FRA_OIFNAME] == b"ipop1\0"
    assert rtnl.FRA_SRC not in _attrs(by_oif, 12)
    table = rtnl.route_body(
        IPv4Network("100.64.0.0/10"), oif=3, prefsrc=IPv4Address("100.64.3.4"), table=201
    )
    assert struct.unpack_from("=BBBBBBBBI", table)[4] == 201
