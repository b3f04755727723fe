"""The things of the simulated world: segments, hosts, their UDP sockets and NAT boxes.

This module owns the objects a test or scenario holds (:class:`Host`, :class:`SimSocket`,
:class:`NatBox`, :class:`Segment`), their limits (MTU, ephemeral ports) and the packet trace's
record. What happens to a datagram between them is :class:`~ipop.testing.netsim.Network`'s
job: a socket hands every datagram to its network, a NAT box asks its network for addresses.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from ipop.errors import LocalProtocolError
from ipop.nat.kinds import NatKind
from ipop.testing.nat import KIND_NONE, NatBehaviour, NatTable
from ipop.types import Endpoint

if TYPE_CHECKING:
    from ipop.testing.netsim import Network

__all__ = [
    "DEFAULT_MTU",
    "EPHEMERAL_MAX",
    "EPHEMERAL_MIN",
    "UDP_IP_OVERHEAD",
    "Host",
    "NatBox",
    "OnDatagram",
    "Segment",
    "SimSocket",
    "TraceRecord",
]

# IPv4 header (20) + UDP header (8): what a UDP payload costs against an IP MTU.
UDP_IP_OVERHEAD = 28

EPHEMERAL_MIN = 49152
EPHEMERAL_MAX = 65535
DEFAULT_MTU = 1500

OnDatagram = Callable[[bytes, Endpoint], None]


class TraceRecord(NamedTuple):
    """One line of the packet trace. ``event``: sent, delivered, dropped, nat_out, nat_in."""

    time: float
    event: str
    src: Endpoint
    dst: Endpoint
    size: int
    note: str


class Segment:
    """A link layer with one latency, jitter, loss and MTU: the internet or a LAN."""

    __slots__ = (
        "_next_index",
        "hosts",
        "jitter_s",
        "latency_s",
        "loss",
        "mtu",
        "name",
        "nat",
        "subnet",
    )

    def __init__(
        self,
        name: str,
        *,
        subnet: ipaddress.IPv4Network | None,
        latency_s: float,
        jitter_s: float = 0.0,
        loss: float = 0.0,
        mtu: int = DEFAULT_MTU,
    ) -> None:
        if latency_s < 0 or jitter_s < 0:
            raise LocalProtocolError(f"segment {name!r}: latency and jitter must be >= 0")
        if not 0.0 <= loss <= 1.0:
            raise LocalProtocolError(f"segment {name!r}: loss must be within 0..1, got {loss}")
        if mtu < UDP_IP_OVERHEAD:
            raise LocalProtocolError(f"segment {name!r}: mtu {mtu} is below {UDP_IP_OVERHEAD}")
        self.name = name
        self.subnet = subnet
        self.latency_s = float(latency_s)
        self.jitter_s = float(jitter_s)
        self.loss = float(loss)
        self.mtu = int(mtu)
        # Hosts on this segment by address (a LAN's; the internet keeps its own table).
        self.hosts: dict[str, Host] = {}
        self.nat: NatBox | None = None
        self._next_index = 2  # .1 is the NAT's inside address

    def next_free_address(self) -> str | None:
        """The next address of this LAN that no host holds, counting up from .2 and never
        back (None when the count has passed the last host address)."""
        assert self.subnet is not None
        last = self.subnet.num_addresses - 2
        while self._next_index <= last:
            candidate = str(self.subnet.network_address + self._next_index)
            self._next_index += 1
            if candidate not in self.hosts:
                return candidate
        return None

    def __repr__(self) -> str:
        return (
            f"Segment({self.name!r}, {self.subnet or 'internet'}, latency={self.latency_s}s, "
            f"jitter={self.jitter_s}s, loss={self.loss}, mtu={self.mtu})"
        )


class SimSocket:
    """A bound UDP port on a simulated host; the driver's ``DatagramSocket`` shape."""

    __slots__ = ("_network", "closed", "host", "local", "on_datagram")

    def __init__(self, host: Host, port: int, on_datagram: OnDatagram) -> None:
        self.host = host
        self.local = Endpoint(host.address, port)
        self.on_datagram = on_datagram
        self.closed = False
        self._network = host.network

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        """Send one datagram; it arrives later (or never), never inside this call."""
        if self.closed:
            raise LocalProtocolError(f"sendto on closed socket {self.local}")
        self._network.send_datagram(self, data, addr)

    def send_batch(self, datagrams: list[bytes], addr: tuple[str, int]) -> None:
        """Send each datagram in order (a real socket may hand a run to GSO)."""
        for data in datagrams:
            self.sendto(data, addr)

    def close(self) -> None:
        """Unbind; datagrams arriving afterwards are dropped as "no_listener"."""
        if not self.closed:
            self.closed = True
            self.host.unbind(self)

    def __repr__(self) -> str:
        return f"SimSocket({self.host.name} {self.local}{' closed' if self.closed else ''})"


class Host:
    """A machine with one IPv4 address on one segment."""

    __slots__ = ("_sockets", "address", "name", "nat", "network", "segment")

    def __init__(
        self, network: Network, name: str, address: str, segment: Segment, nat: NatBox | None
    ) -> None:
        self.network = network
        self.name = name
        self.address = address
        self.segment = segment
        self.nat = nat
        self._sockets: dict[int, SimSocket] = {}

    @property
    def nat_kind(self) -> NatKind:
        """The classic name of the NAT in front of this host; "none" on the internet."""
        return KIND_NONE if self.nat is None else self.nat.kind

    @property
    def public_ip(self) -> str:
        """The address the internet sees this host's traffic come from."""
        return self.address if self.nat is None else self.nat.public_ip

    def bind(self, port: int, on_datagram: OnDatagram) -> SimSocket:
        """Bind ``port`` (0: a free ephemeral port drawn from the network's rng)."""
        if not 0 <= port <= 65535:
            raise LocalProtocolError(f"{self.name}: port {port} is not 0-65535")
        if port == 0:
            rng = self.network.rng
            port = rng.randint(EPHEMERAL_MIN, EPHEMERAL_MAX)
            while port in self._sockets:
                port = rng.randint(EPHEMERAL_MIN, EPHEMERAL_MAX)
        elif port in self._sockets:
            raise LocalProtocolError(f"{self.name}: port {port} is already bound")
        sock = SimSocket(self, port, on_datagram)
        self._sockets[port] = sock
        return sock

    def sockets(self) -> list[SimSocket]:
        return list(self._sockets.values())

    def socket_at(self, port: int) -> SimSocket | None:
        """The socket bound to ``port``, if any (the network delivers to it)."""
        return self._sockets.get(port)

    def unbind(self, sock: SimSocket) -> None:
        """Forget ``sock`` (its :meth:`SimSocket.close`), unless its port is bound anew."""
        if self._sockets.get(sock.local.port) is sock:
            del self._sockets[sock.local.port]

    def __repr__(self) -> str:
        return f"Host({self.name!r}, {self.address}, nat={self.nat_kind})"


class NatBox:
    """A NAT between one LAN and the internet, with one public address."""

    __slots__ = ("behaviour", "lan", "lan_ip", "name", "network", "public_ip", "table")

    def __init__(
        self,
        network: Network,
        name: str,
        public_ip: str,
        lan: Segment,
        behaviour: NatBehaviour,
    ) -> None:
        assert lan.subnet is not None
        self.network = network
        self.name = name
        self.public_ip = public_ip
        self.lan = lan
        self.lan_ip = str(lan.subnet.network_address + 1)
        self.behaviour = behaviour
        self.table = NatTable(public_ip, behaviour, network.rng)
        lan.nat = self

    @property
    def kind(self) -> NatKind:
        return self.behaviour.kind

    def add_host(self, name: str, *, address: str | None = None) -> Host:
        """A new host on this NAT's LAN (next free address unless ``address`` is given)."""
        return self.network.add_lan_host(self, name, address)

    def hosts(self) -> list[Host]:
        return list(self.lan.hosts.values())

    def __repr__(self) -> str:
        return f"NatBox({self.name!r}, {self.public_ip}, {self.kind}, lan={self.lan.subnet})"
