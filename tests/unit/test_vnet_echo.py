"""ICMP echo replies for a router's own vIP (ipop.vnet.echo): built from bytes, checked by
parsing with scapy (build and parse only, nothing is sent)."""

from __future__ import annotations

from scapy.layers.inet import ICMP, IP

from ipop.vnet.echo import echo_reply


def _request(**ip: object) -> bytes:
    return bytes(IP(src="100.64.1.2", dst="100.64.9.9", **ip) / ICMP(id=77, seq=5) / (b"x" * 56))


def test_an_echo_request_gets_its_reply_back_toward_the_sender() -> None:
    got = echo_reply(_request())
    assert got is not None
    reply = IP(got)
    assert (reply.src, reply.dst) == ("100.64.9.9", "100.64.1.2")
    icmp = reply[ICMP]
    assert (icmp.type, icmp.code, icmp.id, icmp.seq) == (0, 0, 77, 5)
    assert bytes(icmp.payload) == b"x" * 56
    # Checksums as scapy computes them: rebuilt with them cleared, they come out the same.
    again = IP(got)
    del again.chksum
    del again[ICMP].chksum
    assert bytes(again) == got
    assert len(got) == len(_request())  # never larger than the request


def test_only_whole_echo_requests_are_answered() -> None:
    assert echo_reply(bytes(IP(src="100.64.1.2", dst="100.64.9.9") / ICMP(type=0))) is None
    assert echo_reply(_request(flags="MF")) is None  # a first fragment
    assert echo_reply(_request(frag=3)) is None  # a later fragment
    assert echo_reply(_request(options=[b"\x01" * 4])) is None  # options: left to a stack
    req = _request()
    assert echo_reply(req[:27]) is None  # shorter than an echo request
    assert echo_reply(req[:-1]) is None  # total length past what arrived
    assert echo_reply(b"\x60" + req[1:]) is None  # not IPv4
    assert echo_reply(b"") is None
