"""The node's own virtual address in the DHT: :class:`AddressKeeper`.

It owns the state file that keeps the address across restarts (``state.json`` in the state
directory: ``{"vip": ..., "network": ...}``), the claim (the saved address first, retried
every ``VIP_ALLOC_RETRY_S`` while the DHT converges), the lease that renews the address record,
and the names that point at it: the c-name, always, and the certificate's hostname when the
DHT gives it to us, with its own lease. Stopping lets the records lapse: a restart within the
lease gets the same address and names back.

The hostname is claimed at the same time as the address, pointing at the address tried first
(the saved one, else a random pick chosen beforehand), and claimed again for the address granted
if that differs or the early claim failed. Why: a fresh node's two claims, each a quorum create
with its lookups, took ~1-3 s one after the other in a 32-daemon cold start; a name pointing at
an address we do not hold resolves to nothing (:func:`ipop.dht.names.lookup_name` checks the
holder), so claiming it early promises nothing false.

What the address is used for (the data plane's own IP, ARP, the TAP, DHCP) stays with the
daemon, which configures those between :meth:`AddressKeeper.claim` and
:meth:`AddressKeeper.name`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
from collections.abc import Collection
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from ipop import timing
from ipop.dht.alloc import DhtLease, DhtLike, IpLease, allocate_ip, is_usable, random_address
from ipop.dht.names import c_name, register_name
from ipop.dht.record import name_key

__all__ = ["AddressKeeper"]

log = logging.getLogger("ipopd")


class AddressKeeper:
    """One virtual address of ``network`` held through ``dht``; see the module docstring."""

    def __init__(
        self,
        *,
        state_dir: Path,
        network: str,
        namespace: str,
        subnet: IPv4Network,
        suffix: str,
        lease_s: float,
        rng: random.Random,
    ) -> None:
        self.state_file = state_dir / "state.json"
        self.network = network
        self.namespace = namespace  # of our DHT keys (ipop.dht.record.namespace_of)
        self.subnet = subnet
        self.suffix = suffix
        self.lease_s = lease_s
        self.rng = rng
        self.lease: IpLease | None = None
        self.name_lease: DhtLease | None = None
        self.names: list[str] = []
        # The hostname's claim started by claim(), and the address it points at.
        self._naming: asyncio.Task[bool] | None = None
        self._named_at: IPv4Address | None = None

    def saved(self) -> IPv4Address | None:
        """The address the state file keeps, if it is one of our subnet."""
        try:
            data = json.loads(self.state_file.read_text())
            addr = IPv4Address(data["vip"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return addr if addr in self.subnet else None

    def save(self, vip: IPv4Address) -> None:
        path = self.state_file
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"vip": str(vip), "network": self.network}) + "\n")
        os.replace(tmp, path)

    async def claim(
        self,
        dht: DhtLike,
        *,
        avoid: Collection[IPv4Address] = (),
        hostname: str | None = None,
    ) -> IPv4Address:
        """Claim an address (the saved one first) until the DHT grants one; save it and keep
        it with a lease. ``avoid``: none of these (our addresses in other networks).
        ``hostname``: claimed meanwhile, pointing at the first address tried (:meth:`name`
        finishes it)."""
        preferred = self.saved()
        pick: IPv4Address | None = None
        if hostname and self._naming is None:
            if (
                preferred is not None
                and preferred not in avoid
                and is_usable(self.subnet, preferred)
            ):
                self._named_at = preferred
            else:
                tried = {int(a) for a in avoid}
                self._named_at = pick = random_address(self.subnet, self.rng, tried)
            self._naming = asyncio.get_running_loop().create_task(
                register_name(dht, self.namespace, hostname, self._named_at, ttl=self.lease_s)
            )
        while True:
            try:
                vip = await allocate_ip(
                    dht,
                    self.subnet,
                    namespace=self.namespace,
                    rng=self.rng,
                    preferred=preferred,
                    ttl=self.lease_s,
                    avoid=avoid,
                    pick=pick,
                )
                break
            except Exception as exc:  # the DHT may still be converging: try again
                log.warning("event=alloc_retry error=%s", exc)
                pick = None
                await asyncio.sleep(timing.VIP_ALLOC_RETRY_S)
        self.save(vip)
        self.lease = IpLease(dht, self.namespace, vip, ttl=self.lease_s)
        self.lease.start()
        return vip

    async def name(self, dht: DhtLike, vip: IPv4Address, hostname: str | None) -> list[str]:
        """The names that resolve to ``vip``: its c-name, and ``hostname`` if the DHT grants
        it (then kept with a lease; a name another node holds is logged and left out)."""
        names = [f"{c_name(vip)}.{self.suffix}"]
        if hostname:
            if await self._claim_name(dht, vip, hostname):
                names.append(f"{hostname}.{self.suffix}")
                self.name_lease = DhtLease(
                    dht, name_key(self.namespace, hostname), value=vip.packed, ttl=self.lease_s
                )
                self.name_lease.start()
            else:
                log.warning("event=name_taken hostname=%s", hostname)
        self.names = names
        return list(names)

    async def _claim_name(self, dht: DhtLike, vip: IPv4Address, hostname: str) -> bool:
        """Finish the hostname's claim that :meth:`claim` started, or claim it now: again for
        ``vip`` if the early claim pointed elsewhere or failed (a ring still forming refuses
        creates it will grant a second later; our own record does not block us)."""
        task, at = self._naming, self._named_at
        self._naming = self._named_at = None
        if task is not None:
            try:
                if await task and at == vip:
                    return True
            except Exception as exc:  # a real fault raises again from the claim below
                log.debug("event=name_early_claim_failed hostname=%s error=%r", hostname, exc)
        return await register_name(dht, self.namespace, hostname, vip, ttl=self.lease_s)

    async def stop(self) -> None:
        """Stop renewing; the records lapse at their expiry."""
        if self._naming is not None:
            self._naming.cancel()
            await asyncio.gather(self._naming, return_exceptions=True)
            self._naming = None
        for lease in (self.lease, self.name_lease):
            if lease is not None:
                await lease.stop()
