"""The virtual gateway's services on one TAP: DHCP and DNS, behind one frame entry point.

:class:`TapServices` is sans-IO. The daemon's TAP read path offers it every frame the kernel
writes; :meth:`TapServices.handle_frame` returns True when the frame was for the gateway's
services (DHCP to port 67, DNS to the gateway on UDP or TCP port 53, the latter through
:mod:`ipop.dhcp_dns.tcp`) and the daemon must not route it. ARP is not among them: the owner
of the local side answers it before a frame reaches these services (the daemon on its own
TAP, router mode on its LAN, each with its :class:`ipop.vnet.arp.ArpResponder`), so a local
side has one ARP owner. It costs three ``unpack_from`` calls for ordinary traffic:
ethertype, protocol, destination address. Replies wait in :meth:`frames_to_send`.

DNS needs I/O in two cases: a hostname lookup (the DHT) and a query forwarded upstream. Both
are handed out as work items (:meth:`lookups`, :meth:`forwards`) with a token and finished
with :meth:`complete_lookup` / :meth:`complete_forward`, which queue the reply frame. Every
reply goes back to the querier's MAC, IP and port, from :data:`VIRTUAL_MAC`, the gateway IP
and port 53.

:class:`TapServicesRunner` is the thin asyncio adapter: it feeds frames, writes replies, and
runs lookups and forwards in tasks it tracks (bounded, with timeouts) and cancels in
:meth:`TapServicesRunner.close`.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import struct
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Final, NamedTuple

from ipop.dhcp_dns.dhcp import PACKET_REASONS, DhcpEvent, DhcpServer
from ipop.dhcp_dns.dhcp import SERVER_PORT as DHCP_SERVER_PORT
from ipop.dhcp_dns.dns import DnsAnswer, DnsResolver, Forward, LookupAnswer, NeedsLookup
from ipop.dhcp_dns.tcp import IPPROTO_TCP, DnsTcp, TcpClient
from ipop.errors import LocalProtocolError
from ipop.status import DnsLatency, DnsStatus
from ipop.tasks import TaskSet
from ipop.vnet.arp import VIRTUAL_MAC
from ipop.vnet.packet import (
    ETH_HLEN,
    ETH_P_IP,
    IPPROTO_UDP,
    IPV4_BROADCAST,
    PacketError,
    build_udp_frame,
    internet_checksum,
    parse_ethernet,
    parse_ipv4,
    parse_mac,
    parse_udp_frame,
)

__all__ = [
    "DNS_PORT",
    "DROP_REASONS",
    "ForwardWanted",
    "LookupWanted",
    "TapServices",
    "TapServicesRunner",
]

log = logging.getLogger(__name__)

DNS_PORT = 53
# Every reason TapServices.drops counts under: frames to the gateway that do not parse
# (PACKET_REASONS), then the resolver runner's own.
DROP_REASONS: Final = frozenset(
    {
        *PACKET_REASONS,
        "dns_too_many_tasks",  # the runner's lookup tasks are all busy: SERVFAIL
        "dns_lookup_failed",  # the lookup raised or timed out: SERVFAIL
        "dns_too_many_forwards",  # max_forwards queries upstream already: no reply
        "dns_forward_refused",  # no upstream, or the runner is full: no reply
        "dns_forward_failed",  # the upstream did not answer in time
        "dns_upstream_garbage",  # the upstream's reply was not a reply to our query
    }
)
_ETHERTYPE = struct.Struct("!H")
_U32 = struct.Struct("!I")
# A plain DNS query frame from the TAP: Ethernet, a 20-byte IPv4 header, UDP (_plain_dns).
_PLAIN_IP = struct.Struct("!BxHxxHxxxxII")  # version/IHL, total length, flags/offset, src, dst
_PLAIN_UDP = struct.Struct("!HHHH")
_PSEUDO = struct.Struct("!IIBBH")
_IP_MF_OFFSET = 0x3FFF  # more-fragments bit and fragment offset


@dataclass(frozen=True, slots=True)
class LookupWanted:
    """Resolve hostname ``name`` in zone ``zone`` (:class:`ipop.dhcp_dns.dns.NeedsLookup`)
    and call ``complete_lookup(token, ip)``."""

    token: int
    name: str
    zone: int = 0


@dataclass(frozen=True, slots=True)
class ForwardWanted:
    """Send ``query`` to the upstream resolver and call ``complete_forward(token, reply)``."""

    token: int
    query: bytes


class _Client(NamedTuple):
    """Where a DNS reply goes: the querier's addresses, as seen in its query.

    A tuple rather than a frozen dataclass: one is made per query (see _plain_dns)."""

    mac: bytes
    ip: int
    port: int


@dataclass(frozen=True, slots=True)
class _Forwarded:
    """A query sent upstream: who asked, its id (the reply must carry it), since when."""

    client: _Client | TcpClient
    query_id: int
    since: float


class TapServices:
    """DHCP and DNS of the virtual gateway for one TAP (or, in router mode, one LAN).

    Either of ``dhcp`` and ``dns`` may be None (that service is off). ``gateway_ip`` is
    where DNS queries must be sent and the source of DNS replies.
    """

    def __init__(
        self,
        *,
        gateway_ip: IPv4Address,
        subnet: IPv4Network,
        dhcp: DhcpServer | None,
        dns: DnsResolver | None,
        mac: bytes | str = VIRTUAL_MAC,
        max_forwards: int = 1024,
    ) -> None:
        if gateway_ip not in subnet:
            raise LocalProtocolError(f"gateway {gateway_ip} is not in {subnet}")
        self.gateway_ip = gateway_ip
        self.subnet = subnet
        self.dhcp = dhcp
        self.dns = dns
        self.mac = parse_mac(mac)
        # DNS over TCP on the same path (ipop.dhcp_dns.tcp explains why not a kernel listener).
        self.tcp = DnsTcp(int(gateway_ip), self.mac) if dns is not None else None
        self.drops: collections.Counter[str] = collections.Counter()
        self.tap_mac: bytes | None = None
        self._gw = int(gateway_ip)
        self._out: list[bytes] = []
        self._lookups: list[LookupWanted] = []
        self._forwards: list[ForwardWanted] = []
        self.max_forwards = max_forwards
        self._fwd_clients: dict[int, _Forwarded] = {}  # forward token -> querier
        self._fwd_tokens = itertools.count(1)

    @classmethod
    def for_node(
        cls,
        subnet: IPv4Network,
        *,
        suffix: str = "ipop",
        mtu: int | None = None,
        lease_s: int = 3600,
        upstream: bool = False,
        mac: bytes | str = VIRTUAL_MAC,
    ) -> TapServices:
        """The usual set for a node's TAP: the gateway is the subnet's first host address."""
        gateway = subnet.network_address + 1
        return cls(
            gateway_ip=gateway,
            subnet=subnet,
            dhcp=DhcpServer(
                gateway,
                subnet,
                dns_ip=gateway,
                domain=suffix,
                mtu=mtu,
                lease_s=lease_s,
                server_mac=mac,
            ),
            dns=DnsResolver(subnet, suffix=suffix, upstream=upstream),
            mac=mac,
        )

    # -- input ---------------------------------------------------------------------------------

    def handle_frame(self, frame: bytes | bytearray | memoryview, *, now: float) -> bool:
        """Consume ``frame`` if it is for the gateway's services (True); else leave it (False)."""
        if len(frame) < ETH_HLEN + 20:
            return False
        ethertype = _ETHERTYPE.unpack_from(frame, 12)[0]
        if ethertype == ETH_P_IP:
            proto = frame[ETH_HLEN + 9]
            dst = _U32.unpack_from(frame, ETH_HLEN + 16)[0]
            if proto == IPPROTO_TCP and dst == self._gw and self.tcp is not None:
                return self._tcp(frame, now)
            if proto != IPPROTO_UDP:
                return False
            if dst != self._gw and dst != IPV4_BROADCAST:
                return False
            if dst == self._gw and self.dns is not None:
                plain = _plain_dns(frame)
                if plain is not None:
                    src_ip, src_port, payload = plain
                    self.tap_mac = mac = bytes(frame[6:12])
                    self._dns(_Client(mac, src_ip, src_port), payload, now)
                    return True
            return self._udp(frame, now)
        return False

    def _udp(self, frame: bytes | bytearray | memoryview, now: float) -> bool:
        try:
            uf = parse_udp_frame(frame)
        except PacketError as exc:
            # UDP to the gateway or broadcast that does not parse: ours to drop, not to route.
            self.drops[exc.reason] += 1
            return True
        port = uf.udp.dst_port
        if port == DHCP_SERVER_PORT:
            if self.dhcp is None:
                return False
            self.tap_mac = uf.eth.src
            self._out.extend(self.dhcp.handle_frame(frame, now=now))
            return True
        if port == DNS_PORT and uf.ip.dst == self._gw:
            if self.dns is None:
                return False
            self.tap_mac = uf.eth.src
            self._dns(_Client(uf.eth.src, uf.ip.src, uf.udp.src_port), uf.payload, now)
            return True
        return False

    def _tcp(self, frame: bytes | bytearray | memoryview, now: float) -> bool:
        assert self.tcp is not None
        try:
            eth, rest = parse_ethernet(frame)
            ip, seg = parse_ipv4(rest)
        except PacketError as exc:
            self.drops[exc.reason] += 1
            return True
        if ip.is_fragment or len(seg) < 4 or int.from_bytes(seg[2:4], "big") != DNS_PORT:
            return False  # not DNS: the gateway has nothing else on TCP
        self.tap_mac = eth.src
        frames, queries = self.tcp.segment(eth.src, ip, seg, now=now)
        self._out.extend(frames)
        for client, query in queries:
            self._dns(client, query, now)
        return True

    def _dns(self, client: _Client | TcpClient, query: bytes, now: float) -> None:
        assert self.dns is not None
        outcome = self.dns.handle_query(query, now=now, client=client)
        if outcome is None:
            if isinstance(client, TcpClient):  # no reply will come: let the connection end
                self._out.extend(self.tcp.answered_nothing(client) if self.tcp else [])
            return
        if isinstance(outcome, DnsAnswer):
            self._reply(client, outcome.data, now)
        elif isinstance(outcome, NeedsLookup):
            self._lookups.append(LookupWanted(outcome.token, outcome.name, outcome.zone))
        elif isinstance(outcome, Forward):
            if len(self._fwd_clients) >= self.max_forwards:
                self.count_drop("dns_too_many_forwards")
                return  # no reply: the client retries or asks its next server
            token = next(self._fwd_tokens)
            query_id = int.from_bytes(outcome.data[:2], "big")
            self._fwd_clients[token] = _Forwarded(client, query_id, now)
            self._forwards.append(ForwardWanted(token, outcome.data))
        # Waiting: the reply comes with the lookup it joined.

    def count_drop(self, reason: str) -> None:
        """Count one drop of a reason in :data:`DROP_REASONS` (anything else is a bug)."""
        if reason not in DROP_REASONS:
            raise AssertionError(f"services drop reason {reason!r} not in DROP_REASONS")
        self.drops[reason] += 1

    def _reply(self, client: _Client | TcpClient, data: bytes, now: float) -> None:
        if isinstance(client, TcpClient):
            assert self.tcp is not None
            self._out.extend(self.tcp.answer(client, data, now=now))
            return
        self._out.append(
            build_udp_frame(
                dst_mac=client.mac,
                src_mac=self.mac,
                src_ip=self._gw,
                dst_ip=client.ip,
                src_port=DNS_PORT,
                dst_port=client.port,
                payload=data,
            )
        )

    # -- completions ---------------------------------------------------------------------------

    def complete_lookup(self, token: int, ip: LookupAnswer, *, now: float) -> None:
        """Finish a lookup (``ip`` None: no such name; a tuple: a service's instances);
        queues one reply per waiter."""
        if self.dns is None:
            raise LocalProtocolError(f"no pending lookup {token}")
        self._reply_all(self.dns.complete(token, ip, now=now), now)

    def fail_lookup(self, token: int, *, now: float) -> None:
        """The lookup errored or timed out: SERVFAIL to every waiter."""
        if self.dns is None:
            raise LocalProtocolError(f"no pending lookup {token}")
        self._reply_all(self.dns.fail(token, now=now), now)

    def _reply_all(self, replies: list[tuple[Hashable, bytes]], now: float) -> None:
        for client, data in replies:
            assert isinstance(client, _Client | TcpClient)  # handle_query got one of ours
            self._reply(client, data, now)

    def complete_forward(self, token: int, reply: bytes | None, *, now: float) -> None:
        """Relay the upstream's ``reply`` (None: no answer, the client will retry)."""
        entry = self._fwd_clients.pop(token, None)
        if entry is None:
            raise LocalProtocolError(f"no pending forward {token}")
        if reply is None:
            if isinstance(entry.client, TcpClient) and self.tcp is not None:
                self._out.extend(self.tcp.answered_nothing(entry.client))
            return
        if (
            len(reply) < 12
            or int.from_bytes(reply[:2], "big") != entry.query_id
            or not reply[2] & 0x80
        ):
            self.count_drop("dns_upstream_garbage")
            return
        if self.dns is not None:
            self.dns.answered(reply, since=entry.since, now=now)
        self._reply(entry.client, reply, now)

    def dns_status(self) -> DnsStatus | None:
        """The resolver's counters for ``ipop status`` (None: DNS is off)."""
        dns = self.dns
        if dns is None:
            return None
        drops = dict(dns.drops)
        drops.update((k, v) for k, v in self.drops.items() if k.startswith("dns_"))
        counters = dict(dns.stats)
        counters["in_flight"] = dns.in_flight
        counters["waiting"] = dns.pending
        if self.tcp is not None:
            drops.update(self.tcp.drops)
            counters.update({f"tcp_{k}": v for k, v in self.tcp.stats.items()})
            counters["tcp_open"] = self.tcp.connections
        return DnsStatus(
            counters=counters,
            answers=dict(dns.answers),
            drops=drops,
            latency_ms=DnsLatency(
                p50=dns.latency.percentile(0.5),
                p99=dns.latency.percentile(0.99),
                buckets=dns.latency.buckets(),
            ),
        )

    # -- output --------------------------------------------------------------------------------

    def frames_to_send(self) -> list[bytes]:
        """Reply frames to write into the TAP, oldest first (drains the queue)."""
        out, self._out = self._out, []
        return out

    def lookups(self) -> list[LookupWanted]:
        out, self._lookups = self._lookups, []
        return out

    def forwards(self) -> list[ForwardWanted]:
        out, self._forwards = self._forwards, []
        return out

    def next_event(self) -> DhcpEvent | None:
        """DHCP's facts for the daemon (AddressWanted, LeaseGranted, ...)."""
        return self.dhcp.next_event() if self.dhcp is not None else None


def _plain_dns(frame: bytes | bytearray | memoryview) -> tuple[int, int, bytes] | None:
    """(source IP, source port, payload) of a plain, well-formed DNS query frame, else None.

    Plain: a 20-byte IPv4 header, not a fragment, UDP to port 53, both checksums right (a
    zero UDP checksum is "none", RFC 768). Anything else, malformed or unusual, returns None
    and takes :func:`parse_udp_frame`, which accepts a superset of these frames and names
    what is wrong with the rest. The caller checked the ethertype, protocol and destination.
    Made for bursts: the strict parser built four header objects per query, a third of
    the services' time for each.
    """
    n = len(frame)
    if n < ETH_HLEN + 28:
        return None
    ver_ihl, total, frag, src, dst = _PLAIN_IP.unpack_from(frame, ETH_HLEN)
    if ver_ihl != 0x45 or frag & _IP_MF_OFFSET or total < 28 or total > n - ETH_HLEN:
        return None
    if internet_checksum(frame[ETH_HLEN : ETH_HLEN + 20]) != 0:
        return None
    sport, dport, length, csum = _PLAIN_UDP.unpack_from(frame, ETH_HLEN + 20)
    if dport != DNS_PORT or length < 8 or length > total - 20:
        return None
    segment = bytes(frame[ETH_HLEN + 20 : ETH_HLEN + 20 + length])
    if csum and internet_checksum(_PSEUDO.pack(src, dst, 0, IPPROTO_UDP, length) + segment):
        return None
    return src, sport, segment[8:]


class TapServicesRunner:
    """Drives :class:`TapServices` from asyncio: writes replies, runs lookups and forwards.

    ``write_frame`` writes one frame into the TAP; ``lookup`` resolves a hostname (None if
    unknown) or lists a service ``_<name>._<proto>`` (its instances); ``other_lookups`` do
    the same in the resolver's other zones, in their order; ``upstream`` is the
    resolver queries outside the suffixes go to. ``on_event``
    receives DHCP events after each frame. At most ``max_tasks`` lookups and forwards run at
    once; beyond that a lookup gets SERVFAIL and a forward is dropped.
    """

    def __init__(
        self,
        services: TapServices,
        write_frame: Callable[[bytes], None],
        lookup: Callable[[str], Awaitable[LookupAnswer]],
        upstream: tuple[str, int] | None,
        *,
        other_lookups: Sequence[Callable[[str], Awaitable[LookupAnswer]]] = (),
        on_event: Callable[[DhcpEvent], None] | None = None,
        lookup_timeout_s: float = 3.0,
        forward_timeout_s: float = 3.0,
        max_tasks: int = 512,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.services = services
        self._write = write_frame
        self._lookups = (lookup, *other_lookups)  # by zone
        zones = services.dns.zones if services.dns is not None else ()
        if len(zones) > len(self._lookups):
            raise LocalProtocolError(f"{len(zones)} DNS zones, {len(self._lookups)} lookups")
        self._upstream = upstream
        self._on_event = on_event
        self.lookup_timeout_s = lookup_timeout_s
        self.forward_timeout_s = forward_timeout_s
        self.max_tasks = max_tasks
        self._clock = clock
        # Bounded: past max_tasks, a lookup gets SERVFAIL and a forward is dropped (_pump).
        self._tasks = TaskSet(self._task_failed)
        self._closed = False

    def feed(self, frame: bytes | bytearray | memoryview, *, now: float) -> bool:
        """Offer one TAP frame; True if it was the services' (the caller must not route it)."""
        if self._closed:
            raise LocalProtocolError("TapServicesRunner is closed")
        ours = self.services.handle_frame(frame, now=now)
        if ours:
            self._pump()
        return ours

    def _pump(self) -> None:
        s = self.services
        for item in s.lookups():
            if len(self._tasks) >= self.max_tasks:
                s.count_drop("dns_too_many_tasks")
                s.fail_lookup(item.token, now=self._clock())
            else:
                self._tasks.spawn(self._run_lookup(item))
        for fwd in s.forwards():
            if self._upstream is None or len(self._tasks) >= self.max_tasks:
                s.count_drop("dns_forward_refused")
                s.complete_forward(fwd.token, None, now=self._clock())
            else:
                self._tasks.spawn(self._run_forward(fwd, self._upstream))
        for frame in s.frames_to_send():
            self._write(frame)
        if self._on_event is not None:
            while (ev := s.next_event()) is not None:
                self._on_event(ev)

    def _task_failed(self, exc: BaseException) -> None:
        # _run_lookup and _run_forward answer their own failures: one that escapes is a bug.
        log.error("event=dns_task_failed error=%r", exc, exc_info=exc)

    async def _run_lookup(self, item: LookupWanted) -> None:
        try:
            # asyncio.timeout, not wait_for: wait_for runs the lookup in a task of its own,
            # one more loop pass (a burst's worth of queries read) before its first message.
            async with asyncio.timeout(self.lookup_timeout_s):
                ip = await self._lookups[item.zone](item.name)
        except asyncio.CancelledError:
            raise
        except Exception:  # the lookup failed or timed out: the client hears SERVFAIL
            self.services.count_drop("dns_lookup_failed")
            self.services.fail_lookup(item.token, now=self._clock())
        else:
            self.services.complete_lookup(item.token, ip, now=self._clock())
        self._pump()

    async def _run_forward(self, fwd: ForwardWanted, upstream: tuple[str, int]) -> None:
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[bytes] = loop.create_future()

        class _Proto(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
                if not reply.done():
                    reply.set_result(data)

        transport: asyncio.DatagramTransport | None = None
        data: bytes | None = None
        try:
            transport, _ = await loop.create_datagram_endpoint(_Proto, remote_addr=upstream)
            transport.sendto(fwd.query)
            data = await asyncio.wait_for(reply, self.forward_timeout_s)
        except asyncio.CancelledError:
            raise
        except (OSError, TimeoutError):
            self.services.count_drop("dns_forward_failed")
        finally:
            if transport is not None:
                transport.close()
        self.services.complete_forward(fwd.token, data, now=self._clock())
        self._pump()

    async def close(self) -> None:
        """Cancel every lookup and forward still running and wait for them to end."""
        self._closed = True
        await self._tasks.close()
