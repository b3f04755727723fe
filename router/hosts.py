"""The router's table of plain LAN hosts: MAC ↔ virtual IP, names, lease, kind; sans-IO.

It owns the facts the packet path needs (which MAC a vIP is written to; whether a frame's
source MAC and IP belong together) and the source check itself, with drops counted by
reason. The DHT records behind the entries (held by the router's node identity) and the DHCP
bindings are the router daemon's; this table is only told about them.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Final

from ipop.errors import LocalProtocolError

__all__ = ["DROP_REASONS", "LanHost", "LanHosts", "mac_str"]

# Every reason LanHosts.drops counts under (status: "lan.<reason>").
DROP_REASONS: Final = frozenset(
    {
        "lan_unknown_src",  # an IPv4 frame from an address no known host holds
        "lan_spoofed_src",  # a known host's address from another MAC
    }
)

_ETH_IP = b"\x08\x00"


def mac_str(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


@dataclass(slots=True)
class LanHost:
    """A host on the router's LAN: its MAC, vIP, names, and how it got its address."""

    mac: bytes
    vip: IPv4Address
    kind: str  # "dhcp" | "static"
    names: list[str] = field(default_factory=list)
    expires: float | None = None  # DHCP lease end (UNIX time); None: static or not yet ACKed
    last_seen: float = 0.0


class LanHosts:
    """MAC ↔ vIP for the hosts on one LAN; see the module docstring."""

    def __init__(self, *, max_hosts: int = 1024) -> None:
        self.max_hosts = max_hosts
        self.drops: collections.Counter[str] = collections.Counter()
        self._by_mac: dict[bytes, LanHost] = {}
        self._by_ip: dict[bytes, LanHost] = {}
        # Ethernet header (dst = host MAC, src = ours, IPv4) per vIP, for the write path.
        self._headers: dict[bytes, bytes] = {}
        self.own_mac = b""

    def __len__(self) -> int:
        return len(self._by_mac)

    def hosts(self) -> list[LanHost]:
        return list(self._by_mac.values())

    def by_mac(self, mac: bytes) -> LanHost | None:
        return self._by_mac.get(mac)

    def by_ip(self, vip: IPv4Address) -> LanHost | None:
        return self._by_ip.get(vip.packed)

    def add(self, host: LanHost) -> None:
        """Bind ``host.vip`` to ``host.mac`` (replacing the MAC's earlier binding)."""
        other = self._by_ip.get(host.vip.packed)
        if other is not None and other.mac != host.mac:
            raise LocalProtocolError(f"{host.vip} is already bound to {mac_str(other.mac)}")
        if host.mac not in self._by_mac and len(self._by_mac) >= self.max_hosts:
            raise LocalProtocolError("the LAN host table is full")
        self.remove(host.mac)
        self._by_mac[host.mac] = host
        self._by_ip[host.vip.packed] = host
        self._headers[host.vip.packed] = host.mac + self.own_mac + _ETH_IP

    def remove(self, mac: bytes) -> LanHost | None:
        host = self._by_mac.pop(mac, None)
        if host is not None:
            self._by_ip.pop(host.vip.packed, None)
            self._headers.pop(host.vip.packed, None)
        return host

    # --- the packet path (ipop.aio.dataplane.LocalSide) ----------------------------------------

    def header_for(self, packet: bytes) -> bytes | None:
        return self._headers.get(packet[16:20])

    def admit(self, frame: memoryview, *, now: float) -> bool:
        """An IPv4 frame from the LAN may enter the overlay only from a known (MAC, vIP)."""
        host = self._by_ip.get(bytes(frame[26:30]))
        if host is None:
            self.drops["lan_unknown_src"] += 1
            return False
        if host.mac != frame[6:12]:
            self.drops["lan_spoofed_src"] += 1
            return False
        host.last_seen = now
        return True
