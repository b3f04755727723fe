"""Basic value types shared by every layer: overlay addresses and underlay endpoints.

A :class:`NodeId` is a 160-bit position on the overlay ring, derived from the hash of a node's
public key (so nobody chooses where they sit). Ring arithmetic is modulo 2**160.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import NamedTuple

from ipop.errors import ConfigError

ID_BITS = 160
ID_BYTES = ID_BITS // 8
RING = 1 << ID_BITS


@dataclass(frozen=True, order=True, slots=True)
class NodeId:
    """A 160-bit overlay address; ordered by its integer value."""

    value: int

    def __post_init__(self) -> None:
        if not 0 <= self.value < RING:
            raise ValueError(f"NodeId out of range: {self.value:#x}")

    @classmethod
    def from_bytes(cls, data: bytes) -> NodeId:
        if len(data) != ID_BYTES:
            raise ValueError(f"NodeId needs {ID_BYTES} bytes, got {len(data)}")
        return cls(int.from_bytes(data, "big"))

    @classmethod
    def from_hex(cls, text: str) -> NodeId:
        return cls.from_bytes(bytes.fromhex(text))

    def to_bytes(self) -> bytes:
        return self.value.to_bytes(ID_BYTES, "big")

    def hex(self) -> str:
        return self.to_bytes().hex()

    def short(self) -> str:
        """First 8 hex digits: enough to tell nodes apart in logs and tables."""
        return self.hex()[:8]

    def __str__(self) -> str:
        return self.hex()

    def __repr__(self) -> str:
        return f"NodeId({self.short()}…)"


def clockwise(a: NodeId, b: NodeId) -> int:
    """Distance going clockwise (increasing ids) from ``a`` to ``b``."""
    return (b.value - a.value) % RING


def ring_distance(a: NodeId, b: NodeId) -> int:
    """Shortest distance between ``a`` and ``b`` around the ring, either direction."""
    d = clockwise(a, b)
    return min(d, RING - d)


class Endpoint(NamedTuple):
    """An underlay (IPv4, UDP port) pair, as asyncio and the simulator both use them."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, text: str, *, key: str = "endpoint") -> Endpoint:
        """Parse ``HOST:PORT``; a malformed one raises :class:`ConfigError` naming ``key``."""
        host, sep, port_s = text.rpartition(":")
        fix = "write it as IPv4:PORT, e.g. 203.0.113.10:5800"
        if not sep or not host:
            raise ConfigError(key, f"{text!r} is not HOST:PORT", fix)
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ConfigError(key, f"{host!r} in {text!r} is not an IPv4 address", fix) from None
        if not port_s.isdigit() or not 0 < int(port_s) < 65536:
            raise ConfigError(key, f"port {port_s!r} in {text!r} is not 1-65535", fix)
        return cls(host, int(port_s))


@dataclass(frozen=True, slots=True)
class RelayPath:
    """A path to ``peer`` whose datagrams travel inside overlay messages through node ``via``.

    Sessions are path-agnostic: a link keyed over a RelayPath is as authenticated and as
    end-to-end encrypted as a direct one; ``via`` only forwards sealed bytes (Brunet's tunnel
    edge, DESIGN.md §5).
    """

    via: NodeId
    peer: NodeId

    def __str__(self) -> str:
        return f"relay:{self.via.short()}"


@dataclass(frozen=True, slots=True)
class SocketPath:
    """A direct path that leaves from one of the node's extra punching sockets, not its main one.

    Only port guessing toward a symmetric NAT makes these (:mod:`ipop.nat.portguess`): the hole it
    finds belongs to one of many local sockets, so replies and keepalives must leave from that
    socket. ``socket`` numbers start at 1 (0 would be the main socket, which uses a bare
    :class:`Endpoint`).
    """

    socket: int
    remote: Endpoint

    def __str__(self) -> str:
        return f"{self.remote}#{self.socket}"


# Where a link's datagrams go: straight to an underlay endpoint (from the main socket or from a
# punching socket), or through a relay node.
Path = Endpoint | RelayPath | SocketPath


def is_direct(path: Path) -> bool:
    """True for a path over the underlay (either socket kind), False for a relay path."""
    return type(path) is not RelayPath
