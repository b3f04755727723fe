"""Router mode's LAN hosts' addresses: who may claim what, the claims, the leases, the names.

:class:`HostClaims` is the part of :class:`ipop.router.daemon.RouterLan` that binds LAN hosts to
virtual IPs the router holds for them in the DHT: a DHCP host's allocation (:meth:`dhcp_event`
on the DHCP server's events; the waiting DISCOVER or REQUEST answered at once), a static host's
registration (:meth:`saw_source`), the check that no host takes an address the router holds
for itself or keeps for another (:meth:`HostClaims._free_here`), the bounds on claims in
flight (:data:`MAX_CLAIMS`, ``max_hosts``, the oldest unrequested offer evicted first), the
leases and name records that keep a bound host's address, their expiry, and
``lan_hosts.json``, which carries the hosts across restarts (:meth:`start` restores them).

Its drops are counted through the router's one checked list (``ipop.router.daemon.DROP_REASONS``),
and one host's failure is handled by the router's policy (``RouterLan.host_failed``, which
calls :meth:`forget`); ``self.lan`` is the router it belongs to.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
from collections.abc import Callable, Coroutine
from ipaddress import IPv4Address
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ipop.dhcp_dns.dhcp import (
    AddressDeclined,
    AddressReleased,
    AddressWanted,
    DhcpEvent,
    LeaseGranted,
    parse_dhcp,
)
from ipop.dht.alloc import AllocationFailed, DhtLease, IpLease, allocate_ip, is_usable
from ipop.dht.names import c_name, lan_host_name, register_name
from ipop.dht.record import ip_key, name_key
from ipop.errors import ConfigError, LocalProtocolError
from ipop.ratelimit import KeyedBuckets
from ipop.router.hosts import LanHost, mac_str
from ipop.router.limits import lru_put
from ipop.vnet.packet import PacketError, parse_udp_frame

if TYPE_CHECKING:
    from ipop.router.daemon import RouterLan

__all__ = [
    "EXPIRY_CHECK_S",
    "EXPIRY_GRACE_S",
    "MAX_CLAIMS",
    "MAX_REMEMBERED",
    "OFFER_HOLD_S",
    "STAGES",
    "STATIC_RETRY_S",
    "HostClaims",
    "HostTask",
    "Stage",
]

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
# Bound of the tables keyed by MAC that have no other bound (refused claims, the last DHCP
# frame per MAC, MACs whose failure was logged).
MAX_REMEMBERED = 4096

# Where one host's handling failed (counted as host_failed_<stage>).
Stage = Literal["alloc", "static", "name", "restore", "expire", "frame", "arp"]
STAGES: tuple[Stage, ...] = ("alloc", "static", "name", "restore", "expire", "frame", "arp")
HostTask = Callable[..., Coroutine[Any, Any, None]]


class HostClaims:
    """The LAN hosts' address claims of one router; see the module docstring."""

    def __init__(self, lan: RouterLan) -> None:
        self.lan = lan
        # The router's, for its life (the same objects and values as its daemon's).
        self.hosts, self.tasks, self.address = lan.hosts, lan.tasks, lan.address
        self.settings, self.network, self.rng = lan.settings, lan.network, lan.rng
        self.namespace = lan.namespace
        self.subnet, self.suffix, self.rcfg = lan.subnet, lan.suffix, lan.rcfg
        self._leases: dict[bytes, list[DhtLease]] = {}
        # MACs with a claim (DHCP allocation or static registration) in flight.
        self._busy: set[bytes] = set()
        # vIP -> MAC it is kept for: static claims in flight, saved hosts not yet restored.
        self._reserved: dict[bytes, bytes] = {}
        # MACs offered an address that have not REQUESTed it yet, oldest first.
        self._offered: dict[bytes, None] = {}
        self._naming: set[bytes] = set()
        self._refused: dict[tuple[bytes, IPv4Address], float] = {}
        # The last DHCP frame per MAC (RouterLan notes it): answered again once its claim is won.
        self.last_dhcp: dict[bytes, bytes] = {}
        self._own_saved: IPv4Address | None = None
        self._claim_rate: KeyedBuckets[bytes] = KeyedBuckets(1 / STATIC_RETRY_S, 2)

    def start(self) -> None:
        """Once the LAN is open: keep the saved hosts' addresses for them, restore them when
        the DHT has joined, and expire hosts from now on."""
        self._own_saved = self.address.saved()
        saved = self._saved_hosts()
        for host_mac, (vip, _) in saved.items():
            self._reserved[vip.packed] = host_mac
        self.tasks.spawn(self._restore(saved))
        self.tasks.spawn(self._expiry_loop())

    def forget(self, mac: bytes) -> None:
        """Drop every trace of ``mac`` (its handling failed): its next frame starts afresh."""
        self._busy.discard(mac)
        self._naming.discard(mac)
        for vip in [v for v, holder in self._reserved.items() if holder == mac]:
            del self._reserved[vip]
        self._drop_host(mac)

    async def stop(self) -> None:
        """At shutdown: stop renewing; the records are left to lapse, so that a restart within
        the lease keeps them."""
        for leases in self._leases.values():
            for lease in leases:
                await lease.stop()

    def dhcp_event(self, ev: DhcpEvent) -> None:
        """What the DHCP server asks of us (an address wanted, granted, released, declined)."""
        now = self.lan.clock()
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
                    self.lan.spawn_host(ev.mac, "name", self._register_hostname, host, ev.hostname)
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
            self.lan.count_drop("offer_evicted")
            self._drop_host(oldest)
        if len(self.hosts) + len(self._busy) >= self.rcfg.max_hosts:
            return "host_table_full"
        return None

    def _start_claim(self, mac: bytes, stage: Stage, fn: HostTask, *args: Any) -> bool:
        """Start one address claim for ``mac`` (DHT work) if the bounds allow; else count why."""
        why = self._claim_room(mac)
        if why is not None:
            self.lan.count_drop(why)
            return False
        self._busy.add(mac)
        self.lan.spawn_host(mac, stage, fn, *args)
        return True

    def _want_address(self, mac: bytes) -> None:
        if mac not in self._busy:
            self._start_claim(mac, "alloc", self._allocate, mac)

    def _requested_ip(self, mac: bytes) -> IPv4Address | None:
        frame = self.last_dhcp.get(mac)
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
        if vip == self.lan.vip or vip == self._own_saved:
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
        node = self.lan.node
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
                        namespace=self.namespace,
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
                self.lan.count_drop("host_alloc_failed")
                return
            expires = self.lan.clock() + OFFER_HOLD_S
            if self._bind(mac, vip, "dhcp", expires=expires, offer=True) is None:
                return
            assert self.lan.dhcp is not None
            self.lan.dhcp.assign(mac, vip)
            log.info("event=host_bound mac=%s vip=%s", mac_str(mac), vip)
            # Answer the request that is waiting instead of the client's next retransmission.
            frame = self.last_dhcp.pop(mac, None)
            if frame is not None and self.lan.runner is not None:
                self.lan.runner.feed(frame, now=self.lan.clock())
        finally:
            self._busy.discard(mac)

    def _bind(
        self, mac: bytes, vip: IPv4Address, kind: str, *, expires: float | None, offer: bool = False
    ) -> LanHost | None:
        """Bind ``vip`` (whose DHT record we just claimed) to ``mac``; None if it may not.
        ``offer``: a new binding is an offer until the host REQUESTs it (``_offered``)."""
        assert (
            self.lan.node is not None
            and self.lan.node.dht is not None
            and self.lan.dataplane is not None
        )
        old = self.hosts.by_mac(mac)
        if old is not None and old.vip == vip:
            return old
        if not self._free_here(vip, mac):
            # Another claim of ours won the race; the record is the other host's: keep it.
            self.lan.count_drop("lan_addr_taken")
            return None
        if old is None and len(self.hosts) >= self.rcfg.max_hosts:
            self.lan.count_drop("host_table_full")
            self.tasks.spawn(self._release([IpLease(self.lan.node.dht, self.namespace, vip)]))
            return None
        if old is not None:
            self._drop_host(mac)
        host = LanHost(mac, vip, kind, [f"{c_name(vip)}.{self.suffix}"], expires, self.lan.clock())
        self.hosts.add(host)
        if offer:
            self._offered[mac] = None
        self.lan.dataplane.add_local_ip(vip)
        self.lan.arp.add_local(vip)
        lease = IpLease(
            self.lan.node.dht,
            self.namespace,
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
            self.lan.count_drop("host_lease_lost")
            log.warning("event=host_lease_lost mac=%s vip=%s", mac_str(host.mac), host.vip)
            self._drop_host(host.mac)

    async def _register_hostname(self, host: LanHost, hostname: str) -> None:
        node = self.lan.node
        assert node is not None and node.dht is not None
        # The network certificate (on a shared overlay the links' one names no hosts).
        cert = self.lan.membership.node_cert
        under = cert.hostname
        if under is None or not cert.is_router:
            self.lan.count_drop("no_name_authority")  # tools/routerd refuses such bundles
            self._naming.discard(host.mac)
            return
        try:
            name = lan_host_name(hostname.lower(), under)
            ok = await register_name(
                node.dht, self.namespace, name, host.vip, ttl=self.settings.lease_s
            )
        except ConfigError:
            self.lan.count_drop("bad_hostname")
            return
        except Exception as exc:  # the DHT did not answer: the next renewal tries again
            log.warning("event=host_name_failed name=%s error=%s", name, exc)
            return
        finally:
            self._naming.discard(host.mac)
        if not ok:
            self.lan.count_drop("hostname_taken")
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
            node.dht,
            name_key(self.namespace, name),
            value=host.vip.packed,
            ttl=self.settings.lease_s,
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
        self.last_dhcp.pop(mac, None)
        if self.lan.dhcp is not None:
            self.lan.dhcp.unassign(mac)
        if host is not None:
            if self.lan.dataplane is not None:
                self.lan.dataplane.remove_local_ip(host.vip)
            self.lan.arp.remove_local(host.vip)
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
            now = self.lan.clock()
            for host in self.hosts.hosts():
                if host.kind == "dhcp":
                    gone = host.expires is not None and host.expires + EXPIRY_GRACE_S < now
                else:
                    gone = host.last_seen + self.rcfg.dhcp_lease_s < now
                if gone:
                    try:
                        self._drop_host(host.mac)
                    except Exception as exc:
                        self.lan.host_failed(host.mac, "expire", exc)

    # --- static hosts -------------------------------------------------------------------------

    def saw_source(self, mac: bytes, vip: IPv4Address) -> None:
        """A frame from ``mac`` with source ``vip``: register a static host if that is new."""
        if not self.rcfg.static_hosts or mac[0] & 1 or not is_usable(self.subnet, vip):
            return
        known = self.hosts.by_mac(mac)
        if known is not None:
            if known.vip != vip:
                self.lan.count_drop("lan_wrong_src")
            return
        if mac in self._busy or self.lan.node is None or not self.lan.node.dht_ready.is_set():
            return
        if self.lan.dhcp is not None and self.lan.dhcp.binding(mac) is not None:
            return
        if not self._free_here(vip, mac):
            self.lan.count_drop("lan_addr_taken")
            return
        now = self.lan.clock()
        refused = self._refused.get((mac, vip))
        if refused is not None and now - refused < STATIC_RETRY_S:
            self.lan.count_drop("static_refused")
            return
        if not self._claim_rate.take(mac, now):
            self.lan.count_drop("static_rate_limited")
            return
        if self._start_claim(mac, "static", self._claim_static, mac, vip):
            self._reserved[vip.packed] = mac  # before the claim's task first runs

    async def _claim_static(self, mac: bytes, vip: IPv4Address) -> None:
        node = self.lan.node
        assert node is not None and node.dht is not None
        try:
            try:
                ok = await node.dht.create(ip_key(self.namespace, vip), mac, self.settings.lease_s)
            except Exception:  # the DHT did not answer: not a claim, try again later
                ok = False
            if not ok:
                lru_put(self._refused, (mac, vip), self.lan.clock(), MAX_REMEMBERED)
                self.lan.count_drop("static_refused")
                log.warning("event=static_refused mac=%s vip=%s", mac_str(mac), vip)
                return
            if self._bind(mac, vip, "static", expires=None) is not None:
                log.info("event=static_host mac=%s vip=%s", mac_str(mac), vip)
        finally:
            self._busy.discard(mac)
            if self._reserved.get(vip.packed) == mac:
                del self._reserved[vip.packed]

    # --- state --------------------------------------------------------------------------------

    def _hosts_file(self) -> Path:
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
        node = self.lan.node
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
                self.lan.host_failed(mac, "restore", exc)
            finally:
                if self._reserved.get(vip.packed) == mac:
                    del self._reserved[vip.packed]

    async def _restore_host(self, mac: bytes, vip: IPv4Address, kind: str, names: Any) -> None:
        node = self.lan.node
        assert node is not None and node.dht is not None
        if self.hosts.by_mac(mac) is not None or not self._free_here(vip, mac):
            return
        if not await node.dht.create(ip_key(self.namespace, vip), mac, self.settings.lease_s):
            self.lan.count_drop("restore_lost")
            return
        host = self._bind(mac, vip, kind, expires=self.lan.clock() + self.rcfg.dhcp_lease_s)
        if host is None:
            return
        if kind == "dhcp" and self.lan.dhcp is not None:
            with contextlib.suppress(LocalProtocolError):
                self.lan.dhcp.assign(mac, vip)
        for full in list(names)[1:2]:  # a host has one name besides its c-name
            self._naming.add(mac)
            self.lan.spawn_host(mac, "name", self._register_hostname, host, str(full).split(".")[0])
        log.info("event=host_restored mac=%s vip=%s", mac_str(mac), vip)
