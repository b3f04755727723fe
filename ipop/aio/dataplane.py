"""The packet path: drain the UDP socket and the TAP in batches and move packets between them.

DESIGN.md §8 measured asyncio's ``DatagramProtocol`` at a third of the throughput of a loop that
drains a non-blocking fd until EAGAIN; so both fds are registered with ``loop.add_reader`` and
each wake-up reads up to :data:`BATCH` packets, feeds them to the core with one ``now``, and
flushes the core's output once (one ``Driver.pump`` per batch, not per packet).

Owns the I/O around the sans-IO checks (the UDP socket it drains and the driver sends through
is :class:`ipop.aio.udp.UdpSocket`: send errors are counted, never raised, so a full socket
buffer drops a packet like a lossy link would): every packet's verdict comes from
:class:`ipop.vnet.filter.PacketFilter` (an inner packet reaches the TAP only if it is
addressed to this node and its source address is held by the node that sent it, per the DHT),
and the vIP → node answers, the lookups in flight and the packets they hold live in
:class:`ipop.vnet.owners.OwnerTable` (all bounded); this module runs the DHT lookups it asks
for. Parsing is byte slicing on the hot path; no scapy anywhere.

Fast path (same effects, fewer layers): an IP packet for a node whose link is up on a direct
path (the main socket's Endpoint, or a punching socket's path that port guessing found) is
sealed straight out of the TAP read buffer (:meth:`NodeCore.seal_ip`; the
ethertype's two bytes are overwritten with the DIRECT header) and the batch's datagrams for
one address leave in as few GSO ``sendmsg`` calls as possible; a received DATA datagram whose
plaintext is DIRECT + KIND_IP from a linked peer comes back from
:meth:`NodeCore.receive_direct` instead of travelling as LinkMessage -> Delivered events, and
is written to the TAP after the same checks (datagrams on punching sockets come
from :class:`ipop.aio.stack.Node` one by one and are handled together once the socket's drain is
over, through the same code). Everything else (handshakes, keepalives, relayed paths, DHT and
overlay traffic, unknown owners, drops) takes the slow path through the core's events and the
driver, as before; relayed links' runs are below.

Runs (issue 16; :mod:`ipop.link.fastpath`): a TAP batch's frames for one node are sealed
together after the batch (:meth:`NodeCore.seal_ip_run`, one native call for all of them), and
a UDP batch's datagrams from one address (or a punching socket's drain's from one path) are
opened together (:meth:`NodeCore.receive_direct_run`, one call per run under one key); what
a run cannot take (a rekey due, other keys, handshakes) goes one by one as
above. The packet checks stay here, per packet, in
Python. ``IPOP_FASTPATH=python`` runs the same code with the native module's pure twin.

Relayed links take runs too (issue 16, deliverable 3): a TAP batch's frames for a node linked
through a relay are sealed end to end, wrapped and sealed for the relay in two runs
(:meth:`NodeCore.send_relayed_run`) and leave with the core's output, which the driver sends
with GSO to each address; on the relay, a run of RELAY_FORWARD from one peer is checked per
message and re-sealed for each target in one run; on the receiving end, a run of
RELAY_DELIVER is checked per origin and the end-to-end datagrams inside are opened in runs
straight from the messages, their IP packets coming back here for the same TAP checks (all
in :meth:`NodeCore.receive_direct_run`). Measured (``relay_bench``, 1,300 B, batch 64, native,
µs per packet, sender / relay / receiver): one by one 15.1 / 10.5 / 11.4, in runs 1.4 / 2.2
/ 2.5; then the relay and the receiver re-seal and open behind a run's message heads
(``relay_bench --callgrind``, instructions per packet: 20,307 / 32,720 / 38,059 before,
19,852 / 20,982 / 19,656 after; see DESIGN.md §8). Once the relay bound a channel for the
link (:mod:`ipop.overlay.channels`), the sender's run goes sealed end to end only, behind the
channel's header, the relay passes it on unopened and the receiver opens it end to end
(``relay_bench``: 1.07 / 0.51 / 0.99 µs per packet).
Measured (``dataplane_bench --count 50000 --repeat 5``, 1,400 B, batch 64, medians of 3):
TAP -> UDP 4.3 µs per packet one by one, 2.6 in runs with the twin, 2.3 native; UDP -> TAP
2.2, 1.9, 1.3.

TAP writes: on a TAP opened with a virtio header (:class:`ipop.aio.tap.Tap`, the daemon's),
the frames a UDP batch delivers are written with TCP segments of one flow merged into one
packet, which the kernel's receive path then handles once (:mod:`ipop.vnet.gro`).

TAP reads: a TAP granted offloads (``offload``: the daemon's TAPs ask, ``TUNSETOFFLOAD``) hands
over a local TCP stream in batches of up to 64 kB (``GSO_TCPV4``) and TCP/UDP packets with
their checksum only begun (``NEEDS_CSUM``): one read where there were up to 45. The one is
finished in place; the other gets one verdict (every segment has the batch's addresses) and
is cut (:meth:`DataPlane._cut_batch`) into segments of the batch's segment size that also fit
the probed path to the destination's node, every checksum finished, each cut straight as the
DIRECT message a frame read becomes, and they join that node's run like frames read; a batch
not for a node (a lookup, the local services, a drop) is handled segment by segment as frames
read. The cutting is :mod:`ipop.vnet.offload`'s, natively with the native backend
(``fastpath.native_offload``): in Python each segment's checksum cost more than the read it
saved (commit 911a964 and its revert); natively, ``ipop-lab bench --systems ipop`` went
from 2,080-2,194 to 3,551-3,721 Mbit/s on one quiet day (docs/design.md §8).

The lane (issue 16, the latency target; :mod:`ipop.link.lane`, :mod:`ipop.aio.lane`): with
the native backend, a plane that has a TAP with a virtio header and is its daemon's only
network lets a native thread read the TAP and the UDP socket. The thread seals and sends a
lone IP frame, or opens a datagram and writes its packet, for the peers
:class:`ipop.aio.lane.LaneRoutes` routes (synced after every batch here and every
:data:`ipop.timing.LANE_SYNC_S`), exactly where this module would have; everything else it
hands up on a ``SOCK_SEQPACKET`` pair per fd, read here as the fd was (frames by
:meth:`_drain_frames`, datagrams by :meth:`_receive_handed_up`: as read, or opened, through
:meth:`NodeCore.receive_opened`). From a hand-up on, this plane holds that fd's baton
(:class:`ipop.aio.lane.Baton`) and reads the fd itself in batches until it finds it empty,
so bulk traffic takes the paths above unchanged. Measured: ping RTT 0.26-0.30 ms against
0.80-0.95 without it (tinc 0.35 in the same runs).

Several networks (issue 17, item 2): a daemon in several virtual networks has one DataPlane
per network (its TAP, filter, owner table and lookups in that network's namespace). The first
drains the UDP socket for all of them (:meth:`DataPlane.join`): every IP packet from the
overlay goes through :class:`ipop.vnet.networks.NetworkDemux`, which names the network's plane
after that network's checks (``ip_wrong_network`` else). Such a daemon sends its IP tagged
(KIND_IP_NET: the network's 4-byte tag between the DIRECT header and the packet, one copy of
the packet where an untagged one is sealed in place), in the same runs and batches as untagged
IP; tagged IP comes back from the runs as KIND_IP does, and each network's frames of a UDP
batch are written to its TAP together. A plane of a daemon in one network sends untagged
KIND_IP and takes tagged IP for its own network too (a message whose kind byte is not
KIND_IP leaves the inline check for the demux).

Latency (a lone packet, e.g. a ping every 50 ms): a wake-up after a quiet spell
(:data:`ipop.timing.DATAPLANE_SPARSE_S`) reads one packet, without the extra read that would
find the fd empty, and a UDP batch's TAP writes are followed by a TAP read at once (see
:meth:`DataPlane._drain_udp`).
Measured and rejected: busy polling after activity. A socket or TAP write wakes the next
process on the writer's CPU, so the four hops of a ping round trip run serially, mostly on one
CPU, and a poller only delays the process it waits for.

Why over 600 lines: both directions of the packet path, their batch tails (UDP, TAP, punching
sockets) and the relayed runs share one flush, which orders what the core queued meanwhile;
split by direction, that ordering would be decided in two places. The verdicts themselves live
in :mod:`ipop.vnet` (filter, owners, offload, gro, toobig) and the sealing in the core.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from ipaddress import IPv4Address, IPv4Network
from typing import Protocol

from ipop import timing
from ipop.aio.lane import Baton, LaneRoutes
from ipop.aio.stack import Node
from ipop.aio.udp import GSO_MAX_BYTES, GSO_MAX_SEGMENTS, IoDrop, UdpSocket, split_segments
from ipop.errors import ConfigError
from ipop.link import fastpath
from ipop.link.lane import UP, UP_HEADER, UP_OPENED, NativeLane, native_lane
from ipop.overlay.messages import KIND_IP, KIND_IP_NET, TYPE_DIRECT
from ipop.types import Endpoint, NodeId, SocketPath
from ipop.vnet.echo import echo_reply
from ipop.vnet.filter import Drop, PacketFilter, Verdict
from ipop.vnet.gro import GSO_TCPV4, NEEDS_CSUM, NO_GSO, VNET_HDR, coalesce
from ipop.vnet.networks import NetDrop, NetworkDemux
from ipop.vnet.offload import finish_frame, split_tcp
from ipop.vnet.owners import Held, LookupDrop, OwnerTable
from ipop.vnet.toobig import frag_needed
from ipop.wire.header import DATA_MIN_BYTES

__all__ = [
    "BATCH",
    "GSO_MAX_BYTES",
    "GSO_MAX_SEGMENTS",
    "DataPlane",
    "IoDrop",
    "LocalSide",
    "UdpSocket",
]

log = logging.getLogger(__name__)

BATCH = 256
# At most this many frames for the gateway's services (DNS, DHCP, ARP) per TAP wake-up: a
# burst of DNS queries then leaves the loop every ~0.5 ms, so the DHT lookups the first
# queries started (several round trips, each waiting for a loop pass) finish while the
# rest of the burst is read, and later queries hit the cache.
LOCAL_BATCH = 32
_ETH_IP = b"\x08\x00"
# The local side's read buffer: a whole 64 kB IPv4 packet and its Ethernet header (a LAN host's
# batch, cut by router.lan; a TAP never reads more than its MTU).
_FRAME_MAX = 65535 + 14
# A frame read from the TAP (Ethernet header included) becomes a DATA datagram this much larger:
# the DIRECT header replaces the Ethernet header, and the link adds its header and tag.
_SEAL_GROWTH = DATA_MIN_BYTES + 2 - 14
# A datagram the lane handed up (ipop.link.lane.UP): a header, then the datagram(s) or text.
_UP_UNPACK = UP.unpack_from
_UP_MAX = UP_HEADER + 65536
_ntoa = socket.inet_ntoa
# A DIRECT message's header for an IP packet: what the ethertype becomes in a frame sealed.
_DIRECT_IP = bytes((TYPE_DIRECT, KIND_IP))
# The ECN flag of a TCP batch's gso_type (CWR set): split_tcp handles CWR itself.
_GSO_ECN = 0x80
# Every name a DataPlane's ``drops`` counter may hold.
DROP_REASONS: frozenset[str] = frozenset(
    r.value for e in (IoDrop, Drop, LookupDrop, NetDrop) for r in e
)


class LocalSide(Protocol):
    """The non-TAP local side of a node (router mode: a LAN of many hosts behind one fd).

    A TAP has one peer MAC, so its Ethernet header is fixed and set with
    :meth:`DataPlane.set_link_layer`. A LAN has one MAC per host: the header of each packet
    written to it depends on the packet (its destination address), and a frame read from it
    must pass a source check before it may enter the overlay.
    """

    def header_for(self, packet: bytes) -> bytes | None:
        """The Ethernet header for an IPv4 ``packet`` going out on the LAN (None: no host)."""
        ...

    def admit(self, frame: memoryview) -> bool:
        """True if an IPv4 ``frame`` read from the LAN may be routed (False: counted, dropped)."""
        ...

    @property
    def out_fd(self) -> int:
        """The fd frames are written to; a packet socket that reads with a virtio header
        cannot take plain frames (router.lan: a send-only socket)."""
        ...

    def read_into(self, buf: bytearray) -> int:
        """Read one frame from the fd into ``buf``: its length, 0 if the side dropped it
        (counted there); raises as ``os.readv`` does. A packet socket needs more than a read
        (router.lan: checksums the LAN hosts left to their NIC)."""
        ...

    def pending(self) -> bool:
        """True while :meth:`read_into` has frames to give that the fd does not signal
        (router.lan: the segments of a batch it cut)."""
        ...


class DataPlane:
    """Moves frames TAP ↔ overlay for one node; see the module docstring."""

    def __init__(
        self,
        node: Node,
        udp: UdpSocket,
        tap_fd: int | None,
        *,
        subnet: IPv4Network,
        lookup_owner: Callable[[IPv4Address], Awaitable[NodeId | None]],
        local_frame: Callable[[bytes], bool],
        clock: Callable[[], float] = time.time,
        local_side: LocalSide | None = None,
        vnet_hdr: bool = False,
        runs: bool | None = None,
        tag: bytes = b"",
        primary: bool = True,
        offload: bool = False,
        lane: bool | None = None,
    ) -> None:
        """``tag``: the network's tag (:func:`ipop.vnet.networks.network_tag`), so that IP
        tagged for it is taken; ``primary``: False for the other networks' planes of a daemon
        in several, which the first one feeds (:meth:`join`); ``lane``: let the native
        lane read the TAP and the UDP socket (:mod:`ipop.link.lane`) where it can; None:
        unless ``IPOP_LANE=off``."""
        self.node = node
        # Seal and open each destination's or path's packets in runs, one call each
        # (ipop.link.fastpath), with the native module unless IPOP_FASTPATH=python (then its
        # pure-Python twin); runs=False: one by one, the reference the runs are tested against.
        # Chosen before the node is attached (Daemon._start), so every key is made after it.
        log.info("data path: %s", fastpath.use(os.environ.get("IPOP_FASTPATH", "auto")))
        # A batch's TCP segments merged for the TAP: natively with the native backend.
        self._coalesce = fastpath.native_coalesce() or coalesce
        self.runs = True if runs is None else runs
        # None: a TAP (fixed header, no source check); else a LAN (see LocalSide).
        self.local_side = local_side
        self.udp = udp
        # None: no local side at all (an overlay-only node, ipop.aio.daemon): the node accepts
        # no address, so the filter drops every IP packet for it before a write.
        self.tap_fd = tap_fd
        # Where frames are written: the TAP itself, or what the local side says.
        out = tap_fd if local_side is None else local_side.out_fd
        self.out_fd = -1 if out is None else out
        self.subnet = subnet
        self._lookup_owner = lookup_owner
        self._local_frame = local_frame
        self.clock = clock
        # Only IoDrop, filter.Drop, owners.LookupDrop and NetDrop members: see DROP_REASONS.
        self.drops: Counter[IoDrop | Drop | LookupDrop | NetDrop] = Counter()
        self.counters: Counter[str] = Counter()
        # A TAP opened with IFF_VNET_HDR: a virtio header before every frame read or written,
        # and a batch's TCP segments written coalesced (ipop.vnet.gro).
        self._vnet = vnet_hdr and local_side is None
        self._vnet_in = bytearray(VNET_HDR.size)  # each read's header
        # The TAP was granted offloads (ipop.aio.tap.Tap): each read's header says whether its
        # checksum is to be finished or its TCP batch cut (ipop.vnet.offload; natively with
        # the native backend, as coalescing).
        self._offload = offload and self._vnet
        cut = fastpath.native_offload()
        self._split_tcp: fastpath.SplitTcp = split_tcp if cut is None else cut[0]
        self._finish_frame: fastpath.FinishFrame = finish_frame if cut is None else cut[1]
        # Ethernet header for frames we write: dst = the tap's MAC, src = the virtual MAC;
        # _eth_header with the virtio header of a frame written as it is, if the TAP has one.
        self._mac_header = b""
        self._eth_header = b""
        self.owners = OwnerTable()
        self.filter = PacketFilter(node.node_id, subnet, self.owners)
        self.tag = tag
        # What this plane's IP goes with: b"" (KIND_IP) unless the daemon is in several
        # networks (then its tag, KIND_IP_NET; set by join).
        self._send_tag = b""
        self.primary = primary
        # Every plane the UDP side feeds, in the demux's order (this one alone unless join).
        self._planes: list[DataPlane] = [self]
        self.demux = NetworkDemux([(tag, self.filter)])
        self._lookups: dict[bytes, asyncio.Task[None]] = {}
        self._endpoints: dict[tuple[str, int], Endpoint] = {}
        self._loop = asyncio.get_running_loop()
        self._closed = False
        # One read buffer for the TAP, reused for every frame (sealed in place: _drain_tap).
        self._rbuf = bytearray(_FRAME_MAX)
        self._rview = memoryview(self._rbuf)
        # While a UDP batch is handled: the frames it delivers, written once it is done (None:
        # write at once). See _drain_udp.
        self._tap_out: list[tuple[bytes, bytes | memoryview]] | None = None
        # Datagrams from punching sockets not handled yet (see _receive_punched).
        self._punched: list[tuple[bytes, SocketPath]] = []
        # When each fd was last read (clock time), for timing.DATAPLANE_SPARSE_S.
        self._udp_seen = 0.0
        self._tap_seen = 0.0
        if primary:
            node.on_ip = self._from_overlay
            node.on_net_ip = self._from_overlay_tagged
            node.punch_sink = self._receive_punched
        # The native lane (made at start(), where it can be): it reads the TAP and the UDP
        # socket; the frames it hands up are read from _tap_read_fd as from the TAP.
        if lane is None:
            choice = os.environ.get("IPOP_LANE", "on")
            if choice not in ("on", "off"):
                raise ConfigError(
                    "IPOP_LANE", f"{choice!r} is neither on nor off", "set it to on or off"
                )
            lane = choice == "on"
        self._want_lane = lane
        self._lane: NativeLane | None = None
        self.lane_routes: LaneRoutes | None = None
        # The lane's hand-up pairs: TAP (Python's end, the lane's), UDP (the same).
        self._up: tuple[socket.socket, ...] | None = None
        # Who reads the TAP and the UDP socket with the lane: its thread, or this plane.
        self._tap_baton: Baton | None = None
        self._udp_baton: Baton | None = None
        self._tap_read_fd = tap_fd
        self._lane_timer: asyncio.TimerHandle | None = None

    def join(self, others: Sequence[DataPlane]) -> None:
        """This (primary) plane feeds ``others`` too, one per network of the daemon, each
        made with ``primary=False``; from now on every plane sends its IP tagged."""
        planes = [self, *others]
        self.demux = NetworkDemux([(p.tag, p.filter) for p in planes])
        self._planes = planes
        for plane in planes:
            plane._send_tag = plane.tag

    def set_link_layer(self, tap_mac: bytes, virtual_mac: bytes) -> None:
        self._mac_header = tap_mac + virtual_mac + _ETH_IP
        self._eth_header = (NO_GSO if self._vnet else b"") + self._mac_header
        self._lane_local()

    @property
    def own_ip(self) -> bytes | None:
        return self.filter.own_ip

    def set_own_ip(self, addr: IPv4Address) -> None:
        self.filter.set_own_ip(addr.packed)
        self._lane_local()

    def add_local_ip(self, addr: IPv4Address) -> None:
        """``addr`` is held by this node on behalf of a host on its local side (router mode):
        packets for it are delivered, and nobody else may send from it."""
        self.filter.accept(addr.packed)
        self._lane_local()

    def remove_local_ip(self, addr: IPv4Address) -> None:
        self.filter.unaccept(addr.packed)
        self._lane_local()

    def _lane_local(self) -> None:
        """The lane delivers to this node's addresses behind this header: told whenever
        either changes (these methods are where they change)."""
        if self.lane_routes is not None:
            self.lane_routes.set_local(self.filter.accepted, self._eth_header)

    def start(self) -> None:
        self._start_lane()
        if self._lane is not None and self._up is not None:
            self._loop.add_reader(self._up[0].fileno(), self._drain_tap)
            self._loop.add_reader(self._up[2].fileno(), self._drain_udp)
            return
        if self.primary:
            self._loop.add_reader(self.udp.sock.fileno(), self._drain_udp)
        if self.tap_fd is not None:
            self._loop.add_reader(self.tap_fd, self._drain_tap)

    def _start_lane(self) -> None:
        """The native lane (:mod:`ipop.link.lane`), where the plane works as it expects: a
        TAP with a virtio header, runs, one network's untagged IP, the native backend. It
        then reads the TAP and the UDP socket, and this plane what it hands up."""
        if (
            not self._want_lane
            or self.tap_fd is None
            or not self.primary
            or len(self._planes) > 1
            or not self._vnet
            or not self.runs
            or self._send_tag
            or self.local_side is not None
        ):
            return
        pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET) for _ in range(2)]
        for py_end, c_end in pairs:
            # Room for a few offload batches (64 kB each) while Python is busy.
            c_end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
            py_end.setblocking(False)
        (tap_py, tap_c), (udp_py, udp_c) = pairs
        lane = native_lane(
            self.tap_fd, self.udp.sock.fileno(), tap_c.fileno(), udp_c.fileno(), _DIRECT_IP
        )
        if lane is None:
            for sock in (tap_py, tap_c, udp_py, udp_c):
                sock.close()
            return
        self._up = (tap_py, tap_c, udp_py, udp_c)
        self._lane = lane
        self._tap_read_fd = tap_py.fileno()
        self.lane_routes = LaneRoutes(lane, self.node.core, self.filter, growth=_SEAL_GROWTH)
        self._lane_local()
        loop = self._loop
        self._tap_baton = Baton(
            lane,
            0,
            self.tap_fd,
            lambda fd: loop.add_reader(fd, self._drain_tap),
            loop.remove_reader,
        )
        self._udp_baton = Baton(
            lane,
            1,
            self.udp.sock.fileno(),
            lambda fd: loop.add_reader(fd, self._drain_udp),
            loop.remove_reader,
        )
        lane.start()
        self._lane_timer = self._loop.call_later(timing.LANE_SYNC_S, self._lane_tick)

    def _lane_tick(self) -> None:
        if self.lane_routes is None:
            return
        self.lane_routes.sync(self.clock())
        self._lane_timer = self._loop.call_later(timing.LANE_SYNC_S, self._lane_tick)

    def _drain_tap(self) -> None:
        """Seal up to :data:`BATCH` frames from the TAP (one after a quiet spell) and send
        them; with the lane, those it handed up, then the TAP itself while this plane holds
        the baton (:class:`ipop.aio.lane.Baton`)."""
        if self._tap_baton is None:
            self._drain_frames()
            return
        try:
            self._drain_frames()
        finally:
            self._tap_baton.settle()

    def lane_stats(self) -> dict[str, int] | None:
        """The lane's counters (None: no lane): fast, up, send_errors, io_errors, inflight,
        routes."""
        if self._lane is None or self.lane_routes is None:
            return None
        return {**self._lane.stats(), "routes": len(self.lane_routes.routes)}

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.node.punch_sink == self._receive_punched:
            self.node.punch_sink = None
        fds = [self.udp.sock.fileno() if self.primary else None, self.tap_fd]
        for fd in [*fds, *(s.fileno() for s in self._up or ())]:
            if fd is None:
                continue
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(fd)
        if self._lane is not None:
            self._lane.stop()  # before any fd it reads or writes closes
            for baton in (self._tap_baton, self._udp_baton):
                if baton is not None:
                    baton.close()
            if self._lane_timer is not None:
                self._lane_timer.cancel()
            if self.lane_routes is not None:
                self.lane_routes.clear(self.clock())
            for sock in self._up or ():
                sock.close()
        for task in self._lookups.values():
            task.cancel()

    def owner_of(self, addr: bytes) -> NodeId | None:
        return self.owners.owner_of(addr)

    def live_owner(self, addr: bytes) -> NodeId | None:
        """The holder of ``addr`` by a DHT answer this data plane still trusts (the one its
        packet checks use), without a lookup."""
        return self.owners.holder(addr, now=self.clock())

    def known_owners(self) -> dict[NodeId, bytes]:
        return self.owners.known()

    # --- underlay → node --------------------------------------------------------------------

    def _drain_udp(self) -> None:
        """Handle up to :data:`BATCH` datagrams; then write what they delivered to the TAP.

        The writes come after the batch and the core's flush, and the TAP is read right after
        them: what the kernel answers by itself is queued by the time a write returns (an ICMP
        echo reply; TCP's ACKs on the receiving side, its next segments on the sending side),
        so it leaves without a trip through the event loop. Measured on ``ipop-lab bench``:
        lower ping RTT, and more TCP throughput than writing each frame as it is opened.
        """
        self._batch(self._receive_batch)

    def _receive_punched(self, data: bytes, path: SocketPath) -> None:
        """A datagram on a punching socket (a path port guessing found), so that such a pair's
        traffic takes the fast path too. The socket hands them over one by one as it drains;
        they are handled together once its drain is over (one flush, one TAP drain after the
        writes), as :meth:`_drain_udp` handles a batch."""
        if self._closed:
            return
        self._punched.append((data, path))
        if len(self._punched) == 1:
            self._loop.call_soon(self._batch, self._receive_punched_batch)

    def _batch(self, receive: Callable[[list[tuple[bytes, bytes | memoryview]]], None]) -> None:
        planes = self._planes
        tap_out: list[tuple[bytes, bytes | memoryview]] = []
        self._tap_out = tap_out
        for plane in planes[1:]:  # in several networks: each TAP's frames, written together
            plane._tap_out = []
        try:
            receive(tap_out)
        finally:
            outs = [(plane, plane._tap_out) for plane in planes]
            for plane in planes:
                plane._tap_out = None
        for plane, out in outs:
            if out:
                plane._write_frames(out)
                plane._drain_tap()
        if self._udp_baton is not None:  # (after the writes: then the lane may deliver)
            self._udp_baton.settle()

    def _receive_punched_batch(self, tap_out: list[tuple[bytes, bytes | memoryview]]) -> None:
        punched, self._punched = self._punched, []
        if self._closed:
            return
        now = self.clock()
        # Consecutive datagrams from one path go to the core together (one run, if in runs).
        run: list[bytes] = []
        run_path: SocketPath | None = None
        for data, path in punched:
            if run_path is not None and path is not run_path and path != run_path:
                self._take(run, run_path, now, tap_out)
                run = []
            run.append(data)
            run_path = path
        if run_path is not None:
            self._take(run, run_path, now, tap_out)
        self.counters["punched_datagrams"] += len(punched)
        self._flush_core(now)

    def _receive_batch(self, tap_out: list[tuple[bytes, bytes | memoryview]]) -> None:
        baton = self._udp_baton
        if baton is not None:
            self._receive_handed_up(tap_out, baton)
            if not baton.records:
                return
            # Holding the baton: the socket itself, as without the lane.
        recv_batch = self.udp.recv_batch
        eps = self._endpoints
        take = self._take
        now = self.clock()
        limit = BATCH if now - self._udp_seen < timing.DATAPLANE_SPARSE_S else 1
        self._udp_seen = now
        n = calls = 0
        # With the native path: consecutive datagrams from one address, taken at once.
        run: list[bytes] | None = [] if self.runs else None
        run_ep: Endpoint | None = None
        while n < limit:
            try:
                datagrams, addr = recv_batch()
            except BlockingIOError:
                if baton is not None:
                    baton.dry = True
                break
            except OSError:  # ICMP errors surface here on Linux; not fatal
                self.drops[IoDrop.RECV_ERROR] += 1
                calls += 1
                if calls >= BATCH:
                    break
                continue
            calls += 1
            n += len(datagrams)
            ep = eps.get(addr) or self._endpoint(addr)
            if run is None:
                take(datagrams, ep, now, tap_out)
            elif ep is run_ep:  # one path's datagrams go to the core as one run
                run.extend(datagrams)
            else:
                if run and run_ep is not None:
                    take(run, run_ep, now, tap_out)
                run, run_ep = datagrams, ep
        if run and run_ep is not None:
            take(run, run_ep, now, tap_out)
        counters = self.counters
        counters["udp_batches"] += 1
        counters["udp_datagrams"] += n
        self._flush_core(now)

    def _receive_handed_up(
        self, tap_out: list[tuple[bytes, bytes | memoryview]], baton: Baton
    ) -> None:
        """:meth:`_receive_batch` of what the lane handed up: datagrams as read (a header
        then the datagram, or a GRO run of them, as a read returns it) and datagrams it
        opened (a header then the plaintext: :meth:`NodeCore.receive_opened`), in order."""
        assert self._up is not None
        recv = self._up[2].recv
        eps = self._endpoints
        core = self.node.core
        now = self.clock()
        limit = BATCH if now - self._udp_seen < timing.DATAPLANE_SPARSE_S else 1
        self._udp_seen = now
        n = 0
        run: list[bytes] = []
        run_ep: Endpoint | None = None
        while n < limit:
            try:
                record = recv(_UP_MAX)
            except BlockingIOError:
                break
            baton.records += 1
            if len(record) < UP_HEADER:  # never made by the lane
                self.drops[IoDrop.RECV_ERROR] += 1
                continue
            kind, newest, port, ip, seg, index = _UP_UNPACK(record)
            addr = (_ntoa(ip), port)
            ep = eps.get(addr) or self._endpoint(addr)
            data = record[UP_HEADER:]
            if kind == UP_OPENED:
                if run and run_ep is not None:
                    self._take(run, run_ep, now, tap_out)
                run, run_ep = [], None
                n += 1
                got = core.receive_opened(
                    index, data, len(data) + DATA_MIN_BYTES, bool(newest), ep, now=now,
                    kind=KIND_IP, also=KIND_IP_NET,
                )  # fmt: skip
                if got is not None:
                    self._deliver([got], now, tap_out)
                continue
            datagrams = split_segments(data, seg) if 0 < seg < len(data) else [data]
            n += len(datagrams)
            if ep is run_ep:
                run.extend(datagrams)
            else:
                if run and run_ep is not None:
                    self._take(run, run_ep, now, tap_out)
                run, run_ep = datagrams, ep
        if run and run_ep is not None:
            self._take(run, run_ep, now, tap_out)
        counters = self.counters
        counters["udp_batches"] += 1
        counters["udp_datagrams"] += n
        self._flush_core(now)

    def _endpoint(self, addr: tuple[str, int]) -> Endpoint:
        """The Endpoint of a source address not cached yet (one object per address, so a
        batch's runs compare them by identity; bounded)."""
        eps = self._endpoints
        if len(eps) > 4096:
            eps.clear()
        ep = eps[addr] = Endpoint(addr[0], addr[1])
        return ep

    def _flush_core(self, now: float) -> None:
        """After a batch: whatever the fast path left queued in the core leaves now. A batch
        that went entirely through the fast path left nothing, and costs nothing here."""
        core = self.node.core
        if core.has_output():
            core.flush(now=now)
            if self.node.driver is not None:
                self.node.driver.pump()
        if self.lane_routes is not None:
            self.lane_routes.sync(now)

    def _take(
        self,
        datagrams: list[bytes],
        path: Endpoint | SocketPath,
        now: float,
        tap_out: list[tuple[bytes, bytes | memoryview]],
    ) -> None:
        """Feed datagrams from one path to the core; the IP packets it hands back go to
        ``tap_out`` (or the slow path's checks)."""
        core = self.node.core
        # Tagged IP (KIND_IP_NET, from a daemon in several networks) comes back as IP does.
        if self.runs:  # opened in runs by the native path (ipop.link.fastpath)
            got = core.receive_direct_run(datagrams, path, now=now, kind=KIND_IP, also=KIND_IP_NET)
        else:
            receive_direct = core.receive_direct
            got = []
            for data in datagrams:
                # Fast path: an IP packet over a direct link comes back here instead of
                # travelling as LinkMessage -> Delivered events; the rest went the usual way.
                one = receive_direct(data, path, now=now, kind=KIND_IP, also=KIND_IP_NET)
                if one is not None:
                    got.append(one)
        self._deliver(got, now, tap_out)

    def _deliver(
        self,
        got: list[tuple[NodeId, bytes]],
        now: float,
        tap_out: list[tuple[bytes, bytes | memoryview]],
    ) -> None:
        """The IP messages the core handed back (DIRECT, kind, packet) to ``tap_out``, or
        to the slow path's checks."""
        if len(self._planes) > 1:  # several networks: which one's is the demux's to say
            for src, msg in got:
                self._from_overlay_kind(src, msg[1] == KIND_IP_NET, msg[2:], now)
            return
        check_in = self.filter.check_in
        accepted = self.filter.accepted
        owners = self.owners.entries
        eth = self._eth_header
        for src, msg in got:  # msg = TYPE_DIRECT, KIND_IP, packet
            if msg[1] != KIND_IP:  # tagged by a daemon in several networks: the demux's
                self._from_overlay_kind(src, True, msg[2:], now)
                continue
            # PacketFilter.check_in's DELIVER case inline (a call costs as much as the
            # check; test_vnet_dataplane holds the two equal): for an address of ours, IPv4,
            # from the address its sender holds. Anything else gets the filter's verdict.
            # (A whole 4-byte destination also says the header is long enough to read.)
            if eth and msg[18:22] in accepted and msg[2] >> 4 == 4:
                entry = owners.get(msg[14:18])
                # NodeId's dataclass __eq__ is a Python call; its int compares natively.
                if (
                    entry is not None
                    and (holder := entry[0]) is not None
                    and holder.value == src.value
                    and entry[1] > now
                ):
                    tap_out.append((eth, memoryview(msg)[2:]))
                    continue
            self._handle_in(check_in(src, msg, 2, now), src, msg[2:], now)

    # --- overlay → TAP ----------------------------------------------------------------------

    def _from_overlay(self, src: NodeId, packet: bytes) -> None:
        """An IP packet from ``src`` that came the slow path (routed, relayed): ``src`` is its
        authenticated origin."""
        now = self.clock()
        if len(self._planes) > 1:
            self._from_overlay_kind(src, False, packet, now)
            return
        self._handle_in(self.filter.check_in(src, packet, 0, now), src, packet, now)

    def _from_overlay_tagged(self, src: NodeId, payload: bytes) -> None:
        """A tagged IP packet (KIND_IP_NET: the network's tag, then the packet) from ``src``
        that came the slow path (routed, relayed one by one)."""
        self._from_overlay_kind(src, True, payload, self.clock())

    def _from_overlay_kind(self, src: NodeId, tagged: bool, payload: bytes, now: float) -> None:
        """An IP message (``tagged``: KIND_IP_NET, else KIND_IP) to the plane of its network,
        with that network's verdict (:class:`ipop.vnet.networks.NetworkDemux`); counted here
        if it is no network's."""
        got = self.demux.check_in(src, tagged, payload, now)
        if isinstance(got, NetDrop):
            self.drops[got] += 1
            return
        side, off, verdict = got
        self._planes[side]._handle_in(verdict, src, payload[off:] if off else payload, now)

    def _handle_in(self, verdict: Verdict | Drop, src: NodeId, packet: bytes, now: float) -> None:
        if verdict is Verdict.DELIVER:
            if self.local_side is not None and packet[16:20] == self.filter.own_ip:
                self._answer_own(src, packet, now)
                return
            self._write(packet)
        elif verdict is Verdict.LOOKUP:
            # Unknown sender address: hold the packet while the DHT says who holds it.
            sip = packet[12:16]
            self._held(self.owners.hold_in(sip, src, packet, now=now), sip)
        else:
            self.drops[verdict] += 1

    def _answer_own(self, src: NodeId, packet: bytes, now: float) -> None:
        """A packet for our own vIP in router mode, where no stack is behind it: echo
        requests are answered here (:mod:`ipop.vnet.echo`), the rest dropped as before."""
        reply = echo_reply(packet)
        if reply is None:
            self.drops[IoDrop.NO_LOCAL_HOST] += 1
            return
        self.counters["own_echo_answered"] += 1
        self.node.core.send_ip(src, reply, now=now, tag=self._send_tag)
        self._flush_core(now)

    def _write(self, packet: bytes) -> None:
        if self.local_side is not None:
            header = self.local_side.header_for(packet)
            if header is None:
                self.drops[IoDrop.NO_LOCAL_HOST] += 1
                return
        elif not self._eth_header:
            self.drops[IoDrop.TAP_NOT_READY] += 1
            return
        else:
            header = self._eth_header
        if self._tap_out is not None:  # inside a UDP batch: in order, after it
            self._tap_out.append((header, packet))
        else:
            self._write_frames([(header, packet)])

    def _write_frames(self, frames: list[tuple[bytes, bytes | memoryview]]) -> None:
        """Write ``(header, packet)`` frames to the TAP; a refusal drops and counts one. On a
        TAP with a virtio header, a batch's TCP segments go merged (:func:`coalesce`)."""
        iovecs: Sequence[tuple[bytes | bytearray | memoryview, ...]] = frames
        if self._vnet and len(frames) > 1:
            mac = self._mac_header
            merged = self._coalesce([p for _, p in frames])
            iovecs = [(vnet, mac, packet) for vnet, packet in merged]
            if len(iovecs) < len(frames):
                self.counters["tap_coalesced"] += len(frames) - len(iovecs)
        writev = os.writev
        fd = self.out_fd
        written = 0
        for iov in iovecs:
            try:
                writev(fd, iov)
                written += 1
            except BlockingIOError:
                self.drops[IoDrop.TAP_WOULD_BLOCK] += 1
            except OSError as exc:
                self.drops[IoDrop.TAP_WRITE_ERROR] += 1
                log.debug("tap write: %s", exc)
        if written:
            self.counters["tap_written"] += written

    def write_frame(self, frame: bytes) -> None:
        """Write a whole Ethernet frame (local services' answers)."""
        if self._vnet:
            frame = NO_GSO + frame
        try:
            os.write(self.out_fd, frame)
        except OSError as exc:
            self.drops[IoDrop.TAP_WRITE_ERROR] += 1
            log.debug("tap write: %s", exc)

    # --- TAP → overlay ----------------------------------------------------------------------

    def _drain_frames(self) -> None:
        """:meth:`_drain_tap`'s reads and what becomes of them."""
        fd = self._tap_read_fd  # the TAP, or what the lane hands up
        assert fd is not None  # read only once start() registered it
        wanted = self.lane_routes.wanted if self.lane_routes is not None else None
        baton = self._tap_baton
        node = self.node
        core = node.core
        send_batch = self.udp.send_batch
        check_out = self.filter.check_out
        buf, view = self._rbuf, self._rview
        admit = self.local_side.admit if self.local_side is not None else None
        lan_read = self.local_side.read_into if self.local_side is not None else None
        # A TAP with a virtio header: it comes first, in a buffer of its own.
        bufs = (self._vnet_in, buf) if self._vnet else (buf,)
        skip = len(bufs[0]) if self._vnet else 0
        # Each peer's probed path MTU, as a DATA datagram's size (ipop.link.pmtu).
        path_limit = core.link.pmtu.limits.get
        readv = os.readv
        # Sealed datagrams per destination, sent together after the batch (GSO).
        out: dict[Endpoint | SocketPath, list[bytes]] = {}
        # With the native path: each destination's DIRECT messages, sealed after the batch.
        runs: dict[int, tuple[NodeId, list[bytes], int | None]] | None = {} if self.runs else None
        send_tag = self._send_tag
        # In several networks, each message is DIRECT, KIND_IP_NET, the tag, the packet.
        tagged = bytes((TYPE_DIRECT, KIND_IP_NET)) + send_tag if send_tag else b""
        grown = _SEAL_GROWTH + len(send_tag)
        now = self.clock()
        # (With the lane, Python reads only hand-ups, and then on until the TAP is empty: the
        # baton goes back at once.)
        sparse = now - self._tap_seen >= timing.DATAPLANE_SPARSE_S and baton is None
        limit = 1 if sparse else BATCH
        self._tap_seen = now
        n = 0
        local = 0
        # A TAP granted offloads: each read's virtio header (flags, gso_type first).
        vin = self._vnet_in if self._offload else None
        # A TCP batch's segments to handle as frames read, last first (see _cut_batch).
        pending: list[bytearray] = []
        while True:
            if pending:
                seg = pending.pop()
                size = len(seg)
                buf[:size] = seg
            else:
                if n >= limit or local >= LOCAL_BATCH:
                    break
                try:
                    size = readv(fd, bufs) - skip if lan_read is None else lan_read(buf)
                except BlockingIOError:
                    if baton is not None:
                        if fd != baton.fd and baton.records:  # holding it: the TAP itself
                            fd, limit = baton.fd, BATCH
                            continue
                        baton.dry = fd == baton.fd
                    break
                except OSError as exc:
                    self.drops[IoDrop.TAP_READ_ERROR] += 1
                    log.debug("tap read: %s", exc)
                    break
                n += 1
                if baton is not None and fd != baton.fd:
                    baton.records += 1
                if size <= 0:  # dropped by the LAN side (a TAP never reads 0 bytes)
                    continue
                if vin is not None and (vin[1] or vin[0] & NEEDS_CSUM):
                    if vin[1]:  # a TCP batch: cut, and into the runs if it can be
                        pending, cut = self._cut_batch(size, now, runs, out, tagged, grown)
                        # Its segments count as frames read: a drain holds at most BATCH
                        # packets' worth (not BATCH batches, 16 MB), as without offloads.
                        n += max(0, cut - 1)
                        continue
                    if self._finish_frame(view[:size]) is not None:
                        self.drops[IoDrop.TAP_OFFLOAD] += 1
                        continue
            verdict = check_out(buf, size, now)
            if type(verdict) is NodeId:
                if admit is not None and not admit(view[:size]):
                    continue
                if runs is None:
                    run = None
                    path_max = path_limit(verdict)
                else:
                    # Runs: each destination's messages, sealed in one call after the batch,
                    # and its path limit, read once (keyed by the id's int: NodeId's own
                    # __hash__ is a Python call).
                    run = runs.get(verdict.value)
                    if run is None:
                        run = runs[verdict.value] = (verdict, [], path_limit(verdict))
                        if wanted is not None:  # the lane may take this vIP from now on
                            wanted.add(bytes(view[30:34]))
                    path_max = run[2]
                if path_max is not None and size + grown > path_max:
                    self._too_big(view[14:size], path_max - grown - 14)
                    continue
                if tagged:  # one copy: the tag does not fit in place of the ethertype
                    message = memoryview(tagged + view[14:size])
                else:
                    # Fast path: the ethertype's two bytes become the DIRECT header in place,
                    # so the packet is sealed straight out of the read buffer.
                    buf[12] = TYPE_DIRECT
                    buf[13] = KIND_IP
                    message = view[12:size]
                if run is None:
                    self._seal(verdict, message, now, out)
                else:
                    run[1].append(bytes(message))
            elif verdict is Drop.TAP_NOT_IPV4 or verdict is Drop.TAP_OUTSIDE_SUBNET:
                # ARP, DHCP, DNS to the gateway...: the local services' (counted if refused).
                local += 1
                if not self._local_frame(bytes(view[:size])):
                    self.drops[verdict] += 1
            elif admit is not None and not admit(view[:size]):
                continue  # counted by the LAN side
            elif verdict is Verdict.LOOKUP:
                dip = bytes(view[30:34])
                self._held(self.owners.hold_out(dip, bytes(view[14:size]), now=now), dip)
            elif (
                verdict is Drop.TO_SELF
                and admit is not None
                and ((reply := echo_reply(view[14:size])) is not None)
            ):
                # A LAN host pinging its own router's name: no stack behind that vIP either.
                self.counters["own_echo_answered"] += 1
                self._write(reply)
            elif isinstance(verdict, Drop):
                self.drops[verdict] += 1
        if self.local_side is not None and self.local_side.pending():
            self._loop.call_soon(self._drain_tap)  # no readable fd will wake us for those
        if n == 0:  # nothing read: nothing reached the core
            return
        if runs:
            for dst, messages, _ in runs.values():
                if not messages:  # every one too big for the path
                    continue
                sealed = core.seal_ip_run(dst, messages, now=now)
                if sealed is None:
                    # A relayed link's run leaves with the core's output (_flush_core);
                    # else as one by one (rekey due, not probed yet...).
                    if core.send_relayed_run(dst, messages, now=now):
                        continue
                    for one in messages:
                        self._seal(dst, memoryview(one), now, out)
                elif (batch := out.get(sealed[1])) is None:
                    out[sealed[1]] = sealed[0]
                else:
                    batch.extend(sealed[0])
        for ep, batch in out.items():
            if isinstance(ep, Endpoint):
                send_batch(batch, ep)
            else:  # a punching socket's path (port guessing)
                node.send_batch_on_path(batch, ep)
        self.counters["tap_batches"] += 1
        self.counters["tap_frames"] += n
        self._flush_core(now)

    def _cut_batch(
        self,
        size: int,
        now: float,
        runs: dict[int, tuple[NodeId, list[bytes], int | None]] | None,
        out: dict[Endpoint | SocketPath, list[bytes]],
        tagged: bytes,
        grown: int,
    ) -> tuple[list[bytearray], int]:
        """A TCP batch of ``size`` bytes in the read buffer (``GSO_TCPV4``: a TAP granted
        offloads), cut into segments (:func:`ipop.vnet.offload.split_tcp`) of its segment size
        that also fit the probed path to its destination's node, every checksum finished. For
        a node (one verdict: every segment has the batch's addresses), the segments are cut as
        the DIRECT messages :meth:`_drain_tap` makes of frames read and join that node's run
        (or are sealed one by one without runs); else they are returned, last first, as
        frames for :meth:`_drain_tap` to handle as if read (the local services', a lookup's,
        a drop's). Also returns how many segments the batch made (0: dropped)."""
        self.counters["tso_batches"] += 1
        vin = self._vnet_in
        if (vin[1] & ~_GSO_ECN) != GSO_TCPV4:
            self.drops[IoDrop.TAP_OFFLOAD] += 1  # a batch kind we never asked for
            return [], 0
        gso_size = int.from_bytes(vin[4:6], sys.byteorder)
        view = self._rview[:size]
        verdict = self.filter.check_out(self._rbuf, size, now)
        node = verdict if type(verdict) is NodeId else None  # else a lookup's, ours, a drop
        path_max = None if node is None else self.node.core.link.pmtu.limits.get(node)
        mtu = _FRAME_MAX if path_max is None else path_max - grown - 14
        lead = None if node is None else (tagged or _DIRECT_IP)
        segs = self._split_tcp(view, mtu, gso_size, lead=lead)
        if isinstance(segs, str):
            self.drops[IoDrop.TAP_OFFLOAD] += 1
            return [], 0
        self.counters["tso_segments"] += len(segs)
        if node is None:
            segs.reverse()
            return segs, len(segs)
        if runs is None:
            for seg in segs:
                self._seal(node, memoryview(seg), now, out)
            return [], len(segs)
        run = runs.get(node.value)
        if run is None:
            run = runs[node.value] = (node, [], path_max)
        run[1].extend(segs)  # type: ignore[arg-type]  # bytearrays seal as bytes do
        return [], len(segs)

    def _seal(
        self,
        dst: NodeId,
        message: memoryview,
        now: float,
        out: dict[Endpoint | SocketPath, list[bytes]],
    ) -> None:
        """Seal one DIRECT ``message`` (IP) for ``dst`` into ``out`` (its datagrams per
        path), or send it the slow way (relayed, routed, not probed yet)."""
        core = self.node.core
        sealed = core.seal_ip(dst, message, now=now)
        if sealed is not None:
            data, ep = sealed
            batch = out.get(ep)
            if batch is None:
                out[ep] = [data]
            else:
                batch.append(data)
            return
        # The core's own size check: too big for a relayed or routed path is answered.
        packet = message[2 + len(self._send_tag) :]  # after the DIRECT header and any tag
        mtu = core.send_ip(dst, bytes(packet), now=now, tag=self._send_tag)
        if mtu is not None:
            self._too_big(packet, mtu)

    def _too_big(self, packet: memoryview, mtu: int) -> None:
        """``packet`` does not fit the path to its destination's node (direct, relayed or
        routed: :meth:`NodeCore.ip_mtu`): answered as a router would (see
        :mod:`ipop.vnet.toobig` for why the TAP's MTU stays)."""
        answer = frag_needed(packet, mtu)
        if answer is None:
            self.drops[IoDrop.TOO_BIG_FOR_PATH] += 1
            return
        self.counters["frag_needed_sent"] += 1
        self._write(answer)

    # --- vIP → node lookups -----------------------------------------------------------------

    def learn_owner(self, vip: IPv4Address, owner: NodeId) -> None:
        """``owner`` holds ``vip`` by a DHT answer read elsewhere (a name lookup's check of
        the address's holder: the record a lookup of ours would read), kept as our own
        lookup's answer; never over an entry we hold, nor while a lookup of ours runs."""
        key = vip.packed
        if key in self._lookups or self.owners.holder(key, now=self.clock()) is not None:
            return
        self.counters["owners_learned"] += 1
        self.owners.answer(key, owner, now=self.clock())

    def _held(self, got: Held | LookupDrop, vip: bytes) -> None:
        """What the owner table did with a packet waiting for ``vip``'s owner."""
        if got is Held.START:
            if self._closed:
                self.owners.abandon(vip)
                return
            self._lookups[vip] = self._loop.create_task(self._lookup(vip))
        elif got is not Held.QUEUED:
            self.drops[got] += 1

    async def _lookup(self, vip: bytes) -> None:
        try:
            owner = await asyncio.wait_for(
                self._lookup_owner(IPv4Address(vip)), timing.OWNER_LOOKUP_TIMEOUT_S
            )
        except asyncio.CancelledError:
            self._lookups.pop(vip, None)
            self.owners.abandon(vip)
            raise
        except Exception:  # a DHT failure is a miss, retried on the next packet
            log.debug("owner lookup for %s failed", IPv4Address(vip), exc_info=True)
            self._lookups.pop(vip, None)
            out, held = self.owners.abandon(vip)
            self.drops[IoDrop.LOOKUP_FAILED] += len(out) + len(held)
            return
        self._lookups.pop(vip, None)
        now = self.clock()
        self.counters["owner_lookups"] += 1
        out, held = self.owners.answer(vip, owner, now=now)
        for src, packet in held:  # the same checks again, with the answer known now
            self._handle_in(self.filter.check_in(src, packet, 0, now), src, packet, now)
        if not out:
            return
        if owner is None:
            self.drops[Drop.NO_SUCH_VIP] += len(out)
            return
        if owner.value == self.node.node_id.value:
            self.drops[Drop.TO_SELF] += len(out)
            return
        for packet in out:
            mtu = self.node.core.send_ip(owner, packet, now=now, tag=self._send_tag)
            if mtu is not None:
                self._too_big(memoryview(packet), mtu)
        if self.node.driver is not None:
            self.node.driver.pump()
