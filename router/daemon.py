"""Router mode: one overlay node whose local side is a LAN of plain hosts instead of a TAP.

:func:`router_daemon` composes an :class:`ipop.aio.daemon.Daemon` with :class:`RouterLan` as
its local side (:class:`ipop.aio.local.LocalNetwork`; the packet path is the same
:class:`ipop.aio.dataplane.DataPlane`): an AF_PACKET socket on the LAN interface, with one
Ethernet header per host (:class:`ipop.router.hosts.LanHosts`). The daemon keeps the node, its own
vIP and the lifecycle; on the LAN, :class:`RouterLan`:

* serves DHCP (``ipop.dhcp_dns.DhcpServer``): a host's first DISCOVER makes the router claim an
  address in the DHT, held by the router's node identity (so peers' anti-spoofing check, "the
  inner source is held by the sending node", holds), the same address for the same MAC again
  (``lan_hosts.json`` in the state directory, also across router restarts); the DISCOVER or
  REQUEST is then answered at once (not on the client's retransmission); the hostname of
  option 12 is registered as ``<host>.<router hostname>`` (``printer.lab.<suffix>``: names
  under the router's certified hostname are the only ones replicas let a router hold for its
  hosts, so no LAN host can take a member's name, ``ipop.dht.policy``); the DHT records are
  renewed while the DHCP lease is live; an address offered to a MAC that never REQUESTs it is
  given back after :data:`ipop.router.claims.OFFER_HOLD_S`;
* answers ARP for the gateway and for remote virtual IPs that are live in the DHT, only those
  (never for a LAN host: it answers itself, and LAN-to-LAN traffic stays on the LAN); an
  address the data plane holds a fresh DHT answer for is answered without another lookup;
* serves DNS for ``*.<suffix>`` on the gateway address;
* publishes the services of its config's ``[[service]]`` tables at their LAN hosts'
  addresses (:class:`ipop.router.lanservices.LanServices`);
* registers hosts that configured a free virtual IP themselves (seen in ARP or IP traffic);
  a host claiming an address held elsewhere is refused (its traffic is dropped and counted).

LAN hosts are untrusted (issue 13's "LAN host" attacker). What one of them can make us do:

* **Take an address**: never one the router holds for itself or for another LAN host, claims
  for one right now, or keeps for a saved host not yet restored (``HostClaims._free_here``;
  the DHT cannot tell those apart, every such record being the router's own). Frames enter
  the overlay only with the source vIP bound to the sending MAC (``LanHosts.admit``).
* **Make work**: control frames (ARP, DHCP) are rate-limited per source MAC; address claims
  (DHCP and static) run at most :data:`ipop.router.claims.MAX_CLAIMS` at once, within
  ``max_hosts`` (a full table refuses and counts, after taking back the oldest unrequested
  offer); proxy ARP's DHT lookups go through :class:`ipop.router.limits.OwnerLookups` (cached
  answers, one lookup per address, a cap in flight) behind per-MAC and global rate limits.
* **Break its own handling**: any error in one host's handling (:meth:`host_failed`) is
  counted by stage, logged once per MAC, and that host's state is forgotten; the router and
  its other hosts carry on. An error anywhere else is fatal: the process exits non-zero
  (``Daemon.failure``) and the service manager restarts it.

The address claims (DHCP allocations, static hosts, leases, names, ``lan_hosts.json``) are
:class:`ipop.router.claims.HostClaims` (``RouterLan.claims``); frames, ARP, the failure policy and
status are here. Drops are counted under the names in :data:`DROP_REASONS` (``ipop.router.*`` in
``ipop status``), claims' included.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from ipaddress import IPv4Address
from typing import Any

from ipop.aio.daemon import DEFAULT_TAP_MTU, Daemon, DaemonSettings
from ipop.aio.dataplane import DataPlane, LocalSide
from ipop.aio.stack import Node
from ipop.bundle import Bundle
from ipop.dhcp_dns.dhcp import (
    SERVER_PORT,
    DhcpServer,
)
from ipop.dhcp_dns.dns import DnsResolver
from ipop.dhcp_dns.services import TapServices, TapServicesRunner
from ipop.errors import ConfigError, LocalProtocolError
from ipop.ratelimit import KeyedBuckets, TokenBucket
from ipop.router.claims import MAX_REMEMBERED, STAGES, HostClaims, HostTask, Stage
from ipop.router.config import RouterSection
from ipop.router.hosts import LanHosts, mac_str
from ipop.router.lan import LanSocket
from ipop.router.lanservices import LanServices
from ipop.router.limits import OwnerLookups, lru_put
from ipop.status import DnsStatus, LanHostStatus
from ipop.types import Endpoint
from ipop.vnet.arp import ArpResponder

__all__ = ["DROP_REASONS", "RouterLan", "router_daemon"]

log = logging.getLogger("ipop-router")

# ARP and DHCP frames one source MAC may send: a burst (a host starting up), then a rate.
FRAME_BURST, FRAME_RATE = 64.0, 20.0
# Proxy ARP's owner lookups (one DHT get each): per source MAC, and for the whole LAN.
LOOKUP_BURST_PER_MAC, LOOKUP_RATE_PER_MAC = 16.0, 4.0
LOOKUP_BURST, LOOKUP_RATE = 64.0, 32.0
ARP_LOOKUP_TIMEOUT_S = 3.0
_ETH_ARP = b"\x08\x06"
_ETH_IP = b"\x08\x00"
_ARP_REQUEST = b"\x00\x01\x08\x00\x06\x04\x00\x01"


DROP_REASONS = frozenset(
    {
        "arp_not_live",  # proxy ARP for an address no node holds (or a LAN host's)
        "arp_lookup_failed",  # proxy ARP's DHT lookup failed or timed out (its ARPs unanswered)
        "arp_rate_limited",  # a lookup refused by the per-MAC or the LAN-wide rate
        "arp_lookups_busy",  # a lookup refused: too many in flight
        "arp_waiters_full",  # an ARP for an address whose lookup has enough waiters
        "lan_rate_limited",  # an ARP or DHCP frame over its source MAC's rate
        "lan_wrong_src",  # a known host sending from another address than its own
        "lan_addr_taken",  # a claim of an address the router holds or keeps for another
        "static_refused",  # a static claim the DHT refused (or refused recently)
        "static_rate_limited",  # a MAC starting static claims too often
        "host_table_full",  # max_hosts hosts are served: a new one is refused
        "offer_evicted",  # an unrequested offer taken back to make room
        "claims_busy",  # MAX_CLAIMS claims in flight: a new one is refused
        "host_alloc_failed",  # no address could be allocated in the DHT
        "bad_hostname",
        "hostname_taken",
        "no_name_authority",  # a LAN host's name, and our certificate names no router domain
        "restore_lost",  # a saved host's address was taken while we were down
        "host_lease_lost",  # a host's address was taken by another node: host forgotten
        *(f"host_failed_{stage}" for stage in STAGES),
    }
)


class _LanSide:
    """:class:`LocalSide` for the data plane: the host table plus static-host detection."""

    def __init__(self, router: RouterLan) -> None:
        self.r = router

    def header_for(self, packet: bytes) -> bytes | None:
        return self.r.hosts.header_for(packet)

    def read_into(self, buf: bytearray) -> int:
        assert self.r.lan is not None  # opened before this side exists (open)
        return self.r.lan.read_into(buf)

    def pending(self) -> bool:
        return self.r.lan is not None and self.r.lan.pending()

    @property
    def out_fd(self) -> int:
        assert self.r.lan is not None  # opened before this side exists (open)
        return self.r.lan.out_fd

    def admit(self, frame: memoryview) -> bool:
        r = self.r
        if r.hosts.admit(frame, now=r.clock()):
            return True
        mac = bytes(frame[6:12])
        try:
            r.claims.saw_source(mac, IPv4Address(bytes(frame[26:30])))
        except Exception as exc:  # one host's frame must not end the data plane's batch
            r.host_failed(mac, "frame", exc)
        return False


def router_daemon(
    bundle: Bundle,
    settings: DaemonSettings,
    router: RouterSection,
    *,
    dns_enabled: bool = True,
    upstream: Endpoint | None = None,
) -> Daemon:
    """A daemon whose local side is the LAN of ``router`` (its :class:`RouterLan` is
    ``daemon.local``). ConfigError for an overlay-only bundle: a router serves a network."""
    if not bundle.is_member:
        raise ConfigError(
            "bundle",
            "is an overlay-only node's: a router gives its LAN addresses of a network",
            "make the router's bundle with 'ipop-config node NETWORK NAME --router'",
        )

    def lan(daemon: Daemon) -> RouterLan:
        return RouterLan(daemon, router, dns_enabled=dns_enabled, upstream=upstream)

    return Daemon(bundle, settings, local=lan)


class RouterLan:
    """Router mode's local side (:class:`ipop.aio.local.LocalNetwork`) for ``daemon``: the
    LAN's hosts, their addresses and names, and its ARP, DHCP and DNS.

    It answers ARP for the router's own vIP too: no stack holds that address on the LAN
    (:mod:`ipop.vnet.echo`).
    """

    def __init__(
        self,
        daemon: Daemon,
        router: RouterSection,
        *,
        dns_enabled: bool = True,
        upstream: Endpoint | None = None,
    ) -> None:
        self.daemon = daemon
        # What does not change for the daemon's life, named here as the code below uses it.
        self.settings, self.network, self.rng = daemon.settings, daemon.network, daemon.rng
        self.namespace = daemon.namespace  # of the DHT keys it claims (ipop.dht.record)
        self.subnet, self.gateway, self.suffix = daemon.subnet, daemon.gateway, daemon.suffix
        # A member's, as router_daemon checked: the LAN's addresses are the network's.
        assert daemon.address is not None and daemon.membership is not None
        self.tasks, self.address = daemon.tasks, daemon.address
        self.membership = daemon.membership
        self.arp = ArpResponder(None, self.subnet)
        self.rcfg = router
        self.dns_enabled = dns_enabled
        self.upstream = upstream
        self.clock: Callable[[], float] = time.time
        self.hosts = LanHosts(max_hosts=router.max_hosts)
        self.rdrops: Counter[str] = Counter()
        self.lan: LanSocket | None = None
        self.dhcp: DhcpServer | None = None
        self.lan_services: TapServices | None = None
        self.runner: TapServicesRunner | None = None
        self._logged: dict[bytes, None] = {}
        # Per source MAC (ipop.ratelimit), and one LAN-wide bucket behind the lookups'.
        self._frames: KeyedBuckets[bytes] = KeyedBuckets(FRAME_RATE, FRAME_BURST)
        self._lookup_rate: KeyedBuckets[bytes] = KeyedBuckets(
            LOOKUP_RATE_PER_MAC, LOOKUP_BURST_PER_MAC
        )
        self._lookup_all = TokenBucket(LOOKUP_RATE, LOOKUP_BURST, 0.0)
        self.owners: OwnerLookups[bytes] = OwnerLookups()
        self.claims = HostClaims(self)
        # [[service]] tables: published at their LAN hosts' addresses while those hold one.
        self.published = LanServices(
            router.services,
            hosts=self.hosts.hosts,
            publisher=lambda: daemon.publisher,
            under=f"{daemon.bundle.hostname}.{daemon.suffix}",
        )

    # What the daemon's node, data plane and own address are now (None until they exist).

    @property
    def node(self) -> Node | None:
        return self.daemon.node

    @property
    def dataplane(self) -> DataPlane | None:
        return self.daemon.dataplane

    @property
    def vip(self) -> IPv4Address | None:
        return self.daemon.vip

    def write_frame(self, frame: bytes) -> None:
        self.daemon.write_frame(frame)

    def count_drop(self, reason: str) -> None:
        if reason not in DROP_REASONS:
            raise LocalProtocolError(f"router drop reason {reason!r} is not in DROP_REASONS")
        self.rdrops[reason] += 1

    # --- the local side -----------------------------------------------------------------------

    async def open(self) -> tuple[int, LocalSide, str]:
        self.lan = LanSocket(self.rcfg.interface, mtu=self.settings.tap_mtu or DEFAULT_TAP_MTU)
        self._setup_lan(self.lan.mac)
        return self.lan.fd, _LanSide(self), self.lan.name

    def _setup_lan(self, mac: bytes) -> None:
        """The LAN's services answering from ``mac``, and the tasks that keep its hosts."""
        self.hosts.own_mac = mac
        self.arp = ArpResponder(None, self.subnet, mac)
        self.dhcp = DhcpServer(
            self.gateway,
            self.subnet,
            dns_ip=self.gateway if self.dns_enabled else None,
            domain=self.suffix,
            mtu=self.settings.tap_mtu or DEFAULT_TAP_MTU,
            lease_s=self.rcfg.dhcp_lease_s,
            server_mac=mac,
        )
        self.lan_services = TapServices(
            gateway_ip=self.gateway,
            subnet=self.subnet,
            dhcp=self.dhcp,
            dns=DnsResolver(self.subnet, suffix=self.suffix, upstream=self.upstream is not None)
            if self.dns_enabled
            else None,
            mac=mac,
        )
        up = self.upstream
        self.runner = TapServicesRunner(
            self.lan_services,
            self.write_frame,
            self.daemon.dns_lookup,
            (up.host, up.port) if up is not None else None,
            on_event=self.claims.dhcp_event,
        )
        self.claims.start()
        if self.published.services:
            self.tasks.spawn(self.published.run())

    def feed(self, frame: bytes) -> bool:
        try:
            return self._lan_frame(frame, self.clock())
        except Exception as exc:  # one host's frame must not reach the event loop
            self.host_failed(frame[6:12], "frame", exc)
            return True

    def _lan_frame(self, frame: bytes, now: float) -> bool:
        mac = frame[6:12]
        if frame[12:14] == _ETH_ARP:
            if self._frames.take(mac, now):
                self._arp(frame, now)
            else:
                self.count_drop("lan_rate_limited")
            return True
        if (
            frame[12:14] == _ETH_IP
            and len(frame) >= 42
            and frame[23] == 17
            and int.from_bytes(frame[36:38], "big") == SERVER_PORT
        ):
            if not self._frames.take(mac, now):
                self.count_drop("lan_rate_limited")
                return True
            lru_put(self.claims.last_dhcp, mac, frame, MAX_REMEMBERED)
        if self.runner is None:
            return False
        return self.runner.feed(frame, now=now)

    # --- one host's failure -------------------------------------------------------------------

    def spawn_host(self, mac: bytes, stage: Stage, fn: HostTask, *args: Any) -> None:
        """Run ``fn(*args)``, one host's task: its failure is that host's
        (:meth:`host_failed`), not the router's. The coroutine is made inside the guard, so
        a task cancelled before it starts leaves none behind unawaited."""
        self.tasks.spawn(self._guarded(mac, stage, fn, *args))

    async def _guarded(self, mac: bytes, stage: Stage, fn: HostTask, *args: Any) -> None:
        try:
            await fn(*args)
        except Exception as exc:  # CancelledError is not an Exception: shutdown passes
            self.host_failed(mac, stage, exc)

    def host_failed(self, mac: bytes, stage: Stage, exc: BaseException) -> None:
        """One LAN host's handling failed: count it, log it (once per MAC) and forget the
        host, so that its next DISCOVER or frame starts afresh; everything else carries on."""
        self.count_drop(f"host_failed_{stage}")
        if mac not in self._logged:
            lru_put(self._logged, mac, None, MAX_REMEMBERED)
            log.error(
                "event=host_failed mac=%s stage=%s error=%r", mac_str(mac), stage, exc, exc_info=exc
            )
        if stage == "arp":  # a failed lookup is the asker's ARP miss: nothing of it to forget
            return
        try:
            self.claims.forget(mac)
        except Exception:
            log.exception("event=host_cleanup_failed mac=%s", mac_str(mac))

    # --- ARP ----------------------------------------------------------------------------------

    def _arp(self, frame: bytes, now: float) -> None:
        # A sender that names another MAC than its frame's registers nothing: it would bind
        # an address to a MAC that never asked for it.
        if len(frame) >= 42 and frame[14:22] == _ARP_REQUEST and frame[22:28] == frame[6:12]:
            spa = IPv4Address(frame[28:32])
            if int(spa) != 0:
                self.claims.saw_source(frame[22:28], spa)
        reply = self.arp.reply(frame)
        if reply is None:
            return
        tpa = IPv4Address(frame[38:42])
        if tpa == self.gateway or tpa == self.vip:
            self.write_frame(reply)
            return
        key = tpa.packed
        live = self.owners.answer(key, now)
        if live is None and (dp := self.dataplane) is not None and dp.live_owner(key) is not None:
            # The data plane holds a fresh DHT answer for it: a host's ARP for the sender of
            # a packet we just delivered (its reply's next hop), answered without asking the
            # DHT again. Under load that get took seconds, and the first replies were lost.
            live = True
        if live is not None:
            self._arp_answer(tpa, reply, live)
            return
        joined = self.owners.wait(key, reply)
        if joined is not None:
            if not joined:
                self.count_drop("arp_waiters_full")
            return
        mac = frame[6:12]
        if not self._lookup_rate.take(mac, now) or not self._lookup_all.take(now):
            self.count_drop("arp_rate_limited")
            return
        if not self.owners.start(key, reply):
            self.count_drop("arp_lookups_busy")
            return
        self.spawn_host(mac, "arp", self._arp_lookup, tpa)

    async def _arp_lookup(self, tpa: IPv4Address) -> None:
        """Answer the ARPs waiting on ``tpa`` only if some node holds it in the DHT now."""
        try:
            owner = await asyncio.wait_for(self.daemon.lookup_owner(tpa), ARP_LOOKUP_TIMEOUT_S)
        except asyncio.CancelledError:
            self.owners.finish(tpa.packed, None, self.clock())
            raise
        except Exception:
            # A DHT failure or timeout is a miss, not an answer: the host's next ARP (a
            # second later) starts a new lookup instead of meeting a cached "absent".
            self.count_drop("arp_lookup_failed")
            self.owners.finish(tpa.packed, None, self.clock())
            return
        for reply in self.owners.finish(tpa.packed, owner is not None, self.clock()):
            self._arp_answer(tpa, reply, owner is not None)

    def _arp_answer(self, tpa: IPv4Address, reply: bytes, live: bool) -> None:
        if not live or self.hosts.by_ip(tpa) is not None:
            self.count_drop("arp_not_live")
            return
        self.write_frame(reply)

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.close()
        await self.claims.stop()

    def close(self) -> None:
        if self.lan is not None:
            self.lan.close()

    # --- status -------------------------------------------------------------------------------

    def drops(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        total.update({f"arp.{k}": v for k, v in self.arp.drops.items()})
        total.update({f"router.{k}": v for k, v in self.rdrops.items()})
        total.update({f"lan.{k}": v for k, v in self.hosts.drops.items()})
        if self.lan is not None:
            total.update({f"lan.{k}": v for k, v in self.lan.drops.items()})
        if self.dhcp is not None:
            total.update({f"dhcp.{k}": v for k, v in self.dhcp.drops.items()})
        if self.lan_services is not None:
            total.update({f"lanservices.{k}": v for k, v in self.lan_services.drops.items()})
        return dict(total)

    def counters(self) -> dict[str, int]:
        if self.lan is None:
            return {}
        # Checksums completed for offloading hosts, or verified.
        return {f"lan.{k}": v for k, v in self.lan.counters.items()}

    def dns_status(self) -> DnsStatus | None:
        return self.lan_services.dns_status() if self.lan_services is not None else None

    def lan_hosts(self) -> list[LanHostStatus]:
        now = self.clock()
        return [
            LanHostStatus(
                mac=mac_str(h.mac),
                vip=str(h.vip),
                names=list(h.names),
                kind=h.kind,
                lease_s=round(max(h.expires - now, 0.0), 3) if h.expires is not None else None,
            )
            for h in sorted(self.hosts.hosts(), key=lambda h: int(h.vip))
        ]
