"""ipop.dhcp_dns.dhcp: the codec against scapy's, and the server's exchanges (RFC 2131)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Packet

from ipop.dhcp_dns.dhcp import (
    BOOTREPLY,
    BOOTREQUEST,
    AddressDeclined,
    AddressReleased,
    AddressWanted,
    DhcpMessage,
    DhcpServer,
    LeaseGranted,
    MessageType,
    Opt,
    encode_dhcp,
    parse_dhcp,
)
from ipop.errors import LocalProtocolError
from ipop.vnet.arp import VIRTUAL_MAC
from ipop.vnet.packet import PacketError, parse_mac

SUBNET = IPv4Network("100.64.0.0/10")
GW = IPv4Address("100.64.0.1")
MAC = "52:54:00:12:34:56"
MACB = parse_mac(MAC)
IP1 = IPv4Address("100.64.1.2")
NOW = 1_700_000_000.0


def _server() -> DhcpServer:
    return DhcpServer(GW, SUBNET, dns_ip=GW, domain="ipop", mtu=1400, lease_s=600)


def _client_frame(
    mtype: str,
    *,
    xid: int = 0x1234,
    flags: int = 0,
    ciaddr: str = "0.0.0.0",
    src: str = "0.0.0.0",
    dst: str = "255.255.255.255",
    options: list[tuple[str, object]] | None = None,
    mac: str = MAC,
) -> bytes:
    opts: list[object] = [("message-type", mtype), *(options or []), "end"]
    return bytes(
        Ether(src=mac, dst="ff:ff:ff:ff:ff:ff")
        / IP(src=src, dst=dst)
        / UDP(sport=68, dport=67)
        / BOOTP(op=1, chaddr=parse_mac(mac) + bytes(10), xid=xid, flags=flags, ciaddr=ciaddr)
        / DHCP(options=opts)
    )


def _opts(pkt: Packet) -> dict[str, object]:
    return {o[0]: o[1] for o in pkt[DHCP].options if isinstance(o, tuple)}


# --- codec -------------------------------------------------------------------------------------


def test_parse_scapy_request() -> None:
    frame = _client_frame(
        "request",
        options=[
            ("requested_addr", "100.64.1.2"),
            ("server_id", "100.64.0.1"),
            ("hostname", b"alice-laptop"),
            ("client_id", b"\x01" + MACB),
            ("param_req_list", [1, 3, 6, 15, 26]),
        ],
    )
    msg = parse_dhcp(bytes(Ether(frame)[BOOTP]))
    assert msg.op == BOOTREQUEST and msg.xid == 0x1234 and msg.mac == MACB
    assert msg.message_type == MessageType.REQUEST
    assert msg.requested_ip == IP1 and msg.server_id == GW
    assert msg.hostname == "alice-laptop" and msg.client_id == b"\x01" + MACB
    assert msg.parameter_request_list == bytes([1, 3, 6, 15, 26])


def test_encode_parsed_by_scapy_and_back() -> None:
    msg = DhcpMessage(
        op=BOOTREPLY,
        xid=99,
        chaddr=MACB + bytes(10),
        yiaddr=IP1,
        options=(
            (Opt.MESSAGE_TYPE, bytes([MessageType.OFFER])),
            (Opt.SERVER_ID, GW.packed),
            (Opt.DOMAIN_NAME, b"x" * 300),  # split in two (RFC 3396), merged on parse
        ),
    )
    data = encode_dhcp(msg)
    assert len(data) >= 300
    sc = BOOTP(data)
    assert sc.yiaddr == "100.64.1.2" and sc.xid == 99
    assert _opts(sc)["message-type"] == 2 and _opts(sc)["server_id"] == "100.64.0.1"
    back = parse_dhcp(data)
    assert back.option(Opt.DOMAIN_NAME) == b"x" * 300
    assert back.yiaddr == IP1 and back.options == msg.options


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (bytes(100), "dhcp_short"),
        (bytes(236) + b"\x00\x00\x00\x00\xff", "dhcp_bad_magic"),
        (b"\x01\x01\x06" + bytes(233) + b"\x63\x82\x53\x63\x35", "dhcp_bad_option"),
        (b"\x01\x01\x06" + bytes(233) + b"\x63\x82\x53\x63\x35\x05\x01", "dhcp_bad_option"),
        (b"\x01\x01\x06" + bytes(233) + b"\x63\x82\x53\x63\x35\x01\x01", "dhcp_no_end"),
        (b"\x03\x01\x06" + bytes(233) + b"\x63\x82\x53\x63\xff", "dhcp_bad_op"),
    ],
)
def test_codec_rejects(data: bytes, reason: str) -> None:
    with pytest.raises(PacketError) as e:
        parse_dhcp(data)
    assert e.value.reason == reason


@given(st.binary(max_size=400))
def test_codec_garbage(data: bytes) -> None:
    try:
        parse_dhcp(data)
    except PacketError as exc:
        assert exc.reason.startswith("dhcp_")


@given(st.binary(max_size=400), st.binary(min_size=0, max_size=120))
def test_server_garbage_never_raises(tail: bytes, options: bytes) -> None:
    srv = _server()
    srv.assign(MACB, IP1)
    payload = (
        b"\x01\x01\x06\x00" + bytes(24) + MACB + bytes(202) + b"\x63\x82\x53\x63" + options + tail
    )
    frame = bytes(
        Ether(src=MAC) / IP(src="0.0.0.0", dst="255.255.255.255") / UDP(sport=68, dport=67)
    )
    for data in (frame + payload, tail, frame[:30] + tail):
        replies = srv.handle_frame(data, now=NOW)
        assert all(Ether(r).haslayer(DHCP) for r in replies)


# --- server ------------------------------------------------------------------------------------


def test_unknown_mac_waits_for_assignment_then_full_exchange() -> None:
    srv = _server()
    discover = _client_frame("discover", options=[("hostname", b"alice-laptop")])
    assert srv.handle_frame(discover, now=NOW) == []
    assert srv.next_event() == AddressWanted(MACB, "alice-laptop")
    assert srv.next_event() is None
    # A retransmission before assignment: silent and no second event (rate-limited).
    assert srv.handle_frame(discover, now=NOW + 2) == []
    assert srv.next_event() is None
    srv.assign(MAC, IP1)
    [offer] = srv.handle_frame(discover, now=NOW + 4)
    o = Ether(offer)
    assert o.src == "02:1b:0a:00:00:01" and o[IP].src == "100.64.0.1"
    # No BROADCAST flag: unicast to yiaddr at chaddr (RFC 2131 §4.1).
    assert o.dst == MAC and o[IP].dst == "100.64.1.2" and o[UDP].dport == 68
    assert o[BOOTP].op == 2 and o[BOOTP].yiaddr == "100.64.1.2" and o[BOOTP].xid == 0x1234
    opts = _opts(o)
    assert opts["message-type"] == 2 and opts["server_id"] == "100.64.0.1"
    assert opts["subnet_mask"] == "255.192.0.0" and opts["name_server"] == "100.64.0.1"
    assert opts["domain"] == b"ipop" and opts["interface-mtu"] == 1400
    assert opts["lease_time"] == 600 and opts["renewal_time"] == 300
    assert "router" not in opts

    request = _client_frame(
        "request",
        flags=0x8000,
        options=[("requested_addr", "100.64.1.2"), ("server_id", "100.64.0.1")],
    )
    [ack] = srv.handle_frame(request, now=NOW + 5)
    a = Ether(ack)
    assert _opts(a)["message-type"] == 5 and a[BOOTP].yiaddr == "100.64.1.2"
    assert a.dst == "ff:ff:ff:ff:ff:ff" and a[IP].dst == "255.255.255.255"  # BROADCAST flag
    assert srv.next_event() == LeaseGranted(MACB, IP1, None, NOW + 5 + 600)


def test_request_for_wrong_address_is_naked() -> None:
    srv = _server()
    srv.assign(MACB, IP1)
    req = _client_frame("request", options=[("requested_addr", "100.64.9.9")])
    [nak] = srv.handle_frame(req, now=NOW)
    n = Ether(nak)
    assert _opts(n)["message-type"] == 6 and n[BOOTP].yiaddr == "0.0.0.0"
    assert n.dst == "ff:ff:ff:ff:ff:ff" and n[IP].dst == "255.255.255.255"
    assert "lease_time" not in _opts(n)


def test_request_for_another_server_is_ignored() -> None:
    srv = _server()
    srv.assign(MACB, IP1)
    req = _client_frame(
        "request", options=[("requested_addr", "100.64.1.2"), ("server_id", "100.64.0.9")]
    )
    assert srv.handle_frame(req, now=NOW) == []
    assert srv.drops["dhcp_other_server"] == 1


def test_renew_unicast_to_ciaddr() -> None:
    srv = _server()
    srv.assign(MACB, IP1)
    req = _client_frame("request", ciaddr="100.64.1.2", src="100.64.1.2", dst="100.64.0.1")
    [ack] = srv.handle_frame(req, now=NOW)
    a = Ether(ack)
    assert _opts(a)["message-type"] == 5
    assert a.dst == MAC and a[IP].dst == "100.64.1.2" and a[BOOTP].ciaddr == "100.64.1.2"


def test_init_reboot_unknown_mac_is_silent() -> None:
    srv = _server()
    req = _client_frame("request", options=[("requested_addr", "100.64.1.2")])
    assert srv.handle_frame(req, now=NOW) == []
    assert isinstance(srv.next_event(), AddressWanted)


def test_inform_release_decline() -> None:
    srv = _server()
    srv.assign(MACB, IP1)
    inform = _client_frame("inform", ciaddr="100.64.1.2", src="100.64.1.2")
    [ack] = srv.handle_frame(inform, now=NOW)
    a = Ether(ack)
    assert _opts(a)["message-type"] == 5 and "lease_time" not in _opts(a)
    assert a[BOOTP].yiaddr == "0.0.0.0" and a[IP].dst == "100.64.1.2"

    release = _client_frame("release", ciaddr="100.64.1.2", options=[("server_id", "100.64.0.1")])
    assert srv.handle_frame(release, now=NOW) == []
    assert srv.next_event() == AddressReleased(MACB, IP1)

    decline = _client_frame(
        "decline", options=[("requested_addr", "100.64.1.2"), ("server_id", "100.64.0.1")]
    )
    assert srv.handle_frame(decline, now=NOW) == []
    assert srv.next_event() == AddressDeclined(MACB, IP1)
    assert srv.binding(MACB) is None


def test_assign_misuse_raises() -> None:
    srv = _server()
    with pytest.raises(LocalProtocolError):
        srv.assign(MACB, GW)
    with pytest.raises(LocalProtocolError):
        srv.assign(MACB, IPv4Address("198.18.0.5"))
    srv.assign(MACB, IP1)
    with pytest.raises(LocalProtocolError):
        srv.assign("52:54:00:00:00:01", IP1)
    srv.assign(MACB, IPv4Address("100.64.1.3"))  # moving a MAC frees its old address
    srv.assign("52:54:00:00:00:01", IP1)
    assert srv.binding("52:54:00:00:00:01") == IP1


def test_server_drops_by_reason() -> None:
    srv = _server()
    reply = bytes(
        Ether(src=MAC)
        / IP(src="0.0.0.0", dst="255.255.255.255")
        / UDP(sport=68, dport=67)
        / BOOTP(op=2, chaddr=MACB)
        / DHCP(options=[("message-type", "offer"), "end"])
    )
    no_type = bytes(
        Ether(src=MAC)
        / IP(src="0.0.0.0", dst="255.255.255.255")
        / UDP(sport=68, dport=67)
        / BOOTP(op=1, chaddr=MACB)
        / DHCP(options=["end"])
    )
    assert srv.handle_frame(reply, now=NOW) == []
    assert srv.handle_frame(no_type, now=NOW) == []
    assert srv.handle_frame(b"\x00" * 20, now=NOW) == []
    assert srv.drops == {"dhcp_not_request": 1, "dhcp_no_type": 1, "eth_not_ipv4": 1}


def test_server_mac_and_router_option() -> None:
    srv = DhcpServer(GW, SUBNET, router=GW, server_mac=VIRTUAL_MAC)
    srv.assign(MACB, IP1)
    [offer] = srv.handle_frame(_client_frame("discover"), now=NOW)
    assert _opts(Ether(offer))["router"] == "100.64.0.1"


def test_pending_table_full_of_stale_macs_still_takes_a_new_one() -> None:
    """A DISCOVER flood of random MACs that never got an address must not lock out the next
    host: stamps older than want_retry_s are forgotten; fresh ones are bounded and counted."""
    srv = DhcpServer(GW, SUBNET, max_pending=8, want_retry_s=10.0)
    for i in range(20):
        srv.handle_frame(_client_frame("discover", mac=f"52:54:00:00:01:{i:02x}"), now=NOW)
    assert srv.drops["dhcp_too_many_pending"] == 12
    assert len([e for e in iter(srv.next_event, None)]) == 8
    srv.handle_frame(_client_frame("discover"), now=NOW + 5)  # the flood's stamps still hold
    assert srv.next_event() is None and srv.drops["dhcp_too_many_pending"] == 13
    srv.handle_frame(_client_frame("discover"), now=NOW + 11)
    assert srv.next_event() == AddressWanted(MACB, None)
    assert len(srv._wanted) == 1
