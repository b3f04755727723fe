"""What a composition root plugs into the daemon's local side (the core owns these contracts).

The daemon (:class:`ipop.aio.daemon.Daemon`) moves frames between its local side and the
overlay; what else lives there is not the core's to know (it imports neither ``dhcp_dns`` nor
``router``). Two plug-ins, each a :class:`typing.Protocol`, each built by a factory that gets
the daemon:

* :class:`LocalServices` (``Daemon(services=...)``, ``tools/ipopd.py``): DHCP and DNS of the
  virtual gateway on the daemon's own TAP, which the daemon opens and answers ARP on itself.
  The factory gets a :class:`ServedSide`: the daemon for its first network, an
  :class:`ipop.aio.member.MemberSide` for each other network of a daemon in several.
* :class:`LocalNetwork` (``Daemon(local=...)``, ``router/daemon.py``): a whole other local
  side instead of the TAP, such as router mode's LAN of plain hosts. It opens its interface,
  takes every local frame (ARP included) and reports its own drops, counters, DNS and hosts;
  the daemon keeps the node, its vIP and the lifecycle.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from typing import Protocol

from ipop.aio.dataplane import LocalSide
from ipop.aio.tap import Tap
from ipop.dht.srv import ServiceValue
from ipop.status import DnsStatus, LanHostStatus

__all__ = ["LocalNetwork", "LocalServices", "ServedSide"]


class ServedSide(Protocol):
    """One network's local side as its services see it: its gateway, subnet and suffix, its
    TAP, how to write a frame there and how to answer a DNS question in that network."""

    @property
    def gateway(self) -> IPv4Address: ...

    @property
    def subnet(self) -> IPv4Network: ...

    @property
    def suffix(self) -> str: ...

    @property
    def tap(self) -> Tap | None: ...

    def write_frame(self, frame: bytes) -> None: ...

    async def dns_lookup(self, name: str) -> IPv4Address | tuple[ServiceValue, ...] | None: ...


class LocalServices(Protocol):
    """ARP/DHCP/DNS on the TAP, provided by the composition root."""

    def feed(self, frame: bytes, *, now: float) -> bool:
        """True if ``frame`` was for a local service (it is consumed)."""
        ...

    def address_assigned(self, vip: IPv4Address) -> None: ...

    def dns_status(self) -> DnsStatus | None:
        """The gateway resolver's counters (None: DNS is off)."""
        ...

    def drops(self) -> dict[str, int]:
        """The services' other drops (bad frames to the gateway, DHCP), prefixed by source."""
        ...

    async def close(self) -> None: ...


class LocalNetwork(Protocol):
    """The daemon's local side when it is not a TAP of its own (router mode's LAN).

    Built once, at the end of the daemon's constructor. The daemon calls :meth:`open` once
    its node exists, gives :meth:`feed` every frame of the interface that is not for the
    overlay, and asks its status methods for ``ipop status``. At shutdown it calls
    :meth:`stop` first and :meth:`close` last.
    """

    async def open(self) -> tuple[int, LocalSide, str]:
        """Open the interface: (fd the data plane reads, its :class:`LocalSide`, its name)."""
        ...

    def feed(self, frame: bytes) -> bool:
        """A frame that is not for the overlay (ARP, DHCP, DNS): True if it was consumed."""
        ...

    def drops(self) -> dict[str, int]:
        """Its drops, prefixed by source (``arp.x``, ``ipop.router.y``), in the order status shows
        them (after the data plane's ``vnet.*``)."""
        ...

    def counters(self) -> dict[str, int]:
        """Its counters, prefixed by source (``lan.csum_completed``)."""
        ...

    def dns_status(self) -> DnsStatus | None:
        """Its resolver's counters (None: no DNS here)."""
        ...

    def lan_hosts(self) -> list[LanHostStatus]:
        """The hosts it serves besides this node, for status's ``lan_hosts``."""
        ...

    async def stop(self) -> None:
        """First at shutdown, while the node still runs: stop serving and renewing."""
        ...

    def close(self) -> None:
        """Last at shutdown, after the data plane stopped reading it: release the interface."""
        ...
