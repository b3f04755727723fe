"""ipopd's body: one node on a real UDP socket and a real TAP, with its DHT lease and names.

Start-up, in order (each step logs one structured line):

1. open the UDP socket and the TAP (MTU from the config, else :data:`DEFAULT_TAP_MTU`);
2. build the :class:`ipop.aio.stack.Node` and join through the bundle's bootstrap list (our own
   endpoints are taken out of it: a bootstrap node's bundle names itself);
3. once the DHT has joined, claim a virtual IP (the one in the state directory first, so a
   restart keeps its address), renew it on a lease, register our hostname, and configure the
   TAP (static addressing) or hand the address to the DHCP server (``addressing = "dhcp"``);
4. serve the control socket.

An overlay-only node (a bundle with no network, ``ipop-config overlay node``; issue 17) opens no
TAP and claims nothing: it is ready once its DHT has joined, and from then on it routes,
relays and stores DHT records for every network on its overlay, none of which it can read or
write (:mod:`ipop.overlay.origin` seals members' routed traffic; :mod:`ipop.dht.policy`
checks each network's records against the CA key its namespace names). What needs a
network (``network``, ``subnet``, ``suffix``, ...) raises :class:`CommandFailed` there.

Local services (DHCP and DNS on the TAP) are plugged in by the composition root
(``tools/ipopd.py``) through :class:`ipop.aio.local.LocalServices`: the core does not import
``dhcp_dns``. Router mode replaces the TAP with its LAN through
:class:`ipop.aio.local.LocalNetwork` (``router/daemon.py``): the core does not import ``router``.
The daemon keeps the lifecycle; the control socket's commands are :mod:`ipop.aio.commands`,
the NAT sockets and netcheck :mod:`ipop.aio.natio`.
SIGTERM/SIGINT stop the daemon: the TAP, the socket and the control socket are released; the
IP record is left to lapse so that a restart within the lease gets the same address back.

Why over 600 lines: lifecycle (start, the vIP claim, stop in order), remembered peers and the
link watch, name and owner lookups for DNS and the data plane, and the inputs of status,
metrics and netcheck, each a thin call into a part of its own (:mod:`ipop.report`,
:mod:`ipop.metrics`, :mod:`ipop.dht.names`, :mod:`ipop.dht.publish`). The next seam is the
lookups (about 80 lines) in a module of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import signal
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from ipop import timing
from ipop.aio import natio
from ipop.aio.address import AddressKeeper
from ipop.aio.addrwatch import AddressWatcher
from ipop.aio.control import CommandFailed
from ipop.aio.dataplane import DataPlane, LocalSide, UdpSocket
from ipop.aio.local import LocalNetwork, LocalServices, ServedSide
from ipop.aio.member import (
    MemberSide,
    Served,
    check_same_overlay,
    dns_answer,
    local_frame,
    network_row,
    open_tap,
    owner_of,
    resolve_in,
    route_tables,
    take_address,
)
from ipop.aio.natio import NatSockets
from ipop.aio.peerstore import PeerStore
from ipop.aio.rtnl import Rtnl
from ipop.aio.settings import DaemonSettings, load_crl_file
from ipop.aio.stack import Node
from ipop.aio.sysdns import SystemDns, SystemDnsError, routing_domains
from ipop.aio.tap import DEFAULT_TAP_MTU, Tap
from ipop.bundle import Bundle, Membership
from ipop.dht.publish import ServiceKeeper, ServicePublisher
from ipop.dht.read import NoQuorum
from ipop.dht.service import DhtConfig
from ipop.dht.srv import SERVICE_QUOTA, ServiceValue
from ipop.errors import ConfigError
from ipop.link import fastpath
from ipop.metrics import MetricsInput, render_metrics
from ipop.nat.netcheck import NetcheckResult
from ipop.nolinks import NoLinkWatch
from ipop.report import LocalView, build_status, prefixed
from ipop.status import (
    DnsStatus,
    NetworkStatus,
    PathKind,
    Status,
)
from ipop.tasks import TaskSet
from ipop.types import Endpoint, NodeId, RelayPath
from ipop.vnet.arp import VIRTUAL_MAC, ArpResponder

__all__ = [
    "DEFAULT_TAP_MTU",
    "VIRTUAL_MAC",
    "Daemon",
    "DaemonSettings",
    "LocalServices",
    "load_crl_file",
]

log = logging.getLogger("ipopd")

# Linked peers' vIPs from their hostnames (learn_peer_vips): how often, how many lookups a
# sweep, and how long an answer holds.
MAX_PEER_VIP_LOOKUPS = 8
# How often link notes are logged (ipop.journal; their log time is at most this late).
JOURNAL_DRAIN_S = 0.25
# How often the daemon looks for a reason it has no links (ipop.nolinks).
LINK_WATCH_S = 2.0
# How often the links' endpoints are noted for ipop.aio.peerstore (writes are rarer still);
# until the first write, every REMEMBER_FIRST_S. Why: the first write came 10 s after start,
# so a daemon killed before (the soak restarts some within seconds) came back with no
# remembered peers, and the peers it had linked to kept sending into its dead sessions.
REMEMBER_CHECK_S = 10.0
REMEMBER_FIRST_S = 1.0


# The data plane's subnet on an overlay-only node: it accepts no address, so every IP packet
# is refused before this is read; a /32 nobody holds keeps the filter's arithmetic defined.
_NO_SUBNET = IPv4Network("255.255.255.255/32")


class Daemon:
    """One node and its local side; see the module docstring. ``services``: DHCP/DNS on the
    TAP; ``local``: another local side instead of the TAP (then ``services`` is unused).
    ``networks``: more networks on the bundle's overlay, (bundle, TAP name) each, served by
    :class:`ipop.aio.member.MemberSide` (``open_tap``: how their TAPs open, for tests)."""

    def __init__(
        self,
        bundle: Bundle,
        settings: DaemonSettings,
        *,
        services: Callable[[ServedSide], LocalServices] | None = None,
        local: Callable[[Daemon], LocalNetwork] | None = None,
        system_dns: SystemDns | None = None,
        networks: Sequence[tuple[Bundle, str]] = (),
        open_tap: Callable[[str, int], Tap] | None = None,
    ) -> None:
        self.bundle = bundle
        self.settings = settings
        # The network this daemon serves; None: an overlay-only node (module docstring).
        self.membership: Membership | None = bundle.membership() if bundle.is_member else None
        self._served = Served.of(self.membership, bundle.dns_suffix)
        self._services_factory = services
        self.services: LocalServices | None = None
        # Split DNS with the host's resolver (ipop.aio.sysdns): registered once the TAP has
        # its address, removed at stop. Only for a TAP of our own (router mode has a LAN).
        self.system_dns = system_dns if local is None else None
        self.started_at = time.time()
        self.vip: IPv4Address | None = None
        self.names: list[str] = []
        self.stats: Counter[str] = Counter()
        self.rng = random.Random(secrets.randbits(64))
        self.address: AddressKeeper | None = None
        # The other networks (issue 17, item 2), each on a TAP of its own; none: one network.
        self.sides: list[MemberSide] = []
        # Our first network's TAP routes live in the main table (the others': in their own).
        self.route_table: int | None = None
        self._open_tap = open_tap
        if networks:
            check_same_overlay(
                bundle, [(f"network[{i}].bundle", b) for i, (b, _) in enumerate(networks)]
            )
            if self.membership is None:
                raise ConfigError(
                    "bundle", "is overlay-only", "[[network]] needs a member bundle first"
                )
            if local is not None:
                raise ConfigError("network", "is not for a router", "run one network per router")
            tables = route_tables(
                self.membership.subnet, [b.membership().subnet for b, _ in networks]
            )
            self.sides = [
                MemberSide(
                    b,
                    tap_name=tap,
                    settings=settings,
                    rng=self.rng,
                    open_tap=open_tap,
                    route_table=table,
                )
                for (b, tap), table in zip(networks, tables, strict=True)
            ]
        if self._served is not None:
            self.address = AddressKeeper(
                state_dir=settings.state_dir,
                network=self.network,
                namespace=self.namespace,
                subnet=self.subnet,
                suffix=self.suffix,
                lease_s=settings.lease_s,
                rng=self.rng,
            )
        self.node: Node | None = None
        # The services we publish (ipop service publish); made once the DHT has our address.
        self.publisher: ServicePublisher | None = None
        # The config's [[service]] tables, published with it at our vIP (republished at every
        # start: they are config, not state; withdrawn on stop with everything it publishes).
        self.configured = ServiceKeeper(
            settings.services, where=lambda _svc: self.vip, publisher=lambda: self.publisher
        )
        self.udp: UdpSocket | None = None
        self.tap: Tap | None = None
        self.dataplane: DataPlane | None = None
        self._stop = asyncio.Event()
        self.tasks = TaskSet(self._task_failed)
        # The first background task that failed while running: run() raises it after the
        # shutdown, so the process exits non-zero and its service manager restarts it.
        self.failure: BaseException | None = None
        self.ready = asyncio.Event()
        # Peer -> (overlay ping round trip, when measured): from `ipop ping`.
        self.rtts: dict[NodeId, tuple[float, float]] = {}
        # Linked peer -> (its vIP, when learned) from its hostname's records (learn_peer_vips);
        # pruned to linked peers, re-learned after timing.PEER_VIP_TTL_S.
        self.peer_vips: dict[NodeId, tuple[IPv4Address, float]] = {}
        self._endpoints: list[Endpoint] = []  # our own addresses on the overlay port
        # ARP on the TAP: the daemon answers it (a plugged-in side answers its own, and then
        # the daemon holds no responder: one owner per local side).
        self.arp: ArpResponder | None = None
        if local is None and self._served is not None:
            self.arp = ArpResponder(None, self.subnet)
        self.netcheck_result: NetcheckResult | None = None
        self.nat = NatSockets(settings.listen.host, self.stats)
        self.addrwatch: AddressWatcher | None = None
        # Remembered peers are the overlay's (the network itself when it is its own overlay).
        self.peer_store = PeerStore(settings.state_dir, network=bundle.overlay_name)
        self._remembering = False  # set once _start has begun noting links
        self.no_links = NoLinkWatch(now=time.time())
        # Last: it may use any of the above.
        self.local: LocalNetwork | None = local(self) if local is not None else None

    def _serving(self) -> Served:
        if self._served is None:
            raise CommandFailed("an overlay-only node serves no network (its bundle has none)")
        return self._served

    @property
    def network(self) -> str:
        return self._serving().network

    @property
    def namespace(self) -> str:
        """Every DHT key of the network starts with it: it names the CA key (ipop.dht.record)."""
        return self._serving().namespace

    @property
    def subnet(self) -> IPv4Network:
        return self._serving().subnet

    @property
    def gateway(self) -> IPv4Address:
        return self._serving().gateway

    @property
    def suffix(self) -> str:
        return self._serving().suffix

    # --- lifecycle --------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    async def run(self, *, on_ready: Callable[[], Any] | None = None) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop)
        try:
            await self._start()
            if self.membership is not None:
                self.tasks.spawn(self._claim(on_ready))
            else:
                self.tasks.spawn(self._serve_overlay(on_ready))
            await self._stop.wait()
        finally:
            await self._shutdown()
        if self.failure is not None:
            raise self.failure

    async def _start(self) -> None:
        s = self.settings
        now = time.time()
        # Overlay identity for links and routing, network identity for DHT records: one
        # object unless the bundle puts the network on a shared overlay.
        identity, member = self.bundle.identities(now=now)
        plain = self.bundle.records_plain()
        if plain is not None:
            log.warning("event=records_plain why=%r", plain)
        if s.crl_file is not None:
            network_trust = member.trust if member is not None else None
            load_crl_file(identity.trust, s.crl_file, now=now, network=network_trust)
        try:
            self.udp = UdpSocket(s.listen)
        except OSError as exc:
            raise ConfigError(
                "listen",
                f"cannot listen on {s.listen} ({exc.strerror or exc})",
                "stop what holds that port (another ipopd?), or set listen to a free port on "
                "an address of this host",
            ) from None
        local = await self._local_endpoints(self.udp.port)
        self._endpoints = local
        bootstrap = [ep for ep in self.bundle.bootstrap if ep not in local]
        remembered = [ep for ep in self.peer_store.load() if ep not in local]
        self.node = Node(
            identity,
            member=member,
            bootstrap=bootstrap,
            clock=time.time,
            rng=self.rng,
            # The DHT refuses ip keys and name values outside the network's subnet.
            dht_config=DhtConfig(subnet=self.subnet if member is not None else None),
            # Nonces of routed messages sealed end to end: never twice, across restarts too.
            random_bytes=os.urandom,
            overlay_only=member is None,
        )
        self.node.core.overlay.set_local_endpoints(local[:4])
        self.node.core.overlay.set_remembered(remembered)
        for side in self.sides:
            side.identify(self.node, now=now)
        local_fd, local_side, local_name = await self._open_local()
        self.dataplane = DataPlane(
            self.node,
            self.udp,
            local_fd,
            # An overlay-only node accepts no address, so no IP packet passes its filter.
            subnet=self.subnet if member is not None else _NO_SUBNET,
            lookup_owner=self.lookup_owner,
            local_frame=self.local.feed if self.local is not None else self._local_frame,
            local_side=local_side,
            vnet_hdr=self.tap is not None and self.tap.vnet_hdr,
            offload=self.tap is not None and self.tap.offload,
            tag=self._served.tag if self._served is not None else b"",
        )
        if self.tap is not None:
            self.dataplane.set_link_layer(self.tap.mac, VIRTUAL_MAC)
        if self._services_factory is not None and self.local is None and member is not None:
            self.services = self._services_factory(self)
        if self.sides:
            # One UDP side for all: the first plane feeds every network's (ipop.vnet.networks).
            primary = self.dataplane
            planes = [await side.open(primary, self._services_factory) for side in self.sides]
            primary.join(planes)
        self.node.attach(self.udp, open_socket=self.nat.open_punch)
        self.node.core.stun.serve = s.stun_serve
        if s.stun_serve:
            self.nat.open_alternates(
                self.node,
                self.udp.port,
                local,
                alternate=s.stun_alternate,
                alt_port=s.stun_alt_port,
            )
        self.node.start()
        self.dataplane.start()
        for side in self.sides:
            assert side.dataplane is not None
            side.dataplane.start()
        self._watch_addresses(local)
        self._remembering = True
        self.tasks.spawn(self._remember_peers())
        self.no_links = NoLinkWatch(now=time.time())
        self.tasks.spawn(self._watch_links())
        self.tasks.spawn(self._log_journal())
        log.info(
            "event=started node=%s listen=%s:%d local=%s bootstrap=%d remembered=%d cpu_s=%.3f",
            identity.node_id.short(),
            s.listen.host,
            self.udp.port,
            local_name,
            len(bootstrap),
            len(remembered),
            time.process_time(),
        )

    async def _open_local(self) -> tuple[int | None, LocalSide | None, str]:
        """Open the local side: (fd to read frames from, its LocalSide or None, its name).

        A node's is its TAP (None: one fixed Ethernet header), else the plugged-in one; an
        overlay-only node has none (fd None).
        """
        if self.membership is None:
            return None, None, "none (overlay-only)"
        if self.local is not None:
            fd, side, name = await self.local.open()
            return fd, side, name
        s = self.settings
        self.tap = await open_tap(s.tap_name, s, self._open_tap)
        return self.tap.fd, None, self.tap.name

    def _watch_addresses(self, local: list[Endpoint]) -> None:
        """Notice our own address changes (roaming) and tell the node. Only when bound to the
        wildcard address: a socket bound to one address cannot follow it anyway."""
        if self.settings.listen.host not in ("0.0.0.0", "") or self.udp is None:
            return
        port = self.udp.port
        self.addrwatch = AddressWatcher(
            lambda: self._local_endpoints(port), self._local_endpoints_changed
        )
        self.addrwatch.start(local)

    def _local_endpoints_changed(self, local: list[Endpoint]) -> None:
        self._endpoints = local
        if self.node is not None:
            self.node.set_local_endpoints(local[:4])

    async def _local_endpoints(self, port: int) -> list[Endpoint]:
        eps: list[Endpoint] = []
        if self.settings.listen.host not in ("0.0.0.0", ""):
            return [Endpoint(self.settings.listen.host, port)]
        async with Rtnl() as nl:
            for a in await nl.ipv4_addresses():
                addr = a.address
                if addr and not addr.startswith("127.") and not self._in_subnet(addr):
                    eps.append(Endpoint(addr, port))
        return eps

    def _in_subnet(self, addr: str) -> bool:
        """Is ``addr`` one of the virtual network's (our TAP's address is no underlay one)?"""
        ip = IPv4Address(addr)
        served = self._served
        return (served is not None and ip in served.subnet) or any(
            ip in side.subnet for side in self.sides
        )

    def _task_failed(self, exc: BaseException) -> None:
        log.error("event=task_failed error=%r", exc)
        if self.failure is None and not self._stop.is_set():
            self.failure = exc
        self.stop()

    async def _claim(self, on_ready: Callable[[], Any] | None) -> None:
        node = self.node
        assert node is not None and node.dht is not None
        await node.dht_ready.wait()
        log.info(
            "event=dht_joined after_s=%.3f cpu_s=%.3f",
            time.time() - self.started_at,
            time.process_time(),
        )
        assert self.address is not None  # a member's (run() claims only for members)
        vip = await self.address.claim(node.dht, hostname=self.bundle.hostname)
        await take_address(vip, self._serving(), self)
        if self.sides:
            self.tasks.spawn(self._claim_sides(vip))
        # The certificate's hostname (DaemonSettings.from_config refuses a config that differs).
        self.names = await self.address.name(node.dht, vip, self.bundle.hostname)
        # A router may publish for its LAN hosts too: replicas grant it one more each.
        assert self.membership is not None
        quota = SERVICE_QUOTA + self.membership.node_cert.router_hosts
        self.publisher = ServicePublisher(
            node.dht, self.namespace, ttl=self.settings.lease_s, quota=quota
        )
        # Published last: a status showing the vIP means the node answers to all its names.
        self.vip = vip
        log.info(
            "event=ready vip=%s names=%s after_s=%.3f cpu_s=%.3f",
            vip,
            ",".join(self.names),
            time.time() - self.started_at,
            time.process_time(),
        )
        self.ready.set()
        self.tasks.spawn(self._learn_peer_vips())
        if self.configured.services:
            self.tasks.spawn(self.configured.run())
        if on_ready is not None:
            on_ready()
        # After ready: a resolver slow to answer (resolvectl waits up to 5 s a command) must
        # not hold up the address, the names or the services.
        await self._register_dns()

    async def _claim_sides(self, first: IPv4Address) -> None:
        """The other networks' claims, one after another, each avoiding the addresses the
        ones before got (ipop.aio.member.MemberSide.claim)."""
        taken = [first]
        for side in self.sides:
            await side.claim(avoid=taken)
            if side.vip is not None:
                taken.append(side.vip)

    async def _serve_overlay(self, on_ready: Callable[[], Any] | None) -> None:
        """An overlay-only node is ready once its DHT has joined: from then on it routes,
        relays and stores records for every network on the overlay, and claims nothing."""
        node = self.node
        assert node is not None
        await node.dht_ready.wait()
        log.info(
            "event=ready overlay_only=1 overlay=%s after_s=%.3f cpu_s=%.3f",
            self.bundle.overlay_name,
            time.time() - self.started_at,
            time.process_time(),
        )
        self.ready.set()
        if on_ready is not None:
            on_ready()

    async def _register_dns(self) -> None:
        """Route the suffix (and the subnet's reverse zones) from the host's resolver to our
        gateway; in several networks, the other networks' too: our gateway answers each (the
        composition root's services; a name's network is its suffix's). A failure leaves
        nothing registered and is logged: names still resolve by asking the gateway
        directly, so the node keeps running."""
        if self.system_dns is None or self.tap is None:
            return
        every = (routing_domains(s.suffix, s.subnet) for s in self.served_sides())
        domains = tuple(dict.fromkeys(d for some in every for d in some))
        try:
            await self.system_dns.register(self.tap.name, self.gateway, domains)
        except SystemDnsError as exc:
            self.stats["dns_system_failed"] += 1
            log.warning(
                "event=dns_register_failed error=%r fix=%r", str(exc), "see README#split-dns"
            )
        else:
            self.stats["dns_system_registered"] += 1

    async def _shutdown(self) -> None:
        if self.local is not None:
            await self.local.stop()
        if self.addrwatch is not None:
            await self.addrwatch.close()
        await self.tasks.close()
        if self.system_dns is not None:
            # Once no registration is in flight (it ran in _claim), before the TAP goes: the
            # host must stop sending queries to a gateway about to vanish.
            await self.system_dns.unregister()
        if self.publisher is not None:
            # Withdrawn now, not left to lapse: a stopped node's services must not be found.
            try:
                async with asyncio.timeout(timing.SERVICE_WITHDRAW_S):
                    await self.publisher.withdraw_all()
            except TimeoutError:
                log.warning("event=service_withdraw_timeout")
        if self.address is not None:
            await self.address.stop()
        for side in self.sides:
            await side.stop()
        if self.services is not None:
            await self.services.close()
        if self.dataplane is not None:
            self.dataplane.close()
        if self.node is not None:
            if self._remembering:
                self.remember_links(now=time.time(), final=True)
            await self.node.close()
        self.nat.close()
        if self.udp is not None:
            self.udp.close()
        if self.tap is not None:
            self.tap.close()
        for side in self.sides:
            side.close()
        if self.local is not None:
            self.local.close()
        log.info("event=stopped")

    # --- state ------------------------------------------------------------------------------

    def remember_links(self, *, now: float, final: bool = False) -> None:
        """Note the direct endpoints of our links; hand them to the overlay; write if due
        (``final``: at shutdown, if anything changed since the last write)."""
        node = self.node
        if node is None:
            return
        store = self.peer_store
        own = [*self._endpoints, *node.core.overlay.endpoints()]
        if store.note((info.path for info in node.core.link.peers()), own=own):
            node.core.overlay.set_remembered(store.endpoints)
        if store.save_due(now=now) or (final and store.dirty):
            try:
                store.save(now=now)
            except OSError as exc:
                log.warning("event=peers_not_saved file=%s error=%s", store.path, exc.strerror)
                self.stats["peers_not_saved"] += 1

    async def _remember_peers(self) -> None:
        # Right after the first links come up (they are the ones a restart most likely finds
        # again), then every REMEMBER_CHECK_S; the store itself writes at most once a minute.
        while True:
            written = self.peer_store.written
            await asyncio.sleep(REMEMBER_CHECK_S if written else REMEMBER_FIRST_S)
            self.remember_links(now=time.time())

    def check_links(self, *, now: float) -> str | None:
        """Log, once per stretch without links, why there are none (ipop.nolinks)."""
        node = self.node
        if node is None:
            return None
        link = node.core.link
        words = self.no_links.check(
            now=now,
            links=len(link.peers()),
            drops=link.drops,
            handshake_failed=link.stats["handshake_failed"],
            tried=len({*self.bundle.bootstrap, *self.peer_store.endpoints} - set(self._endpoints)),
        )
        if words is not None:
            log.warning("event=no_links why=%r", words)
        return words

    def log_journal(self) -> int:
        """Log the link notes the core kept (ipop.journal): info if rare, else debug."""
        node = self.node
        if node is None:
            return 0
        notes = node.core.journal.drain()
        for note in notes:
            log.log(logging.INFO if note.rare else logging.DEBUG, note.line())
        return len(notes)

    async def _log_journal(self) -> None:
        while True:
            await asyncio.sleep(JOURNAL_DRAIN_S)
            self.log_journal()

    async def _watch_links(self) -> None:
        while True:
            await asyncio.sleep(LINK_WATCH_S)
            self.check_links(now=time.time())

    # --- lookups ----------------------------------------------------------------------------

    async def lookup_owner(self, vip: IPv4Address) -> NodeId | None:
        """The holder of ``vip`` in our (first) network (:func:`ipop.aio.member.owner_of`)."""
        return await owner_of(self.node, self.namespace, vip)

    async def resolve(self, name: str) -> IPv4Address | None:
        """A name (with or without the DNS suffix) or a dotted address → vIP."""
        return await resolve_in(self, name)

    def served_sides(self) -> list[ServedSide]:
        """The networks this daemon serves a local side for, its first network first (none
        for an overlay-only node's first bundle)."""
        first: list[ServedSide] = [self] if self._served is not None else []
        return [*first, *self.sides]

    async def dns_lookup(self, name: str) -> IPv4Address | tuple[ServiceValue, ...] | None:
        """What DNS asks the DHT: a service ``_<name>._<proto>`` (its verified instances) or
        a hostname (its vIP)."""
        return await dns_answer(self, name)

    # --- the TAP's local traffic ------------------------------------------------------------

    def _local_frame(self, frame: bytes) -> bool:
        """A frame from the TAP that is not for the overlay: ARP is ours to answer (every ARP
        frame is consumed), DHCP and DNS the services'."""
        return local_frame(frame, self.arp, self.services, self.write_frame)

    def write_frame(self, frame: bytes) -> None:
        if self.dataplane is not None:
            self.dataplane.write_frame(frame)

    # --- status (assembled by ipop.report) ----------------------------------------------------

    def status(self) -> Status:
        """``ipop status``: the core's snapshot and this daemon's view, put together."""
        node = self.node
        now = time.time()
        core = node.core.snapshot() if node is not None else None
        return build_status(core, self.local_view(now=now), now=now)

    def local_view(self, *, now: float) -> LocalView:
        """What status needs from this daemon besides the core (see ipop.report.LocalView)."""
        node, plane = self.node, self.dataplane
        drops: list[dict[str, int]] = []
        if node is not None and node.dht is not None:
            drops.append(prefixed("dht", node.dht.drops))
        if plane is not None:
            drops.append(prefixed("vnet", plane.drops))
        if self.local is not None:
            drops.append(self.local.drops())
        elif self.arp is not None:
            drops.append(prefixed("arp", self.arp.drops))
        if self.services is not None:
            drops.append(self.services.drops())
        dns = self.dns_status()
        if dns is not None:  # also in status["dns"]; here so every drop is in one map
            drops.append({f"dns.{k}": v for k, v in dns.drops.items() if v})
        if self.udp is not None:
            drops.append(prefixed("udp", self.udp.errors))
        counters = [prefixed("vnet", plane.counters)] if plane is not None else []
        lane = plane.lane_stats() if plane is not None else None
        if lane is not None:  # the native lane's (ipop.link.lane), when it runs
            counters.append(prefixed("lane", lane))
        if self.local is not None:
            counters.append(self.local.counters())
        # Split DNS with the host's resolver (ipop.aio.sysdns): registered, or why not.
        sysdns = {f"dns.{k[4:]}": v for k, v in self.stats.items() if k.startswith("dns_system_")}
        if sysdns:
            counters.append(sysdns)
        if node is not None and node.dht is not None:
            counters.append(prefixed("dht", node.dht.counters()))
        measured = self.netcheck_result.nat if self.netcheck_result is not None else None
        return LocalView(
            node_id=self.bundle.node_id.hex(),
            node_name=self.bundle.node_name,
            uptime_s=now - self.started_at,
            vip=self.vip,
            names=tuple(self.names),
            owners=plane.known_owners() if plane is not None else None,
            peer_vips=dict(self.peer_vips),
            rtts=dict(self.rtts),
            measured_nat=measured,
            drops=tuple(drops),
            counters=tuple(counters),
            lan_hosts=tuple(self.local.lan_hosts()) if self.local is not None else (),
            dns=dns,
            overlay_only=self.membership is None,
            networks=self.networks_status(),
        )

    def networks_status(self) -> tuple[NetworkStatus, ...]:
        """Each network of a daemon in several, the first (``self``'s) first; () for one."""
        if not self.sides or self._served is None:
            return ()
        tap = self.tap.name if self.tap is not None else self.settings.tap_name
        first = network_row(self._served, self.vip, self.names, tap)
        return (first, *(side.status() for side in self.sides))

    def metrics_text(self, *, max_peers: int, drops: Mapping[str, int] | None = None) -> str:
        """The Prometheus page (ipop.metrics) of this node's status; ``drops``: the metrics
        server's own, "metrics.<reason>"."""
        dht = self.node.dht if self.node is not None else None
        return render_metrics(
            MetricsInput(
                status=self.status(),
                started_at=self.started_at,
                backend=fastpath.BACKEND,
                max_peers=max_peers,
                dht_ops=dict(dht.ops.counts) if dht is not None else {},
                dht_durations=dht.ops.durations() if dht is not None else {},
                drops=drops or {},
            )
        )

    async def learn_peer_vips(self, *, now: float) -> int:
        """Learn linked peers' vIPs from their hostnames' records (on a shared overlay, their
        node names'); how many were learned.

        The data plane knows the vIPs of peers we exchanged traffic with; a ring neighbour we
        never talked to would show no VIP in ``ipop status``. A hostname names the vIP, and
        the address record's owner must be that very peer.
        """
        node = self.node
        if node is None or node.dht is None or self.dataplane is None:
            return 0
        infos = node.core.link.peers()
        linked = {info.peer for info in infos}
        for peer in [p for p in self.peer_vips if p not in linked]:
            del self.peer_vips[peer]
        for peer in [
            p for p, (_, at) in self.peer_vips.items() if now - at >= timing.PEER_VIP_TTL_S
        ]:
            del self.peer_vips[peer]
        known = self.dataplane.known_owners()
        # On a shared overlay, links present overlay certificates, which name no hostname:
        # the node name stands in (ipop-config names a member alike in both certificates), and
        # the owner check below decides as for a hostname. A peer of another network, or an
        # overlay-only one, resolves to nothing (a lookup a sweep, MAX_PEER_VIP_LOOKUPS bound).
        shared = self.bundle.overlay is not None
        todo = [
            (info, name)
            for info in infos
            if (name := info.hostname or (info.name if shared else None))
            and info.peer not in known
            and info.peer not in self.peer_vips
        ][:MAX_PEER_VIP_LOOKUPS]
        learned = 0
        plane = self.dataplane
        for info, name in todo:
            try:
                vip = await resolve_in(self, name)
                if vip is None:
                    continue
                # The name's lookup read the address's holder and handed it to the data
                # plane: asking the DHT again cost a third read a peer (issue 14's cold start).
                owner = plane.live_owner(vip.packed)
                if owner is None:
                    owner = await self.lookup_owner(vip)
            except NoQuorum:
                continue  # the next sweep asks again
            if owner == info.peer:
                self.peer_vips[info.peer] = (vip, now)
                learned += 1
        return learned

    async def _learn_peer_vips(self) -> None:
        await asyncio.sleep(timing.PEER_VIP_FIRST_S)
        while True:
            await self.learn_peer_vips(now=time.time())
            await asyncio.sleep(timing.PEER_VIP_SWEEP_S)

    def dns_status(self) -> DnsStatus | None:
        """The gateway resolver's counters for ``ipop status`` (None: no DNS here)."""
        if self.local is not None:
            return self.local.dns_status()
        return self.services.dns_status() if self.services is not None else None

    def path_to(self, peer: NodeId) -> PathKind:
        node = self.node
        if node is None:
            return "overlay"
        for info in node.core.link.peers():
            if info.peer == peer:
                return "relayed" if isinstance(info.path, RelayPath) else "direct"
        return "overlay"

    # --- NAT discovery (ipop.aio.natio) --------------------------------------------------------

    async def netcheck(self, servers: list[Endpoint], *, second_opinion: bool) -> NetcheckResult:
        """Run :func:`ipop.aio.natio.netcheck` on our socket, with the configured servers."""
        node = self.node
        if node is None:
            raise CommandFailed("the node has not started")
        result = await natio.netcheck(
            node,
            local=self._endpoints,
            bootstrap=self.bundle.bootstrap,
            servers=[*self.settings.stun_servers, *servers],
            second_opinion=second_opinion,
        )
        self.netcheck_result = result
        log.info("event=netcheck nat=%s mapping=%s", result.nat, result.mapping)
        return result
