"""Names in a virtual network: address names that need no lookup, and hostnames in the DHT.

* Address names: ``C`` + the last three octets of the virtual IP, each zero-padded to three
  digits (``100.64.1.2`` → ``C064001002``). The first octet comes from the subnet, so any
  subnet of /8 or narrower maps names to addresses one to one and no lookup is needed.
* Hostnames: the record ``<namespace>:name:<hostname>`` (value: the 4-byte IPv4 address),
  claimed with the DHT's quorum create like an address. A hostname only resolves if the node
  that owns the name record also owns the address it points to, so nobody can point a name at
  someone else's address. Only the member whose certificate carries the hostname may hold it
  (:mod:`ipop.dht.policy`).
* LAN host names of a router: ``<host>.<router hostname>`` (:func:`lan_host_name`), held by
  that router alone; they can never equal a member's hostname, which has no dot.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Network

from ipop.dht.alloc import DhtLike
from ipop.dht.policy import is_name, lan_host_name
from ipop.dht.record import Record, ip_key, name_key
from ipop.errors import ConfigError
from ipop.timing import DHT_LEASE_TTL_S

__all__ = ["c_name", "lan_host_name", "lookup_name", "parse_c_name", "register_name"]

_C_NAME_RE = re.compile(r"^[cC]([0-9]{3})([0-9]{3})([0-9]{3})$")


def c_name(ip: IPv4Address) -> str:
    """``C`` + the last three octets of ``ip``, zero-padded: ``100.64.1.2`` → ``C064001002``."""
    o = ip.packed
    return f"C{o[1]:03d}{o[2]:03d}{o[3]:03d}"


def parse_c_name(name: str, subnet: IPv4Network) -> IPv4Address | None:
    """The address an address name stands for in ``subnet``, or None if it is not one.

    Case-insensitive (DNS is); octets above 255 or addresses outside ``subnet`` are not names.
    """
    m = _C_NAME_RE.match(name)
    if m is None:
        return None
    octets = [int(g) for g in m.groups()]
    if any(o > 255 for o in octets):
        return None
    addr = IPv4Address(bytes((subnet.network_address.packed[0], *octets)))
    return addr if addr in subnet else None


async def register_name(
    dht: DhtLike, namespace: str, hostname: str, ip: IPv4Address, *, ttl: float = DHT_LEASE_TTL_S
) -> bool:
    """Claim ``hostname`` → ``ip``; False if another node holds the name, or our certificate
    does not give it to us. Keep it with a lease.

    A malformed name raises :class:`ConfigError` (it comes from our own configuration).
    """
    if not is_name(hostname):
        raise ConfigError(
            "hostname",
            f"{hostname!r} is not a hostname or a <host>.<router hostname> name",
            "use 1-63 lowercase letters, digits and inner hyphens, e.g. 'alice-laptop'",
        )
    return await dht.create(name_key(namespace, hostname), ip.packed, ttl)


async def lookup_name(
    dht: DhtLike,
    namespace: str,
    name: str,
    subnet: IPv4Network,
    *,
    learned: Callable[[IPv4Address, Record], None] | None = None,
) -> IPv4Address | None:
    """Resolve an address name at once, a hostname through the DHT; None if unknown.
    Raises :class:`~ipop.dht.read.NoQuorum` when too few replicas answered to tell (DNS
    answers SERVFAIL, which no resolver caches, not NXDOMAIN).

    ``learned`` is given the address and its holder's record (the address's own, verified
    as any read) when a hostname resolves: the caller's first packet to it needs that owner,
    and would read the same record again."""
    addr = parse_c_name(name, subnet)
    if addr is not None:
        return addr
    hostname = name.lower()
    if not is_name(hostname):
        return None
    record = await dht.get(name_key(namespace, hostname), strict=True)
    if record is None or len(record.value) != 4:
        return None
    addr = IPv4Address(record.value)
    if addr not in subnet:
        return None
    holder = await dht.get(ip_key(namespace, addr), strict=True)
    if holder is None or holder.owner != record.owner:
        return None
    if learned is not None and not holder.tombstone:
        learned(addr, holder)
    return addr
