"""DNS for ``*.ipop`` on the virtual gateway: a sans-IO resolver over :mod:`dnslib`.

:meth:`DnsResolver.handle_query` takes the bytes of one UDP query and decides at once:

====================================  ====================================================
query                                 outcome
====================================  ====================================================
``C064001002.ipop`` (address name)    :class:`DnsAnswer`: A record (no lookup, DESIGN.md §1)
``alice-laptop.ipop`` (hostname)      :class:`NeedsLookup` (the first query for the name) or
``printer.lab.ipop`` (a LAN host of   :class:`Waiting` (a lookup for it is in flight); the
router ``lab``)                       caller resolves it once (DHT) and calls
                                      :meth:`~DnsResolver.complete`: one reply per waiter
``_http._tcp.ipop`` (a service, SRV/   :class:`NeedsLookup` / :class:`Waiting` as for a
TXT; ``_udp`` too)                    hostname: the caller lists the service's verified
                                      instances (DHT) and completes with them
anything else under the suffix        :class:`DnsAnswer` NXDOMAIN
a reverse name of a subnet address    :class:`DnsAnswer` PTR → its address name
a name outside the suffix             :class:`Forward` (raw query) with an upstream, else
                                      REFUSED
not A for a name that exists          empty NOERROR (the name exists, the type does not)
a response, garbage                   None: no reply, counted in ``drops``
====================================  ====================================================

Service answers (SRV, TXT) are built from the instances a lookup completes with
(:class:`ipop.dht.srv.ServiceValue`): one SRV per instance (priority 0, weight 0, its port,
target its address name ``C064001002.<suffix>``), its TXT strings as one TXT record, and the
targets' A records in the additional section, at most :data:`MAX_SRV_ANSWERS` instances and
as many A records as fit 512 bytes (a reply that plain UDP carries). Services are cached for
``service_ttl`` (5 s: a withdrawn service leaves the answers within seconds; a burst of
queries still costs one DHT read per name per 5 s), none found for ``negative_ttl``.

Hostname lookups are cached for ``ttl`` seconds, misses for ``negative_ttl`` (1 s: a node
registers its name within a second or two of its start, and a longer cache keeps answering
NXDOMAIN to whoever asked a moment too early, a job waiting for its peer or a monitor; the
cost is one DHT read a second per name asked for that does not exist). Identical
lookups in flight are merged: a burst of 1,000 queries for 5 cold names starts 5 lookups, and
every querier is answered when its name's lookup ends (a client's retransmission of a query
already waiting adds no second waiter). Both tables are bounded: at most ``max_lookups``
names in flight and ``max_waiters`` queries waiting on them; past either bound the query gets
SERVFAIL at once and the drop is counted (``dns_too_many_lookups`` / ``dns_too_many_waiters``).

Recursion available (RA) is set on every answer for the suffix and the reverse zone: we
answer those names completely, as a recursive resolver would, and BIND's ``host`` and
``nslookup`` treat an RA=0 reply as "try the next server": with the documented resolv.conf
(the gateway, then the usual server) they asked the usual server and failed. Outside those
zones RA says whether an upstream is set, so a REFUSED sends them on to the usual server.

:attr:`DnsResolver.stats` counts queries, answers by rcode, lookups, merges and cache hits;
:attr:`DnsResolver.latency` keeps a histogram of query-to-answer times and the recent ones
for percentiles; drops are counted by reasons of :data:`DROP_REASONS`.

Other zones (``other_zones``): a daemon in several networks answers, at each network's gateway,
the other networks' suffixes too, each name in its own network (its subnet, its lookup, its
cache): a host whose resolv.conf names one gateway resolves every network it is in, as a
ZeroTier or tinc host in two networks does. Only this host's own kernel reaches a gateway (the
TAP is the daemon's alone; the overlay never delivers to a gateway address), so no member of
one network learns another's names this way. The longest suffix that matches wins; a zone
whose suffix another zone already has is left out (:attr:`DnsResolver.shadowed`): its names
are asked at its own gateway.

Time (``now``) comes from the caller; there is no I/O here: :mod:`ipop.dhcp_dns.services` moves the
bytes and runs the lookups.
"""

from __future__ import annotations

import bisect
import collections
import itertools
import struct
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Final, NamedTuple

from dnslib import QTYPE, RCODE, DNSRecord

from ipop.dht.names import c_name, parse_c_name
from ipop.dht.policy import is_name
from ipop.dht.srv import PROTOS, ServiceValue, validate_service_name
from ipop.errors import LocalProtocolError

__all__ = [
    "DROP_REASONS",
    "LATENCY_BUCKETS_MS",
    "MAX_SRV_ANSWERS",
    "DnsAnswer",
    "DnsOutcome",
    "DnsResolver",
    "Forward",
    "LatencyHistogram",
    "LookupAnswer",
    "NeedsLookup",
    "Waiting",
    "Zone",
    "rcode_name",
]

_OPCODE_QUERY = 0
# dnslib's QTYPE.A, RCODE.NXDOMAIN, ... are attribute lookups through a Python __getattr__;
# read once here, not a few times per reply.
_QTYPE_A: Final = QTYPE.A
_QTYPE_PTR: Final = QTYPE.PTR
_QTYPE_ANY: Final = QTYPE.ANY
_QTYPE_SRV: Final = QTYPE.SRV
_QTYPE_TXT: Final = QTYPE.TXT
_RCODE_NOERROR: Final = RCODE.NOERROR
_RCODE_FORMERR: Final = RCODE.FORMERR
_RCODE_SERVFAIL: Final = RCODE.SERVFAIL
_RCODE_NXDOMAIN: Final = RCODE.NXDOMAIN
_RCODE_NOTIMP: Final = RCODE.NOTIMP
_RCODE_REFUSED: Final = RCODE.REFUSED
_CLASS_IN = 1
_CLASS_ANY = 255

DROP_REASONS: Final = frozenset(
    {
        "dns_garbage",  # did not parse as DNS
        "dns_not_query",  # a response sent to us
        "dns_lookup_outside_subnet",  # the lookup named an address outside the subnet
        "dns_too_many_lookups",  # max_lookups names in flight: SERVFAIL
        "dns_too_many_waiters",  # max_waiters queries waiting: SERVFAIL
    }
)

# Instances one SRV reply lists: 12 SRV records with compressed targets fit 512 bytes.
MAX_SRV_ANSWERS: Final = 12
_SERVICE_PROTOS: Final = {f"_{p}".encode(): p for p in PROTOS}
_UDP_PLAIN_MAX = 512

# What a lookup finds: a name's address, a service's instances, or nothing (None).
LookupAnswer = IPv4Address | tuple[ServiceValue, ...] | None

# Upper bounds (ms) of the latency histogram's buckets; one more bucket holds the rest.
LATENCY_BUCKETS_MS: Final = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
_RCODE_NAMES: Final = {0: "noerror", 1: "formerr", 2: "servfail", 3: "nxdomain", 4: "notimp"}


def rcode_name(reply: bytes) -> str:
    """The rcode of a DNS reply in lower case ("noerror", "nxdomain", ..., "rcode9")."""
    code = reply[3] & 0x0F if len(reply) >= 4 else 0
    return "refused" if code == 5 else _RCODE_NAMES.get(code, f"rcode{code}")


@dataclass(slots=True)
class LatencyHistogram:
    """Query-to-answer times: cumulative buckets, and the last ``window`` for percentiles."""

    window: int = 1024
    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_MS) + 1))
    recent: collections.deque[float] = field(default_factory=collections.deque)

    def add(self, seconds: float) -> None:
        ms = max(0.0, seconds * 1000)
        self.counts[bisect.bisect_left(LATENCY_BUCKETS_MS, ms)] += 1
        self.recent.append(ms)
        while len(self.recent) > self.window:
            self.recent.popleft()

    def percentile(self, q: float) -> float | None:
        """The ``q`` quantile (0..1) of the recent answers in ms, None before any answer."""
        if not self.recent:
            return None
        ordered = sorted(self.recent)
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)

    def buckets(self) -> dict[str, int]:
        """``{"le_1": n, ..., "le_5000": n, "over_5000": n}`` (each bucket, not cumulative)."""
        out = {f"le_{b}": n for b, n in zip(LATENCY_BUCKETS_MS, self.counts, strict=False)}
        out[f"over_{LATENCY_BUCKETS_MS[-1]}"] = self.counts[-1]
        return out


@dataclass(frozen=True, slots=True)
class Zone:
    """A network's names: ``<name>.<suffix>`` for the addresses of ``subnet``."""

    suffix: str
    subnet: IPv4Network

    @property
    def labels(self) -> tuple[bytes, ...]:
        """The suffix's labels, lower case (:class:`LocalProtocolError` if it has none)."""
        labels = tuple(lbl.encode("ascii") for lbl in self.suffix.lower().split(".") if lbl)
        if not labels:
            raise LocalProtocolError(f"suffix {self.suffix!r} has no labels")
        return labels


@dataclass(frozen=True, slots=True)
class DnsAnswer:
    """The reply to send back to the client."""

    data: bytes


@dataclass(frozen=True, slots=True)
class NeedsLookup:
    """Resolve ``name`` (hostname or <host>.<router>, lower case; or a service,
    ``_<name>._<proto>``: list its instances) in zone ``zone`` (0: the resolver's own, ``i``:
    its ``other_zones[i - 1]``); then ``complete(token, answer)``."""

    token: int
    name: str
    zone: int = 0


@dataclass(frozen=True, slots=True)
class Waiting:
    """The query waits on lookup ``token``, already in flight; its reply comes with that one."""

    token: int


@dataclass(frozen=True, slots=True)
class Forward:
    """Send ``data`` (the query as received) to the upstream resolver; relay its reply."""

    data: bytes


DnsOutcome = DnsAnswer | NeedsLookup | Waiting | Forward


class _Query(NamedTuple):
    """What a reply needs from a query: its header bits and its one question, if one.

    A tuple, not a frozen dataclass: one is made per query, and a frozen dataclass's
    ``__init__`` (one ``object.__setattr__`` per field) was a tenth of a burst's parse time.
    ``question`` is the question section exactly as the client wrote it, echoed in replies.
    """

    id: int
    opcode: int
    rd: int
    labels: tuple[bytes, ...] | None  # None: not exactly one question
    qtype: int = 0
    qclass: int = 0
    question: bytes = b""


def _parse_query(data: bytes) -> _Query | None:
    """The query in ``data``; None for a response; DnsGarbage if it does not parse.

    The usual query (one question of plain labels, no answer or authority records, at most an
    EDNS record after it, which we ignore) is read directly: dnslib's parse took half the time
    of a query in a burst. Anything else goes through dnslib.
    """
    if len(data) >= 17:
        qid, flags, qd, an, ns, ar = _HEADER.unpack_from(data, 0)
        if flags & 0x8000:
            return None
        if qd == 1 and an == 0 and ns == 0 and ar <= 1:
            labels = []
            i = 12
            while i < len(data) and 0 < data[i] < 64:
                labels.append(data[i + 1 : i + 1 + data[i]])
                i += 1 + data[i]
            if i + 5 <= len(data) and data[i] == 0 and i - 12 < 255:
                qtype, qclass = _QUESTION.unpack_from(data, i + 1)
                opcode = (flags >> 11) & 0xF
                question = bytes(data[12 : i + 5])
                return _Query(qid, opcode, (flags >> 8) & 1, tuple(labels), qtype, qclass, question)
    try:
        rec = DNSRecord.parse(data)
    except Exception as exc:  # dnslib raises DNSError, but also struct/index/unicode errors
        raise _DnsGarbage from exc
    h = rec.header
    if h.qr:
        return None
    if len(rec.questions) != 1:
        return _Query(h.id, h.opcode, h.rd, None)
    q = rec.questions[0]
    qlabels = tuple(bytes(x) for x in q.qname.label)
    question = _pack_name(qlabels) + _QUESTION.pack(q.qtype, q.qclass)
    return _Query(h.id, h.opcode, h.rd, qlabels, q.qtype, q.qclass, question)


class _DnsGarbage(Exception):
    """Bytes that are not a DNS message."""


class _Waiter(NamedTuple):
    query: _Query
    qtype: int
    since: float
    client: Hashable


@dataclass(slots=True)
class _Lookup:
    """A name lookup in flight, with the queries waiting for its answer."""

    name: str
    zone: int
    since: float
    # (client, query id) -> waiter: a retransmitted query adds no second waiter.
    waiters: dict[tuple[Hashable, int], _Waiter] = field(default_factory=dict)


class DnsResolver:
    """Answers queries for ``<name>.<suffix>`` in ``subnet``; see the module docstring.

    ``client`` (any hashable: the querier's address) is handed back with each reply of a
    merged lookup so the caller knows where to send it.
    """

    def __init__(
        self,
        subnet: IPv4Network,
        *,
        suffix: str = "ipop",
        other_zones: Sequence[Zone] = (),
        upstream: bool = False,
        ttl: int = 60,
        negative_ttl: int = 1,
        service_ttl: int = 5,
        max_lookups: int = 512,
        max_waiters: int = 8192,
        cache_size: int = 1024,
    ) -> None:
        own = Zone(suffix, subnet)
        self.subnet = subnet
        self.suffix = b".".join(own.labels).decode("ascii")
        # Index i of a zone is what NeedsLookup.zone names; a suffix already taken is skipped.
        self.zones: tuple[Zone, ...] = (Zone(self.suffix, subnet), *other_zones)
        # Each zone's labels, by index (made once: Zone.labels parses the suffix).
        self._labels = tuple(zone.labels for zone in self.zones)
        # The suffix's first zone answers for it: labels -> zone index.
        matching: dict[tuple[bytes, ...], int] = {}
        for i, labels in enumerate(self._labels):
            matching.setdefault(labels, i)
        answering = set(matching.values())
        self.shadowed = tuple(z for i, z in enumerate(self.zones) if i not in answering)
        # Zones that answer, in order: where a reverse name goes (ours first).
        self._answering = [(i, self.zones[i].subnet) for i in sorted(answering)]
        # (labels, zone index), longest suffix first: the one a name matches is the nearest.
        self._matching = sorted(matching.items(), key=lambda m: -len(m[0]))
        self.upstream = upstream
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.service_ttl = service_ttl
        self.max_lookups = max_lookups
        self.max_waiters = max_waiters
        self.cache_size = cache_size
        self.drops: collections.Counter[str] = collections.Counter()
        # queries, lookups (started), merged, retransmits, cache_hits, forwarded
        self.stats: collections.Counter[str] = collections.Counter()
        self.answers: collections.Counter[str] = collections.Counter()  # by rcode name
        self.latency = LatencyHistogram()
        self._tokens = itertools.count(1)
        self._lookups: dict[int, _Lookup] = {}  # token -> lookup in flight
        self._by_name: dict[tuple[int, str], int] = {}  # (zone, name) -> token of its lookup
        self._waiting = 0
        self._cache: collections.OrderedDict[tuple[int, str], tuple[LookupAnswer, float]] = (
            collections.OrderedDict()
        )

    @property
    def pending(self) -> int:
        """Queries waiting on a lookup."""
        return self._waiting

    @property
    def in_flight(self) -> int:
        """Lookups in flight (distinct names)."""
        return len(self._lookups)

    # -- input ---------------------------------------------------------------------------------

    def handle_query(
        self, data: bytes, *, now: float, client: Hashable = None
    ) -> DnsOutcome | None:
        """Decide what to do with one query; None means no reply (counted in ``drops``)."""
        try:
            query = _parse_query(data)
        except _DnsGarbage:
            self._drop("dns_garbage")
            return None
        if query is None:
            self._drop("dns_not_query")
            return None
        self.stats["queries"] += 1
        outcome = self._decide(query, data, now, client)
        if isinstance(outcome, DnsAnswer):
            self.answered(outcome.data, since=now, now=now)
        elif isinstance(outcome, Forward):
            self.stats["forwarded"] += 1
        return outcome

    def answered(self, reply: bytes, *, since: float, now: float) -> None:
        """Count one reply sent (also a relayed upstream one): its rcode and latency."""
        self.answers[rcode_name(reply)] += 1
        self.latency.add(now - since)

    def complete(self, token: int, ip: LookupAnswer, *, now: float) -> list[tuple[Hashable, bytes]]:
        """Replies for every query waiting on lookup ``token``: ``ip`` is the name's address
        (a service's instances), or None if unknown. Each reply comes with the ``client`` its
        query came with."""
        lookup = self._finish(token)
        subnet = self.zones[lookup.zone].subnet
        if isinstance(ip, tuple):
            inside = tuple(v for v in ip if v.addr in subnet)
            if len(inside) != len(ip):
                self._drop("dns_lookup_outside_subnet")
            ip = inside or None
        elif ip is not None and ip not in subnet:
            self._drop("dns_lookup_outside_subnet")
            ip = None
        self._remember((lookup.zone, lookup.name), ip, lookup.since)
        answer, zone = ip, lookup.zone
        return self._reply_all(lookup, now, lambda w: self._answer(w.query, w.qtype, answer, zone))

    def fail(self, token: int, *, now: float) -> list[tuple[Hashable, bytes]]:
        """SERVFAIL for every query waiting on ``token`` (the lookup errored; nothing cached)."""
        lookup = self._finish(token)
        return self._reply_all(
            lookup, now, lambda w: self._reply(w.query, _RCODE_SERVFAIL, aa=False)
        )

    # -- internals -----------------------------------------------------------------------------

    def _drop(self, reason: str) -> None:
        if reason not in DROP_REASONS:
            raise AssertionError(f"DNS drop reason {reason!r} not in DROP_REASONS")
        self.drops[reason] += 1

    def _finish(self, token: int) -> _Lookup:
        lookup = self._lookups.pop(token, None)
        if lookup is None:
            raise LocalProtocolError(f"no pending DNS lookup {token}")
        del self._by_name[lookup.zone, lookup.name]
        self._waiting -= len(lookup.waiters)
        return lookup

    def _reply_all(
        self, lookup: _Lookup, now: float, reply: Callable[[_Waiter], bytes]
    ) -> list[tuple[Hashable, bytes]]:
        out = []
        for w in lookup.waiters.values():
            data = reply(w)
            self.answered(data, since=w.since, now=now)
            out.append((w.client, data))
        return out

    def _decide(self, query: _Query, data: bytes, now: float, client: Hashable) -> DnsOutcome:
        if query.opcode != _OPCODE_QUERY:
            return DnsAnswer(self._reply(query, _RCODE_NOTIMP, aa=False))
        if query.labels is None:
            return DnsAnswer(self._reply(query, _RCODE_FORMERR, aa=False))
        q = query
        labels = tuple(map(bytes.lower, query.labels))
        for suffix, zone in self._matching:
            n = len(suffix)
            if labels[-n:] == suffix and len(labels) >= n:
                if q.qclass not in (_CLASS_IN, _CLASS_ANY):
                    return DnsAnswer(self._reply(query, _RCODE_REFUSED, aa=False))
                return self._in_zone(query, labels[:-n], q.qtype, now, client, zone)
        reverse = self._reverse(labels)
        if reverse is not None:
            return DnsAnswer(self._ptr(query, q.qtype, *reverse))
        if self.upstream:
            return Forward(bytes(data))
        return DnsAnswer(self._reply(query, _RCODE_REFUSED, aa=False, ra=False))

    def _in_zone(
        self,
        query: _Query,
        rel: tuple[bytes, ...],
        qtype: int,
        now: float,
        client: Hashable,
        zone: int,
    ) -> DnsOutcome:
        if not rel:
            return DnsAnswer(self._reply(query, _RCODE_NOERROR))  # the zone apex exists
        if len(rel) > 2:
            return DnsAnswer(self._reply(query, _RCODE_NXDOMAIN))
        try:
            label = b".".join(rel).decode("ascii")
        except UnicodeDecodeError:
            return DnsAnswer(self._reply(query, _RCODE_NXDOMAIN))
        service = len(rel) == 2 and rel[0][:1] == b"_" and rel[1] in _SERVICE_PROTOS
        # A name cached or in flight was checked when it came first: skip the regexes (a
        # burst of queries for a few names is the case that must be cheap).
        name = (zone, label)
        token = self._by_name.get(name)
        cached = self._cache.get(name) if token is None else None
        if cached is not None:
            if cached[1] > now:
                self.stats["cache_hits"] += 1
                return DnsAnswer(self._answer(query, qtype, cached[0], zone))
            del self._cache[name]
        if token is None:
            if service:
                if validate_service_name(label[1:].partition(".")[0]) is not None:
                    return DnsAnswer(self._reply(query, _RCODE_NXDOMAIN))
            else:
                addr = parse_c_name(label, self.zones[zone].subnet)
                if addr is not None:
                    return DnsAnswer(self._answer(query, qtype, addr, zone))
                # A member's hostname, or a router's LAN host: <host>.<router hostname>.
                if not is_name(label):
                    return DnsAnswer(self._reply(query, _RCODE_NXDOMAIN))
        key = (client, query.id)
        if token is not None and key in self._lookups[token].waiters:
            self.stats["retransmits"] += 1  # already waiting: its one reply will come
            return Waiting(token)
        if self._waiting >= self.max_waiters:
            self._drop("dns_too_many_waiters")
            return DnsAnswer(self._reply(query, _RCODE_SERVFAIL, aa=False))
        if token is None and len(self._lookups) >= self.max_lookups:
            self._drop("dns_too_many_lookups")
            return DnsAnswer(self._reply(query, _RCODE_SERVFAIL, aa=False))
        waiter = _Waiter(query, qtype, now, client)
        self._waiting += 1
        if token is not None:
            self.stats["merged"] += 1
            self._lookups[token].waiters[key] = waiter
            return Waiting(token)
        token = next(self._tokens)
        self._lookups[token] = _Lookup(label, zone, now, {key: waiter})
        self._by_name[name] = token
        self.stats["lookups"] += 1
        return NeedsLookup(token, label, zone)

    def _remember(self, name: tuple[int, str], ip: LookupAnswer, since: float) -> None:
        if ip is None:
            ttl = self.negative_ttl
        else:
            ttl = self.service_ttl if isinstance(ip, tuple) else self.ttl
        self._cache[name] = (ip, since + ttl)
        self._cache.move_to_end(name)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def _reverse(self, labels: tuple[bytes, ...]) -> tuple[IPv4Address, int] | None:
        """The address a full ``d.c.b.a.in-addr.arpa`` name stands for and the first zone
        whose subnet holds it (ranges of networks may overlap: our own comes first)."""
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
        for i, zone_subnet in self._answering:
            if addr in zone_subnet:
                return addr, i
        return None

    # Replies are packed by hand: dnslib's RR/pack took ~50 us a reply, half the CPU of a
    # 1,000-query burst; these take a few. The question is echoed as the client wrote it.

    def _ptr(self, query: _Query, qtype: int, addr: IPv4Address, zone: int) -> bytes:
        answers = b""
        if qtype in (_QTYPE_PTR, _QTYPE_ANY):
            name = [c_name(addr).encode("ascii"), *self._labels[zone]]
            target = _pack_name(name)
            answers = _RR.pack(_QNAME_PTR, _QTYPE_PTR, _CLASS_IN, self.ttl, len(target)) + target
        return self._pack(query, _RCODE_NOERROR, aa=True, ra=True, answers=answers)

    def _answer(self, query: _Query, qtype: int, addr: LookupAnswer, zone: int) -> bytes:
        if addr is None:
            return self._reply(query, _RCODE_NXDOMAIN)
        if isinstance(addr, tuple):
            return self._services(query, qtype, addr, len(self._labels[zone]))
        answers = b""
        if qtype in (_QTYPE_A, _QTYPE_ANY):
            answers = _RR.pack(_QNAME_PTR, _QTYPE_A, _CLASS_IN, self.ttl, 4) + addr.packed
        return self._pack(query, _RCODE_NOERROR, aa=True, ra=True, answers=answers)

    def _services(
        self, query: _Query, qtype: int, found: tuple[ServiceValue, ...], suffix_labels: int
    ) -> bytes:
        """SRV and TXT answers for a service's instances, the targets' A records added."""
        assert query.labels is not None  # only questions in the zone get here
        # Targets end in a pointer to the suffix as the question wrote it (compression).
        offset = 12 + sum(1 + len(lbl) for lbl in query.labels[:-suffix_labels])
        suffix_ptr = (0xC000 | offset).to_bytes(2, "big")
        ttl = self.service_ttl
        records: list[bytes] = []
        extra: list[bytes] = []
        for v in found[:MAX_SRV_ANSWERS]:
            target = _pack_name([c_name(v.addr).encode("ascii")])[:-1] + suffix_ptr
            if qtype in (_QTYPE_SRV, _QTYPE_ANY):
                rdata = _SRV.pack(0, 0, v.port) + target
                records.append(_RR.pack(_QNAME_PTR, _QTYPE_SRV, _CLASS_IN, ttl, len(rdata)) + rdata)
                extra.append(target + _RR.pack(0, _QTYPE_A, _CLASS_IN, ttl, 4)[2:] + v.addr.packed)
            if qtype in (_QTYPE_TXT, _QTYPE_ANY) and v.txt:
                rdata = b"".join(bytes((len(t),)) + t.encode("ascii") for t in v.txt)
                records.append(_RR.pack(_QNAME_PTR, _QTYPE_TXT, _CLASS_IN, ttl, len(rdata)) + rdata)
        size = 12 + len(query.question) + sum(map(len, records))
        fits = 0
        for a in extra:
            if size + len(a) > _UDP_PLAIN_MAX:
                break
            size += len(a)
            fits += 1
        return self._pack(
            query,
            _RCODE_NOERROR,
            aa=True,
            ra=True,
            answers=b"".join(records),
            ancount=len(records),
            additional=b"".join(extra[:fits]),
            arcount=fits,
        )

    def _reply(self, query: _Query, rcode: int, *, aa: bool = True, ra: bool = True) -> bytes:
        return self._pack(query, rcode, aa=aa, ra=ra, answers=b"")

    def _pack(
        self,
        query: _Query,
        rcode: int,
        *,
        aa: bool,
        ra: bool,
        answers: bytes,
        ancount: int | None = None,
        additional: bytes = b"",
        arcount: int = 0,
    ) -> bytes:
        flags = 0x8000 | (query.opcode & 0xF) << 11 | int(aa) << 10 | (query.rd & 1) << 8
        flags |= int(ra or self.upstream) << 7 | rcode & 0xF
        question = query.question
        an = (1 if answers else 0) if ancount is None else ancount
        header = _HEADER.pack(query.id, flags, 1 if question else 0, an, 0, arcount)
        return header + question + answers + additional


_HEADER = struct.Struct("!HHHHHH")
_QUESTION = struct.Struct("!HH")
_RR = struct.Struct("!HHHIH")  # name (a pointer), type, class, TTL, rdata length
_SRV = struct.Struct("!HHH")  # priority, weight, port
_QNAME_PTR = 0xC00C  # the question's name, right after the 12-byte header


def _pack_name(labels: tuple[bytes, ...] | list[bytes]) -> bytes:
    return b"".join(bytes((len(lbl),)) + bytes(lbl) for lbl in labels if lbl) + b"\0"
