"""Services a router publishes for its LAN hosts (``[[service]]`` in its config).

A plain LAN host runs no ipop software, so it cannot say ``ipop service publish``; its router
does, from its config: each :class:`ipop.router.config.LanService` names a LAN host by its DHCP
hostname, and while a host of that name holds an address (``<host>.<router hostname>``, the
name the router registered for it), the service is published at that address with the
router's own publisher (:class:`ipop.dht.publish.ServicePublisher`: the router holds the
host's ``ip`` record, so readers believe it). When the host's address changes the service
follows; when the host is gone the service is withdrawn. :meth:`LanServices.sync` does one
round; :meth:`LanServices.run` repeats it every :data:`ipop.timing.LAN_SERVICE_SYNC_S`. The
publishing itself is :class:`ipop.dht.publish.ServiceKeeper`'s, shared with ``ipopd``'s own
``[[service]]`` tables.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from ipaddress import IPv4Address

from ipop.dht.publish import ServiceKeeper, ServicePublisher
from ipop.router.config import LanService
from ipop.router.hosts import LanHost

__all__ = ["LanServices"]


class LanServices(ServiceKeeper[LanService]):
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
        super().__init__(services, where=self._where_now, publisher=publisher, what="lan_service")
        self._hosts = hosts
        self._under = under
        self._now: dict[str, IPv4Address] = {}

    def _addresses(self) -> dict[str, IPv4Address]:
        suffix = "." + self._under
        out: dict[str, IPv4Address] = {}
        for h in self._hosts():
            for name in h.names:
                if name.endswith(suffix) and "." not in name[: -len(suffix)]:
                    out[name[: -len(suffix)]] = h.vip
        return out

    def _where_now(self, svc: LanService) -> IPv4Address | None:
        return None if svc.host is None else self._now.get(svc.host)

    async def sync(self) -> int:
        # The hosts' addresses once per round, not once per service.
        self._now = self._addresses()
        return await super().sync()
