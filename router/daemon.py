"""Router mode: one overlay node whose local side is a LAN of plain hosts instead of a TAP.

:class:`RouterDaemon` is :class:`ipop.aio.daemon.Daemon` with another local side (the packet
path is the same :class:`ipop.aio.dataplane.DataPlane`): an AF_PACKET socket on the LAN
interface, with one Ethernet header per host (:class:`router.hosts.LanHosts`). On the LAN it:

* serves DHCP (``dhcp_dns.DhcpServer``): a host's first DISCOVER makes the router claim an
  address in the DHT, held by the router's node identity (so peers' anti-spoofing check, "the
  inner source is held by the sending node", holds), the same address for the same MAC again
  (``lan_hosts.json`` in the state directory, also across router restarts); the DISCOVER or
  REQUEST is then answered at once (not on the client's retransmission); the hostname of
  option 12 is registered as ``<host>.<router hostname>`` (``printer.lab.<suffix>``: names
  under the router's certified hostname are the only ones replicas let a router hold for its
  hosts, so no LAN host can take a member's name, ``ipop.dht.policy``); the DHT records are
  renewed while the DHCP lease is live;
* answers ARP for the gateway and for remote virtual IPs that are live in the DHT, only those
  (never for a LAN host: it answers itself, and LAN-to-LAN traffic stays on the LAN);
* serves DNS for ``*.<suffix>`` on the gateway address;
* registers hosts that configured a free virtual IP themselves (seen in ARP or IP traffic);
  a host claiming an address held elsewhere is refused (its traffic is dropped and counted).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections import Counter
from ipaddress import IPv4Address
from typing import Any

from dhcp_dns.dhcp import (
    SERVER_PORT,
    AddressDeclined,
    AddressReleased,
    AddressWanted,
    DhcpEvent,
    DhcpServer,
    LeaseGranted,
    parse_dhcp,
)
from dhcp_dns.dns import DnsResolver
from dhcp_dns.services import TapServices, TapServicesRunner
from ipop.aio.daemon import DEFAULT_TAP_MTU, Daemon, DaemonSettings
from ipop.aio.dataplane import LocalSide
from ipop.bundle import Bundle
from ipop.dht.alloc import AllocationFailed, DhtLease, IpLease, allocate_ip, is_usable
from ipop.dht.names import c_name, lan_host_name, register_name
from ipop.dht.record import ip_key, name_key
from ipop.errors import ConfigError, LocalProtocolError
from ipop.status import LanHostStatus
from ipop.types import Endpoint
from ipop.vnet.arp import ArpResponder
from ipop.vnet.packet import PacketError, parse_udp_frame
from router.config import RouterSection
from router.hosts import LanHost, LanHosts, mac_str
from router.lan import LanSocket

__all__ = ["RouterDaemon"]

log = logging.getLogger("ipop-router")

EXPIRY_CHECK_S = 1.0
# A DHCP host keeps its records this long past its lease end (a late renewal is no loss).
EXPIRY_GRACE_S = 10.0
# A refused static claim is not retried for this long.
STATIC_RETRY_S = 10.0
_ETH_ARP = b"\x08\x06"
_ETH_IP = b"\x08\x00"


class _LanSide:
    """:class:`LocalSide` for the data plane: the host table plus static-host detection."""

    def __init__(self, router: RouterDaemon) -> None:
        self.r = router

    def header_for(self, packet: bytes) -> bytes | None:
        return self.r.hosts.header_for(packet)

    def admit(self, frame: memoryview) -> bool:
        if self.r.hosts.admit(frame, now=time.time()):
            return True
        self.r.saw_source(bytes(frame[6:12]), IPv4Address(bytes(frame[26:30])))
        return False


class RouterDaemon(Daemon):
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
        self.hosts = LanHosts(max_hosts=router.max_hosts)
        self.rdrops: Counter[str] = Counter()
        self.lan: LanSocket | None = None
        self.dhcp: DhcpServer | None = None
        self.lan_services: TapServices | None = None
        self.runner: TapServicesRunner | None = None
        self._leases: dict[bytes, list[DhtLease]] = {}
        self._busy: set[bytes] = set()
        self._refused: dict[tuple[bytes, IPv4Address], float] = {}
        self._last_dhcp: dict[bytes, bytes] = {}

    # --- the local side -----------------------------------------------------------------------

    async def _open_local(self) -> tuple[int, LocalSide | None, str]:
        self.lan = LanSocket(self.rcfg.interface)
        mac = self.lan.mac
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
        self._spawn(self._restore())
        self._spawn(self._expiry_loop())
        return self.lan.fd, _LanSide(self), self.lan.name

    def _local_frame(self, frame: bytes) -> bool:
        now = time.time()
        if frame[12:14] == _ETH_ARP:
            self._arp(frame)
            return True
        if (
            frame[12:14] == _ETH_IP
            and len(frame) >= 42
            and frame[23] == 17
            and int.from_bytes(frame[36:38], "big") == SERVER_PORT
        ):
            mac = frame[6:12]
            if mac in self._last_dhcp or len(self._last_dhcp) < self.rcfg.max_hosts:
                self._last_dhcp[mac] = frame
        if self.runner is None:
            return False
        return self.runner.feed(frame, now=now)

    # --- ARP ----------------------------------------------------------------------------------

    def _arp(self, frame: bytes) -> None:
        if len(frame) >= 42 and frame[14:22] == b"\x00\x01\x08\x00\x06\x04\x00\x01":
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
        self._spawn(self._arp_if_live(tpa, reply))

    async def _arp_if_live(self, tpa: IPv4Address, reply: bytes) -> None:
        """Answer only for an address some node holds in the DHT right now."""
        try:
            owner = await self.lookup_owner(tpa)
        except Exception:  # a DHT failure is a miss; the host asks again
            owner = None
        if owner is None or self.hosts.by_ip(tpa) is not None:
            self.rdrops["arp_not_live"] += 1
            return
        self.write_frame(reply)

    # --- DHCP ---------------------------------------------------------------------------------

    def _dhcp_event(self, ev: DhcpEvent) -> None:
        if isinstance(ev, AddressWanted):
            if ev.mac not in self._busy:
                self._spawn(self._allocate(ev.mac, ev.hostname))
        elif isinstance(ev, LeaseGranted):
            host = self.hosts.by_mac(ev.mac)
            if host is not None:
                host.expires = ev.expires
                host.last_seen = time.time()
                if ev.hostname and len(host.names) < 2:
                    self._spawn(self._register_hostname(host, ev.hostname))
        elif isinstance(ev, AddressReleased):
            host = self.hosts.by_mac(ev.mac)
            if host is not None:
                host.expires = time.time()
        elif isinstance(ev, AddressDeclined):
            self._spawn(self._drop_host(ev.mac, release=True))

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
        """Not our own address, nor another LAN host's (the DHT says yes to our own records)."""
        other = self.hosts.by_ip(vip)
        return vip != self.vip and (other is None or other.mac == mac)

    async def _allocate(self, mac: bytes, hostname: str | None) -> None:
        node = self.node
        assert node is not None and node.dht is not None
        self._busy.add(mac)
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
                self.rdrops["host_alloc_failed"] += 1
                return
            self._bind(mac, vip, "dhcp", expires=None)
            assert self.dhcp is not None
            self.dhcp.assign(mac, vip)
            log.info("event=host_bound mac=%s vip=%s", mac_str(mac), vip)
            # Answer the request that is waiting instead of the client's next retransmission.
            frame = self._last_dhcp.get(mac)
            if frame is not None and self.runner is not None:
                self.runner.feed(frame, now=time.time())
        finally:
            self._busy.discard(mac)

    def _bind(self, mac: bytes, vip: IPv4Address, kind: str, *, expires: float | None) -> LanHost:
        assert self.node is not None and self.node.dht is not None and self.dataplane is not None
        old = self.hosts.by_mac(mac)
        if old is not None and old.vip == vip:
            return old
        if old is not None:
            self._spawn(self._drop_host(mac, release=True))
        host = LanHost(mac, vip, kind, [f"{c_name(vip)}.{self.suffix}"], expires, time.time())
        self.hosts.add(host)
        self.dataplane.add_local_ip(vip)
        self.arp.add_local(vip)
        lease = IpLease(self.node.dht, self.network, vip, ttl=self.settings.lease_s, value=mac)
        lease.start()
        self._leases[mac] = [lease]
        self._save_hosts()
        return host

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
            self.rdrops["bad_hostname"] += 1
            return
        except Exception as exc:  # the DHT did not answer: the next renewal tries again
            log.warning("event=host_name_failed name=%s error=%s", name, exc)
            return
        if not ok:
            self.rdrops["hostname_taken"] += 1
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

    async def _drop_host(self, mac: bytes, *, release: bool) -> None:
        host = self.hosts.remove(mac)
        leases = self._leases.pop(mac, [])
        if host is not None:
            if self.dataplane is not None:
                self.dataplane.remove_local_ip(host.vip)
            self.arp.remove_local(host.vip)
            if self.dhcp is not None:
                self.dhcp.unassign(mac)
            log.info("event=host_gone mac=%s vip=%s", mac_str(mac), host.vip)
        for lease in leases:
            if release:
                with contextlib.suppress(Exception):
                    await lease.release()
            else:
                await lease.stop()
        self._save_hosts()

    async def _expiry_loop(self) -> None:
        while True:
            await asyncio.sleep(EXPIRY_CHECK_S)
            now = time.time()
            for host in self.hosts.hosts():
                if host.kind == "dhcp":
                    gone = host.expires is not None and host.expires + EXPIRY_GRACE_S < now
                else:
                    gone = host.last_seen + self.rcfg.dhcp_lease_s < now
                if gone:
                    await self._drop_host(host.mac, release=True)

    # --- static hosts -------------------------------------------------------------------------

    def saw_source(self, mac: bytes, vip: IPv4Address) -> None:
        """A frame from ``mac`` with source ``vip``: register a static host if that is new."""
        if not self.rcfg.static_hosts or mac[0] & 1 or not is_usable(self.subnet, vip):
            return
        known = self.hosts.by_mac(mac)
        if known is not None:
            if known.vip != vip:
                self.rdrops["lan_wrong_src"] += 1
            return
        if mac in self._busy or self.node is None or not self.node.dht_ready.is_set():
            return
        if self.dhcp is not None and self.dhcp.binding(mac) is not None:
            return
        refused = self._refused.get((mac, vip))
        if refused is not None and time.time() - refused < STATIC_RETRY_S:
            self.rdrops["static_refused"] += 1
            return
        self._busy.add(mac)
        self._spawn(self._claim_static(mac, vip))

    async def _claim_static(self, mac: bytes, vip: IPv4Address) -> None:
        node = self.node
        assert node is not None and node.dht is not None
        try:
            try:
                ok = self._free_here(vip, mac) and await node.dht.create(
                    ip_key(self.network, vip), mac, self.settings.lease_s
                )
            except Exception:  # the DHT did not answer: not a claim, try again later
                ok = False
            if not ok:
                if len(self._refused) > 4096:
                    self._refused.clear()
                self._refused[(mac, vip)] = time.time()
                self.rdrops["static_refused"] += 1
                log.warning("event=static_refused mac=%s vip=%s", mac_str(mac), vip)
                return
            self._bind(mac, vip, "static", expires=None)
            log.info("event=static_host mac=%s vip=%s", mac_str(mac), vip)
        finally:
            self._busy.discard(mac)

    # --- state --------------------------------------------------------------------------------

    def _hosts_file(self) -> Any:
        return self.settings.state_dir / "lan_hosts.json"

    def _saved_hosts(self) -> dict[bytes, tuple[IPv4Address, str]]:
        try:
            data = json.loads(self._hosts_file().read_text())
            out = {}
            for row in data["hosts"]:
                vip = IPv4Address(row["vip"])
                if vip in self.subnet:
                    out[bytes.fromhex(row["mac"].replace(":", ""))] = (vip, str(row["kind"]))
            return out
        except (OSError, ValueError, KeyError, TypeError):
            return {}

    def _save_hosts(self) -> None:
        path = self._hosts_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = [
            {"mac": mac_str(h.mac), "vip": str(h.vip), "kind": h.kind, "names": h.names}
            for h in self.hosts.hosts()
        ]
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"network": self.network, "hosts": rows}) + "\n")
        os.replace(tmp, path)

    async def _restore(self) -> None:
        """After a restart: claim the saved hosts' addresses again, before they ask."""
        node = self.node
        assert node is not None and node.dht is not None
        saved = self._saved_hosts()
        if not saved:
            return
        await node.dht_ready.wait()
        names = {}
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            for row in json.loads(self._hosts_file().read_text())["hosts"]:
                names[bytes.fromhex(row["mac"].replace(":", ""))] = row.get("names", [])
        for mac, (vip, kind) in saved.items():
            if self.hosts.by_mac(mac) is not None or not self._free_here(vip, mac):
                continue
            if not await node.dht.create(ip_key(self.network, vip), mac, self.settings.lease_s):
                self.rdrops["restore_lost"] += 1
                continue
            host = self._bind(mac, vip, kind, expires=time.time() + self.rcfg.dhcp_lease_s)
            if kind == "dhcp" and self.dhcp is not None:
                with contextlib.suppress(LocalProtocolError):
                    self.dhcp.assign(mac, vip)
            for full in names.get(mac, [])[1:]:
                self._spawn(self._register_hostname(host, full.split(".")[0]))
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
        if self.dhcp is not None:
            total.update({f"dhcp.{k}": v for k, v in self.dhcp.drops.items()})
        if self.lan_services is not None:
            total.update({f"lanservices.{k}": v for k, v in self.lan_services.drops.items()})
        return dict(total)

    def lan_host_rows(self) -> list[LanHostStatus]:
        now = time.time()
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
