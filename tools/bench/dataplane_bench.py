"""Micro benchmark of the data plane's per-packet core work, without sockets or a TAP.

Two :class:`ipop.core.NodeCore` objects link up in memory (real handshake, real overlay
join); then a 1,400-byte IP packet goes the fast path both ways: ``seal_ip`` on the sender
(DIRECT header + AES-GCM), ``receive_direct`` on the receiver (replay window, AES-GCM open,
overlay membership check), plus the end-of-batch ``flush`` every ``--batch`` packets, as
``ipop.aio.dataplane`` does. The slow path (``send`` → outbox → ``receive_datagram`` → events)
is measured beside it. Then the same through :class:`ipop.aio.dataplane.DataPlane` itself
(its packet checks included): frames drained from a fake TAP (a unix socket pair) to a UDP
socket stand-in, and sealed datagrams handed to its receive path, whose TAP writes are only
collected; once more with both planes sending tagged IP (KIND_IP_NET, as a daemon in several
networks does: ``tagged``). Prints µs per packet; the kernel's share (TAP and UDP syscalls)
and the event loop's are not in these numbers: ``ipop-lab bench`` measures the whole path.

Run: ``.venv/bin/python -m ipop.tools.bench.dataplane_bench [--count 100000] [--batch 64]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import cast

from ipop.aio.dataplane import DataPlane, UdpSocket
from ipop.aio.stack import Node
from ipop.core import NodeCore
from ipop.identity import NetworkCA
from ipop.link import fastpath
from ipop.overlay.messages import KIND_IP, TYPE_DIRECT
from ipop.testing.identities import make_identity, make_network
from ipop.types import Endpoint, NodeId, SocketPath
from ipop.vnet.packet import IPPROTO_UDP, build_ipv4

A_EP = Endpoint("198.51.100.1", 5800)
B_EP = Endpoint("203.0.113.2", 5800)
SUBNET = IPv4Network("100.64.0.0/16")
A_VIP = IPv4Address("100.64.0.10")
B_VIP = IPv4Address("100.64.0.20")
TAP_MAC = b"\x02\x00\x00\x00\x00\x01"
VIRTUAL_MAC = b"\x02\x00\x00\x00\x00\xfe"


class PlaneNode:
    """What a DataPlane uses of :class:`ipop.aio.stack.Node`, around a bare NodeCore."""

    def __init__(self, core: NodeCore) -> None:
        self.core = core
        self.node_id = core.local_id
        self.driver = None
        self.on_ip: Callable[[NodeId, bytes], None] | None = None
        self.on_net_ip: Callable[[NodeId, bytes], None] | None = None
        self.punch_sink: Callable[[bytes, SocketPath], None] | None = None

    def send_batch_on_path(self, datagrams: list[bytes], path: SocketPath) -> None:
        pass


class SinkUdp:
    """Stands in for :class:`UdpSocket`: keeps what the data plane sends (nothing leaves)."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Endpoint]] = []
        # An fd for DataPlane.start/close to (un)register; unbound, never used for traffic.
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)

    def close(self) -> None:
        self.sock.close()

    def send_batch(self, datagrams: list[bytes], addr: Endpoint) -> None:
        self.sent.extend((d, addr) for d in datagrams)


async def _no_owner(vip: IPv4Address) -> NodeId | None:
    return None


def fake_tap() -> tuple[socket.socket, socket.socket]:
    """(the data plane's end, the kernel's end): one frame per message, like a TAP fd."""
    ours, kernel = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for s in (ours, kernel):
        s.setblocking(False)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    return ours, kernel


def tap_frames(kernel: socket.socket) -> list[bytes]:
    """Every frame waiting at the kernel's end of a :func:`fake_tap`."""
    frames = []
    while True:
        try:
            frames.append(kernel.recv(65536))
        except BlockingIOError:
            return frames


def dataplane(
    core: NodeCore,
    tap_fd: int,
    *,
    clock: Callable[[], float],
    lookup_owner: Callable[[IPv4Address], Awaitable[NodeId | None]] = _no_owner,
    vnet_hdr: bool = False,
    runs: bool | None = None,
    node: PlaneNode | None = None,
    tag: bytes = b"",
    primary: bool = True,
    offload: bool = False,
) -> DataPlane:
    """A DataPlane over ``core`` with a fake TAP and a :class:`SinkUdp` (call in a loop);
    ``vnet_hdr``: as over a TAP opened with IFF_VNET_HDR (``offload``: and granted offloads,
    its reads TCP batches and begun checksums); ``node``, ``tag``, ``primary``: one of the
    planes of a node in several networks (DataPlane.join)."""
    dp = DataPlane(
        cast(Node, PlaneNode(core) if node is None else node),
        cast(UdpSocket, SinkUdp()),
        tap_fd,
        subnet=SUBNET,
        lookup_owner=lookup_owner,
        local_frame=lambda frame: False,
        clock=clock,
        vnet_hdr=vnet_hdr,
        runs=runs,
        tag=tag,
        primary=primary,
        offload=offload,
    )
    dp.set_link_layer(TAP_MAC, VIRTUAL_MAC)
    return dp


def linked_pair(now: float, ca: NetworkCA | None = None) -> tuple[NodeCore, NodeCore]:
    """Nodes a and b of ``ca`` (default: a new network's), linked in memory."""
    ca = make_network("benchnet", now=now - 60) if ca is None else ca
    b = NodeCore(make_identity(ca, "b", now=now - 60), rng=random.Random(2), bootstrap=[])
    a = NodeCore(make_identity(ca, "a", now=now - 60), rng=random.Random(1), bootstrap=[B_EP])
    b.start(now=now)
    a.start(now=now)
    for step in range(50):
        t = now + step * 0.01
        moved = False
        for data, path in a.datagrams_to_send(now=t):
            moved = True
            b.receive_datagram(data, A_EP if path == B_EP else path, now=t)
        for data, path in b.datagrams_to_send(now=t):
            moved = True
            a.receive_datagram(data, B_EP if path == A_EP else path, now=t)
        while a.next_event() or b.next_event():
            pass
        if not moved and a.link.is_up(b.local_id):
            break
    if not (a.link.is_up(b.local_id) and b.link.is_up(a.local_id)):
        raise RuntimeError("the in-memory pair did not link up")
    return a, b


def bench(count: int, batch: int, size: int) -> dict[str, float]:
    now = time.time()
    a, b = linked_pair(now)
    packet = bytearray(2 + size)
    packet[0], packet[1] = TYPE_DIRECT, KIND_IP
    view = memoryview(packet)
    out: dict[str, float] = {}

    t0 = time.perf_counter()
    sealed = []
    for i in range(count):
        got = a.seal_ip(b.local_id, view, now=now)
        assert got is not None
        sealed.append(got[0])
        if i % batch == batch - 1:
            a.flush(now=now)
    out["seal_us"] = (time.perf_counter() - t0) / count * 1e6

    t0 = time.perf_counter()
    for i, data in enumerate(sealed):
        got2 = b.receive_direct(data, A_EP, now=now, kind=KIND_IP)
        assert got2 is not None
        if i % batch == batch - 1:
            b.flush(now=now)
    out["open_us"] = (time.perf_counter() - t0) / count * 1e6

    slow = max(1, count // 10)
    payload = bytes(size)
    t0 = time.perf_counter()
    for _ in range(slow):
        a.send(b.local_id, KIND_IP, payload, now=now)
        for data, _path in a.datagrams_to_send(now=now):
            b.receive_datagram(data, A_EP, now=now)
        while b.next_event() is not None:
            pass
    out["slow_roundtrip_us"] = (time.perf_counter() - t0) / slow * 1e6
    return out


@dataclass
class Planes:
    """Two linked nodes' data planes over fake TAPs, each knowing the other's vIP."""

    a: NodeCore
    b: NodeCore
    dpa: DataPlane
    dpb: DataPlane
    tap_a: socket.socket  # the kernel's end of A's TAP: frames sent here are read by dpa
    tap_b: socket.socket  # the kernel's end of B's TAP: what dpb writes is read here
    now: float


@contextlib.contextmanager
def planes(now: float, runs: bool | None = None, tagged: bool = False) -> Iterator[Planes]:
    """:class:`Planes` at ``now`` (call in a loop), closed afterwards; ``runs``: in runs
    (ipop.link.fastpath) or one by one (None: the DataPlane's default); ``tagged``: each
    sends its IP tagged with one network's tag, as the planes of a daemon in several do."""
    a, b = linked_pair(now)
    (ta, ka), (tb, kb) = fake_tap(), fake_tap()
    tag = b"\x10\x20\x30\x40"
    dpa = dataplane(a, ta.fileno(), clock=lambda: now, runs=runs, tag=tag)
    dpb = dataplane(b, tb.fileno(), clock=lambda: now, runs=runs, tag=tag)
    if tagged:
        dpa.join([])
        dpb.join([])
    try:
        dpa.set_own_ip(A_VIP)
        dpb.set_own_ip(B_VIP)
        dpa.owners.answer(B_VIP.packed, b.local_id, now=now)
        dpb.owners.answer(A_VIP.packed, a.local_id, now=now)
        yield Planes(a, b, dpa, dpb, ka, kb, now)
    finally:
        for dp in (dpa, dpb):
            dp.close()
            cast(SinkUdp, dp.udp).close()
        for s in (ta, ka, tb, kb):
            s.close()


async def bench_dataplane(
    count: int, batch: int, size: int, runs: bool | None = None, tagged: bool = False
) -> dict[str, float]:
    """µs per packet through DataPlane: TAP -> UDP (``_drain_tap``), UDP -> TAP (``_take``);
    ``runs`` and ``tagged`` as for :func:`planes`."""
    now = time.time()
    with planes(now, runs, tagged) as p:
        dpa, dpb, ka = p.dpa, p.dpb, p.tap_a
        packet = build_ipv4(A_VIP, B_VIP, IPPROTO_UDP, bytes(size - 20))
        frame = VIRTUAL_MAC + TAP_MAC + b"\x08\x00" + packet
        out: dict[str, float] = {}
        spent = 0.0
        for _ in range(max(1, count // batch)):
            for _ in range(batch):
                ka.send(frame)
            t0 = time.perf_counter()
            dpa._drain_tap()
            spent += time.perf_counter() - t0
        sent = cast(SinkUdp, dpa.udp).sent
        if len(sent) != max(1, count // batch) * batch:
            raise RuntimeError(f"sent {len(sent)} of {count}: {dict(dpa.drops)}")
        out["dp_tap_to_udp_us"] = spent / len(sent) * 1e6
        datagrams = [d for d, _ in sent]
        delivered = 0
        t0 = time.perf_counter()
        for i in range(0, len(datagrams), batch):
            tap_out: list[tuple[bytes, bytes | memoryview]] = []
            dpb._tap_out = tap_out  # as in a batch: frames the checks deliver are collected
            dpb._take(datagrams[i : i + batch], A_EP, now, tap_out)
            dpb._tap_out = None
            dpb._flush_core(now)
            delivered += len(tap_out)
        out["dp_udp_to_tap_us"] = (time.perf_counter() - t0) / len(datagrams) * 1e6
        if delivered != len(datagrams):
            raise RuntimeError(f"delivered {delivered} of {len(datagrams)}: {dict(dpb.drops)}")
        return out


def main() -> None:
    ap = argparse.ArgumentParser(prog="dataplane_bench", description=__doc__)
    ap.add_argument("--count", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=1400)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    best: dict[str, float] = {}
    # The DataPlane one by one (as with IPOP_FASTPATH=python), and in runs with each backend
    # (the pure twin's runs are not what the daemon uses: they show what the native code buys).
    modes = [("one by one", "python", False), ("runs, python twin", "python", True)]
    if fastpath.native_class() is not None:
        modes.append(("runs, native", "native", True))
    # What a daemon in several networks pays: its IP tagged, in the same runs.
    modes.append(("tagged, " + modes[-1][0], modes[-1][1], modes[-1][2]))
    for _ in range(args.repeat):
        got = bench(args.count, args.batch, args.size)
        for k, v in got.items():
            best[k] = min(v, best.get(k, v))
        for name, backend, runs in modes:
            fastpath.use(backend)
            tagged = name.startswith("tagged")
            got = asyncio.run(bench_dataplane(args.count, args.batch, args.size, runs, tagged))
            for k, v in got.items():
                key = f"{k} {name}"
                best[key] = min(v, best.get(key, v))
    fastpath.use("auto")
    print(f"packet {args.size} B, batch {args.batch}, best of {args.repeat}:")
    print(f"  fast path seal (TAP -> UDP core work): {best['seal_us']:6.2f} us/packet")
    print(f"  fast path open (UDP -> TAP core work): {best['open_us']:6.2f} us/packet")
    print(f"  slow path send+receive, per packet:    {best['slow_roundtrip_us']:6.2f} us/packet")
    for name, _, _ in modes:
        tap, udp = best[f"dp_tap_to_udp_us {name}"], best[f"dp_udp_to_tap_us {name}"]
        print(f"  DataPlane TAP -> UDP (checks + seal), {name + ':':<26} {tap:6.2f} us/packet")
        print(f"  DataPlane UDP -> TAP (open + checks), {name + ':':<26} {udp:6.2f} us/packet")


if __name__ == "__main__":
    main()
