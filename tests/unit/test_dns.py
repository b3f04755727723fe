"""ipop.dhcp_dns.dns (the sans-IO resolver) and ipop.dhcp_dns.services (the TAP entry point)."""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Address, IPv4Network
from typing import Any, cast

import pytest
from dnslib import QTYPE, RCODE, DNSRecord
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import ARP, Ether

from ipop.dhcp_dns import services as services_module
from ipop.dhcp_dns.dhcp import AddressWanted
from ipop.dhcp_dns.dns import DnsAnswer, DnsResolver, Forward, NeedsLookup, Waiting
from ipop.dhcp_dns.services import TapServices, TapServicesRunner
from ipop.errors import LocalProtocolError

SUBNET = IPv4Network("100.64.0.0/10")
NOW = 1_700_000_000.0


def _q(name: str, qtype: str = "A") -> bytes:
    return bytes(DNSRecord.question(name, qtype).pack())


def _answer(outcome: object) -> DNSRecord:
    assert isinstance(outcome, DnsAnswer), outcome
    return DNSRecord.parse(outcome.data)


def _rcode(rec: DNSRecord) -> str:
    return str(RCODE[rec.header.rcode])


def _only(replies: list[tuple[object, bytes]]) -> DNSRecord:
    [(_, data)] = replies
    return DNSRecord.parse(data)


def test_address_names_need_no_lookup() -> None:
    r = DnsResolver(SUBNET)
    rec = _answer(r.handle_query(_q("C064001002.ipop"), now=NOW))
    assert _rcode(rec) == "NOERROR" and rec.header.aa == 1
    assert [(str(a.rdata), a.ttl, a.rtype) for a in rec.rr] == [("100.64.1.2", 60, QTYPE.A)]
    # Case-insensitive, and other types for an existing name are an empty NOERROR.
    assert str(_answer(r.handle_query(_q("c064001002.IPOP."), now=NOW)).a.rdata) == "100.64.1.2"
    aaaa = _answer(r.handle_query(_q("C064001002.ipop", "AAAA"), now=NOW))
    assert _rcode(aaaa) == "NOERROR" and not aaaa.rr
    # Out of the subnet (octet 128 is 100.128.x.x, outside a /10): no such name.
    assert _rcode(_answer(r.handle_query(_q("C128000001.ipop"), now=NOW))) == "NXDOMAIN"


def test_hostname_lookup_complete_and_cache() -> None:
    r = DnsResolver(SUBNET)
    query = DNSRecord.question("alice-laptop.ipop")
    out = r.handle_query(bytes(query.pack()), now=NOW)
    assert isinstance(out, NeedsLookup) and out.name == "alice-laptop"
    assert r.pending == 1
    [(client, reply)] = r.complete(out.token, IPv4Address("100.64.1.3"), now=NOW)
    rec = DNSRecord.parse(reply)
    assert client is None and rec.header.id == query.header.id
    assert str(rec.a.rdata) == "100.64.1.3"
    assert r.pending == 0
    # Cached until the TTL runs out, then looked up again.
    assert str(_answer(r.handle_query(_q("alice-laptop.ipop"), now=NOW + 30)).a.rdata)
    assert isinstance(r.handle_query(_q("alice-laptop.ipop"), now=NOW + 61), NeedsLookup)
    with pytest.raises(LocalProtocolError):
        r.complete(out.token, None, now=NOW)


def test_unknown_hostname_is_nxdomain_and_negative_cached() -> None:
    r = DnsResolver(SUBNET, negative_ttl=5)
    out = r.handle_query(_q("someone.ipop"), now=NOW)
    assert isinstance(out, NeedsLookup)
    assert _rcode(_only(r.complete(out.token, None, now=NOW))) == "NXDOMAIN"
    assert _rcode(_answer(r.handle_query(_q("someone.ipop"), now=NOW + 1))) == "NXDOMAIN"
    assert isinstance(r.handle_query(_q("someone.ipop"), now=NOW + 6), NeedsLookup)
    # A lookup that returns an address outside the subnet is treated as unknown.
    out = r.handle_query(_q("mallory.ipop"), now=NOW)
    assert isinstance(out, NeedsLookup)
    rec = _only(r.complete(out.token, IPv4Address("198.18.0.1"), now=NOW))
    assert _rcode(rec) == "NXDOMAIN" and r.drops["dns_lookup_outside_subnet"] == 1


def test_a_miss_is_cached_one_second_by_default() -> None:
    """A node registers its name within a second or two of its start: whoever asked just
    before must not keep getting NXDOMAIN for longer than that (it was 5 s)."""
    r = DnsResolver(SUBNET)
    out = r.handle_query(_q("late.ipop"), now=NOW)
    assert isinstance(out, NeedsLookup)
    assert _rcode(_only(r.complete(out.token, None, now=NOW))) == "NXDOMAIN"
    assert _rcode(_answer(r.handle_query(_q("late.ipop"), now=NOW + 0.5))) == "NXDOMAIN"
    assert isinstance(r.handle_query(_q("late.ipop"), now=NOW + 1.5), NeedsLookup)


@pytest.mark.parametrize(
    "name",
    ["a.b.c.ipop", "-bad-.ipop", "under_score.ipop", "c999000000.ipop", "x.c064001002.ipop"],
)
def test_invalid_names_in_zone_are_nxdomain(name: str) -> None:
    r = DnsResolver(SUBNET)
    assert _rcode(_answer(r.handle_query(_q(name), now=NOW))) == "NXDOMAIN"


def test_lan_host_names_are_looked_up() -> None:
    """``printer.lab.ipop``: router lab's LAN host printer (ipop.dht.policy)."""
    out = DnsResolver(SUBNET).handle_query(_q("Printer.LAB.ipop"), now=NOW)
    assert isinstance(out, NeedsLookup) and out.name == "printer.lab"


def test_outside_suffix_forward_or_refused() -> None:
    data = _q("example.com")
    assert _rcode(_answer(DnsResolver(SUBNET).handle_query(data, now=NOW))) == "REFUSED"
    assert DnsResolver(SUBNET, upstream=True).handle_query(data, now=NOW) == Forward(data)


def test_reverse_names() -> None:
    r = DnsResolver(SUBNET)
    rec = _answer(r.handle_query(_q("2.1.64.100.in-addr.arpa", "PTR"), now=NOW))
    assert str(rec.a.rdata) == "C064001002.ipop."
    # Not in the subnet: like any other foreign name.
    assert _rcode(_answer(r.handle_query(_q("1.0.18.198.in-addr.arpa", "PTR"), now=NOW))) == (
        "REFUSED"
    )


def test_garbage_and_responses_get_no_reply() -> None:
    r = DnsResolver(SUBNET)
    assert r.handle_query(b"\x00\x01\x02", now=NOW) is None
    response = DNSRecord.question("C064001002.ipop").reply().pack()
    assert r.handle_query(bytes(response), now=NOW) is None
    assert r.drops == {"dns_garbage": 1, "dns_not_query": 1}


def test_lookups_in_flight_are_bounded() -> None:
    r = DnsResolver(SUBNET, max_lookups=2)
    assert isinstance(r.handle_query(_q("a1.ipop"), now=NOW), NeedsLookup)
    assert isinstance(r.handle_query(_q("a2.ipop"), now=NOW), NeedsLookup)
    assert _rcode(_answer(r.handle_query(_q("a3.ipop"), now=NOW))) == "SERVFAIL"
    # A name already in flight still joins its lookup.
    assert isinstance(r.handle_query(_q("a1.ipop"), now=NOW), Waiting)
    assert r.drops == {"dns_too_many_lookups": 1} and r.in_flight == 2 and r.pending == 3


def test_identical_lookups_in_flight_are_merged() -> None:
    """1,000 queries over 5 cold names: 5 lookups, every querier answered (was 144 SERVFAIL)."""
    r = DnsResolver(SUBNET)
    names = [f"host{i}" for i in range(5)]
    tokens: dict[str, int] = {}
    ids: dict[int, int] = {}  # client -> query id
    for i in range(1000):
        query = DNSRecord.question(f"{names[i % 5]}.ipop")
        ids[i] = query.header.id
        out = r.handle_query(bytes(query.pack()), now=NOW + i * 1e-4, client=i)
        if isinstance(out, NeedsLookup):
            tokens[out.name] = out.token
        else:
            assert isinstance(out, Waiting) and out.token == tokens[names[i % 5]]
    assert sorted(tokens) == names and r.in_flight == 5 and r.pending == 1000
    answered: dict[object, DNSRecord] = {}
    for k, name in enumerate(names):
        for client, data in r.complete(tokens[name], IPv4Address(f"100.64.9.{k}"), now=NOW + 1):
            answered[client] = DNSRecord.parse(data)
    assert len(answered) == 1000 and r.pending == 0 and r.in_flight == 0
    for i, rec in answered.items():
        assert isinstance(i, int)
        assert rec.header.id == ids[i] and str(rec.a.rdata) == f"100.64.9.{i % 5}"
    assert r.drops == {}
    assert r.stats["lookups"] == 5 and r.stats["merged"] == 995
    assert r.answers == {"noerror": 1000} and r.stats["queries"] == 1000
    assert r.latency.percentile(0.99) is not None and r.latency.percentile(0.99) <= 1000


def test_a_retransmitted_query_waits_once_and_failures_reach_every_waiter() -> None:
    r = DnsResolver(SUBNET, max_waiters=3)
    query = bytes(DNSRecord.question("bob.ipop").pack())
    out = r.handle_query(query, now=NOW, client="c1")
    assert isinstance(out, NeedsLookup)
    assert r.handle_query(query, now=NOW + 1, client="c1") == Waiting(out.token)
    assert r.stats["retransmits"] == 1 and r.pending == 1
    assert r.handle_query(query, now=NOW, client="c2") == Waiting(out.token)
    assert isinstance(r.handle_query(_q("carol.ipop"), now=NOW, client="c3"), NeedsLookup)
    # The waiter table is full: SERVFAIL at once, counted.
    assert _rcode(_answer(r.handle_query(_q("bob.ipop"), now=NOW, client="c4"))) == "SERVFAIL"
    assert r.drops == {"dns_too_many_waiters": 1}
    failed = r.fail(out.token, now=NOW + 2)
    assert sorted(str(c) for c, _ in failed) == ["c1", "c2"]
    assert all(_rcode(DNSRecord.parse(d)) == "SERVFAIL" for _, d in failed)
    assert r.answers == {"servfail": 3} and r.pending == 1
    # Nothing is cached after a failure: the next query starts a new lookup.
    assert isinstance(r.handle_query(query, now=NOW + 3, client="c1"), NeedsLookup)


def test_answers_in_the_zones_carry_recursion_available() -> None:
    """BIND's host and nslookup skip an RA=0 server; with only the gateway they failed."""
    r = DnsResolver(SUBNET)
    for name, qtype in (
        ("C064001002.ipop", "A"),
        ("nobody.ipop", "A"),
        ("ipop", "SOA"),
        ("2.1.64.100.in-addr.arpa", "PTR"),
    ):
        q = DNSRecord.question(name, qtype)
        rec = _answer(r.handle_query(bytes(q.pack()), now=NOW)) if name != "nobody.ipop" else None
        if rec is None:
            out = r.handle_query(bytes(q.pack()), now=NOW)
            assert isinstance(out, NeedsLookup)
            rec = _only(r.complete(out.token, None, now=NOW))
        assert rec.header.ra == 1 and rec.header.rd == 1, name
    # Outside the zones with no upstream: REFUSED without RA, so a client asks its next server.
    assert _answer(r.handle_query(_q("example.com"), now=NOW)).header.ra == 0


def test_drop_reasons_are_checked() -> None:
    r = DnsResolver(SUBNET)
    with pytest.raises(AssertionError):
        r._drop("made_up")
    s = TapServices.for_node(SUBNET)
    with pytest.raises(AssertionError):
        s.count_drop("made_up")


@given(st.binary(max_size=300))
def test_resolver_garbage_never_raises(data: bytes) -> None:
    r = DnsResolver(SUBNET, upstream=True)
    out = r.handle_query(data, now=NOW)
    assert out is None or isinstance(out, DnsAnswer | NeedsLookup | Waiting | Forward)
    if isinstance(out, DnsAnswer):
        DNSRecord.parse(out.data)


# --- TapServices -------------------------------------------------------------------------------

TAP_MAC = "52:54:00:12:34:56"
OWN = IPv4Address("100.64.1.2")


def _dns_frame(name: str, qtype: str = "A", dst: str = "100.64.0.1", sport: int = 40001) -> bytes:
    return bytes(
        Ether(src=TAP_MAC, dst="02:1b:0a:00:00:01")
        / IP(src=str(OWN), dst=dst)
        / UDP(sport=sport, dport=53)
        / DNSRecord.question(name, qtype).pack()
    )


def test_services_dns_reply_frame() -> None:
    s = TapServices.for_node(SUBNET)
    assert s.handle_frame(_dns_frame("C064001003.ipop"), now=NOW)
    [frame] = s.frames_to_send()
    f = Ether(frame)
    assert f.src == "02:1b:0a:00:00:01" and f.dst == TAP_MAC
    assert (f[IP].src, f[IP].dst, f[UDP].sport, f[UDP].dport) == (
        "100.64.0.1",
        "100.64.1.2",
        53,
        40001,
    )
    assert str(DNSRecord.parse(bytes(f[UDP].payload)).a.rdata) == "100.64.1.3"
    assert s.tap_mac == bytes.fromhex("525400123456")


def _outcome(s: TapServices, frame: bytes) -> tuple[object, ...]:
    assert s.dns is not None
    taken = s.handle_frame(frame, now=NOW)
    return (
        taken,
        s.frames_to_send(),
        s.lookups(),
        dict(s.drops),
        dict(s.dns.drops),
        dict(s.dns.stats),
        s.tap_mac,
    )


@given(
    st.sampled_from(["C064001003.ipop", "b.ipop", "example.com", "3.1.64.100.in-addr.arpa"]),
    st.lists(st.tuples(st.integers(0, 90), st.integers(0, 255)), max_size=3),
    st.integers(0, 20),
)
def test_services_fast_dns_path_decides_as_the_strict_parser(
    name: str, edits: list[tuple[int, int]], cut: int
) -> None:
    """Plain queries skip parse_udp_frame (a third of a burst's time in the services); any
    frame, well-formed or damaged, must get the same outcome, replies and counts as with the
    strict parser alone."""
    assert services_module._plain_dns(_dns_frame(name)) is not None  # the fast path is taken
    frame = bytearray(_dns_frame(name))
    for pos, value in edits:
        if pos < len(frame):
            frame[pos] = value
    data = bytes(frame[: len(frame) - cut])
    fast = _outcome(TapServices.for_node(SUBNET), data)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(services_module, "_plain_dns", lambda frame: None)
        strict = _outcome(TapServices.for_node(SUBNET), data)
    assert fast == strict


def test_services_leaves_other_traffic() -> None:
    s = TapServices.for_node(SUBNET)
    peer = bytes(
        Ether(src=TAP_MAC) / IP(src=str(OWN), dst="100.64.1.3") / UDP(dport=53) / (b"x" * 20)
    )
    assert not s.handle_frame(peer, now=NOW)
    assert not s.handle_frame(_dns_frame("C064001003.ipop", dst="100.64.1.3"), now=NOW)
    # ARP is the local side's owner's (the daemon answers it on its TAP), in or out of subnet.
    outside_arp = bytes(Ether(src=TAP_MAC) / ARP(psrc=str(OWN), pdst="198.18.0.1"))
    assert not s.handle_frame(outside_arp, now=NOW)
    arp = bytes(Ether(src=TAP_MAC) / ARP(hwsrc=TAP_MAC, psrc=str(OWN), pdst="100.64.1.3"))
    assert not s.handle_frame(arp, now=NOW)
    assert s.frames_to_send() == [] and s.tap_mac is None


def test_services_lookup_roundtrip() -> None:
    s = TapServices.for_node(SUBNET)
    assert s.handle_frame(_dns_frame("bob.ipop"), now=NOW)
    assert s.frames_to_send() == []
    [want] = s.lookups()
    assert want.name == "bob"
    # A second querier (another port) joins the lookup in flight; both are answered.
    assert s.handle_frame(_dns_frame("bob.ipop", sport=40002), now=NOW)
    assert s.lookups() == [] and s.frames_to_send() == []
    s.complete_lookup(want.token, IPv4Address("100.64.2.2"), now=NOW + 0.004)
    frames = [Ether(f) for f in s.frames_to_send()]
    assert sorted(f[UDP].dport for f in frames) == [40001, 40002]
    for f in frames:
        assert str(DNSRecord.parse(bytes(f[UDP].payload)).a.rdata) == "100.64.2.2"
    status = s.dns_status()
    assert status is not None
    assert status.counters["lookups"] == 1 and status.counters["merged"] == 1
    assert status.answers == {"noerror": 2} and status.drops == {}
    assert status.latency_ms.p50 == pytest.approx(4.0)
    assert status.latency_ms.buckets["le_5"] == 2


def test_runner_lookups_forwards_and_close() -> None:
    async def main() -> None:
        written: list[bytes] = []
        gate = asyncio.Event()
        events: list[object] = []

        async def lookup(name: str) -> IPv4Address | None:
            if name == "slow":
                await gate.wait()
            return IPv4Address("100.64.2.2") if name == "bob" else None

        s = TapServices.for_node(SUBNET)
        runner = TapServicesRunner(s, written.append, lookup, None, on_event=events.append)
        assert runner.feed(_dns_frame("bob.ipop"), now=NOW)
        assert runner.feed(_dns_frame("nobody.ipop"), now=NOW)
        assert runner.feed(_dns_frame("slow.ipop"), now=NOW)
        assert runner.feed(_dns_frame("example.com"), now=NOW)  # REFUSED at once
        for _ in range(100):
            if len(written) >= 3:
                break
            await asyncio.sleep(0)
        rcodes = sorted(_rcode(DNSRecord.parse(bytes(Ether(f)[UDP].payload))) for f in written)
        assert rcodes == ["NOERROR", "NXDOMAIN", "REFUSED"]
        dhcp = bytes(
            Ether(src=TAP_MAC, dst="ff:ff:ff:ff:ff:ff")
            / IP(src="0.0.0.0", dst="255.255.255.255")
            / UDP(sport=68, dport=67)
            / _discover()
        )
        assert runner.feed(dhcp, now=NOW)
        assert events == [AddressWanted(bytes.fromhex("525400123456"), None)]
        await runner.close()  # cancels "slow"
        assert s.dns is not None and s.dns.pending == 1
        with pytest.raises(LocalProtocolError):
            runner.feed(dhcp, now=NOW)

    asyncio.run(main())


def _discover() -> bytes:
    from scapy.layers.dhcp import BOOTP, DHCP

    return bytes(
        BOOTP(op=1, chaddr=bytes.fromhex("525400123456"), xid=7)
        / DHCP(options=[("message-type", "discover"), "end"])
    )


def test_runner_forwards_to_upstream_on_loopback() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()

        class Upstream(asyncio.DatagramProtocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = cast(asyncio.DatagramTransport, transport)

            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                reply = DNSRecord.parse(data).replyZone("example.com. 30 A 198.18.0.7")
                self.transport.sendto(bytes(reply.pack()), addr)

        transport, _ = await loop.create_datagram_endpoint(Upstream, local_addr=("127.0.0.1", 0))
        try:
            port = transport.get_extra_info("sockname")[1]
            written: list[bytes] = []
            got = asyncio.Event()

            def write(frame: bytes) -> None:
                written.append(frame)
                got.set()

            async def lookup(name: str) -> IPv4Address | None:
                return None

            s = TapServices.for_node(SUBNET, upstream=True)
            runner = TapServicesRunner(s, write, lookup, ("127.0.0.1", port))
            assert runner.feed(_dns_frame("example.com"), now=NOW)
            await asyncio.wait_for(got.wait(), 5)
            rec = DNSRecord.parse(bytes(Ether(written[0])[UDP].payload))
            assert str(rec.a.rdata) == "198.18.0.7"
            assert Ether(written[0])[IP].src == "100.64.0.1"
            await runner.close()
        finally:
            transport.close()

    asyncio.run(main())


# --- DNS over TCP (ipop.dhcp_dns.tcp) ---------------------------------------------------------


def _tcp(flags: str, seq: int, ack: int = 0, payload: bytes = b"", sport: int = 40100) -> bytes:
    from scapy.layers.inet import TCP

    return bytes(
        Ether(src=TAP_MAC, dst="02:1b:0a:00:00:01")
        / IP(src=str(OWN), dst="100.64.0.1")
        / TCP(sport=sport, dport=53, flags=flags, seq=seq, ack=ack, options=[("MSS", 1360)])
        / payload
    )


def _segments(s: TapServices) -> list[Any]:
    from scapy.layers.inet import TCP

    out = []
    for f in s.frames_to_send():
        pkt = Ether(f)
        # The checksums we wrote are the ones scapy computes when it builds the same packet.
        del pkt[IP].chksum, pkt[TCP].chksum
        assert bytes(Ether(bytes(pkt))) == f
        out.append(pkt[TCP])
    return out


def test_dns_over_tcp_to_the_gateway_is_answered() -> None:
    """dig +tcp hung: TCP to the gateway's port 53 went unanswered."""
    s = TapServices.for_node(SUBNET)
    assert s.handle_frame(_tcp("S", 1000), now=NOW)
    [synack] = _segments(s)
    assert synack.flags == "SA" and synack.ack == 1001 and synack.sport == 53
    iss = synack.seq
    # The handshake's ACK carries nothing; then one query in two segments, then one whole.
    assert s.handle_frame(_tcp("A", 1001, iss + 1), now=NOW)
    assert _segments(s) == []
    msg = DNSRecord.question("C064001003.ipop").pack()
    stream = len(msg).to_bytes(2, "big") + msg
    assert s.handle_frame(_tcp("PA", 1001, iss + 1, stream[:5]), now=NOW)
    [ack] = _segments(s)
    assert ack.flags == "A" and ack.ack == 1006
    assert s.handle_frame(_tcp("PA", 1006, iss + 1, stream[5:]), now=NOW)
    ack, data = _segments(s)
    end = 1001 + len(stream)
    assert ack.ack == end and data.flags == "PA" and data.seq == iss + 1
    reply = bytes(data.payload)
    assert int.from_bytes(reply[:2], "big") == len(reply) - 2
    assert str(DNSRecord.parse(reply[2:]).a.rdata) == "100.64.1.3"
    # A hostname waits for its lookup; the client closes meanwhile: our FIN after the answer.
    name = DNSRecord.question("bob.ipop").pack()
    seq = end
    s.handle_frame(_tcp("PA", seq, 0, len(name).to_bytes(2, "big") + name), now=NOW)
    seq += 2 + len(name)
    s.handle_frame(_tcp("FA", seq, 0), now=NOW)
    assert [p.flags for p in _segments(s)] == ["A", "A"]  # no FIN while a query waits
    [want] = s.lookups()
    s.complete_lookup(want.token, IPv4Address("100.64.2.2"), now=NOW + 0.01)
    data, fin = _segments(s)
    assert str(DNSRecord.parse(bytes(data.payload)[2:]).a.rdata) == "100.64.2.2"
    assert fin.flags == "FA" and fin.ack == seq + 1
    assert s.tcp is not None and s.tcp.connections == 1
    s.handle_frame(_tcp("A", seq + 1, fin.seq + 1), now=NOW)
    assert s.tcp.connections == 0 and s.drops == {}
    status = s.dns_status()
    assert status is not None and status.counters["tcp_queries"] == 2


def test_dns_over_tcp_refuses_what_it_cannot_hold() -> None:
    s = TapServices.for_node(SUBNET)
    assert s.tcp is not None
    s.tcp.max_conns = 1
    s.handle_frame(_tcp("S", 1, sport=1), now=NOW)
    assert [p.flags for p in _segments(s)] == ["SA"]
    s.handle_frame(_tcp("S", 1, sport=2), now=NOW)  # full: an immediate RST
    [rst] = _segments(s)
    assert rst.flags == "RA" and rst.ack == 2
    # A segment for no connection: RST, as a closed port answers.
    s.handle_frame(_tcp("A", 5, 77, sport=3), now=NOW)
    [rst] = _segments(s)
    assert rst.flags == "R" and rst.seq == 77
    # An idle connection is forgotten; a query too long resets.
    s.handle_frame(_tcp("S", 9, sport=4), now=NOW + 11)
    [synack] = _segments(s)
    assert s.tcp.connections == 1
    s.handle_frame(_tcp("PA", 10, synack.seq + 1, b"\xff\xff" + b"x" * 10, sport=4), now=NOW)
    assert [p.flags for p in _segments(s)] == ["RA"]
    assert s.tcp.connections == 0
    assert s.tcp.drops == {
        "dns_tcp_too_many_conns": 1,
        "dns_tcp_no_connection": 1,
        "dns_tcp_too_long": 1,
    }
    # Other TCP ports of the gateway are not the services'.
    from scapy.layers.inet import TCP

    other = bytes(Ether(src=TAP_MAC) / IP(src=str(OWN), dst="100.64.0.1") / TCP(dport=80))
    assert not s.handle_frame(other, now=NOW)


def test_queries_read_directly_and_through_dnslib_get_the_same_reply() -> None:
    from dnslib import EDNS0

    plain = DNSRecord.question("C064001002.IPop")  # mixed case is echoed as written
    edns = DNSRecord.question("C064001002.ipop")
    edns.add_ar(EDNS0(udp_len=1232))
    r = DnsResolver(SUBNET)
    for q in (plain, edns):
        rec = _answer(r.handle_query(bytes(q.pack()), now=NOW))
        assert rec.header.id == q.header.id and rec.q.qname == q.q.qname
        assert str(rec.q.qname) == str(q.q.qname) and str(rec.a.rdata) == "100.64.1.2"


@given(st.lists(st.binary(min_size=0, max_size=80), min_size=1, max_size=6))
def test_tcp_garbage_never_raises(segments: list[bytes]) -> None:
    """Random segments (checksummed, to our port) are answered or dropped, never raised."""
    from ipop.vnet.packet import ETH_P_IP, build_ethernet, build_ipv4, internet_checksum

    s = TapServices.for_node(SUBNET)
    src, dst = int(OWN), int(IPv4Address("100.64.0.1"))
    for i, body in enumerate(segments):
        seg = bytearray((40100 + i % 2).to_bytes(2, "big") + b"\x00\x35" + body)
        if len(seg) >= 18:
            seg[16:18] = b"\x00\x00"
            pseudo = src.to_bytes(4, "big") + dst.to_bytes(4, "big") + b"\x00\x06"
            csum = internet_checksum(pseudo + len(seg).to_bytes(2, "big") + bytes(seg))
            seg[16:18] = csum.to_bytes(2, "big")
        frame = build_ethernet(
            bytes.fromhex("021b0a000001"),
            bytes.fromhex("525400123456"),
            ETH_P_IP,
            build_ipv4(src, dst, 6, bytes(seg)),
        )
        assert s.handle_frame(frame, now=NOW + i)
    for f in s.frames_to_send():
        assert Ether(f)[IP].src == "100.64.0.1"
