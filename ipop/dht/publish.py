"""Services published in the DHT and found there: :class:`ServicePublisher`, list_services.

Keys, slots and the value's layout are :mod:`ipop.dht.srv`'s; who may hold which slot is
enforced by every replica (:mod:`ipop.dht.policy`).

Publishing claims the first free one of the member's own slots of the name with the DHT's
quorum create (its own record left from before a restart counts as free, so a restarted
publisher takes the same slot back) and keeps it with a lease, like a name. ``withdraw``
deletes it at once (a tombstone), and the daemon withdraws every service when it stops; a
publisher that dies stops renewing, so its instances lapse with the lease.

:class:`ServiceKeeper` keeps a fixed list of services (a config's ``[[service]]`` tables: a
node's at its own vIP, a router's at its LAN hosts') published wherever each one's address is
now, through a publisher: one code path for both.

Listing reads every slot of the name at once, and keeps an instance only if the address it
names is held (its ``ip`` record) by the same member that signed the service record: a member
can publish its own vIP or, as a router, its LAN hosts', never somebody else's machine. The
DHT itself believes only records signed by certified members of this network, within their
slots (:meth:`ipop.dht.service.DhtService.get`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Generic, Protocol, TypeVar

from ipop import timing
from ipop.dht.alloc import DhtLease, DhtLike
from ipop.dht.record import Record, ip_key
from ipop.dht.srv import (
    PROTOS,
    SERVICE_QUOTA,
    SLOTS,
    ServiceValue,
    decode_value,
    service_key,
    validate_service_name,
)
from ipop.errors import IpopError, RemoteProtocolError
from ipop.timing import DHT_LEASE_TTL_S
from ipop.types import NodeId

__all__ = [
    "PublishFailed",
    "ServiceDht",
    "ServiceInstance",
    "ServiceKeeper",
    "ServicePublisher",
    "ServiceSpec",
    "list_services",
]

log = logging.getLogger(__name__)


class PublishFailed(IpopError):
    """A service could not be published or withdrawn; the message is for the user."""


@dataclass(frozen=True, slots=True)
class ServiceInstance:
    """One live, verified instance of a service."""

    name: str
    proto: str
    addr: IPv4Address
    port: int
    txt: tuple[str, ...]
    owner: NodeId
    expires_at: float

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "proto": self.proto,
            "addr": str(self.addr),
            "port": self.port,
            "txt": list(self.txt),
            "owner": self.owner.to_bytes().hex(),
            "expires_at": round(self.expires_at, 3),
        }


def check_name(name: str, proto: str) -> None:
    """Raise PublishFailed (for the user) unless ``name``/``proto`` can be published."""
    why = validate_service_name(name)
    if why is not None:
        raise PublishFailed(why)
    if proto not in PROTOS:
        raise PublishFailed(f"proto {proto!r} is not one of {', '.join(PROTOS)}")


@dataclass(slots=True)
class _Published:
    """A service we publish: its value, its slot, and the lease that keeps it."""

    value: ServiceValue
    slot: int
    lease: DhtLease


class ServiceDht(DhtLike, Protocol):
    """A :class:`~ipop.dht.alloc.DhtLike` that says which slots of a service we may hold
    (:meth:`ipop.dht.service.DhtService.service_slots`: they depend on whether the network's
    records are sealed)."""

    def service_slots(self, namespace: str, name: str, proto: str) -> tuple[int, ...]: ...


class ServicePublisher:
    """The services this node publishes in ``namespace``, each kept alive with a lease."""

    def __init__(
        self,
        dht: ServiceDht,
        namespace: str,
        *,
        ttl: float = DHT_LEASE_TTL_S,
        quota: int = SERVICE_QUOTA,
    ) -> None:
        """``quota``: services at most, what replicas keep for us (a router: more)."""
        self.dht = dht
        self.namespace = namespace
        self.ttl = ttl
        self.quota = quota
        self._held: dict[tuple[str, str], _Published] = {}
        self._lock = asyncio.Lock()

    def published(self) -> list[tuple[str, str, ServiceValue]]:
        """(name, proto, value) of every service we hold, sorted."""
        return sorted((n, p, pub.value) for (n, p), pub in self._held.items())

    async def publish(self, name: str, proto: str, value: ServiceValue) -> int:
        """Publish (or update) ``name``/``proto`` at ``value``; the slot it took.

        PublishFailed: a bad name or value, our quota full, or none of our slots free.
        """
        check_name(name, proto)
        try:
            data = value.encode()
        except ValueError as exc:
            raise PublishFailed(str(exc)) from None
        async with self._lock:
            current = self._held.get((name, proto))
            if current is None and len(self._held) >= self.quota:
                raise PublishFailed(
                    f"this node publishes {self.quota} services already, the most replicas "
                    "keep for one member: withdraw one first"
                )
            slots = self.dht.service_slots(self.namespace, name, proto)
            if current is not None:
                # Our slot first: an update replaces our own record there.
                slots = (current.slot, *(s for s in slots if s != current.slot))
                await current.lease.stop()
            for slot in slots:
                key = service_key(self.namespace, name, proto, slot)
                if await self.dht.create(key, data, self.ttl):
                    lease = DhtLease(self.dht, key, value=data, ttl=self.ttl)
                    lease.start()
                    self._held[(name, proto)] = _Published(value, slot, lease)
                    if current is not None and current.slot != slot:
                        await self.dht.delete(
                            service_key(self.namespace, name, proto, current.slot)
                        )
                    log.info("event=service_published name=%s proto=%s slot=%d", name, proto, slot)
                    return slot
            if current is not None:
                self._held.pop((name, proto))
            raise PublishFailed(
                f"none of this node's {len(slots)} slots of {name}/{proto} could be claimed "
                "(held by others, or no quorum of replicas answered): try again"
            )

    async def withdraw(self, name: str, proto: str) -> bool:
        """Withdraw ``name``/``proto`` now; False if we did not publish it."""
        async with self._lock:
            pub = self._held.pop((name, proto), None)
            if pub is None:
                return False
            if not await pub.lease.release():
                log.warning("event=service_withdraw_unconfirmed name=%s proto=%s", name, proto)
            log.info("event=service_withdrawn name=%s proto=%s", name, proto)
            return True

    async def stop(self) -> None:
        """Stop renewing without withdrawing: our instances lapse with their leases (what a
        publisher that dies leaves behind)."""
        async with self._lock:
            for pub in self._held.values():
                await pub.lease.stop()
            self._held.clear()

    async def withdraw_all(self) -> None:
        """Withdraw everything (the daemon stops)."""
        for name, proto, _ in self.published():
            await self.withdraw(name, proto)


class ServiceSpec(Protocol):
    """What :class:`ServiceKeeper` needs of a configured service (``ipop.config.ServiceConfig``)."""

    @property
    def name(self) -> str: ...
    @property
    def proto(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def txt(self) -> tuple[str, ...]: ...


S = TypeVar("S", bound=ServiceSpec)


class ServiceKeeper(Generic[S]):
    """Keeps ``services`` published at the address ``where`` gives each (None: withdrawn)."""

    def __init__(
        self,
        services: Iterable[S],
        *,
        where: Callable[[S], IPv4Address | None],
        publisher: Callable[[], ServicePublisher | None],
        what: str = "service",
    ) -> None:
        """``publisher``: the daemon's, None until it has an address; ``what``: the log
        event's prefix."""
        self.services = tuple(services)
        self._where = where
        self._publisher = publisher
        self._what = what
        self.published: dict[tuple[str, str], IPv4Address] = {}

    async def sync(self) -> int:
        """One round: publish, move or withdraw what changed; how many changed."""
        pub = self._publisher()
        if pub is None:
            return 0
        changed = 0
        for svc in self.services:
            key = (svc.name, svc.proto)
            vip = self._where(svc)
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
                log.warning("event=%s_failed name=%s error=%s", self._what, svc.name, exc)
        return changed

    async def run(self) -> None:
        """Sync now, then every :data:`ipop.timing.LAN_SERVICE_SYNC_S`."""
        while True:
            await self.sync()
            await asyncio.sleep(timing.LAN_SERVICE_SYNC_S)


async def list_services(
    dht: DhtLike,
    namespace: str,
    name: str,
    proto: str,
    *,
    subnet: IPv4Network | None = None,
) -> list[ServiceInstance]:
    """Every live instance of ``name``/``proto`` whose owner holds its address, sorted.

    Each slot's address check starts as soon as that slot is read: the reads of empty slots
    (a lookup that finds nothing) take longest, and the checks run alongside them.
    """
    check_name(name, proto)
    holders: dict[IPv4Address, asyncio.Task[Record | None]] = {}

    async def one(slot: int) -> ServiceInstance | None:
        record = await dht.get(service_key(namespace, name, proto, slot))
        if record is None or record.tombstone:
            return None
        try:
            value = decode_value(record.value)
        except RemoteProtocolError:
            return None
        if subnet is not None and value.addr not in subnet:
            return None
        # One read per address, shared by every slot naming it (a router's LAN host).
        task = holders.get(value.addr)
        if task is None:
            task = holders[value.addr] = asyncio.ensure_future(
                dht.get(ip_key(namespace, value.addr))
            )
        holder = await asyncio.shield(task)
        if holder is None or holder.owner != record.owner:
            return None
        return ServiceInstance(
            name, proto, value.addr, value.port, value.txt, record.owner, record.expires_at
        )

    try:
        results = await asyncio.gather(*(one(s) for s in range(SLOTS)), return_exceptions=True)
    finally:
        for task in holders.values():
            task.cancel()
    out: dict[tuple[NodeId, IPv4Address, int], ServiceInstance] = {}
    for inst in results:
        # One instance per (owner, address, port): copies in two slots (a moved publisher's
        # old slot, not yet withdrawn) count once.
        if isinstance(inst, ServiceInstance):
            out.setdefault((inst.owner, inst.addr, inst.port), inst)
    return sorted(out.values(), key=lambda i: (i.addr, i.port, i.owner.value))
