"""Virtual IP allocation on the DHT, and leases that keep owned keys alive.

An address belongs to whoever holds the live record ``<namespace>:ip:<addr>`` (created with the
DHT's quorum compare-and-set, IPOP's DHCP-over-DHT and Brunet's ``Create``, DESIGN.md §6).

Allocation: try ``preferred`` first (a restarting node asks for the address it had; its own
record, or an expired one, does not block it), then random addresses of the subnet, skipping
addresses tried already, until one ``create`` succeeds. ``preferred`` is given up only for a
rival: a failed ``create`` proves nobody else holds it (the replicas that answered may have
been too few for a quorum, e.g. right after a restart, while peers still route our answers
into the sessions that died with us), so while a read finds no live record of another owner
it is asked for again, up to ``PREFERRED_ATTEMPTS`` times ``PREFERRED_RETRY_S`` apart.
Before, the first failure sent a restarted ipopd to a random address (the soak's
``vips_kept`` false).

Addresses never handed out: the subnet's network address, its broadcast address, and the
first host (network address + 1, e.g. ``100.64.0.1`` in ``100.64.0.0/10``). By convention the
first host is the gateway: router mode (and a DHCP server on a LAN) answers from it, so no
node may hold it.

:class:`DhtLease` renews an owned key when ``renew_fraction`` of its TTL has passed (DHCP's T1)
and retries every ``DHT_LEASE_RETRY_S`` after a failed renewal; if our record lapsed and nobody
holds the key, it claims it again with ``create``; if another node holds it, the lease is lost
and ``on_lost`` is called.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Collection
from ipaddress import IPv4Address, IPv4Network
from typing import Any, Protocol

from ipop.dht.record import Record, ip_key
from ipop.errors import ConfigError, IpopError, LocalProtocolError
from ipop.timing import DHT_LEASE_RENEW_FRACTION, DHT_LEASE_RETRY_S, DHT_LEASE_TTL_S
from ipop.types import NodeId

log = logging.getLogger(__name__)

# Random addresses to try before giving up (each failure is a live conflict or a split vote).
ALLOC_ATTEMPTS = 32
# Claims of the preferred address that failed with no rival holding it, before we give it up;
# and the pause between them (a failed create has already backed off and retried inside).
PREFERRED_ATTEMPTS = 4
PREFERRED_RETRY_S = 1.0


class DhtLike(Protocol):
    """The operations of :class:`ipop.dht.service.DhtService` that leases and names use."""

    @property
    def node_id(self) -> NodeId: ...

    async def create(self, key: str, value: bytes, ttl: float) -> bool: ...
    async def renew(self, key: str, ttl: float) -> bool: ...
    async def delete(self, key: str) -> bool: ...
    async def get(self, key: str, *, strict: bool = False) -> Record | None: ...


class AllocationFailed(IpopError):
    """No address of the subnet could be claimed (full, or the DHT is unreachable)."""


def usable_range(subnet: IPv4Network) -> tuple[int, int]:
    """First and last address (as ints) a node may hold: network, gateway, broadcast excluded."""
    first = int(subnet.network_address) + 2
    last = int(subnet.broadcast_address) - 1
    if first > last:
        raise ConfigError("subnet", f"{subnet} has no usable host address", "use /29 or wider")
    return first, last


def is_usable(subnet: IPv4Network, addr: IPv4Address) -> bool:
    first, last = usable_range(subnet)
    return first <= int(addr) <= last


async def allocate_ip(
    dht: DhtLike,
    subnet: IPv4Network,
    *,
    namespace: str,
    rng: random.Random,
    preferred: IPv4Address | None = None,
    value: bytes = b"",
    ttl: float = DHT_LEASE_TTL_S,
    attempts: int = ALLOC_ATTEMPTS,
    avoid: Collection[IPv4Address] = (),
    pick: IPv4Address | None = None,
) -> IPv4Address:
    """Claim a free address of ``subnet`` under ``namespace``; raise :class:`AllocationFailed`.
    ``avoid``: never these, free or not (a daemon's addresses in its other networks).
    ``pick``: the first random address to try (one try, as any pick): one the caller chose
    beforehand with :func:`random_address`, e.g. to claim a name pointing at it meanwhile."""
    first, last = usable_range(subnet)
    tried: set[int] = {int(a) for a in avoid if first <= int(a) <= last}
    if preferred is not None and preferred in avoid:
        preferred = None
    if preferred is not None:
        if not is_usable(subnet, preferred):
            # A remembered address from before a subnet change: not an error, just unusable.
            log.warning("preferred address %s is not usable in %s", preferred, subnet)
        else:
            tried.add(int(preferred))
            if await _claim_preferred(dht, ip_key(namespace, preferred), value, ttl):
                return preferred
    span = last - first + 1
    for _ in range(attempts):
        if len(tried) >= span:
            break
        if pick is None or int(pick) in tried or not is_usable(subnet, pick):
            pick = random_address(subnet, rng, tried)
        tried.add(int(pick))
        if await dht.create(ip_key(namespace, pick), value, ttl):
            return pick
        pick = None
    raise AllocationFailed(f"no free address in {subnet} after {len(tried)} tries")


def random_address(subnet: IPv4Network, rng: random.Random, tried: Collection[int]) -> IPv4Address:
    """A usable address of ``subnet`` (uniform) not among ``tried`` (ints); ``subnet`` must
    have one left."""
    first, last = usable_range(subnet)
    addr = first + rng.randrange(last - first + 1)
    while addr in tried:
        addr = first + rng.randrange(last - first + 1)
    return IPv4Address(addr)


async def _claim_preferred(dht: DhtLike, key: str, value: bytes, ttl: float) -> bool:
    """Claim ``key`` (the preferred address), retrying while no other owner holds it."""
    for attempt in range(PREFERRED_ATTEMPTS):
        if await dht.create(key, value, ttl):
            return True
        holder = await dht.get(key)
        if holder is not None and holder.owner != dht.node_id:
            log.info("preferred address %s is held by %s", key, holder.owner.short())
            return False
        if attempt + 1 < PREFERRED_ATTEMPTS:
            await asyncio.sleep(PREFERRED_RETRY_S)
    log.warning("preferred address %s: no quorum after %d tries", key, PREFERRED_ATTEMPTS)
    return False


class DhtLease:
    """Keeps one owned DHT key alive until stopped or released."""

    def __init__(
        self,
        dht: DhtLike,
        key: str,
        *,
        value: bytes = b"",
        ttl: float = DHT_LEASE_TTL_S,
        renew_fraction: float = DHT_LEASE_RENEW_FRACTION,
        retry_s: float = DHT_LEASE_RETRY_S,
        on_lost: Callable[[], None] | None = None,
    ) -> None:
        if not 0 < renew_fraction < 1:
            raise LocalProtocolError("renew_fraction must be in (0, 1)")
        self.dht = dht
        self.key = key
        self.value = value
        self.ttl = ttl
        self.renew_fraction = renew_fraction
        self.retry_s = retry_s
        self.on_lost = on_lost
        self.renewals = 0
        self.failures = 0
        self.lost = False
        self._task: asyncio.Task[Any] | None = None

    def start(self) -> None:
        if self._task is not None:
            raise LocalProtocolError("lease already started")
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        delay = self.ttl * self.renew_fraction
        while True:
            await asyncio.sleep(delay)
            if await self.dht.renew(self.key, self.ttl):
                self.renewals += 1
                delay = self.ttl * self.renew_fraction
                continue
            self.failures += 1
            current = await self.dht.get(self.key)
            if current is not None and current.owner != self.dht.node_id:
                log.warning("lease on %s lost to %s", self.key, current.owner.short())
                self.lost = True
                if self.on_lost is not None:
                    self.on_lost()
                return
            if current is None and await self.dht.create(self.key, self.value, self.ttl):
                # Our record lapsed (renewals kept failing) but nobody took the key: re-claim.
                self.renewals += 1
                delay = self.ttl * self.renew_fraction
                continue
            delay = self.retry_s

    async def stop(self) -> None:
        """Stop renewing (the record lapses at its expiry)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def release(self) -> bool:
        """Stop renewing and delete the record now, freeing the key for others."""
        await self.stop()
        return await self.dht.delete(self.key)


class IpLease(DhtLease):
    """The lease on one virtual address."""

    def __init__(self, dht: DhtLike, namespace: str, address: IPv4Address, **kw: Any) -> None:
        super().__init__(dht, ip_key(namespace, address), **kw)
        self.namespace = namespace
        self.address = address


async def lease_ip(
    dht: DhtLike,
    subnet: IPv4Network,
    *,
    namespace: str,
    rng: random.Random,
    preferred: IPv4Address | None = None,
    ttl: float = DHT_LEASE_TTL_S,
    on_lost: Callable[[], None] | None = None,
) -> IpLease:
    """Allocate an address (``preferred`` first) and start renewing it."""
    addr = await allocate_ip(
        dht, subnet, namespace=namespace, rng=rng, preferred=preferred, ttl=ttl
    )
    lease = IpLease(dht, namespace, addr, ttl=ttl, on_lost=on_lost)
    lease.start()
    return lease
