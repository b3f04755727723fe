"""DNS for ``*.ipop`` on the virtual gateway: a sans-IO resolver over :mod:`dnslib`.

:meth:`DnsResolver.handle_query` takes the bytes of one UDP query and decides at once:

====================================  ====================================================
query                                 outcome
====================================  ====================================================
``C064001002.ipop`` (address name)    :class:`DnsAnswer`: A record (no lookup, DESIGN.md §1)
``alice-laptop.ipop`` (hostname)      :class:`NeedsLookup`; the caller resolves it (DHT) and
``printer.lab.ipop`` (a LAN host of   calls :meth:`~DnsResolver.complete` for the reply bytes
router ``lab``)
anything else under the suffix        :class:`DnsAnswer` NXDOMAIN
a reverse name of a subnet address    :class:`DnsAnswer` PTR → its address name
a name outside the suffix             :class:`Forward` (raw query) with an upstream, else
                                      REFUSED
not A for a name that exists          empty NOERROR (the name exists, the type does not)
a response, garbage                   None: no reply, counted in ``drops``
====================================  ====================================================

Hostname lookups are cached for ``ttl`` seconds (misses for ``negative_ttl``), so a burst of
queries costs one DHT get. At most ``max_pending`` lookups are outstanding; beyond that the
query gets SERVFAIL at once, which bounds what a flood of queries can make us hold.

Time (``now``) comes from the caller; there is no I/O here: :mod:`dhcp_dns.services` moves the
bytes and runs the lookups.
"""

from __future__ import annotations

import collections
import itertools
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from dnslib import PTR, QTYPE, RCODE, RR, A, DNSHeader, DNSLabel, DNSRecord

from ipop.dht.names import c_name, parse_c_name
from ipop.dht.policy import is_name
from ipop.errors import LocalProtocolError

__all__ = ["DnsAnswer", "DnsOutcome", "DnsResolver", "Forward", "NeedsLookup"]

_OPCODE_QUERY = 0
_CLASS_IN = 1
_CLASS_ANY = 255


@dataclass(frozen=True, slots=True)
class DnsAnswer:
    """The reply to send back to the client."""

    data: bytes


@dataclass(frozen=True, slots=True)
class NeedsLookup:
    """Resolve ``name`` (hostname or <host>.<router>, lower case); then ``complete(token, ip)``."""

    token: int
    name: str


@dataclass(frozen=True, slots=True)
class Forward:
    """Send ``data`` (the query as received) to the upstream resolver; relay its reply."""

    data: bytes


DnsOutcome = DnsAnswer | NeedsLookup | Forward


@dataclass(frozen=True, slots=True)
class _Pending:
    query: DNSRecord
    name: str
    qtype: int
    since: float


class DnsResolver:
    """Answers queries for ``<name>.<suffix>`` in ``subnet``; see the module docstring."""

    def __init__(
        self,
        subnet: IPv4Network,
        *,
        suffix: str = "ipop",
        upstream: bool = False,
        ttl: int = 60,
        negative_ttl: int = 5,
        max_pending: int = 256,
        cache_size: int = 1024,
    ) -> None:
        labels = tuple(lbl for lbl in suffix.lower().strip(".").split(".") if lbl)
        if not labels:
            raise LocalProtocolError(f"suffix {suffix!r} has no labels")
        self.subnet = subnet
        self.suffix = ".".join(labels)
        self.upstream = upstream
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.max_pending = max_pending
        self.cache_size = cache_size
        self.drops: collections.Counter[str] = collections.Counter()
        self._suffix = tuple(lbl.encode("ascii") for lbl in labels)
        self._tokens = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._cache: collections.OrderedDict[str, tuple[IPv4Address | None, float]] = (
            collections.OrderedDict()
        )

    @property
    def pending(self) -> int:
        return len(self._pending)

    # -- input ---------------------------------------------------------------------------------

    def handle_query(self, data: bytes, *, now: float) -> DnsOutcome | None:
        """Decide what to do with one query; None means no reply (counted in ``drops``)."""
        try:
            query = DNSRecord.parse(data)
        except Exception:  # dnslib raises DNSError, but also struct/index/unicode errors
            self.drops["dns_garbage"] += 1
            return None
        if query.header.qr:
            self.drops["dns_not_query"] += 1
            return None
        if query.header.opcode != _OPCODE_QUERY:
            return DnsAnswer(self._reply(query, RCODE.NOTIMP, aa=False))
        if len(query.questions) != 1:
            return DnsAnswer(self._reply(query, RCODE.FORMERR, aa=False))
        q = query.questions[0]
        labels = tuple(bytes(lbl).lower() for lbl in q.qname.label)
        n = len(self._suffix)
        if labels[-n:] == self._suffix and len(labels) >= n:
            if q.qclass not in (_CLASS_IN, _CLASS_ANY):
                return DnsAnswer(self._reply(query, RCODE.REFUSED, aa=False))
            return self._in_zone(query, labels[:-n], q.qtype, now)
        reverse = self._reverse(labels)
        if reverse is not None:
            return DnsAnswer(self._ptr(query, q.qtype, reverse))
        if self.upstream:
            return Forward(bytes(data))
        return DnsAnswer(self._reply(query, RCODE.REFUSED, aa=False))

    def complete(self, token: int, ip: IPv4Address | None) -> bytes:
        """The reply for lookup ``token``: ``ip`` is the name's address, or None if unknown."""
        p = self._pending.pop(token, None)
        if p is None:
            raise LocalProtocolError(f"no pending DNS lookup {token}")
        if ip is not None and ip not in self.subnet:
            self.drops["dns_lookup_outside_subnet"] += 1
            ip = None
        self._remember(p.name, ip, p.since)
        return self._answer(p.query, p.qtype, ip)

    def fail(self, token: int) -> bytes:
        """SERVFAIL for lookup ``token`` (the lookup errored or timed out; nothing cached)."""
        p = self._pending.pop(token, None)
        if p is None:
            raise LocalProtocolError(f"no pending DNS lookup {token}")
        return self._reply(p.query, RCODE.SERVFAIL, aa=False)

    # -- internals -----------------------------------------------------------------------------

    def _in_zone(
        self, query: DNSRecord, rel: tuple[bytes, ...], qtype: int, now: float
    ) -> DnsOutcome:
        if not rel:
            return DnsAnswer(self._reply(query, RCODE.NOERROR))  # the zone apex exists
        if len(rel) > 2:
            return DnsAnswer(self._reply(query, RCODE.NXDOMAIN))
        try:
            label = b".".join(rel).decode("ascii")
        except UnicodeDecodeError:
            return DnsAnswer(self._reply(query, RCODE.NXDOMAIN))
        addr = parse_c_name(label, self.subnet)
        if addr is not None:
            return DnsAnswer(self._answer(query, qtype, addr))
        # A member's hostname, or a router's LAN host: <host>.<router hostname>.
        if not is_name(label):
            return DnsAnswer(self._reply(query, RCODE.NXDOMAIN))
        cached = self._cache.get(label)
        if cached is not None:
            if cached[1] > now:
                return DnsAnswer(self._answer(query, qtype, cached[0]))
            del self._cache[label]
        if len(self._pending) >= self.max_pending:
            self.drops["dns_too_many_pending"] += 1
            return DnsAnswer(self._reply(query, RCODE.SERVFAIL, aa=False))
        token = next(self._tokens)
        self._pending[token] = _Pending(query, label, qtype, now)
        return NeedsLookup(token, label)

    def _remember(self, name: str, ip: IPv4Address | None, since: float) -> None:
        ttl = self.ttl if ip is not None else self.negative_ttl
        self._cache[name] = (ip, since + ttl)
        self._cache.move_to_end(name)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def _reverse(self, labels: tuple[bytes, ...]) -> IPv4Address | None:
        """The subnet address a full ``d.c.b.a.in-addr.arpa`` name stands for, else None."""
        if len(labels) != 6 or labels[4:] != (b"in-addr", b"arpa"):
            return None
        try:
            octets = [int(lbl) for lbl in labels[3::-1]]
        except ValueError:
            return None
        # Octets must be written canonically (no leading zeros, at most 255).
        if any(o > 255 or str(o).encode() != s for o, s in zip(octets, labels[3::-1], strict=True)):
            return None
        addr = IPv4Address(bytes(octets))
        return addr if addr in self.subnet else None

    def _ptr(self, query: DNSRecord, qtype: int, addr: IPv4Address) -> bytes:
        reply = self._record(query, RCODE.NOERROR, aa=True)
        if qtype in (QTYPE.PTR, QTYPE.ANY):
            target = DNSLabel(f"{c_name(addr)}.{self.suffix}.")
            reply.add_answer(RR(query.q.qname, QTYPE.PTR, rdata=PTR(target), ttl=self.ttl))
        return bytes(reply.pack())

    def _answer(self, query: DNSRecord, qtype: int, addr: IPv4Address | None) -> bytes:
        if addr is None:
            return self._reply(query, RCODE.NXDOMAIN)
        reply = self._record(query, RCODE.NOERROR, aa=True)
        if qtype in (QTYPE.A, QTYPE.ANY):
            reply.add_answer(RR(query.q.qname, QTYPE.A, rdata=A(str(addr)), ttl=self.ttl))
        return bytes(reply.pack())

    def _record(self, query: DNSRecord, rcode: int, *, aa: bool) -> DNSRecord:
        header = DNSHeader(
            id=query.header.id,
            bitmap=0,
            qr=1,
            opcode=query.header.opcode,
            aa=int(aa),
            rd=query.header.rd,
            ra=int(self.upstream),
            rcode=rcode,
        )
        questions = list(query.questions[:1]) if len(query.questions) == 1 else []
        return DNSRecord(header, questions=questions)

    def _reply(self, query: DNSRecord, rcode: int, *, aa: bool = True) -> bytes:
        return bytes(self._record(query, rcode, aa=aa).pack())
