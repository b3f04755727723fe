"""ipop.vnet.filter: every verdict of the inbound and outbound checks, and accepted addresses."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipop.timing import OWNER_NEGATIVE_TTL_S, OWNER_TTL_S
from ipop.types import NodeId
from ipop.vnet.filter import Drop, PacketFilter, Verdict
from ipop.vnet.owners import OwnerTable
from ipop.vnet.packet import IPPROTO_UDP, build_ipv4

SUBNET = IPv4Network("100.64.0.0/16")
ME, PEER, OTHER = NodeId(1), NodeId(2), NodeId(3)
OWN = IPv4Address("100.64.0.20").packed
PEER_IP = IPv4Address("100.64.0.10").packed
OTHER_IP = IPv4Address("100.64.0.30").packed
HOST_IP = IPv4Address("100.64.0.40").packed  # a router's LAN host
UNKNOWN_IP = IPv4Address("100.64.7.7").packed
NOW = 1000.0


def _filter() -> PacketFilter:
    owners = OwnerTable()
    f = PacketFilter(ME, SUBNET, owners)
    f.set_own_ip(OWN)
    owners.answer(PEER_IP, PEER, now=NOW)
    owners.answer(OTHER_IP, OTHER, now=NOW)
    owners.answer(UNKNOWN_IP, None, now=NOW)
    return f


def _ip(src: bytes | str, dst: bytes | str) -> bytes:
    return build_ipv4(IPv4Address(src), IPv4Address(dst), IPPROTO_UDP, b"x" * 12)


def _frame(src: bytes | str, dst: bytes | str) -> bytearray:
    return bytearray(b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + _ip(src, dst))


# --- inbound ------------------------------------------------------------------------------------


@pytest.mark.parametrize("off", [0, 2])
def test_a_packet_from_its_sources_holder_to_us_is_delivered(off: int) -> None:
    f = _filter()
    assert f.check_in(PEER, b"\x01\x02"[:off] + _ip(PEER_IP, OWN), off, NOW) is Verdict.DELIVER


@pytest.mark.parametrize(
    "packet",
    [b"", b"\x45" * 19, b"\x60" + bytes(39), bytes(20)],
    ids=["empty", "short", "ipv6", "version0"],
)
def test_inbound_non_ipv4_is_dropped(packet: bytes) -> None:
    assert _filter().check_in(PEER, packet, 0, NOW) is Drop.INNER_NOT_IPV4


@pytest.mark.parametrize(
    "dst",
    [
        "100.64.0.10",  # another member's vIP (the sender's own, even)
        "100.64.0.30",
        "100.64.255.255",  # the subnet's broadcast address
        "100.64.0.1",  # the gateway
        "198.18.0.5",  # a LAN behind this host
        "127.0.0.1",
        "224.0.0.251",  # multicast
        "255.255.255.255",
    ],
)
def test_inbound_for_any_address_but_ours_is_dropped(dst: str) -> None:
    f = _filter()
    assert f.check_in(PEER, _ip(PEER_IP, dst), 0, NOW) is Drop.INNER_DST_NOT_OURS


def test_nothing_is_accepted_before_the_node_has_an_address() -> None:
    f = PacketFilter(ME, SUBNET, OwnerTable())
    f.owners.answer(PEER_IP, PEER, now=NOW)
    assert f.check_in(PEER, _ip(PEER_IP, OWN), 0, NOW) is Drop.INNER_DST_NOT_OURS


def test_a_source_held_by_another_node_is_spoofed() -> None:
    f = _filter()
    assert f.check_in(PEER, _ip(OTHER_IP, OWN), 0, NOW) is Drop.SPOOFED_INNER_SRC


def test_our_own_address_as_source_is_spoofed() -> None:
    f = _filter()
    f.accept(HOST_IP)
    assert f.check_in(PEER, _ip(OWN, OWN), 0, NOW) is Drop.SPOOFED_INNER_SRC
    assert f.check_in(PEER, _ip(HOST_IP, OWN), 0, NOW) is Drop.SPOOFED_INNER_SRC


def test_a_source_known_to_be_free_is_unknown() -> None:
    f = _filter()
    assert f.check_in(PEER, _ip(UNKNOWN_IP, OWN), 0, NOW) is Drop.UNKNOWN_INNER_SRC
    # The negative answer expires: then the address is looked up again.
    later = NOW + OWNER_NEGATIVE_TTL_S + 0.1
    assert f.check_in(PEER, _ip(UNKNOWN_IP, OWN), 0, later) is Verdict.LOOKUP


@pytest.mark.parametrize("src", ["198.18.0.5", "100.65.0.1", "0.0.0.0", "255.255.255.255"])
def test_a_source_outside_the_subnet_is_never_looked_up(src: str) -> None:
    assert _filter().check_in(PEER, _ip(src, OWN), 0, NOW) is Drop.INNER_SRC_OUTSIDE_SUBNET


def test_an_unknown_or_expired_source_needs_a_lookup() -> None:
    f = _filter()
    assert f.check_in(PEER, _ip("100.64.9.9", OWN), 0, NOW) is Verdict.LOOKUP
    later = NOW + OWNER_TTL_S + 0.1
    assert f.check_in(PEER, _ip(PEER_IP, OWN), 0, later) is Verdict.LOOKUP


def test_a_router_accepts_its_lan_hosts_until_they_leave() -> None:
    f = _filter()
    assert f.check_in(PEER, _ip(PEER_IP, HOST_IP), 0, NOW) is Drop.INNER_DST_NOT_OURS
    f.accept(HOST_IP)
    assert f.accepts(HOST_IP)
    assert f.owners.owner_of(HOST_IP) == ME
    assert f.check_in(PEER, _ip(PEER_IP, HOST_IP), 0, NOW) is Verdict.DELIVER
    f.unaccept(HOST_IP)
    assert not f.accepts(HOST_IP)
    assert f.owners.owner_of(HOST_IP) is None
    assert f.check_in(PEER, _ip(PEER_IP, HOST_IP), 0, NOW) is Drop.INNER_DST_NOT_OURS
    # Removing the node's own address as a "host" keeps it.
    f.unaccept(OWN)
    assert f.accepts(OWN)
    assert f.owners.owner_of(OWN) == ME


def test_a_new_own_address_replaces_the_old_one() -> None:
    f = _filter()
    new = IPv4Address("100.64.0.21").packed
    f.set_own_ip(new)
    assert f.accepts(new)
    assert not f.accepts(OWN)
    assert f.owners.owner_of(OWN) is None
    assert f.check_in(PEER, _ip(PEER_IP, OWN), 0, NOW) is Drop.INNER_DST_NOT_OURS


# --- outbound -----------------------------------------------------------------------------------


def test_a_frame_for_a_known_member_goes_to_its_owner() -> None:
    frame = _frame(OWN, PEER_IP)
    assert _filter().check_out(frame, len(frame), NOW) == PEER


@pytest.mark.parametrize(
    "frame",
    [
        bytearray(b"\x02" * 12 + b"\x08\x06" + bytes(28)),  # ARP
        _frame(OWN, PEER_IP)[:33],  # no whole IPv4 header
        bytearray(b"\x02" * 12 + b"\x86\xdd" + bytes(40)),  # IPv6
    ],
    ids=["arp", "short", "ipv6"],
)
def test_outbound_non_ipv4_is_for_the_local_services(frame: bytearray) -> None:
    assert _filter().check_out(frame, len(frame), NOW) is Drop.TAP_NOT_IPV4


@pytest.mark.parametrize("dst", ["100.64.0.1", "198.18.0.5", "255.255.255.255", "224.0.0.251"])
def test_outbound_outside_the_subnet_or_to_the_gateway(dst: str) -> None:
    frame = _frame(OWN, dst)
    assert _filter().check_out(frame, len(frame), NOW) is Drop.TAP_OUTSIDE_SUBNET


def test_outbound_to_a_free_address_to_ourselves_or_unknown() -> None:
    f = _filter()
    frame = _frame(OWN, UNKNOWN_IP)
    assert f.check_out(frame, len(frame), NOW) is Drop.NO_SUCH_VIP
    frame = _frame(OWN, OWN)
    assert f.check_out(frame, len(frame), NOW) is Drop.TO_SELF
    frame = _frame(OWN, "100.64.9.9")
    assert f.check_out(frame, len(frame), NOW) is Verdict.LOOKUP
    frame = _frame(OWN, PEER_IP)
    assert f.check_out(frame, len(frame), NOW + OWNER_TTL_S + 1) is Verdict.LOOKUP


def test_outbound_reads_only_the_first_size_bytes_as_the_frame() -> None:
    # The data plane's read buffer is longer than the frame in it.
    buf = _frame(OWN, PEER_IP) + bytearray(2000)
    assert _filter().check_out(buf, 30, NOW) is Drop.TAP_NOT_IPV4
    assert _filter().check_out(buf, 60, NOW) == PEER


# --- differential: the filter against a naive model, over random histories ----------------------

_ADDRS = [IPv4Address(a) for a in ("100.64.0.10", "100.64.0.20", "100.64.0.30", "100.64.0.40")]
_ODD = [IPv4Address(a) for a in ("100.64.0.1", "198.18.0.5", "100.64.255.255")]
_NODES = [ME, PEER, OTHER]


class _Naive:
    """What the filter decides, written plainly (no eviction: the table is large enough)."""

    def __init__(self) -> None:
        self.own: IPv4Address | None = None
        self.hosts: set[IPv4Address] = set()
        self.answers: dict[IPv4Address, tuple[NodeId | None, float]] = {}

    def holder(self, ip: IPv4Address, now: float) -> tuple[bool, NodeId | None]:
        if ip == self.own or ip in self.hosts:
            return True, ME
        owner, until = self.answers.get(ip, (None, 0.0))
        return (until > now, owner) if ip in self.answers else (False, None)

    def check_in(self, src: NodeId, packet: bytes, now: float) -> Verdict | Drop:
        if len(packet) < 20 or packet[0] >> 4 != 4:
            return Drop.INNER_NOT_IPV4
        if IPv4Address(packet[16:20]) not in {self.own, *self.hosts}:
            return Drop.INNER_DST_NOT_OURS
        sip = IPv4Address(packet[12:16])
        known, owner = self.holder(sip, now)
        if known:
            if owner is None:
                return Drop.UNKNOWN_INNER_SRC
            return Verdict.DELIVER if owner == src else Drop.SPOOFED_INNER_SRC
        return Verdict.LOOKUP if sip in SUBNET else Drop.INNER_SRC_OUTSIDE_SUBNET

    def check_out(self, dst: IPv4Address, now: float) -> NodeId | Verdict | Drop:
        if dst not in SUBNET or dst == IPv4Address("100.64.0.1"):
            return Drop.TAP_OUTSIDE_SUBNET
        known, owner = self.holder(dst, now)
        if not known:
            return Verdict.LOOKUP
        if owner is None:
            return Drop.NO_SUCH_VIP
        return Drop.TO_SELF if owner == ME else owner


_addr = st.sampled_from(_ADDRS + _ODD)
_op = st.one_of(
    st.tuples(st.just("own"), st.sampled_from(_ADDRS)),
    st.tuples(st.just("accept"), st.sampled_from(_ADDRS)),
    st.tuples(st.just("unaccept"), st.sampled_from(_ADDRS)),
    st.tuples(st.just("answer"), st.sampled_from(_ADDRS), st.sampled_from([*_NODES, None])),
    st.tuples(st.just("wait"), st.floats(0.0, 200.0)),
    st.tuples(st.just("in"), st.sampled_from(_NODES[1:]), _addr, _addr),
    st.tuples(st.just("out"), _addr),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_op, max_size=40))
def test_the_filter_agrees_with_a_naive_model(ops: list[tuple[Any, ...]]) -> None:
    f = PacketFilter(ME, SUBNET, OwnerTable())
    naive = _Naive()
    now = NOW
    for op in ops:
        kind = op[0]
        if kind == "own":  # an address of ours forgets what the DHT said of it
            f.set_own_ip(op[1].packed)
            naive.own = op[1]
            naive.answers.pop(op[1], None)
        elif kind == "accept":
            f.accept(op[1].packed)
            naive.hosts.add(op[1])
            naive.answers.pop(op[1], None)
        elif kind == "unaccept":
            f.unaccept(op[1].packed)
            naive.hosts.discard(op[1])
        elif kind == "answer":
            f.owners.answer(op[1].packed, op[2], now=now)
            if op[1] != naive.own and op[1] not in naive.hosts:
                ttl = OWNER_TTL_S if op[2] is not None else OWNER_NEGATIVE_TTL_S
                naive.answers[op[1]] = (op[2], now + ttl)
        elif kind == "wait":
            now += op[1]
        elif kind == "in":
            packet = _ip(op[2], op[3])
            assert f.check_in(op[1], packet, 0, now) == naive.check_in(op[1], packet, now), op
        else:
            frame = _frame(naive.own or "100.64.0.20", op[1])
            assert f.check_out(frame, len(frame), now) == naive.check_out(op[1], now), op
