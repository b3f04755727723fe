"""The data plane with its checks, over a fake TAP (a unix socket pair) and an in-memory pair.

Findings 9 and 10 of issue 13: a member's packets reach the TAP only when they are addressed to
this node, and a flood of random addresses leaves the owner table and the DHT lookups bounded.
The anti-spoofing rule holds on both ways in: a direct link (``_take``, the fast path) and the
overlay (``_from_overlay``, whose ``src`` is the routed message's authenticated origin).
"""

from __future__ import annotations

import ast
import asyncio
import random
import socket
import time
from collections.abc import Awaitable, Callable
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any, cast

import pytest
from dnslib import DNSRecord

from ipop.aio.dataplane import DROP_REASONS, LOCAL_BATCH, DataPlane, IoDrop
from ipop.core import ROUTED_IP_MTU, NodeCore
from ipop.dhcp_dns.services import TapServices, TapServicesRunner
from ipop.identity import NetworkCA
from ipop.link import fastpath
from ipop.link.pmtu import MAX_DATAGRAM
from ipop.overlay.messages import KIND_IP, TYPE_DIRECT
from ipop.overlay.origin import ROUTED_OVERHEAD, ROUTED_SEALED_OVERHEAD
from ipop.testing.identities import make_identity, make_network
from ipop.testing.tcp import ACK, PSH, tcp_segment
from ipop.tools.bench.dataplane_bench import (
    A_EP,
    A_VIP,
    B_EP,
    B_VIP,
    SUBNET,
    TAP_MAC,
    VIRTUAL_MAC,
    SinkUdp,
    dataplane,
    fake_tap,
    linked_pair,
    tap_frames,
)
from ipop.types import NodeId
from ipop.vnet.filter import Drop, Verdict
from ipop.vnet.gro import GSO_TCPV4, NEEDS_CSUM, NO_GSO, VNET_HDR
from ipop.vnet.owners import LOOKUP_BURST, LOOKUP_RATE_PER_S, MAX_IN_FLIGHT, LookupDrop
from ipop.vnet.packet import IPPROTO_UDP, build_ipv4, build_udp_frame

ROOT = Path(__file__).resolve().parents[2]
C_ID = NodeId(0xC0FFEE)
C_VIP = IPv4Address("100.64.0.30")
DEADLINE_S = 5.0


class Lookups:
    """The DHT as the data plane sees it: a fixed vIP → owner map; counts calls in flight.
    While ``gate`` is clear, lookups hang (a slow DHT)."""

    def __init__(self, owners: dict[IPv4Address, NodeId], *, default: NodeId | None = None):
        self.owners = owners
        self.default = default
        self.gate = asyncio.Event()
        self.gate.set()
        self.started = 0
        self.running = 0
        self.most = 0

    async def __call__(self, vip: IPv4Address) -> NodeId | None:
        self.started += 1
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await self.gate.wait()
        finally:
            self.running -= 1
        return self.owners.get(vip, self.default)


async def _until(cond: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.001)


def _ip(src: IPv4Address | str, dst: IPv4Address | str, body: bytes = b"x" * 20) -> bytes:
    return build_ipv4(IPv4Address(src), IPv4Address(dst), IPPROTO_UDP, body)


def _tap_frames(kernel: socket.socket) -> list[bytes]:
    return tap_frames(kernel)


class Harness:
    """Node B's data plane, linked to node A in memory; ``kernel`` is B's TAP's other end."""

    def __init__(
        self,
        lookups: Callable[[IPv4Address], Awaitable[NodeId | None]],
        *,
        vnet_hdr: bool = False,
        ca: NetworkCA | None = None,
        offload: bool = False,
        runs: bool | None = None,
    ) -> None:
        self.now = time.time()
        self.a, self.b = linked_pair(self.now, ca)
        self.ours, self.kernel = fake_tap()
        self.dp: DataPlane = dataplane(
            self.b,
            self.ours.fileno(),
            clock=lambda: self.now,
            lookup_owner=lookups,
            vnet_hdr=vnet_hdr,
            offload=offload,
            runs=runs,
        )
        self.dp.set_own_ip(B_VIP)

    def close(self) -> None:
        self.dp.close()
        self.ours.close()
        self.kernel.close()

    def direct(self, packet: bytes) -> list[tuple[bytes, bytes | memoryview]]:
        """``packet`` from A over the link (fast path); the frames it put in the TAP batch."""
        tap_out: list[tuple[bytes, bytes | memoryview]] = []
        self.dp._take([self.sealed(packet)], A_EP, self.now, tap_out)
        return tap_out

    def sealed(self, packet: bytes) -> bytes:
        """``packet`` as A's DATA datagram to B over the link."""
        a: NodeCore = self.a
        sealed = a.seal_ip(self.b.local_id, bytes((TYPE_DIRECT, KIND_IP)) + packet, now=self.now)
        assert sealed is not None
        return sealed[0]

    def batch(self, packets: list[bytes]) -> None:
        """``packets`` from A over the link in one UDP batch, written to the TAP after it."""

        def receive(tap_out: list[tuple[bytes, bytes | memoryview]]) -> None:
            self.dp._take([self.sealed(p) for p in packets], A_EP, self.now, tap_out)

        self.dp._batch(receive)

    def routed(self, packet: bytes, src: NodeId | None = None) -> None:
        """``packet`` delivered by the overlay from ``src`` (default A), the slow path."""
        self.dp._from_overlay(src if src is not None else self.a.local_id, packet)


def _run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(test())


# --- finding 10: the inbound destination ----------------------------------------------------------


def test_a_members_packets_reach_the_tap_only_for_this_nodes_address() -> None:
    async def go() -> None:
        lookups = Lookups({})
        h = Harness(lookups)
        lookups.owners[A_VIP] = h.a.local_id
        try:
            # The honest packet, routed: A's address is looked up, then it is written.
            h.routed(_ip(A_VIP, B_VIP))
            await _until(lambda: lookups.started == 1 and not h.dp._lookups, "the lookup")
            assert len(_tap_frames(h.kernel)) == 1
            assert len(h.direct(_ip(A_VIP, B_VIP))) == 1
            others = ["100.64.0.30", "100.64.255.255", "198.18.0.5", "127.0.0.1", "224.0.0.1"]
            for dst in others:
                h.routed(_ip(A_VIP, dst))
                assert h.direct(_ip(A_VIP, dst)) == []
            assert _tap_frames(h.kernel) == []
            assert h.dp.drops["inner_dst_not_ours"] == 2 * len(others)
        finally:
            h.close()

    _run(go)


def test_a_router_delivers_for_its_lan_hosts_only() -> None:
    async def go() -> None:
        lookups = Lookups({})
        h = Harness(lookups)
        lookups.owners[A_VIP] = h.a.local_id
        host = IPv4Address("100.64.0.40")
        try:
            h.routed(_ip(A_VIP, B_VIP))
            await _until(lambda: not h.dp._lookups, "the lookup")
            _tap_frames(h.kernel)
            h.dp.add_local_ip(host)
            assert len(h.direct(_ip(A_VIP, host))) == 1
            h.dp.remove_local_ip(host)
            assert h.direct(_ip(A_VIP, host)) == []
            assert h.dp.drops["inner_dst_not_ours"] == 1
        finally:
            h.close()

    _run(go)


# --- anti-spoofing, on both ways in -------------------------------------------------------------


@pytest.mark.parametrize("way", ["direct", "routed"])
def test_a_source_held_by_another_node_is_refused(way: str) -> None:
    async def go() -> None:
        lookups = Lookups({C_VIP: C_ID})
        h = Harness(lookups)
        lookups.owners[A_VIP] = h.a.local_id

        def send(packet: bytes) -> int:
            if way == "direct":
                return len(h.direct(packet))
            h.routed(packet)
            return len(_tap_frames(h.kernel))

        try:
            # Unknown yet: held while C's address is looked up, then refused.
            assert send(_ip(C_VIP, B_VIP)) == 0
            await _until(lambda: not h.dp._lookups, "the lookup")
            assert _tap_frames(h.kernel) == []
            assert h.dp.drops["spoofed_inner_src"] == 1
            # Known now: refused at once. B's own address is nobody else's either.
            assert send(_ip(C_VIP, B_VIP)) == 0
            assert send(_ip(B_VIP, B_VIP)) == 0
            assert h.dp.drops["spoofed_inner_src"] == 3
            # A's own address passes, once known.
            send(_ip(A_VIP, B_VIP))
            await _until(lambda: not h.dp._lookups, "the lookup")
            assert len(_tap_frames(h.kernel)) + send(_ip(A_VIP, B_VIP)) == 2
        finally:
            h.close()

    _run(go)


def test_a_routed_packet_is_checked_against_its_authenticated_origin() -> None:
    async def go() -> None:
        h = Harness(Lookups({C_VIP: C_ID}))
        try:
            h.routed(_ip(C_VIP, B_VIP), src=C_ID)
            await _until(lambda: not h.dp._lookups, "the lookup")
            assert len(_tap_frames(h.kernel)) == 1
            h.routed(_ip(C_VIP, B_VIP), src=h.a.local_id)
            assert _tap_frames(h.kernel) == []
            assert h.dp.drops["spoofed_inner_src"] == 1
        finally:
            h.close()

    _run(go)


# --- finding 9: bounded tables and lookups ------------------------------------------------------


def _random_vip(rng: random.Random) -> IPv4Address:
    return IPv4Address(0x64400000 + rng.randrange(2, 0xFFFF))


def test_a_flood_of_random_sources_leaves_lookups_and_the_table_bounded() -> None:
    async def go() -> None:
        rng = random.Random(9)
        lookups = Lookups({}, default=C_ID)
        lookups.gate.clear()  # a slow DHT: nothing answers while the flood goes on
        h = Harness(lookups)
        try:
            for _ in range(3000):
                h.routed(_ip(_random_vip(rng), B_VIP))
                assert h.direct(_ip(_random_vip(rng), B_VIP)) == []
            await _until(lambda: lookups.running == len(h.dp._lookups), "the lookups to start")
            assert lookups.most <= MAX_IN_FLIGHT
            assert lookups.started <= LOOKUP_BURST
            assert h.dp.owners.held_packets <= lookups.started * 32
            # Time passes, the DHT answers (a member holds each), the flood goes on.
            lookups.gate.set()
            for _ in range(10):
                h.now += 1.0
                for _ in range(300):
                    h.routed(_ip(_random_vip(rng), B_VIP))
                await _until(lambda: not h.dp._lookups, "the lookups")
            assert lookups.started <= LOOKUP_BURST + 10 * LOOKUP_RATE_PER_S
            assert len(h.dp.known_owners()) <= LOOKUP_BURST + 10 * LOOKUP_RATE_PER_S + 1
            assert _tap_frames(h.kernel) == []
            assert h.dp.drops[LookupDrop.LOOKUP_RATE_LIMITED] > 0
        finally:
            h.close()

    _run(go)


def test_a_flood_of_random_destinations_from_the_tap_is_bounded_too() -> None:
    async def go() -> None:
        rng = random.Random(10)
        lookups = Lookups({})
        lookups.gate.clear()
        h = Harness(lookups)
        try:
            for _ in range(20):
                for _ in range(100):
                    frame = VIRTUAL_MAC + TAP_MAC + b"\x08\x00" + _ip(B_VIP, _random_vip(rng))
                    h.kernel.send(frame)
                h.dp._drain_tap()
            await _until(lambda: lookups.running == len(h.dp._lookups), "the lookups to start")
            assert lookups.most <= MAX_IN_FLIGHT
            assert lookups.started <= LOOKUP_BURST
        finally:
            h.close()

    _run(go)


def test_an_owner_a_name_lookup_learned_sends_the_first_packet_without_a_lookup() -> None:
    """``ping NAME``: the name lookup read the address's holder record already; the data
    plane keeps that owner (learn_owner) and its first packet reads the DHT no more. Never
    over a fresh answer of its own, nor while its own lookup runs."""

    async def go() -> None:
        lookups = Lookups({}, default=NodeId(0xBAD))
        h = Harness(lookups)
        try:
            sink = h.dp.udp
            assert isinstance(sink, SinkUdp)
            h.dp.learn_owner(A_VIP, h.a.local_id)
            h.kernel.send(VIRTUAL_MAC + TAP_MAC + b"\x08\x00" + _ip(B_VIP, A_VIP))
            h.dp._drain_tap()
            assert lookups.started == 0
            assert [ep for _, ep in sink.sent] == [A_EP]
            assert h.dp.counters["owners_learned"] == 1
            h.dp.learn_owner(A_VIP, C_ID)  # an answer we hold stays
            assert h.dp.live_owner(A_VIP.packed) == h.a.local_id
            # While a lookup of ours runs, its answer decides.
            lookups.gate.clear()
            h.kernel.send(VIRTUAL_MAC + TAP_MAC + b"\x08\x00" + _ip(B_VIP, C_VIP))
            h.dp._drain_tap()
            await _until(lambda: lookups.running == 1, "the lookup")
            h.dp.learn_owner(C_VIP, C_ID)
            assert h.dp.live_owner(C_VIP.packed) is None
            lookups.gate.set()
            await _until(lambda: not h.dp._lookups, "the lookup's end")
            assert h.dp.live_owner(C_VIP.packed) == NodeId(0xBAD)
        finally:
            h.close()

    _run(go)


# --- the fast path's inlined check equals the filter's verdict -----------------------------------


def test_the_fast_path_delivers_exactly_what_the_filter_says() -> None:
    async def go() -> None:
        rng = random.Random(11)
        lookups = Lookups({C_VIP: C_ID})
        h = Harness(lookups)
        lookups.owners[A_VIP] = h.a.local_id
        try:
            for vip in (A_VIP, C_VIP, IPv4Address("100.64.9.9")):
                h.routed(_ip(vip, B_VIP))
            await _until(lambda: not h.dp._lookups, "the lookups")
            addrs = [A_VIP, B_VIP, C_VIP, "100.64.9.9", "100.64.0.1", "198.18.0.5", "0.0.0.0"]
            delivered = 0
            for _ in range(400):
                packet = bytearray(_ip(rng.choice(addrs), rng.choice(addrs)))
                if rng.random() < 0.1:
                    packet[0] = rng.choice((0x60, 0x05, 0x46))
                if rng.random() < 0.1:
                    packet = packet[: rng.randrange(len(packet))]
                msg = bytes((TYPE_DIRECT, KIND_IP)) + packet
                verdict = h.dp.filter.check_in(h.a.local_id, msg, 2, h.now)
                got = h.direct(bytes(packet))
                assert (verdict is Verdict.DELIVER) == (len(got) == 1), (packet.hex(), verdict)
                delivered += len(got)
            assert delivered > 0
            assert set(h.dp.drops) <= DROP_REASONS
            assert all(isinstance(k, IoDrop | Drop | LookupDrop) for k in h.dp.drops)
        finally:
            h.close()

    _run(go)


# --- a LAN side that holds frames the fd does not signal (ipop.router.lan: a cut TCP batch) -------


class QueuedSide:
    """A LocalSide whose reads come from a queue (the fd stays empty); 0 is a dropped frame."""

    out_fd = -1  # never written to here

    def __init__(self, frames: list[bytes]) -> None:
        self.frames = frames

    def header_for(self, packet: bytes) -> bytes | None:
        return None

    def admit(self, frame: memoryview) -> bool:
        return True

    def read_into(self, buf: bytearray) -> int:
        if not self.frames:
            raise BlockingIOError
        frame = self.frames.pop(0)
        buf[: len(frame)] = frame
        return len(frame)

    def pending(self) -> bool:
        return bool(self.frames)


def test_frames_a_lan_side_holds_are_drained_without_the_fd_waking_us() -> None:
    async def go() -> None:
        h = Harness(Lookups({}))
        arp = [VIRTUAL_MAC + TAP_MAC + b"\x08\x06" + bytes([i]) * 28 for i in range(5)]
        side = QueuedSide([arp[0], arp[1], b"", *arp[2:]])
        h.dp.local_side = side
        seen: list[bytes] = []
        h.dp._local_frame = lambda frame: seen.append(frame) is None
        try:
            h.dp._drain_tap()  # the first wake-up after a quiet spell reads one frame
            await _until(lambda: len(seen) == len(arp), "every held frame")
            assert seen == arp and not side.pending()
            assert not h.dp.drops  # the dropped (0-byte) read reached nothing
        finally:
            h.close()

    _run(go)


# --- issue 14, finding 5: a burst of DNS queries at the gateway ---------------------------------


def test_a_dns_burst_lets_the_lookup_it_started_run_before_the_burst_is_read() -> None:
    """A burst of 1,000 queries over 5 cold names had p99 ~90-125 ms on a loaded machine: one
    TAP wake-up handed 256 queries to the services before the DHT lookup the first one
    started could take a step, and a lookup is several steps (round trips), so every query
    of the burst waited for the lookups and none found its name in the cache."""
    gateway = SUBNET.network_address + 1
    burst = 300

    async def go() -> None:
        h = Harness(Lookups({}))
        services = TapServices.for_node(SUBNET, mac=VIRTUAL_MAC)
        dns = services.dns
        assert dns is not None
        read_when_started: list[int] = []

        async def lookup(name: str) -> IPv4Address | None:
            read_when_started.append(dns.stats["queries"])
            for _ in range(3):  # a DHT get takes a few loop passes (round trips)
                await asyncio.sleep(0)
            return C_VIP

        replies: list[bytes] = []
        runner = TapServicesRunner(services, replies.append, lookup, None)
        h.dp._local_frame = lambda frame: runner.feed(frame, now=h.now)
        for i in range(burst):
            query = DNSRecord.question("c.ipop")
            query.header.id = i
            frame = build_udp_frame(
                dst_mac=VIRTUAL_MAC,
                src_mac=TAP_MAC,
                src_ip=B_VIP,
                dst_ip=gateway,
                src_port=40000,
                dst_port=53,
                payload=query.pack(),
            )
            h.kernel.send(frame)
        h.dp._tap_seen = h.now  # queries close behind each other: full batches from the start
        h.dp.start()
        try:
            await _until(lambda: len(replies) == burst, "a reply to every query")
            assert read_when_started[0] <= LOCAL_BATCH, read_when_started
            assert dns.stats["lookups"] == 1
            # The lookup ended while the burst was still being read: the rest hit the cache.
            assert dns.stats["cache_hits"] >= burst - 4 * LOCAL_BATCH, dns.stats
        finally:
            await runner.close()
            h.close()

    _run(go)


# --- issue 14, finding 4: a packet too big for its peer's path ----------------------------------


def test_a_packet_too_big_for_its_peers_path_is_answered_with_frag_needed() -> None:
    """With DF on every datagram, a packet sealed larger than the probed path would vanish:
    the inner sender gets ICMP 3/4 with the MTU that fits (1124-byte path: 1065), as from a
    router, and packets that fit still leave."""

    async def go() -> None:
        lookups = Lookups({})
        h = Harness(lookups)
        lookups.owners[A_VIP] = h.a.local_id
        try:
            h.routed(_ip(A_VIP, B_VIP))  # learn A's address
            await _until(lambda: not h.dp._lookups, "the lookup")
            _tap_frames(h.kernel)
            h.b.link.pmtu.limits[h.a.local_id] = 1124 - 28  # what probing found
            sent = cast(SinkUdp, h.dp.udp).sent
            for inner in (1400, 1065, 1066):
                h.kernel.send(
                    VIRTUAL_MAC + TAP_MAC + b"\x08\x00" + _ip(B_VIP, A_VIP, bytes(inner - 20))
                )
                h.dp._drain_tap()
            assert [len(d) for d, _ in sent] == [1096]  # 1065 inner bytes fit, to the byte
            answers = _tap_frames(h.kernel)
            assert len(answers) == 2
            for frame in answers:
                assert frame[:14] == TAP_MAC + VIRTUAL_MAC + b"\x08\x00"
                icmp = frame[14 + 20 :]
                assert frame[14 + 12 : 14 + 20] == A_VIP.packed + B_VIP.packed
                assert icmp[:2] == b"\x03\x04" and icmp[6:8] == (1065).to_bytes(2, "big")
            assert h.dp.counters["frag_needed_sent"] == 2
        finally:
            h.close()

    _run(go)


def test_a_batchs_tcp_segments_reach_a_vnet_tap_in_one_write() -> None:
    """Over a TAP with a virtio header (ipop.vnet.gro): ten segments of one TCP stream that
    came in one UDP batch are written once, as a GSO batch the kernel takes whole (it ran its
    receive path once per segment before: a third of the receiving daemon's time); what is
    not TCP data is written as it came, behind an empty header, and so are the local
    services' frames. Frames read carry the header too, and it is skipped."""

    async def go() -> None:
        lookups = Lookups({})
        h = Harness(lookups, vnet_hdr=True)
        lookups.owners[A_VIP] = h.a.local_id
        try:
            h.routed(_ip(A_VIP, B_VIP))  # learn A's address
            await _until(lambda: not h.dp._lookups, "the lookup")
            first = _tap_frames(h.kernel)
            assert [f[: VNET_HDR.size] for f in first] == [NO_GSO]
            segs = [
                tcp_segment(1000 + i * 1000, bytes(1000), src=A_VIP, dst=B_VIP) for i in range(10)
            ]
            udp = _ip(A_VIP, B_VIP)
            h.batch([*segs, udp])
            frames = _tap_frames(h.kernel)
            assert len(frames) == 2
            _, gso_type, _, gso_size, _, _ = VNET_HDR.unpack(frames[0][: VNET_HDR.size])
            assert (gso_type, gso_size) == (GSO_TCPV4, 1000)
            eth = TAP_MAC + VIRTUAL_MAC + b"\x08\x00"
            packet = frames[0][VNET_HDR.size :]
            assert packet[:14] == eth and len(packet) == 14 + 52 + 10 * 1000
            assert frames[1] == NO_GSO + eth + udp
            assert h.dp.counters["tap_written"] == 1 + 2
            assert h.dp.counters["tap_coalesced"] == 9
            h.dp.write_frame(eth + udp)
            assert _tap_frames(h.kernel) == [NO_GSO + eth + udp]
            # A frame read: its header is skipped, the packet sealed to A.
            sent = cast(SinkUdp, h.dp.udp).sent
            h.kernel.send(NO_GSO + VIRTUAL_MAC + TAP_MAC + b"\x08\x00" + _ip(B_VIP, A_VIP))
            h.dp._drain_tap()
            assert len(sent) == 1
            opened = h.a.receive_direct(sent[0][0], B_EP, now=h.now, kind=KIND_IP)
            assert opened is not None and opened[1][2:] == _ip(B_VIP, A_VIP)
        finally:
            h.close()

    _run(go)


def test_a_packet_too_big_for_a_routed_path_is_answered_too() -> None:
    """A node with no link to the destination routes: a routed message around a 1,400-byte
    packet is more than a 1,500-byte hop carries (with DF it never left). The inner sender gets
    ICMP 3/4 with what a routed message carries, both for the packet held during the owner
    lookup and for the next one."""

    async def go() -> None:
        ca = make_network("benchnet", now=time.time() - 60)
        c = make_identity(ca, "c", now=time.time() - 60)
        lookups = Lookups({C_VIP: c.node_id})
        h = Harness(lookups, ca=ca)
        # What the daemon's owner lookup hands the core with the owner (the record's
        # certificate): routed IP leaves sealed, never in the clear.
        assert h.b.learn_certificate(c.node_id, c.cert.der, now=h.now)
        try:
            sent = cast(SinkUdp, h.dp.udp).sent
            for inner in (1400, 1400, ROUTED_IP_MTU):
                h.kernel.send(
                    VIRTUAL_MAC + TAP_MAC + b"\x08\x00" + _ip(B_VIP, C_VIP, bytes(inner - 20))
                )
                h.dp._drain_tap()
                await _until(lambda: not h.dp._lookups, "the lookup")
            answers = _tap_frames(h.kernel)
            assert len(answers) == 2
            for frame in answers:
                icmp = frame[14 + 20 :]
                assert frame[14 + 12 : 14 + 20] == C_VIP.packed + B_VIP.packed
                assert icmp[:2] == b"\x03\x04"
                assert icmp[6:8] == ROUTED_IP_MTU.to_bytes(2, "big")
            assert h.dp.counters["frag_needed_sent"] == 2
            assert h.b.stats["ip_too_big"] == 2 and h.b.stats["sent_routed"] == 1
            out = [len(d) for d, _ in h.b.datagrams_to_send(now=h.now)] + [len(d) for d, _ in sent]
            # The largest routed packet fits a hop: sealed, with room for the signature that a
            # route probe to a node whose certificate we lack carries instead.
            assert max(out) == MAX_DATAGRAM - (ROUTED_OVERHEAD - ROUTED_SEALED_OVERHEAD)
        finally:
            h.close()

    _run(go)


# --- drop reasons come from one checked list per module ------------------------------------------


@pytest.mark.parametrize(
    "module", ["ipop/aio/dataplane.py", "ipop/vnet/filter.py", "ipop/vnet/owners.py"]
)
def test_counters_are_only_indexed_by_the_modules_reasons(module: str) -> None:
    """``drops[...]``/``errors[...]`` never take a literal or formatted string: the reasons are
    enum members (mypy holds the counters' key types; this catches a literal mypy allows)."""
    tree = ast.parse((ROOT / module).read_text())
    bad = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Subscript)
            and isinstance(node.value, ast.Attribute)
            and node.value.attr in ("drops", "errors")
            and isinstance(node.slice, ast.Constant | ast.JoinedStr)
        ):
            bad.append(node.lineno)
    assert bad == []


# --- TCP batches read from a TAP granted offloads (ipop.aio.tap.Tap, ipop.vnet.offload) ------


def _tcp_checksum_ok(ip: bytes) -> bool:
    """The TCP checksum of IPv4 ``ip``, checked word by word (not the modules' folding)."""
    tcp = ip[20:]
    data = ip[12:20] + b"\x00\x06" + len(tcp).to_bytes(2, "big") + tcp + b"\x00"
    s = 0
    for i in range(0, len(data) - 1, 2):
        s += data[i] << 8 | data[i + 1]
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s == 0xFFFF


async def _probed_1124(h: Harness, lookups: Lookups) -> None:
    """B knows A holds A_VIP, its TAP is read empty, and its path to A was probed at 1124."""
    lookups.owners[A_VIP] = h.a.local_id
    h.routed(_ip(A_VIP, B_VIP))  # learn A's address
    await _until(lambda: not h.dp._lookups, "the lookup")
    _tap_frames(h.kernel)
    h.b.link.pmtu.limits[h.a.local_id] = 1124 - 28  # what probing found


@pytest.fixture
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The data path the planes of a test start with (IPOP_FASTPATH), its parameter."""
    name: str = request.param
    if name == "native" and fastpath.native_class() is None:
        pytest.skip("ipop.link._fastpath was not built (gcc, python3-dev, libssl-dev)")
    monkeypatch.setenv("IPOP_FASTPATH", name)
    return name


async def _offload_plane(runs: bool) -> tuple[Harness, list[tuple[bytes, Any]]]:
    """B's plane over a TAP granted offloads (in runs or one by one), its path to A probed
    at 1124 (:func:`_probed_1124`), and the list of what it sends; close it after."""
    lookups = Lookups({})
    h = Harness(lookups, vnet_hdr=True, offload=True, runs=runs)
    try:
        await _probed_1124(h, lookups)
    except BaseException:
        h.close()
        raise
    return h, cast(SinkUdp, h.dp.udp).sent


OFFLOAD_CASES = [
    pytest.param(backend, runs, id=f"{backend}-{'runs' if runs else 'one-by-one'}")
    for backend in ("python", "native")
    for runs in (True, False)
]


@pytest.mark.parametrize(("backend", "runs"), OFFLOAD_CASES, indirect=["backend"])
def test_a_tcp_batch_read_from_an_offloading_tap_leaves_as_segments_that_fit_the_path(
    backend: str, runs: bool
) -> None:
    """A TAP granted offloads hands over a TCP batch of 64 kB in one read (GSO_TCPV4, its
    checksum only begun): it is cut into segments that fit the peer's probed path (1124
    bytes: 1013 data bytes each with timestamps, though the batch says 1348), each sealed
    with both checksums right, none answered with frag_needed; with either backend's cutting
    (the native twin or ipop.vnet.offload), in runs or one by one. A frame whose checksum
    is only begun (NEEDS_CSUM) leaves with it finished."""

    async def go() -> None:
        h, sent = await _offload_plane(runs)
        try:
            data = random.Random(1).randbytes(48 * 1348)
            batch = bytearray(tcp_segment(9, data, src=B_VIP, dst=A_VIP, flags=ACK | PSH))
            batch[36:38] = b"\x00\x01"  # begun: the pseudo-header's sum, not the data's
            vnet = VNET_HDR.pack(NEEDS_CSUM, GSO_TCPV4, 14 + 52, 1348, 14 + 20, 16)
            h.kernel.send(vnet + VIRTUAL_MAC + TAP_MAC + b"\x08\x00" + batch)
            h.dp._drain_tap()
            assert h.dp.counters["tso_batches"] == 1
            assert h.dp.counters["tso_segments"] == len(sent) == -(-len(data) // 1013)
            assert h.dp.counters["frag_needed_sent"] == 0
            assert max(len(d) for d, _ in sent) == 1124 - 28  # fills the path, to the byte
            stream = b""
            flags = []
            for d, _ in sent:
                opened = h.a.receive_direct(d, B_EP, now=h.now, kind=KIND_IP)
                assert opened is not None
                ip = opened[1][2:]
                assert _tcp_checksum_ok(ip) and int.from_bytes(ip[2:4], "big") == len(ip)
                stream += ip[52:]
                flags.append(ip[33])
            assert stream == data
            assert flags == [ACK] * (len(flags) - 1) + [ACK | PSH]  # PSH ends the batch
            # One frame, its checksum begun: sealed finished.
            sent.clear()
            one = bytearray(tcp_segment(1, b"abc", src=B_VIP, dst=A_VIP))
            one[36:38] = b"\x00\x01"
            vnet = VNET_HDR.pack(NEEDS_CSUM, 0, 0, 0, 14 + 20, 16)
            h.kernel.send(vnet + VIRTUAL_MAC + TAP_MAC + b"\x08\x00" + one)
            h.dp._drain_tap()
            opened = h.a.receive_direct(sent[0][0], B_EP, now=h.now, kind=KIND_IP)
            assert opened is not None and _tcp_checksum_ok(opened[1][2:])
            assert not h.dp.drops
        finally:
            h.close()

    _run(go)


@pytest.mark.parametrize(("backend", "runs"), OFFLOAD_CASES, indirect=["backend"])
def test_a_tcp_batch_for_an_unknown_owner_is_held_segment_by_segment(
    backend: str, runs: bool
) -> None:
    """A batch whose destination's owner is not known yet takes the per-frame path after it
    is cut: each segment is held for the lookup like any frame read, and leaves once the
    owner is known, finished. A batch that does not add up is dropped and counted."""

    async def go() -> None:
        lookups = Lookups({})
        h = Harness(lookups, vnet_hdr=True, offload=True, runs=runs)
        lookups.owners[A_VIP] = h.a.local_id
        try:
            sent = cast(SinkUdp, h.dp.udp).sent
            data = bytes(range(256)) * 12
            batch = tcp_segment(9, data, src=B_VIP, dst=A_VIP)
            vnet = VNET_HDR.pack(NEEDS_CSUM, GSO_TCPV4, 14 + 52, 1000, 14 + 20, 16)
            h.kernel.send(vnet + VIRTUAL_MAC + TAP_MAC + b"\x08\x00" + batch)
            h.dp._drain_tap()
            assert h.dp.counters["tso_segments"] == 4
            await _until(lambda: not h.dp._lookups, "the lookup")
            out = [d for d, _ in sent] + [d for d, _ in h.b.datagrams_to_send(now=h.now)]
            ips = [h.a.receive_direct(d, B_EP, now=h.now, kind=KIND_IP) for d in out]
            segs = [got[1][2:] for got in ips if got is not None]  # the rest: the core's own
            assert len(segs) == 4 and all(_tcp_checksum_ok(ip) for ip in segs)
            assert b"".join(ip[52:] for ip in segs) == data
            # A batch whose IP total length lies: nothing sent, one drop.
            sent.clear()
            bad = bytearray(batch)
            bad[2:4] = (len(bad) + 100).to_bytes(2, "big")
            h.kernel.send(vnet + VIRTUAL_MAC + TAP_MAC + b"\x08\x00" + bad)
            h.dp._drain_tap()
            assert not sent and h.dp.drops[IoDrop.TAP_OFFLOAD] == 1
        finally:
            h.close()

    _run(go)


@pytest.mark.parametrize(("backend", "runs"), OFFLOAD_CASES, indirect=["backend"])
def test_a_drain_counts_a_batchs_segments_toward_its_limit(backend: str, runs: bool) -> None:
    """A drain reads at most BATCH packets' worth: a TCP batch counts as its segments, so ten
    batches of 40 segments leave over three drains (one read after a quiet spell, then 7
    batches: 280 segments, then the last 2), not as 16 MB in one."""

    async def go() -> None:
        h, sent = await _offload_plane(runs)
        try:
            vnet = VNET_HDR.pack(NEEDS_CSUM, GSO_TCPV4, 14 + 52, 100, 14 + 20, 16)
            seq = 9
            for _ in range(10):
                batch = tcp_segment(seq, bytes(4000), src=B_VIP, dst=A_VIP)
                h.kernel.send(vnet + VIRTUAL_MAC + TAP_MAC + b"\x08\x00" + batch)
                seq += 4000
            counts = []
            for _ in range(4):
                before = len(sent)
                h.dp._drain_tap()
                counts.append(len(sent) - before)
            assert counts == [40, 280, 80, 0]
            assert h.dp.counters["tso_segments"] == 400
        finally:
            h.close()

    _run(go)
