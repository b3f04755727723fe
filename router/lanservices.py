"""Services a router publishes for its LAN hosts (``[[service]]`` in its config).

A plain LAN host runs no ipop software, so it cannot say ``ipop service publish``; its router
does, from its config: each :class:`ipop.router.config.LanService` names a LAN host by its DHCP
hostname, and while a host of that name holds an address (``<host>.<router hostname>``, the
name the router registered for it), the service is published at that address with the
router's own publisher (:class:`ipop.dht.publish.ServicePublisher`: the router holds the
host's ``ip`` record, so readers believe it). When the host's address changes the service
follows; when the host is gone the service is withdrawn. :meth:`LanServices.sync` does one
round; :meth:`LanServices.run` repeats it every :data:`ipop.timing.LAN_SERVICE_SYNC_S`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from ipaddress import IPv4Address

from ipop import timing
from ipop.dht.publish import PublishFailed, ServicePublisher
from ipop.dht.srv import ServiceValue
from ipop.errors import IpopError
from ipop.router.config import LanService
from ipop.router.hosts import LanHost

__all__ = ["LanServices"]

log = logging.getLogger("ipop.router")


class LanServices:
    """Keeps ``services`` published at their LAN hosts' current addresses."""

    def __init__(
        self,
        services: Iterable[LanService],
        *,
        hosts: Callable[[], list[LanHost]],
        publisher: Callable[[], ServicePublisher | None],
        under: str,
    ) -> None:
        """``hosts``: the LAN's hosts now; ``publisher``: the daemon's, None until it has an
        address; ``under``: the router's hostname plus the DNS suffix (``lab.ipop``)."""
        self.services = tuple(services)
        self._hosts = hosts
        self._publisher = publisher
        self._under = under
        self.published: dict[tuple[str, str], IPv4Address] = {}

    def _addresses(self) -> dict[str, IPv4Address]:
        suffix = "." + self._under
        out: dict[str, IPv4Address] = {}
        for h in self._hosts():
            for name in h.names:
                if name.endswith(suffix) and "." not in name[: -len(suffix)]:
                    out[name[: -len(suffix)]] = h.vip
        return out

    async def sync(self) -> int:
        """One round: publish, move or withdraw what changed; how many changed."""
        pub = self._publisher()
        if pub is None:
            return 0
        where = self._addresses()
        changed = 0
        for svc in self.services:
            key = (svc.name, svc.proto)
            vip = where.get(svc.host)
            if vip == self.published.get(key):
                continue
            try:
                if vip is None:
                    await pub.withdraw(*key)
                    del self.published[key]
                else:
                    await pub.publish(svc.name, svc.proto, ServiceValue(vip, svc.port, svc.txt))
                    self.published[key] = vip
                changed += 1
            except (PublishFailed, IpopError, OSError, TimeoutError) as exc:
                # The DHT may still be converging, or the slots busy: the next round retries.
                log.warning(
                    "event=lan_service_failed name=%s host=%s error=%s", svc.name, svc.host, exc
                )
        return changed

    async def run(self) -> None:
        while True:
            await asyncio.sleep(timing.LAN_SERVICE_SYNC_S)
            await self.sync()
