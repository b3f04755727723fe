"""ipop.vnet.networks: a node in two networks with overlapping ranges delivers each packet to
its network's side only, after that network's checks; a forged tag gets nowhere."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest

from ipop.types import NodeId
from ipop.vnet.filter import Drop, PacketFilter, Verdict
from ipop.vnet.networks import TAG_BYTES, NetDrop, NetworkDemux, check_distinct, network_tag
from ipop.vnet.owners import OwnerTable
from ipop.vnet.packet import IPPROTO_UDP, build_ipv4

# Both networks use one range; the daemon AB holds .5 in A and .6 in B.
SUBNET = IPv4Network("100.64.0.0/16")
AB, A1, B1 = NodeId(1), NodeId(2), NodeId(3)
AB_IN_A = IPv4Address("100.64.0.5").packed
AB_IN_B = IPv4Address("100.64.0.6").packed
A1_IP = IPv4Address("100.64.0.10").packed  # A1's address in A ...
B1_IP = IPv4Address("100.64.0.10").packed  # ... and B1's in B: the same
TAG_A, TAG_B = network_tag(b"A" * 32), network_tag(b"B" * 32)
NOW = 1000.0


def _side(own: bytes, holder: NodeId) -> PacketFilter:
    owners = OwnerTable()
    f = PacketFilter(AB, SUBNET, owners)
    f.set_own_ip(own)
    owners.answer(A1_IP, holder, now=NOW)  # .10 per this network's DHT namespace
    return f


def _demux() -> NetworkDemux:
    return NetworkDemux([(TAG_A, _side(AB_IN_A, A1)), (TAG_B, _side(AB_IN_B, B1))])


def _ip(src: bytes, dst: bytes) -> bytes:
    return build_ipv4(IPv4Address(src), IPv4Address(dst), IPPROTO_UDP, b"x" * 12)


def test_the_tag_is_four_bytes_of_the_ca_key_and_differs_per_network() -> None:
    assert len(TAG_A) == TAG_BYTES == 4
    assert network_tag(b"A" * 32) == TAG_A and TAG_A != TAG_B
    with pytest.raises(ValueError, match="share a network tag"):
        check_distinct([TAG_A, TAG_B, TAG_A])
    with pytest.raises(ValueError):
        NetworkDemux([(TAG_A, _side(AB_IN_A, A1)), (TAG_A, _side(AB_IN_B, B1))])


@pytest.mark.parametrize(
    ("src", "tag", "dst", "side"),
    [(A1, TAG_A, AB_IN_A, 0), (B1, TAG_B, AB_IN_B, 1)],
    ids=["a1-in-A", "b1-in-B"],
)
def test_tagged_ip_goes_to_its_networks_side_after_its_checks(
    src: NodeId, tag: bytes, dst: bytes, side: int
) -> None:
    packet = _ip(A1_IP, dst)
    assert _demux().check_in(src, True, tag + packet, NOW) == (side, 4, Verdict.DELIVER)


@pytest.mark.parametrize(
    ("src", "dst", "side"), [(A1, AB_IN_A, 0), (B1, AB_IN_B, 1)], ids=["a1-in-A", "b1-in-B"]
)
def test_untagged_ip_of_a_one_network_sender_goes_to_the_side_of_its_destination(
    src: NodeId, dst: bytes, side: int
) -> None:
    packet = _ip(A1_IP, dst)
    assert _demux().check_in(src, False, packet, NOW) == (side, 0, Verdict.DELIVER)


@pytest.mark.parametrize("dst", [AB_IN_B, AB_IN_A], ids=["dst-in-B", "dst-in-A"])
def test_a_member_of_a_only_never_gets_a_packet_onto_bs_side_even_with_bs_tag(
    dst: bytes,
) -> None:
    # A1 holds .10 in A; in B, .10 is B1's. A1 forges B's tag, with its own source address,
    # to either of our addresses: B's side checks the source against B's owners.
    got = _demux().check_in(A1, True, TAG_B + _ip(A1_IP, dst), NOW)
    if dst == AB_IN_B:
        assert got == (1, 4, Drop.SPOOFED_INNER_SRC)
    else:  # our address in A is not ours in B
        assert got == (1, 4, Drop.INNER_DST_NOT_OURS)


def test_a_forged_tag_for_an_address_nobody_in_b_holds_is_looked_up_in_b_only() -> None:
    demux = _demux()
    fresh = IPv4Address("100.64.0.77").packed  # A1's second address in A, say
    demux.filters[0].owners.answer(fresh, A1, now=NOW)
    got = demux.check_in(A1, True, TAG_B + _ip(fresh, AB_IN_B), NOW)
    # B's side asks B's namespace (the adapter holds the packet there) ...
    assert got == (1, 4, Verdict.LOOKUP)
    # ... whose answer is not A1: dropped by B's filter once it is known.
    demux.filters[1].owners.answer(fresh, None, now=NOW)
    again = demux.check_in(A1, True, TAG_B + _ip(fresh, AB_IN_B), NOW)
    assert again == (1, 4, Drop.UNKNOWN_INNER_SRC)


def test_unknown_tags_and_destinations_are_the_wrong_network() -> None:
    demux = _demux()
    stranger = network_tag(b"C" * 32)
    assert demux.check_in(A1, True, stranger + _ip(A1_IP, AB_IN_A), NOW) is (
        NetDrop.IP_WRONG_NETWORK
    )
    assert demux.check_in(A1, True, TAG_A[:2], NOW) is NetDrop.IP_WRONG_NETWORK
    nobody = IPv4Address("100.64.0.99").packed
    assert demux.check_in(A1, False, _ip(A1_IP, nobody), NOW) is NetDrop.IP_WRONG_NETWORK


def test_a_one_network_node_takes_its_own_tag_and_refuses_others() -> None:
    one = NetworkDemux([(TAG_A, _side(AB_IN_A, A1))])
    packet = _ip(A1_IP, AB_IN_A)
    assert one.check_in(A1, False, packet, NOW) == (0, 0, Verdict.DELIVER)
    assert one.check_in(A1, True, TAG_A + packet, NOW) == (0, 4, Verdict.DELIVER)
    assert one.check_in(A1, True, TAG_B + packet, NOW) is NetDrop.IP_WRONG_NETWORK


def test_untagged_to_an_address_both_sides_hold_goes_where_the_source_is_the_senders() -> None:
    owners_a, owners_b = OwnerTable(), OwnerTable()
    a, b = PacketFilter(AB, SUBNET, owners_a), PacketFilter(AB, SUBNET, owners_b)
    a.set_own_ip(AB_IN_A)
    b.set_own_ip(AB_IN_A)
    owners_b.answer(B1_IP, B1, now=NOW)
    demux = NetworkDemux([(TAG_A, a), (TAG_B, b)])
    # A knows nothing of .10 yet (LOOKUP), B knows it is B1's: B1's packet goes to B ...
    assert demux.check_in(B1, False, _ip(B1_IP, AB_IN_A), NOW) == (1, 0, Verdict.DELIVER)
    # ... and A1's to the first candidate's lookup (A), never past B's check.
    assert demux.check_in(A1, False, _ip(A1_IP, AB_IN_A), NOW) == (0, 0, Verdict.LOOKUP)
