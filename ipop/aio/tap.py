"""The TAP device and its kernel-side configuration (address, MTU, up), and nothing else.

pytun opens the device; the data plane then uses the raw fd with ``os.read``/``os.write``
(pytun's ``read()`` raises ``pytun.Error`` on EAGAIN and ``write()`` refuses memoryviews,
DESIGN.md §8). Addresses and link state go through rtnetlink on the event loop
(:class:`ipop.aio.rtnl.Rtnl`) rather than shelling out to ``ip``: no process per change,
errors come back with the errno.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytun

from ipop.aio.rtnl import RT_SCOPE_LINK, RT_SCOPE_UNIVERSE, RT_TABLE_MAIN, Rtnl
from ipop.errors import ConfigError
from ipop.vnet.arp import VIRTUAL_MAC

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_TAP_MTU", "TAP_TXQLEN", "Tap"]

# 1500-byte underlay minus IPv4 (20) + UDP (8) + link DATA header (13) + AEAD tag (16) +
# DIRECT (2) = 1441; rounded down so a routed first packet (45 bytes more) rarely fragments.
DEFAULT_TAP_MTU = 1400

# Frames the kernel queues for us to read. Its default, 1,000, is what a burst of 1,000 DNS
# queries at the gateway fills while the daemon answers the first ones: the rest were
# dropped (the TAP's TX drops) and their senders retried a second later. Bulk traffic only
# queues here when the daemon cannot keep up; twice the burst keeps that queue short.
TAP_TXQLEN = 2048

# linux/if_tun.h: TUNSETOFFLOAD = _IOW('T', 208, unsigned int), and what we take on.
TUNSETOFFLOAD = 0x400454D0
TUN_F_CSUM = 0x01  # frames may come with the TCP/UDP checksum only begun (NEEDS_CSUM)
TUN_F_TSO4 = 0x02  # and TCP over IPv4 in batches of up to 64 kB (GSO_TCPV4)
# linux/if_addr.h: no kernel route for the address's prefix (we add our own, via the gateway).
IFA_F_NOPREFIXROUTE = 0x200
# linux/neighbour.h: a neighbour entry the kernel never probes, ages or drops.
NUD_PERMANENT = 0x80


class Tap:
    """One open TAP device (no packet info header), non-blocking, owned by this process.

    With ``vnet_hdr`` (the daemon's choice) every frame read or written starts with a
    ``struct virtio_net_hdr`` (:mod:`ipop.vnet.gro`), so that the data plane can write
    coalesced TCP segments as one packet. With ``offload`` too, the kernel is told
    (``TUNSETOFFLOAD``) that we finish checksums and cut TCP batches ourselves
    (:mod:`ipop.vnet.offload`, natively with the native data path): a frame read may then
    carry a begun checksum (``NEEDS_CSUM``) or a whole TCP batch (``GSO_TCPV4``, up to 64 kB),
    and one read replaces up to 45 (see :class:`ipop.aio.dataplane.DataPlane`). Without it,
    frames read carry a finished checksum and are never batches (the kernel finishes and cuts
    everything itself, as for a plain TAP). ``offload`` says what was granted. A kernel that
    refuses the virtio header gets a plain TAP (``vnet_hdr`` is then False)."""

    def __init__(
        self, name: str, *, mtu: int, vnet_hdr: bool = False, offload: bool = False
    ) -> None:
        flags = pytun.IFF_TAP | pytun.IFF_NO_PI
        try:
            try:
                self._dev = pytun.TunTapDevice(
                    name=name, flags=flags | (pytun.IFF_VNET_HDR if vnet_hdr else 0)
                )
            except pytun.Error:
                if not vnet_hdr:
                    raise
                vnet_hdr = False
                self._dev = pytun.TunTapDevice(name=name, flags=flags)
        except pytun.Error as exc:
            raise ConfigError(
                "tap.name", f"cannot open TAP {name!r}: {exc}", "run as root (CAP_NET_ADMIN)"
            ) from exc
        self.name: str = self._dev.name
        self.fd: int = self._dev.fileno()
        os.set_blocking(self.fd, False)
        self.mtu = mtu
        self.vnet_hdr = vnet_hdr
        self.offload = False
        if vnet_hdr and offload:
            try:
                fcntl.ioctl(self.fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4)
                self.offload = True
            except OSError as exc:  # an old kernel: frames come finished and one by one
                log.info("event=tap_offload_refused tap=%s error=%s", self.name, exc)
        self.index = 0
        self.mac: bytes = bytes(self._dev.hwaddr)

    async def configure(self) -> None:
        """MTU, queue length and link up; IPv6 off (router solicitations would only be counted
        drops)."""
        self.index = socket.if_nametoindex(self.name)
        with contextlib.suppress(OSError):
            Path(f"/proc/sys/net/ipv6/conf/{self.name}/disable_ipv6").write_text("1")
        async with Rtnl() as nl:
            await nl.set_link(self.index, mtu=self.mtu, txqlen=TAP_TXQLEN, up=True)

    async def set_address(
        self,
        addr: IPv4Address,
        subnet: IPv4Network,
        gateway: IPv4Address,
        *,
        gateway_mac: bytes = VIRTUAL_MAC,
        table: int | None = None,
    ) -> None:
        """Give the tap ``addr``, and route the subnet through ``gateway`` rather than on-link.

        ``table`` (a network of a daemon in several, issue 17): the routes go to that table
        instead of the main one, which rules send what leaves from ``addr`` or out of this TAP
        to (``ip rule``): the networks' ranges may overlap, and each network's replies and
        ``ping -I <tap>`` must leave by its own TAP.

        The ARP responder gives every address of the subnet the same virtual MAC, so on-link
        and via-the-gateway deliver alike; but on-link costs one kernel neighbour entry per
        peer, and the neighbour table is shared by every namespace of the machine and holds
        1,024 entries by default (``gc_thresh3``): past it, sends fail with ENOBUFS. Through
        the gateway the kernel keeps one entry, whatever the number of peers.

        That entry is permanent, with the gateway's fixed MAC: else, after a quiet minute the
        kernel asks for it again, and the first packets wait on the daemon's ARP answer in a
        small queue (~200 kB). In a burst of DNS queries on a loaded machine whole bursts
        were lost there (UdpSndbufErrors, IpOutDiscards) before the daemon had answered.
        """
        async with Rtnl() as nl:
            for a in await nl.ipv4_addresses(self.index):
                if a.address is not None:
                    await nl.del_address(self.index, IPv4Address(a.address), a.prefixlen)
            await nl.add_address(self.index, addr, subnet.prefixlen, flags=IFA_F_NOPREFIXROUTE)
            where = RT_TABLE_MAIN if table is None else table
            await nl.replace_route(
                IPv4Network(f"{gateway}/32"),
                oif=self.index,
                prefsrc=addr,
                scope=RT_SCOPE_LINK,
                table=where,
            )
            await nl.replace_route(
                subnet,
                oif=self.index,
                prefsrc=addr,
                gateway=gateway,
                scope=RT_SCOPE_UNIVERSE,
                table=where,
            )
            if table is not None:
                await nl.set_rules(table=table, priority=table, src=addr, oifname=self.name)
            await nl.replace_neigh(self.index, gateway, gateway_mac, NUD_PERMANENT)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._dev.close()
