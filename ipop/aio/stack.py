"""A complete node on an asyncio loop: :class:`ipop.core.NodeCore` + driver + DHT + overlay ping.

This is the one composition of the protocol stack; the daemon (on a real UDP socket and the
real clock) and the simulator (on ``ipop.testing.netsim`` sockets and the virtual-time loop)
both build exactly this object, so what the simulator proves is what the daemon runs.

Upper-layer kinds arriving in :class:`ipop.overlay.events.Delivered` are dispatched through a
table: DHT payloads go to the :class:`DhtService` (whose protocol checks that the kademlia
sender id equals the overlay source, and the overlay has checked the source against the link
for the first hop), overlay pings are answered here, IP packets go to ``on_ip``.

Overlay ping (KIND_PING) payload::

    +--------+----------------+--------+
    |  op    |  token (u32)   |  hops  |     op 0 request, 1 reply; hops: the request's
    +--------+----------------+--------+     link count as the responder saw it
"""

from __future__ import annotations

import asyncio
import logging
import random
import struct
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Network
from typing import Protocol

from ipop import timing
from ipop.aio.driver import DatagramSocket, Driver
from ipop.core import NodeCore
from ipop.dht.record import namespace_of
from ipop.dht.service import DhtConfig, DhtService
from ipop.errors import LocalProtocolError
from ipop.identity import NodeIdentity, VerifiedCrl
from ipop.link.layer import LinkConfig
from ipop.overlay.events import Delivered, Joined, Roamed, Routable
from ipop.overlay.messages import KIND_DHT, KIND_IP, KIND_IP_NET, KIND_PING
from ipop.overlay.node import OverlayConfig
from ipop.tasks import TaskSet
from ipop.types import Endpoint, NodeId, Path, SocketPath

__all__ = ["Node", "OverlayPing"]

# The name ipopd's log lines have always carried for this module (it was ipop/aio/node.py).
log = logging.getLogger("ipop.aio.node")

_PING = struct.Struct(">BIB")
_PING_REQUEST = 0
_PING_REPLY = 1


@dataclass(frozen=True, slots=True)
class OverlayPing:
    """An overlay-level ping's answer: ``hops`` links out (0 = over a direct link)."""

    rtt_s: float
    hops: int
    reply_hops: int

    @property
    def path(self) -> str:
        return "direct" if self.hops == 0 else "overlay"


class PunchSocket(Protocol):
    """An extra socket for port guessing (the real UDP one and the simulator's both fit)."""

    def sendto(self, data: bytes, addr: Endpoint) -> None: ...
    def send_batch(self, datagrams: list[bytes], addr: Endpoint) -> None: ...
    def close(self) -> None: ...


# Opens one punching socket whose datagrams go to the callback (OSError if it cannot).
OpenSocket = Callable[[Callable[[bytes, tuple[str, int]], None]], PunchSocket]


class _Port:
    """The DHT's view of this node (ipop.dht.shim.OverlayPort)."""

    def __init__(self, node: Node) -> None:
        self._node = node

    @property
    def local_id(self) -> NodeId:
        return self._node.node_id

    def send_dht(self, dst: NodeId, payload: bytes) -> None:
        self._node.send_routed(dst, KIND_DHT, payload)

    def linked_peers(self) -> list[NodeId]:
        return self._node.core.overlay.connected_peers()


class Node:
    """One node. Call :meth:`attach` with its socket, then :meth:`start`; :meth:`close` ends it."""

    def __init__(
        self,
        identity: NodeIdentity,
        *,
        bootstrap: Sequence[Endpoint],
        clock: Callable[[], float],
        rng: random.Random,
        overlay_config: OverlayConfig | None = None,
        link_config: LinkConfig | None = None,
        dht_config: DhtConfig | None = None,
        on_ip: Callable[[NodeId, bytes], None] | None = None,
        member: NodeIdentity | None = None,
        random_bytes: Callable[[int], bytes] | None = None,
        overlay_only: bool = False,
    ) -> None:
        """``identity``: the overlay identity (links, routing); ``member``: the network
        identity over the same key, which signs and checks DHT records (default: the same
        object, a network that is its own overlay); ``random_bytes``: see
        :class:`ipop.core.NodeCore` (the daemon's is the OS's). ``overlay_only``: a node of
        no network (no ``member``): its DHT stores every network's records, writes none."""
        if overlay_only and member is not None:
            raise LocalProtocolError("an overlay-only node has no network identity")
        self.core = NodeCore(
            identity,
            rng=random.Random(rng.random()),
            bootstrap=bootstrap,
            overlay_config=overlay_config,
            link_config=link_config,
            member=member,
            random_bytes=random_bytes,
        )
        self.identity = identity
        self.member = self.core.member
        self.node_id = identity.node_id
        self.clock = clock
        self._rng = rng
        self._dht_config = dht_config
        self.overlay_only = overlay_only
        self.on_ip = on_ip
        # IP tagged with its network (KIND_IP_NET, tag + packet; ipop.vnet.networks): the
        # data plane's, which knows the daemon's networks.
        self.on_net_ip: Callable[[NodeId, bytes], None] | None = None
        # Our other networks (add_network): identity there, subnet.
        self._other_networks: list[tuple[NodeIdentity, IPv4Network]] = []
        self.dht: DhtService | None = None
        self.driver: Driver | None = None
        self.routable = asyncio.Event()
        self.joined = asyncio.Event()
        self.dht_ready = asyncio.Event()
        self.routable_at: float | None = None
        self.stats: Counter[str] = Counter()
        self._pings: dict[int, tuple[asyncio.Future[OverlayPing], float]] = {}
        self._tasks = TaskSet(self._task_failed)
        self._closed = False
        self._open_socket: OpenSocket | None = None
        self._punch_socks: dict[int, PunchSocket] = {}
        self._punch_sweep: asyncio.TimerHandle | None = None
        # Set by a data plane (the daemon's): datagrams on punching sockets go to its fast path
        # (which pumps the driver itself); None: they go the slow path here.
        self.punch_sink: Callable[[bytes, SocketPath], None] | None = None
        self._kinds: dict[int, Callable[[Delivered], None]] = {
            KIND_DHT: self._on_dht,
            KIND_IP: self._on_ip,
            KIND_IP_NET: self._on_net_ip,
            KIND_PING: self._on_ping,
        }

    # --- lifecycle --------------------------------------------------------------------------

    def add_network(self, member: NodeIdentity, subnet: IPv4Network) -> None:
        """One more network of this node (a daemon in several, issue 17), before
        :meth:`start`: its certificate signs that network's DHT records, its CA checks its
        members' (:meth:`ipop.dht.service.DhtService.add_network`,
        :meth:`ipop.core.NodeCore.add_network`)."""
        if self.overlay_only:
            raise LocalProtocolError("an overlay-only node has no network identity")
        if self.dht is not None:
            raise LocalProtocolError("add networks before start()")
        self.core.add_network(member)
        self._other_networks.append((member, subnet))

    def attach(self, sock: DatagramSocket, *, open_socket: OpenSocket | None = None) -> None:
        """Give the node its underlay socket (feed its input to :meth:`datagram_received`).

        ``open_socket`` opens the extra sockets port guessing needs (:mod:`ipop.nat.portguess`), on
        first use; without it a node behind a symmetric NAT cannot guess its way to a peer
        behind a port-restricted one and stays relayed there.
        """
        self._open_socket = open_socket
        self.driver = Driver(
            self.core,
            sock,
            clock=self.clock,
            on_event=self._on_event,
            on_other_path=self._send_other,
        )

    def send_batch_on_path(self, datagrams: list[bytes], path: SocketPath) -> None:
        """Send datagrams the data plane sealed for a peer on a punching socket's path."""
        sock = self._punch_socket(path)
        if sock is not None:
            sock.send_batch(datagrams, path.remote)

    def _send_other(self, data: bytes, path: Path) -> None:
        if type(path) is not SocketPath:
            self.stats["unsendable_path"] += 1
            return
        sock = self._punch_socket(path)
        if sock is not None:
            sock.sendto(data, path.remote)

    def _punch_socket(self, path: SocketPath) -> PunchSocket | None:
        """The punching socket ``path`` leaves from, opened on first use (None: cannot)."""
        sock = self._punch_socks.get(path.socket)
        if sock is None:
            if self._open_socket is None or self._closed:
                self.stats["no_punch_socket"] += 1
                return None
            index = path.socket
            try:
                sock = self._open_socket(lambda data, addr: self._punch_received(index, data, addr))
            except OSError:
                self.stats["punch_socket_failed"] += 1
                return None
            self._punch_socks[index] = sock
            if self._punch_sweep is None:
                self._punch_sweep = asyncio.get_running_loop().call_later(
                    timing.PUNCH_SOCKET_IDLE_S, self._sweep_punch_sockets
                )
        return sock

    def _sweep_punch_sockets(self) -> None:
        """Close the punching sockets no session runs on once guessing has been idle a while
        (each one holds a descriptor and a NAT mapping for nothing)."""
        self._punch_sweep = None
        if self._closed:
            return
        if self.clock() - self.core.birthday.last_open_at >= timing.PUNCH_SOCKET_IDLE_S:
            in_use = {
                info.path.socket for info in self.core.link.peers() if type(info.path) is SocketPath
            }
            for index in [i for i in self._punch_socks if i not in in_use]:
                self._punch_socks.pop(index).close()
                self.stats["punch_socket_closed"] += 1
        if self._punch_socks:
            self._punch_sweep = asyncio.get_running_loop().call_later(
                timing.PUNCH_SOCKET_IDLE_S, self._sweep_punch_sockets
            )

    def _punch_received(self, index: int, data: bytes, addr: tuple[str, int]) -> None:
        if self._closed or self.driver is None:
            return
        path = SocketPath(index, Endpoint(addr[0], addr[1]))
        if self.punch_sink is not None:
            self.punch_sink(data, path)
            return
        self.core.receive_datagram(data, path, now=self.clock())
        self.driver.pump()

    @property
    def punch_sockets(self) -> int:
        """How many punching sockets are open."""
        return len(self._punch_socks)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.driver is not None
        self.driver.datagram_received(data, addr)

    def start(self) -> None:
        """Join the overlay; the DHT joins as soon as the node is routable."""
        if self.driver is None:
            raise RuntimeError("attach() a socket before start()")
        self.dht = DhtService(
            self.member,
            _Port(self),
            rng=random.Random(self._rng.random()),
            config=self._dht_config,
            # Leases and certificates are UNIX time; the loop's time is per-host monotonic.
            clock=self.clock,
            member=not self.overlay_only,
            revoked=self.core.network_crls.revoked,
            # Every node of the overlay holds its CA's certificate: its namespace needs none.
            overlay=namespace_of(self.core.identity.trust),
        )
        for member, subnet in self._other_networks:
            self.dht.add_network(member, subnet=subnet)
        self.core.start(now=self.clock())
        self.driver.pump()
        self._tasks.spawn(self._join_dht())

    def apply_crl(self, data: bytes) -> VerifiedCrl:
        """Install a revocation list handed over locally and spread it (see NodeCore)."""
        crl = self.core.apply_crl(data, now=self.clock())
        if self.driver is not None:
            self.driver.pump()
        return crl

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._tasks.close()
        for fut, _ in self._pings.values():
            fut.cancel()
        self._pings.clear()
        if self.dht is not None:
            await self.dht.close()
        if self.driver is not None:
            self.driver.close()
        if self._punch_sweep is not None:
            self._punch_sweep.cancel()
            self._punch_sweep = None
        socks, self._punch_socks = self._punch_socks, {}
        for sock in socks.values():
            sock.close()

    def _task_failed(self, exc: BaseException) -> None:
        # Counted each time, logged the first time only: a failure that repeats must not
        # flood the log.
        self.stats["task_failed"] += 1
        if self.stats["task_failed"] == 1:
            log.error("event=task_failed error=%r", exc, exc_info=exc)

    async def _join_dht(self) -> None:
        # The DHT only needs routing to work, not the full near set: join as soon as the ring
        # answered our JOIN (Routable, the stricter fact, comes later), or through our links
        # if that answer is late (timing.DHT_JOIN_WAIT_S).
        try:
            await asyncio.wait_for(self.joined.wait(), timing.DHT_JOIN_WAIT_S)
        except TimeoutError:
            self.stats["dht_join_before_overlay"] += 1
        assert self.dht is not None
        while not self._closed:
            known = sorted(self.core.overlay.near_peers()) or sorted(
                self.core.overlay.connected_peers()
            )
            if known and await self.dht.bootstrap(known):
                self.dht_ready.set()
                return
            self.stats["dht_join_retry"] += 1
            await asyncio.sleep(timing.DHT_JOIN_RETRY_S)

    def set_local_endpoints(self, endpoints: Sequence[Endpoint]) -> None:
        """Our socket's addresses changed (the address watcher, :mod:`ipop.aio.addrwatch`):
        roam (see :meth:`ipop.core.NodeCore.local_endpoints_changed`)."""
        self.core.local_endpoints_changed(endpoints, now=self.clock())
        if self.driver is not None:
            self.driver.pump()

    # --- sending ----------------------------------------------------------------------------

    def send(self, dst: NodeId, kind: int, payload: bytes) -> bool:
        """Direct if linked, else routed (and a shortcut is asked for)."""
        ok = self.core.send(dst, kind, payload, now=self.clock())
        if self.driver is not None:
            self.driver.pump()
        return ok

    def send_routed(self, dst: NodeId, kind: int, payload: bytes, *, exact: bool = True) -> bool:
        ok = self.core.send_routed(dst, kind, payload, exact=exact, now=self.clock())
        if self.driver is not None:
            self.driver.pump()
        return ok

    def send_ip(self, dst: NodeId, packet: bytes) -> bool:
        return self.send(dst, KIND_IP, packet)

    async def ping(
        self, dst: NodeId, *, timeout_s: float = 2.0, routed: bool = False
    ) -> OverlayPing:
        """Overlay-level echo to node ``dst``; raises TimeoutError when no reply came in time."""
        token = self._rng.getrandbits(32)
        while token in self._pings:
            token = self._rng.getrandbits(32)
        fut: asyncio.Future[OverlayPing] = asyncio.get_running_loop().create_future()
        self._pings[token] = (fut, self.clock())
        payload = _PING.pack(_PING_REQUEST, token, 0)
        try:
            if routed:
                self.send_routed(dst, KIND_PING, payload)
            else:
                self.send(dst, KIND_PING, payload)
            return await asyncio.wait_for(fut, timeout_s)
        finally:
            self._pings.pop(token, None)

    # --- events -----------------------------------------------------------------------------

    def _on_event(self, ev: object) -> None:
        if type(ev) is Delivered:
            handler = self._kinds.get(ev.kind)
            if handler is None:
                self.stats["unknown_kind"] += 1
            else:
                handler(ev)
        elif type(ev) is Routable and not self.routable.is_set():
            self.routable_at = self.clock()
            self.routable.set()
            self.joined.set()  # (a Routable without a Joined before it: joined all the same)
        elif type(ev) is Joined:
            self.joined.set()
        elif type(ev) is Roamed:
            self.stats[f"roamed_{ev.reason}"] += 1
            log.info(
                "event=roamed reason=%s node=%s endpoints=%s",
                ev.reason,
                self.node_id.short(),
                ",".join(map(str, self.core.overlay.endpoints())),
            )

    def _on_dht(self, ev: Delivered) -> None:
        if self.dht is not None:
            self.dht.deliver(ev.src, ev.payload)

    def _on_ip(self, ev: Delivered) -> None:
        if self.on_ip is not None:
            self.on_ip(ev.src, ev.payload)

    def _on_net_ip(self, ev: Delivered) -> None:
        if self.on_net_ip is not None:
            self.on_net_ip(ev.src, ev.payload)

    def _on_ping(self, ev: Delivered) -> None:
        if len(ev.payload) != _PING.size:
            self.stats["ping_malformed"] += 1
            return
        op, token, hops = _PING.unpack(ev.payload)
        if op == _PING_REQUEST:
            # Answer the way it came: direct if it came direct, else routed back.
            reply = _PING.pack(_PING_REPLY, token, ev.hops)
            if ev.hops == 0:
                self.send(ev.src, KIND_PING, reply)
            else:
                self.send_routed(ev.src, KIND_PING, reply)
        elif op == _PING_REPLY:
            entry = self._pings.get(token)
            if entry is None:
                self.stats["ping_unexpected_reply"] += 1
                return
            fut, sent = entry
            if not fut.done():
                fut.set_result(OverlayPing(self.clock() - sent, hops, ev.hops))
        else:
            self.stats["ping_malformed"] += 1
