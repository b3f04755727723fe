"""Router mode: one overlay node whose local side is a LAN of plain hosts instead of a TAP.

:class:`RouterDaemon` is :class:`ipop.aio.daemon.Daemon` with another local side (the packet
path is the same :class:`ipop.aio.dataplane.DataPlane`): an AF_PACKET socket on the LAN
interface, with one Ethernet header per host (:class:`ipop.router.hosts.LanHosts`). On the LAN it:

* serves DHCP (``dhcp_dns.DhcpServer``): a host's first DISCOVER makes the router claim an
  address in the DHT, held by the router's node identity (so peers' anti-spoofing check, "the
  inner source is held by the sending node", holds), the same address for the same MAC again
  (``lan_hosts.json`` in the state directory, also across router restarts); the DISCOVER or
  REQUEST is then answered at once (not on the client's retransmission); the hostname of
  option 12 is registered as ``<host>.<router hostname>`` (``printer.lab.<suffix>``: names
  under the router's certified hostname are the only ones replicas let a router hold for its
  hosts, so no LAN host can take a member's name, ``ipop.dht.policy``); the DHT records are
  renewed while the DHCP lease is live; an address offered to a MAC that never REQUESTs it is
  given back after :data:`OFFER_HOLD_S`;
* answers ARP for the gateway and for remote virtual IPs that are live in the DHT, only those
  (never for a LAN host: it answers itself, and LAN-to-LAN traffic stays on the LAN);
* serves DNS for ``*.<suffix>`` on the gateway address;
* registers hosts that configured a free virtual IP themselves (seen in ARP or IP traffic);
  a host claiming an address held elsewhere is refused (its traffic is dropped and counted).

LAN hosts are untrusted (issue 13's "LAN host" attacker). What one of them can make us do:

* **Take an address**: never one the router holds for itself or for another LAN host, claims
  for one right now, or keeps for a saved host not yet restored (:meth:`_free_here`; the DHT
  cannot tell those apart, every such record being the router's own). Frames enter the
  overlay only with the source vIP bound to the sending MAC (``LanHosts.admit``).
* **Make work**: control frames (ARP, DHCP) are rate-limited per source MAC; address claims
  (DHCP and static) run at most :data:`MAX_CLAIMS` at once, within ``max_hosts`` (a full
  table refuses and counts, after taking back the oldest unrequested offer); proxy ARP's DHT
  lookups go through :class:`ipop.router.limits.OwnerLookups` (cached answers, one lookup per
  address, a cap in flight) behind per-MAC and global rate limits.
* **Break its own handling**: any error in one host's handling (:meth:`_host_failed`) is
  counted by stage, logged once per MAC, and that host's state is forgotten; the router and
  its other hosts carry on. An error anywhere else is fatal: the process exits non-zero
  (``Daemon.failure``) and the service manager restarts it.

Drops are counted under the names in :data:`DROP_REASONS` (``router.*`` in ``ipop status``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from ipaddress import IPv4Address
from typing import Any, Literal

from ipop.aio.daemon import DEFAULT_TAP_MTU, Daemon, DaemonSettings
from ipop.aio.dataplane import LocalSide
from ipop.bundle import Bundle
from ipop.dhcp_dns.dhcp import (
    SERVER_PORT,
    AddressDeclined,
    AddressReleased,
    AddressWanted,
    DhcpEvent,
    DhcpServer,
    LeaseGranted,
    parse_dhcp,
)
from ipop.dhcp_dns.dns import DnsResolver
from ipop.dhcp_dns.services import TapServices, TapServicesRunner
from ipop.dht.alloc import AllocationFailed, DhtLease, IpLease, allocate_ip, is_usable
from ipop.dht.names import c_name, lan_host_name, register_name
from ipop.dht.record import ip_key, name_key
from ipop.errors import ConfigError, LocalProtocolError
from ipop.ratelimit import KeyedBuckets, TokenBucket
from ipop.router.config import RouterSection
from ipop.router.hosts import LanHost, LanHosts, mac_str
from ipop.router.lan import LanSocket
from ipop.router.limits import OwnerLookups, lru_put
from ipop.status import DnsStatus, LanHostStatus
from ipop.types import Endpoint
from ipop.vnet.arp import ArpResponder
from ipop.vnet.packet import PacketError, parse_udp_frame

__all__ = ["DROP_REASONS", "RouterDaemon"]

log = logging.getLogger("ipop-router")

EXPIRY_CHECK_S = 1.0
# A DHCP host keeps its records this long past its lease end (a late renewal is no loss).
EXPIRY_GRACE_S = 10.0
# A refused static claim is not retried for this long.
STATIC_RETRY_S = 10.0
# An address offered to a MAC that does not REQUEST it is held this long (a real client
# REQUESTs within a second of the OFFER; a DISCOVER flood's random MACs never do).
OFFER_HOLD_S = 20.0
# Address claims (DHCP allocations and static registrations: DHT work) in flight at once.
MAX_CLAIMS = 16
# ARP and DHCP frames one source MAC may send: a burst (a host starting up), then a rate.
FRAME_BURST, FRAME_RATE = 64.0, 20.0
# Proxy ARP's owner lookups (one DHT get each): per source MAC, and for the whole LAN.
LOOKUP_BURST_PER_MAC, LOOKUP_RATE_PER_MAC = 16.0, 4.0
LOOKUP_BURST, LOOKUP_RATE = 64.0, 32.0
ARP_LOOKUP_TIMEOUT_S = 3.0
# Bound of the tables keyed by MAC that have no other bound (refused claims, the last DHCP
# frame per MAC, MACs whose failure was logged).
MAX_REMEMBERED = 4096
_ETH_ARP = b"\x08\x06"
_ETH_IP = b"\x08\x00"
_ARP_REQUEST = b"\x00\x01\x08\x00\x06\x04\x00\x01"

# Where one host's handling failed (counted as host_failed_<stage>).
Stage = Literal["alloc", "static", "name", "restore", "expire", "frame", "arp"]
_STAGES: tuple[Stage, ...] = ("alloc", "static", "name", "restore", "expire", "frame", "arp")
_HostTask = Callable[..., Coroutine[Any, Any, None]]

DROP_REASONS = frozenset(
    {
        "arp_not_live",  # proxy ARP for an address no node holds (or a LAN host's)
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
        "restore_lost",  # a saved host's address was taken while we were down
        "host_lease_lost",  # a host's address was taken by another node: host forgotten
        *(f"host_failed_{stage}" for stage in _STAGES),
    }
)


class _LanSide:
    """:class:`LocalSide` for the data plane: the host table plus static-host detection."""

    def __init__(self, router: RouterDaemon) -> None:
        self.r = router

    def header_for(self, packet: bytes) -> bytes | None:
        return self.r.hosts.header_for(packet)

    def read_into(self, buf: bytearray) -> int:
        assert self.r.lan is not None  # opened before this side exists (_open_local)
        return self.r.lan.read_into(buf)

    def pending(self) -> bool:
        return self.r.lan is not None and self.r.lan.pending()

    @property
    def out_fd(self) -> int:
        assert self.r.lan is not None  # opened before this side exists (_open_local)
        return self.r.lan.out_fd

    def admit(self, frame: memoryview) -> bool:
        r = self.r
        if r.hosts.admit(frame, now=r.clock()):
            return True
        mac = bytes(frame[6:12])
        try:
            r.saw_source(mac, IPv4Address(bytes(frame[26:30])))
        except Exception as exc:  # one host's frame must not end the data plane's batch
            r._host_failed(mac, "frame", exc)
        return False


class RouterDaemon(Daemon):
    ANSWERS_OWN_ARP = True

    def __init__(
        self,
        bundle: Bundle,
        settings: DaemonSettings,
        router: RouterSection,
        *,
        dns_enabled: bool = True,
        upstream: Endpoint | None = None,
    ) -> None:
        super().__init__(bundle, settings)
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
        self._leases: dict[bytes, list[DhtLease]] = {}
        # MACs with a claim (DHCP allocation or static registration) in flight.
        self._busy: set[bytes] = set()
        # vIP -> MAC it is kept for: static claims in flight, saved hosts not yet restored.
        self._reserved: dict[bytes, bytes] = {}
        # MACs offered an address that have not REQUESTed it yet, oldest first.
        self._offered: dict[bytes, None] = {}
        self._naming: set[bytes] = set()
        self._refused: dict[tuple[bytes, IPv4Address], float] = {}
        self._last_dhcp: dict[bytes, bytes] = {}
        self._logged: dict[bytes, None] = {}
        self._own_saved: IPv4Address | None = None
        # Per source MAC (ipop.ratelimit), and one LAN-wide bucket behind the lookups'.
        self._frames: KeyedBuckets[bytes] = KeyedBuckets(FRAME_RATE, FRAME_BURST)
        self._claim_rate: KeyedBuckets[bytes] = KeyedBuckets(1 / STATIC_RETRY_S, 2)
        self._lookup_rate: KeyedBuckets[bytes] = KeyedBuckets(
            LOOKUP_RATE_PER_MAC, LOOKUP_BURST_PER_MAC
        )
        self._lookup_all = TokenBucket(LOOKUP_RATE, LOOKUP_BURST, 0.0)
        self.owners: OwnerLookups[bytes] = OwnerLookups()

    def _drop(self, reason: str) -> None:
        if reason not in DROP_REASONS:
            raise LocalProtocolError(f"router drop reason {reason!r} is not in DROP_REASONS")
        self.rdrops[reason] += 1

    # --- the local side -----------------------------------------------------------------------

    async def _open_local(self) -> tuple[int, LocalSide | None, str]:
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
            arp=None,
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
            self.resolve,
            (up.host, up.port) if up is not None else None,
            on_event=self._dhcp_event,
        )
        self._own_saved = self.address.saved()
        saved = self._saved_hosts()
        for host_mac, (vip, _) in saved.items():
            self._reserved[vip.packed] = host_mac
        self.tasks.spawn(self._restore(saved))
        self.tasks.spawn(self._expiry_loop())

    def _local_frame(self, frame: bytes) -> bool:
        try:
            return self._lan_frame(frame, self.clock())
        except Exception as exc:  # one host's frame must not reach the event loop
            self._host_failed(frame[6:12], "frame", exc)
            return True

    def _lan_frame(self, frame: bytes, now: float) -> bool:
        mac = frame[6:12]
        if frame[12:14] == _ETH_ARP:
            if self._frames.take(mac, now):
                self._arp(frame, now)
            else:
                self._drop("lan_rate_limited")
            return True
        if (
            frame[12:14] == _ETH_IP
            and len(frame) >= 42
            and frame[23] == 17
            and int.from_bytes(frame[36:38], "big") == SERVER_PORT
        ):
            if not self._frames.take(mac, now):
                self._drop("lan_rate_limited")
                return True
            lru_put(self._last_dhcp, mac, frame, MAX_REMEMBERED)
        if self.runner is None:
            return False
        return self.runner.feed(frame, now=now)

    # --- one host's failure -------------------------------------------------------------------

    def _spawn_host(self, mac: bytes, stage: Stage, fn: _HostTask, *args: Any) -> None:
        """Run ``fn(*args)``, one host's task: its failure is that host's
        (:meth:`_host_failed`), not the router's. The coroutine is made inside the guard, so
        a task cancelled before it starts leaves none behind unawaited."""
        self.tasks.spawn(self._guarded(mac, stage, fn, *args))

    async def _guarded(self, mac: bytes, stage: Stage, fn: _HostTask, *args: Any) -> None:
        try:
            await fn(*args)
        except Exception as exc:  # CancelledError is not an Exception: shutdown passes
            self._host_failed(mac, stage, exc)

    def _host_failed(self, mac: bytes, stage: Stage, exc: BaseException) -> None:
        """One LAN host's handling failed: count it, log it (once per MAC) and forget the
        host, so that its next DISCOVER or frame starts afresh; everything else carries on."""
        self._drop(f"host_failed_{stage}")
        if mac not in self._logged:
            lru_put(self._logged, mac, None, MAX_REMEMBERED)
            log.error(
                "event=host_failed mac=%s stage=%s error=%r", mac_str(mac), stage, exc, exc_info=exc
            )
        if stage == "arp":  # a failed lookup is the asker's ARP miss: nothing of it to forget
            return
        try:
            self._busy.discard(mac)
            self._naming.discard(mac)
            for vip in [v for v, holder in self._reserved.items() if holder == mac]:
                del self._reserved[vip]
            self._drop_host(mac)
        except Exception:
            log.exception("event=host_cleanup_failed mac=%s", mac_str(mac))

    # --- ARP ----------------------------------------------------------------------------------

    def _arp(self, frame: bytes, now: float) -> None:
        # A sender that names another MAC than its frame's registers nothing: it would bind
        # an address to a MAC that never asked for it.
        if len(frame) >= 42 and frame[14:22] == _ARP_REQUEST and frame[22:28] == frame[6:12]:
            spa = IPv4Address(frame[28:32])
            if int(spa) != 0:
                self.saw_source(frame[22:28], spa)
        reply = self.arp.reply(frame)
        if reply is None:
            return
        tpa = IPv4Address(frame[38:42])
        if tpa == self.gateway or tpa == self.vip:
            self.write_frame(reply)
            return
        key = tpa.packed
        live = self.owners.answer(key, now)
        if live is not None:
            self._arp_answer(tpa, reply, live)
            return
        joined = self.owners.wait(key, reply)
        if joined is not None:
            if not joined:
                self._drop("arp_waiters_full")
            return
        mac = frame[6:12]
        if not self._lookup_rate.take(mac, now) or not self._lookup_all.take(now):
            self._drop("arp_rate_limited")
            return
        if not self.owners.start(key, reply):
            self._drop("arp_lookups_busy")
            return
        self._spawn_host(mac, "arp", self._arp_lookup, tpa)

    async def _arp_lookup(self, tpa: IPv4Address) -> None:
        """Answer the ARPs waiting on ``tpa`` only if some node holds it in the DHT now."""
        try:
            owner = await asyncio.wait_for(self.lookup_owner(tpa), ARP_LOOKUP_TIMEOUT_S)
        except asyncio.CancelledError:
            self.owners.finish(tpa.packed, False, self.clock())
            raise
        except Exception:  # a DHT failure or timeout is a miss; the host asks again
            owner = None
        for reply in self.owners.finish(tpa.packed, owner is not None, self.clock()):
            self._arp_answer(tpa, reply, owner is not None)

    def _arp_answer(self, tpa: IPv4Address, reply: bytes, live: bool) -> None:
        if not live or self.hosts.by_ip(tpa) is not None:
            self._drop("arp_not_live")
            return
        self.write_frame(reply)

    # --- DHCP ---------------------------------------------------------------------------------

    def _dhcp_event(self, ev: DhcpEvent) -> None:
        now = self.clock()
        if isinstance(ev, AddressWanted):
            self._want_address(ev.mac)
        elif isinstance(ev, LeaseGranted):
            host = self.hosts.by_mac(ev.mac)
            if host is not None:
                host.expires = ev.expires
                host.last_seen = now
                if ev.mac in self._offered:  # an offer taken up: now worth keeping across restarts
                    del self._offered[ev.mac]
                    self._save_hosts()
                if ev.hostname and len(host.names) < 2 and ev.mac not in self._naming:
                    self._naming.add(ev.mac)
                    self._spawn_host(ev.mac, "name", self._register_hostname, host, ev.hostname)
        elif isinstance(ev, AddressReleased):
            host = self.hosts.by_mac(ev.mac)
            if host is not None:
                host.expires = now
        elif isinstance(ev, AddressDeclined):
            self._drop_host(ev.mac)

    def _claim_room(self, mac: bytes) -> str | None:
        """Why ``mac`` may not start a claim now (a drop reason), or None if it may."""
        if len(self._busy) >= MAX_CLAIMS:
            return "claims_busy"
        if self.hosts.by_mac(mac) is not None:
            return None
        if len(self.hosts) + len(self._busy) >= self.rcfg.max_hosts and self._offered:
            oldest = next(iter(self._offered))
            self._drop("offer_evicted")
            self._drop_host(oldest)
        if len(self.hosts) + len(self._busy) >= self.rcfg.max_hosts:
            return "host_table_full"
        return None

    def _start_claim(self, mac: bytes, stage: Stage, fn: _HostTask, *args: Any) -> bool:
        """Start one address claim for ``mac`` (DHT work) if the bounds allow; else count why."""
        why = self._claim_room(mac)
        if why is not None:
            self._drop(why)
            return False
        self._busy.add(mac)
        self._spawn_host(mac, stage, fn, *args)
        return True

    def _want_address(self, mac: bytes) -> None:
        if mac not in self._busy:
            self._start_claim(mac, "alloc", self._allocate, mac)

    def _requested_ip(self, mac: bytes) -> IPv4Address | None:
        frame = self._last_dhcp.get(mac)
        if frame is None:
            return None
        try:
            msg = parse_dhcp(parse_udp_frame(frame).payload)
        except PacketError:
            return None
        want = msg.requested_ip or (msg.ciaddr if int(msg.ciaddr) else None)
        return want if want is not None and want in self.subnet else None

    def _free_here(self, vip: IPv4Address, mac: bytes) -> bool:
        """May ``mac`` hold ``vip``? Not if the router holds it for itself or for another LAN
        host, claims it for one right now, or keeps it for a saved host not yet restored: the
        DHT says yes to all of those, their records being the router's own."""
        if vip == self.vip or vip == self._own_saved:
            return False
        lease = self.address.lease
        if lease is not None and lease.address == vip:
            return False
        other = self.hosts.by_ip(vip)
        if other is not None and other.mac != mac:
            return False
        holder = self._reserved.get(vip.packed)
        return holder is None or holder == mac

    async def _allocate(self, mac: bytes) -> None:
        node = self.node
        assert node is not None and node.dht is not None
        try:
            await node.dht_ready.wait()
            host = self.hosts.by_mac(mac)
            preferred = host.vip if host is not None else None
            if preferred is None:
                preferred = self._saved_hosts().get(mac, (None, ""))[0]
            if preferred is None:
                preferred = self._requested_ip(mac)
            if preferred is not None and not self._free_here(preferred, mac):
                preferred = None
            vip = None
            for _ in range(8):
                try:
                    got = await allocate_ip(
                        node.dht,
                        self.subnet,
                        network=self.network,
                        rng=self.rng,
                        preferred=preferred,
                        value=mac,
                        ttl=self.settings.lease_s,
                    )
                except AllocationFailed:
                    got = None
                except Exception as exc:  # the DHT may still be converging
                    log.warning("event=host_alloc_retry mac=%s error=%s", mac_str(mac), exc)
                    await asyncio.sleep(0.5)
                    continue
                if got is not None and self._free_here(got, mac):
                    vip = got
                    break
                preferred = None
            if vip is None:
                self._drop("host_alloc_failed")
                return
            expires = self.clock() + OFFER_HOLD_S
            if self._bind(mac, vip, "dhcp", expires=expires, offer=True) is None:
                return
            assert self.dhcp is not None
            self.dhcp.assign(mac, vip)
            log.info("event=host_bound mac=%s vip=%s", mac_str(mac), vip)
            # Answer the request that is waiting instead of the client's next retransmission.
            frame = self._last_dhcp.pop(mac, None)
            if frame is not None and self.runner is not None:
                self.runner.feed(frame, now=self.clock())
        finally:
            self._busy.discard(mac)

    def _bind(
        self, mac: bytes, vip: IPv4Address, kind: str, *, expires: float | None, offer: bool = False
    ) -> LanHost | None:
        """Bind ``vip`` (whose DHT record we just claimed) to ``mac``; None if it may not.
        ``offer``: a new binding is an offer until the host REQUESTs it (``_offered``)."""
        assert self.node is not None and self.node.dht is not None and self.dataplane is not None
        old = self.hosts.by_mac(mac)
        if old is not None and old.vip == vip:
            return old
        if not self._free_here(vip, mac):
            # Another claim of ours won the race; the record is the other host's: keep it.
            self._drop("lan_addr_taken")
            return None
        if old is None and len(self.hosts) >= self.rcfg.max_hosts:
            self._drop("host_table_full")
            self.tasks.spawn(self._release([IpLease(self.node.dht, self.network, vip)]))
            return None
        if old is not None:
            self._drop_host(mac)
        host = LanHost(mac, vip, kind, [f"{c_name(vip)}.{self.suffix}"], expires, self.clock())
        self.hosts.add(host)
        if offer:
            self._offered[mac] = None
        self.dataplane.add_local_ip(vip)
        self.arp.add_local(vip)
        lease = IpLease(
            self.node.dht,
            self.network,
            vip,
            ttl=self.settings.lease_s,
            value=mac,
            on_lost=functools.partial(self._lease_lost, host),
        )
        lease.start()
        self._leases[mac] = [lease]
        self._save_hosts()
        return host

    def _lease_lost(self, host: LanHost) -> None:
        """Another node holds ``host``'s address now (say, after a partition healed): stop
        serving it there, or its traffic would pose as that node's; its next DISCOVER gets
        a new one."""
        if self.hosts.by_mac(host.mac) is host:
            self._drop("host_lease_lost")
            log.warning("event=host_lease_lost mac=%s vip=%s", mac_str(host.mac), host.vip)
            self._drop_host(host.mac)

    async def _register_hostname(self, host: LanHost, hostname: str) -> None:
        node = self.node
        assert node is not None and node.dht is not None
        under = node.identity.cert.hostname
        if under is None or not node.identity.cert.is_router:
            self.rdrops["no_name_authority"] += 1  # tools/routerd refuses such bundles
            return
        try:
            name = lan_host_name(hostname.lower(), under)
            ok = await register_name(
                node.dht, self.network, name, host.vip, ttl=self.settings.lease_s
            )
        except ConfigError:
            self._drop("bad_hostname")
            return
        except Exception as exc:  # the DHT did not answer: the next renewal tries again
            log.warning("event=host_name_failed name=%s error=%s", name, exc)
            return
        finally:
            self._naming.discard(host.mac)
        if not ok:
            self._drop("hostname_taken")
            log.warning(
                "event=host_name_taken mac=%s name=%s.%s vip=%s why=%r",
                mac_str(host.mac),
                name,
                self.suffix,
                host.vip,
                "another node holds this name; the host keeps its address name "
                f"{c_name(host.vip)}.{self.suffix}: give the host another hostname",
            )
            return
        if self.hosts.by_mac(host.mac) is not host:
            return
        full = f"{name}.{self.suffix}"
        if full not in host.names:
            host.names.append(full)
        lease = DhtLease(
            node.dht, name_key(self.network, name), value=host.vip.packed, ttl=self.settings.lease_s
        )
        lease.start()
        self._leases.setdefault(host.mac, []).append(lease)
        self._save_hosts()
        log.info("event=host_named mac=%s name=%s", mac_str(host.mac), full)

    def _drop_host(self, mac: bytes) -> LanHost | None:
        """Forget ``mac``'s host now; its DHT records are released in the background."""
        host = self.hosts.remove(mac)
        leases = self._leases.pop(mac, [])
        self._offered.pop(mac, None)
        self._last_dhcp.pop(mac, None)
        if self.dhcp is not None:
            self.dhcp.unassign(mac)
        if host is not None:
            if self.dataplane is not None:
                self.dataplane.remove_local_ip(host.vip)
            self.arp.remove_local(host.vip)
            log.info("event=host_gone mac=%s vip=%s", mac_str(mac), host.vip)
            self._save_hosts()
        if leases:
            self.tasks.spawn(self._release(leases))
        return host

    async def _release(self, leases: list[DhtLease]) -> None:
        for lease in leases:
            with contextlib.suppress(Exception):  # a record we cannot delete lapses by itself
                await lease.release()

    async def _expiry_loop(self) -> None:
        while True:
            await asyncio.sleep(EXPIRY_CHECK_S)
            now = self.clock()
            for host in self.hosts.hosts():
                if host.kind == "dhcp":
                    gone = host.expires is not None and host.expires + EXPIRY_GRACE_S < now
                else:
                    gone = host.last_seen + self.rcfg.dhcp_lease_s < now
                if gone:
                    try:
                        self._drop_host(host.mac)
                    except Exception as exc:
                        self._host_failed(host.mac, "expire", exc)

    # --- static hosts -------------------------------------------------------------------------

    def saw_source(self, mac: bytes, vip: IPv4Address) -> None:
        """A frame from ``mac`` with source ``vip``: register a static host if that is new."""
        if not self.rcfg.static_hosts or mac[0] & 1 or not is_usable(self.subnet, vip):
            return
        known = self.hosts.by_mac(mac)
        if known is not None:
            if known.vip != vip:
                self._drop("lan_wrong_src")
            return
        if mac in self._busy or self.node is None or not self.node.dht_ready.is_set():
            return
        if self.dhcp is not None and self.dhcp.binding(mac) is not None:
            return
        if not self._free_here(vip, mac):
            self._drop("lan_addr_taken")
            return
        now = self.clock()
        refused = self._refused.get((mac, vip))
        if refused is not None and now - refused < STATIC_RETRY_S:
            self._drop("static_refused")
            return
        if not self._claim_rate.take(mac, now):
            self._drop("static_rate_limited")
            return
        if self._start_claim(mac, "static", self._claim_static, mac, vip):
            self._reserved[vip.packed] = mac  # before the claim's task first runs

    async def _claim_static(self, mac: bytes, vip: IPv4Address) -> None:
        node = self.node
        assert node is not None and node.dht is not None
        try:
            try:
                ok = await node.dht.create(ip_key(self.network, vip), mac, self.settings.lease_s)
            except Exception:  # the DHT did not answer: not a claim, try again later
                ok = False
            if not ok:
                lru_put(self._refused, (mac, vip), self.clock(), MAX_REMEMBERED)
                self._drop("static_refused")
                log.warning("event=static_refused mac=%s vip=%s", mac_str(mac), vip)
                return
            if self._bind(mac, vip, "static", expires=None) is not None:
                log.info("event=static_host mac=%s vip=%s", mac_str(mac), vip)
        finally:
            self._busy.discard(mac)
            if self._reserved.get(vip.packed) == mac:
                del self._reserved[vip.packed]

    # --- state --------------------------------------------------------------------------------

    def _hosts_file(self) -> Any:
        return self.settings.state_dir / "lan_hosts.json"

    def _saved_hosts(self) -> dict[bytes, tuple[IPv4Address, str]]:
        """The hosts of ``lan_hosts.json`` (at most ``max_hosts`` of them)."""
        try:
            data = json.loads(self._hosts_file().read_text())
            out = {}
            for row in data["hosts"][: self.rcfg.max_hosts]:
                vip = IPv4Address(row["vip"])
                if vip in self.subnet:
                    out[bytes.fromhex(row["mac"].replace(":", ""))] = (vip, str(row["kind"]))
            return out
        except (OSError, ValueError, KeyError, TypeError):
            return {}

    def _save_hosts(self) -> None:
        """Write ``lan_hosts.json``: the hosts, but for offers not taken up yet (a DISCOVER
        flood's MACs never reach the disk, nor come back after a restart)."""
        path = self._hosts_file()
        rows = [
            {"mac": mac_str(h.mac), "vip": str(h.vip), "kind": h.kind, "names": h.names}
            for h in self.hosts.hosts()
            if h.mac not in self._offered
        ]
        tmp = path.with_suffix(".tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps({"network": self.network, "hosts": rows}) + "\n")
            os.replace(tmp, path)
        except OSError as exc:  # the hosts are served all the same; a restart forgets them
            log.warning("event=hosts_not_saved error=%s", exc)

    async def _restore(self, saved: dict[bytes, tuple[IPv4Address, str]]) -> None:
        """After a restart: claim the saved hosts' addresses again, before they ask."""
        node = self.node
        assert node is not None and node.dht is not None
        if not saved:
            return
        await node.dht_ready.wait()
        names = {}
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            for row in json.loads(self._hosts_file().read_text())["hosts"]:
                names[bytes.fromhex(row["mac"].replace(":", ""))] = row.get("names", [])
        for mac, (vip, kind) in saved.items():
            try:
                await self._restore_host(mac, vip, kind, names.get(mac, []))
            except Exception as exc:
                self._host_failed(mac, "restore", exc)
            finally:
                if self._reserved.get(vip.packed) == mac:
                    del self._reserved[vip.packed]

    async def _restore_host(self, mac: bytes, vip: IPv4Address, kind: str, names: Any) -> None:
        node = self.node
        assert node is not None and node.dht is not None
        if self.hosts.by_mac(mac) is not None or not self._free_here(vip, mac):
            return
        if not await node.dht.create(ip_key(self.network, vip), mac, self.settings.lease_s):
            self._drop("restore_lost")
            return
        host = self._bind(mac, vip, kind, expires=self.clock() + self.rcfg.dhcp_lease_s)
        if host is None:
            return
        if kind == "dhcp" and self.dhcp is not None:
            with contextlib.suppress(LocalProtocolError):
                self.dhcp.assign(mac, vip)
        for full in list(names)[1:2]:  # a host has one name besides its c-name
            self._naming.add(mac)
            self._spawn_host(mac, "name", self._register_hostname, host, str(full).split(".")[0])
        log.info("event=host_restored mac=%s vip=%s", mac_str(mac), vip)

    async def _shutdown(self) -> None:
        if self.runner is not None:
            await self.runner.close()
        for leases in self._leases.values():
            for lease in leases:
                await lease.stop()  # left to lapse: a restart within the lease keeps them
        await super()._shutdown()
        if self.lan is not None:
            self.lan.close()

    # --- status -------------------------------------------------------------------------------

    def extra_drops(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        total.update({f"router.{k}": v for k, v in self.rdrops.items()})
        total.update({f"lan.{k}": v for k, v in self.hosts.drops.items()})
        if self.lan is not None:
            total.update({f"lan.{k}": v for k, v in self.lan.drops.items()})
        if self.dhcp is not None:
            total.update({f"dhcp.{k}": v for k, v in self.dhcp.drops.items()})
        if self.lan_services is not None:
            total.update({f"lanservices.{k}": v for k, v in self.lan_services.drops.items()})
        return dict(total)

    def extra_counters(self) -> dict[str, int]:
        if self.lan is None:
            return {}
        # Checksums completed for offloading hosts, or verified.
        return {f"lan.{k}": v for k, v in self.lan.counters.items()}

    def dns_status(self) -> DnsStatus | None:
        return self.lan_services.dns_status() if self.lan_services is not None else None

    def lan_host_rows(self) -> list[LanHostStatus]:
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
