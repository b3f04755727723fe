"""SRV and TXT answers for services (``_http._tcp.ipop``) in the sans-IO resolver."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

from dnslib import QTYPE, RCODE, DNSRecord

from ipop.dhcp_dns.dns import MAX_SRV_ANSWERS, DnsAnswer, DnsResolver, NeedsLookup, Waiting
from ipop.dht.srv import ServiceValue

SUBNET = IPv4Network("100.64.0.0/10")
NOW = 1_700_000_000.0
A = ServiceValue(IPv4Address("100.64.1.2"), 8000, ("path=/", "v=1"))
B = ServiceValue(IPv4Address("100.64.3.4"), 8080)


def _q(name: str, qtype: str, qid: int = 7) -> bytes:
    q = DNSRecord.question(name, qtype)
    q.header.id = qid
    return bytes(q.pack())


def _parse(data: bytes) -> DNSRecord:
    return DNSRecord.parse(data)


def _lookup(dns: DnsResolver, name: str, qtype: str, now: float = NOW) -> NeedsLookup:
    out = dns.handle_query(_q(name, qtype), now=now, client="c1")
    assert isinstance(out, NeedsLookup), out
    return out


def test_srv_answer_with_targets_and_their_addresses() -> None:
    dns = DnsResolver(SUBNET, suffix="ipop")
    need = _lookup(dns, "_http._tcp.ipop", "SRV")
    assert need.name == "_http._tcp"
    [(client, data)] = dns.complete(need.token, (A, B), now=NOW + 0.01)
    assert client == "c1"
    rec = _parse(data)
    assert rec.header.rcode == RCODE.NOERROR and rec.header.aa
    srv = [(str(rr.rdata.target), rr.rdata.port) for rr in rec.rr if rr.rtype == QTYPE.SRV]
    assert srv == [("C064001002.ipop.", 8000), ("C064003004.ipop.", 8080)]
    assert all(str(rr.rname) == "_http._tcp.ipop." for rr in rec.rr)
    extra = {str(rr.rname): str(rr.rdata) for rr in rec.ar if rr.rtype == QTYPE.A}
    assert extra == {"C064001002.ipop.": "100.64.1.2", "C064003004.ipop.": "100.64.3.4"}
    assert rec.rr[0].ttl == dns.service_ttl


def test_txt_answer_and_other_types() -> None:
    dns = DnsResolver(SUBNET, suffix="ipop")
    need = _lookup(dns, "_http._tcp.ipop", "TXT")
    [(_, data)] = dns.complete(need.token, (A, B), now=NOW)
    rec = _parse(data)
    assert [[bytes(s) for s in rr.rdata.data] for rr in rec.rr] == [[b"path=/", b"v=1"]]
    assert not rec.ar
    # Cached now: an A query for the service name exists, without records; no second lookup.
    out = dns.handle_query(_q("_http._tcp.ipop", "A"), now=NOW + 1)
    assert isinstance(out, DnsAnswer)
    rec = _parse(out.data)
    assert rec.header.rcode == RCODE.NOERROR and not rec.rr
    assert dns.stats["lookups"] == 1


def test_cached_for_service_ttl_then_asked_again() -> None:
    dns = DnsResolver(SUBNET, suffix="ipop", service_ttl=5)
    need = _lookup(dns, "_http._tcp.ipop", "SRV")
    dns.complete(need.token, (A,), now=NOW)
    out = dns.handle_query(_q("_HTTP._tcp.IPOP", "SRV"), now=NOW + 4)
    assert isinstance(out, DnsAnswer)
    assert [rr.rdata.port for rr in _parse(out.data).rr] == [8000]
    assert dns.stats["cache_hits"] == 1
    # After service_ttl, a withdrawn service is asked for again (and is gone).
    need = _lookup(dns, "_http._tcp.ipop", "SRV", now=NOW + 6)
    [(_, data)] = dns.complete(need.token, None, now=NOW + 6)
    assert _parse(data).header.rcode == RCODE.NXDOMAIN


def test_no_instances_bad_names_and_outside_subnet() -> None:
    dns = DnsResolver(SUBNET, suffix="ipop")
    need = _lookup(dns, "_ftp._udp.ipop", "SRV")
    [(_, data)] = dns.complete(need.token, (), now=NOW)
    assert _parse(data).header.rcode == RCODE.NXDOMAIN
    for bad in ("_HTTP_._tcp.ipop", "_a--b._tcp.ipop", "_._tcp.ipop", "_http._sctp.ipop"):
        out = dns.handle_query(_q(bad, "SRV"), now=NOW)
        assert isinstance(out, DnsAnswer), bad
        assert _parse(out.data).header.rcode == RCODE.NXDOMAIN, bad
    need = _lookup(dns, "_web._tcp.ipop", "SRV")
    outside = ServiceValue(IPv4Address("198.51.100.7"), 80)
    [(_, data)] = dns.complete(need.token, (outside, B), now=NOW)
    assert [rr.rdata.port for rr in _parse(data).rr] == [8080]
    assert dns.drops["dns_lookup_outside_subnet"] == 1


def test_many_instances_fit_a_plain_udp_reply() -> None:
    dns = DnsResolver(SUBNET, suffix="ipop")
    many = tuple(ServiceValue(IPv4Address("100.64.0.10") + i, 1000 + i) for i in range(16))
    need = _lookup(dns, "_condor._tcp.ipop", "SRV")
    [(_, data)] = dns.complete(need.token, many, now=NOW)
    assert len(data) <= 512
    rec = _parse(data)
    assert len(rec.rr) == MAX_SRV_ANSWERS
    assert 0 < len(rec.ar) <= MAX_SRV_ANSWERS


def test_service_lookups_merge_like_hostnames() -> None:
    dns = DnsResolver(SUBNET, suffix="ipop")
    need = _lookup(dns, "_http._tcp.ipop", "SRV")
    again = dns.handle_query(_q("_http._tcp.ipop", "SRV", qid=8), now=NOW, client="c2")
    assert isinstance(again, Waiting) and again.token == need.token
    replies = dns.complete(need.token, (A,), now=NOW)
    assert [c for c, _ in replies] == ["c1", "c2"]
