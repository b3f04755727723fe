"""A gateway's resolver answering a daemon's other networks' suffixes (issue 17: one ``ipopd``
in two networks, one resolv.conf): ``DnsResolver(other_zones=...)`` and the runner's
``other_lookups``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from types import SimpleNamespace

import pytest
from dnslib import QTYPE, RCODE, DNSRecord
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from ipop.config import NodeConfig
from ipop.dhcp_dns.dns import DnsAnswer, DnsResolver, NeedsLookup, Zone
from ipop.dhcp_dns.services import TapServices, TapServicesRunner
from ipop.dht.srv import ServiceValue
from ipop.errors import LocalProtocolError
from ipop.tools.ipopd import NodeServices

LABNET = IPv4Network("100.64.0.0/16")
OTHERNET = IPv4Network("100.65.0.0/16")
OTHER = Zone("other", OTHERNET)
NOW = 1_700_000_000.0


def _q(name: str, qtype: str = "A") -> bytes:
    return bytes(DNSRecord.question(name, qtype).pack())


def _rec(outcome: object) -> DNSRecord:
    assert isinstance(outcome, DnsAnswer), outcome
    return DNSRecord.parse(outcome.data)


def _rcode(rec: DNSRecord) -> str:
    return str(RCODE[rec.header.rcode])


def _need(r: DnsResolver, name: str, qtype: str = "A") -> NeedsLookup:
    out = r.handle_query(_q(name, qtype), now=NOW, client="c1")
    assert isinstance(out, NeedsLookup), out
    return out


def test_a_name_of_another_zone_is_looked_up_in_that_zone() -> None:
    r = DnsResolver(LABNET, suffix="ipop", other_zones=[OTHER])
    own, other = _need(r, "alice.ipop"), _need(r, "alice.other")
    assert (own.name, own.zone) == ("alice", 0)
    assert (other.name, other.zone) == ("alice", 1)  # the same label, a lookup of its own
    [(_, data)] = r.complete(other.token, IPv4Address("100.65.3.4"), now=NOW)
    assert str(DNSRecord.parse(data).a.rdata) == "100.65.3.4"
    # Its cache is its own: alice.ipop is still waiting on labnet's lookup, not answered.
    assert r.in_flight == 1
    cached = _rec(r.handle_query(_q("alice.other"), now=NOW + 1))
    assert str(cached.a.rdata) == "100.65.3.4" and r.stats["cache_hits"] == 1


def test_an_answer_outside_the_zones_subnet_is_no_such_name() -> None:
    """The other network's lookup is checked against the other network's range: an address
    of ours (labnet's) answered for an othernet name is refused, as an answer outside our
    own range is for ours."""
    r = DnsResolver(LABNET, suffix="ipop", other_zones=[OTHER])
    need = _need(r, "bob.other")
    [(_, data)] = r.complete(need.token, IPv4Address("100.64.0.9"), now=NOW)
    assert _rcode(DNSRecord.parse(data)) == "NXDOMAIN"
    assert r.drops["dns_lookup_outside_subnet"] == 1


def test_address_names_and_reverse_names_of_another_zone() -> None:
    r = DnsResolver(LABNET, suffix="ipop", other_zones=[OTHER])
    a = _rec(r.handle_query(_q("C065001002.other"), now=NOW))
    assert [str(x.rdata) for x in a.rr] == ["100.65.1.2"]
    # 100.65.x.x is not labnet's: under labnet's own suffix the name does not exist.
    assert _rcode(_rec(r.handle_query(_q("C065001002.ipop"), now=NOW))) == "NXDOMAIN"
    ptr = _rec(r.handle_query(_q("2.1.65.100.in-addr.arpa", "PTR"), now=NOW))
    assert [str(x.rdata) for x in ptr.rr] == ["C065001002.other."]
    own = _rec(r.handle_query(_q("2.1.64.100.in-addr.arpa", "PTR"), now=NOW))
    assert [str(x.rdata) for x in own.rr] == ["C064001002.ipop."]


def test_overlapping_ranges_give_reverse_names_to_our_own_network() -> None:
    r = DnsResolver(LABNET, suffix="ipop", other_zones=[Zone("other", LABNET)])
    ptr = _rec(r.handle_query(_q("2.1.64.100.in-addr.arpa", "PTR"), now=NOW))
    assert [str(x.rdata) for x in ptr.rr] == ["C064001002.ipop."]


def test_the_longest_suffix_wins() -> None:
    """``b1.lab.ipop`` under zones ``ipop`` and ``lab.ipop`` is lab.ipop's host ``b1``, not
    the first network's router-LAN host ``b1`` of router ``lab``."""
    r = DnsResolver(LABNET, suffix="ipop", other_zones=[Zone("lab.ipop", OTHERNET)])
    nested = _need(r, "b1.lab.ipop")
    assert (nested.name, nested.zone) == ("b1", 1)
    lan_host = _need(r, "printer.lab2.ipop")
    assert (lan_host.name, lan_host.zone) == ("printer.lab2", 0)


def test_a_suffix_taken_twice_stays_the_first_networks() -> None:
    third = Zone("IPOP.", IPv4Network("100.66.0.0/16"))
    r = DnsResolver(LABNET, suffix="ipop", other_zones=[third, OTHER])
    assert r.shadowed == (third,)
    assert _need(r, "bob.ipop").zone == 0
    assert _need(r, "bob.other").zone == 2
    # The shadowed zone's range answers no reverse names either.
    assert _rcode(_rec(r.handle_query(_q("2.1.66.100.in-addr.arpa", "PTR"), now=NOW))) == (
        "REFUSED"
    )


def test_a_service_of_another_zone_points_at_its_suffix() -> None:
    r = DnsResolver(LABNET, suffix="ipop", other_zones=[Zone("grid.example", OTHERNET)])
    need = _need(r, "_http._tcp.grid.example", "SRV")
    assert (need.name, need.zone) == ("_http._tcp", 1)
    found = (ServiceValue(IPv4Address("100.65.1.2"), 8000),)
    [(_, data)] = r.complete(need.token, found, now=NOW)
    rec = DNSRecord.parse(data)
    srv = [(str(x.rdata.target), x.rdata.port) for x in rec.rr if x.rtype == QTYPE.SRV]
    assert srv == [("C065001002.grid.example.", 8000)]


def test_a_name_under_no_zone_is_still_refused() -> None:
    r = DnsResolver(LABNET, suffix="ipop", other_zones=[OTHER])
    assert _rcode(_rec(r.handle_query(_q("example.com"), now=NOW))) == "REFUSED"


def _frame(name: str) -> bytes:
    return bytes(
        Ether(src="52:54:00:12:34:56", dst="02:1b:0a:00:00:01")
        / IP(src="100.64.1.2", dst="100.64.0.1")
        / UDP(sport=40001, dport=53)
        / DNSRecord.question(name, "A").pack()
    )


def _labnet_gateway() -> TapServices:
    """labnet's gateway, DNS only, answering othernet's zone too."""
    return TapServices(
        gateway_ip=IPv4Address("100.64.0.1"),
        subnet=LABNET,
        dhcp=None,
        dns=DnsResolver(LABNET, suffix="ipop", other_zones=[OTHER]),
    )


def test_the_runner_asks_each_zones_own_lookup() -> None:
    async def main() -> None:
        asked: list[tuple[str, str]] = []

        def lookup_in(network: str, found: str) -> Callable[[str], Awaitable[IPv4Address | None]]:
            async def lookup(name: str) -> IPv4Address | None:
                asked.append((network, name))
                return IPv4Address(found)

            return lookup

        services = _labnet_gateway()
        written: list[bytes] = []
        runner = TapServicesRunner(
            services,
            written.append,
            lookup_in("labnet", "100.64.7.7"),
            None,
            other_lookups=[lookup_in("othernet", "100.65.8.8")],
        )
        assert runner.feed(_frame("b1.other"), now=NOW)
        assert runner.feed(_frame("a1.ipop"), now=NOW)
        for _ in range(100):
            if len(written) >= 2:
                break
            await asyncio.sleep(0)
        answers = sorted(
            str(DNSRecord.parse(bytes(Ether(f)[UDP].payload)).a.rdata) for f in written
        )
        assert answers == ["100.64.7.7", "100.65.8.8"]
        assert sorted(asked) == [("labnet", "a1"), ("othernet", "b1")]
        await runner.close()

    asyncio.run(main())


def test_a_runner_needs_a_lookup_for_every_zone() -> None:
    async def lookup(name: str) -> IPv4Address | None:
        return None

    services = _labnet_gateway()
    with pytest.raises(LocalProtocolError, match="2 DNS zones, 1 lookups"):
        TapServicesRunner(services, lambda _f: None, lookup, None)


def _side(suffix: str, subnet: IPv4Network) -> SimpleNamespace:
    """What NodeServices reads of a network's side (ipop.aio.local.ServedSide)."""

    async def dns_lookup(name: str) -> IPv4Address | None:
        return None

    return SimpleNamespace(
        gateway=subnet.network_address + 1,
        subnet=subnet,
        suffix=suffix,
        tap=None,
        write_frame=lambda frame: None,
        dns_lookup=dns_lookup,
    )


def test_ipopd_gives_each_gateway_the_other_networks_and_says_when_a_suffix_is_shared(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def go() -> None:
        cfg = NodeConfig(bundle=Path("/nonexistent"))
        lab, other, same = (
            _side("ipop", LABNET),
            _side("other", OTHERNET),
            _side("ipop", IPv4Network("100.66.0.0/16")),
        )
        with caplog.at_level(logging.WARNING, logger="ipopd"):
            services = NodeServices(lab, cfg, [other, same])  # type: ignore[arg-type]
        dns = services.services.dns
        assert dns is not None
        assert [z.suffix for z in dns.zones] == ["ipop", "other", "ipop"]
        assert dns.shadowed == (Zone("ipop", IPv4Network("100.66.0.0/16")),)
        assert "event=dns_suffix_shared" in caplog.text and "100.66.0.0/16" in caplog.text
        await services.close()

    asyncio.run(go())
