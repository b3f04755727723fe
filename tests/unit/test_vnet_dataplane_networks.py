"""Data planes of a node in two networks (issue 17, item 2): one UDP side feeds both TAPs,
each packet reaches its own network's TAP only, after that network's checks, and each
network's TAP sends its IP tagged with that network."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from ipaddress import IPv4Address
from typing import cast

import pytest

from ipop.aio.dataplane import DataPlane
from ipop.core import NodeCore
from ipop.overlay.messages import KIND_IP, KIND_IP_NET, TYPE_DIRECT
from ipop.testing.waiting import until
from ipop.tools.bench.dataplane_bench import (
    A_EP,
    A_VIP,
    B_EP,
    B_VIP,
    TAP_MAC,
    VIRTUAL_MAC,
    PlaneNode,
    SinkUdp,
    dataplane,
    fake_tap,
    linked_pair,
    tap_frames,
)
from ipop.types import NodeId
from ipop.vnet.networks import network_tag
from ipop.vnet.packet import IPPROTO_UDP, build_ipv4

# B (the node under test) is in network 1 at B_VIP and in network 2 at B2_VIP (same range).
# A holds A_VIP in network 1; in network 2 that address is C's.
B2_VIP = IPv4Address("100.64.0.21")
C_ID = NodeId(0xC0FFEE)
TAG1, TAG2 = network_tag(b"1" * 32), network_tag(b"2" * 32)
DEADLINE_S = 5.0


async def _until(cond: Callable[[], bool], what: str) -> None:
    assert await until(cond, DEADLINE_S, every_s=0.001), f"timed out waiting for {what}"


def _ip(src: IPv4Address, dst: IPv4Address) -> bytes:
    return build_ipv4(src, dst, IPPROTO_UDP, b"x" * 20)


class TwoNetworks:
    def __init__(self, runs: bool | None = None) -> None:
        self.now = time.time()
        self.a, self.b = linked_pair(self.now)
        node = PlaneNode(self.b)
        self.taps = [fake_tap(), fake_tap()]
        a_id = self.a.local_id

        async def owners1(vip: IPv4Address) -> NodeId | None:
            return a_id if vip == A_VIP else None

        async def owners2(vip: IPv4Address) -> NodeId | None:
            return C_ID if vip == A_VIP else None

        def plane(i: int, tag: bytes, lookup: Callable[..., object]) -> DataPlane:
            return dataplane(
                self.b,
                self.taps[i][0].fileno(),
                clock=lambda: self.now,
                lookup_owner=lookup,  # type: ignore[arg-type]
                node=node,
                tag=tag,
                primary=i == 0,
                runs=runs,
            )

        self.one = plane(0, TAG1, owners1)
        self.two = plane(1, TAG2, owners2)
        self.one.set_own_ip(B_VIP)
        self.two.set_own_ip(B2_VIP)
        self.one.join([self.two])
        self.node = node

    def close(self) -> None:
        for dp in (self.one, self.two):
            dp.close()
        for ours, kernel in self.taps:
            ours.close()
            kernel.close()

    def direct(self, packet: bytes) -> None:
        """``packet`` from A over the link, untagged (A is in one network): the fast path's."""
        a: NodeCore = self.a
        sealed = a.seal_ip(self.b.local_id, bytes((TYPE_DIRECT, KIND_IP)) + packet, now=self.now)
        assert sealed is not None
        self.one._batch(lambda out: self.one._take([sealed[0]], A_EP, self.now, out))

    def direct_tagged(self, tag: bytes, packet: bytes) -> None:
        """``tag + packet`` from A over the link as KIND_IP_NET (A in several networks)."""
        message = bytes((TYPE_DIRECT, KIND_IP_NET)) + tag + packet
        sealed = self.a.seal_ip(self.b.local_id, message, now=self.now)
        assert sealed is not None
        self.one._batch(lambda out: self.one._take([sealed[0]], A_EP, self.now, out))

    def tagged(self, tag: bytes, packet: bytes) -> None:
        """``tag + packet`` delivered by the overlay from A (KIND_IP_NET, the slow path)."""
        assert self.node.on_net_ip is not None
        self.node.on_net_ip(self.a.local_id, tag + packet)

    def seen(self) -> tuple[int, int]:
        return len(tap_frames(self.taps[0][1])), len(tap_frames(self.taps[1][1]))


def test_each_packet_reaches_its_own_networks_tap_only() -> None:
    async def go() -> None:
        h = TwoNetworks()
        try:
            # Untagged from a one-network member, to our address in network 1: TAP 1.
            h.direct(_ip(A_VIP, B_VIP))
            await _until(lambda: not h.one._lookups, "network 1's lookup")
            assert h.seen() == (1, 0)
            h.direct(_ip(A_VIP, B_VIP))  # known now: at once
            assert h.seen() == (1, 0)
            # Tagged for network 1: TAP 1 too.
            h.tagged(TAG1, _ip(A_VIP, B_VIP))
            assert h.seen() == (1, 0)
        finally:
            h.close()

    asyncio.run(go())


def test_a_member_of_one_network_gets_nothing_onto_the_others_tap_even_tagged() -> None:
    async def go() -> None:
        h = TwoNetworks()
        try:
            # A forges network 2's tag, from its own address, to our address there: network
            # 2's owners say A_VIP is C's, so network 2's check refuses it.
            h.tagged(TAG2, _ip(A_VIP, B2_VIP))
            await _until(lambda: not h.two._lookups, "network 2's lookup")
            assert h.seen() == (0, 0)
            assert h.two.drops["spoofed_inner_src"] == 1
            # Untagged to our network-2 address: network 2's side, same refusal.
            h.direct(_ip(A_VIP, B2_VIP))
            assert h.seen() == (0, 0)
            assert h.two.drops["spoofed_inner_src"] == 2
            # Network 2's tag to our network-1 address: not ours in network 2.
            h.tagged(TAG2, _ip(A_VIP, B_VIP))
            assert h.two.drops["inner_dst_not_ours"] == 1
            # A tag of no network of ours, or an address of none: counted, dropped.
            h.tagged(network_tag(b"3" * 32), _ip(A_VIP, B_VIP))
            h.direct(_ip(A_VIP, IPv4Address("100.64.0.99")))
            assert h.one.drops["ip_wrong_network"] == 2
            assert h.seen() == (0, 0)
            assert h.one.owners.holder(A_VIP.packed, now=h.now) is None  # never asked in 1
        finally:
            h.close()

    asyncio.run(go())


@pytest.mark.parametrize("runs", [False, True], ids=["one-by-one", "runs"])
def test_tagged_ip_over_a_link_takes_the_fast_path_to_its_networks_tap(runs: bool) -> None:
    """A daemon in several networks sends KIND_IP_NET; over a direct link it is opened with
    the IP of the batch (runs or one by one), not as a core event, and each network's frames
    are written to its TAP after the batch. Before, the link handed it to the overlay's events
    (``on_net_ip``) one packet at a time."""

    async def go() -> None:
        h = TwoNetworks(runs=runs)
        events: list[bytes] = []
        slow = h.node.on_net_ip
        assert slow is not None

        def counted(src: NodeId, payload: bytes) -> None:
            events.append(payload)
            slow(src, payload)

        h.node.on_net_ip = counted
        try:
            h.one.owners.answer(A_VIP.packed, h.a.local_id, now=h.now)
            h.direct_tagged(TAG1, _ip(A_VIP, B_VIP))
            assert h.seen() == (1, 0) and events == []
            # Network 2's tag from A, whose address there is C's: refused on network 2's side.
            h.two.owners.answer(A_VIP.packed, C_ID, now=h.now)
            h.direct_tagged(TAG2, _ip(A_VIP, B2_VIP))
            assert h.seen() == (0, 0) and h.two.drops["spoofed_inner_src"] == 1
            h.direct_tagged(network_tag(b"3" * 32), _ip(A_VIP, B_VIP))
            assert h.one.drops["ip_wrong_network"] == 1 and events == []
        finally:
            h.close()

    asyncio.run(go())


@pytest.mark.parametrize("runs", [False, True], ids=["one-by-one", "runs"])
def test_a_one_network_plane_takes_its_own_tag_off_the_fast_path(runs: bool) -> None:
    """A plane of a daemon in one network: tagged IP over the link leaves the inline check
    (its offsets are the tag's) for the demux: its own tag delivered, another refused."""

    async def go() -> None:
        now = time.time()
        a, b = linked_pair(now)
        ours, kernel = fake_tap()
        dp = dataplane(b, ours.fileno(), clock=lambda: now, tag=TAG1, runs=runs)
        dp.set_own_ip(B_VIP)
        dp.owners.answer(A_VIP.packed, a.local_id, now=now)
        try:
            for tag in (TAG1, TAG2):
                message = bytes((TYPE_DIRECT, KIND_IP_NET)) + tag + _ip(A_VIP, B_VIP)
                sealed = a.seal_ip(b.local_id, message, now=now)
                assert sealed is not None
                dp._batch(lambda out, d=sealed[0]: dp._take([d], A_EP, now, out))
            frames = tap_frames(kernel)
            assert len(frames) == 1 and frames[0][14:] == _ip(A_VIP, B_VIP)
            assert dp.drops["ip_wrong_network"] == 1
        finally:
            dp.close()
            ours.close()
            kernel.close()

    asyncio.run(go())


@pytest.mark.parametrize("runs", [False, True], ids=["one-by-one", "runs"])
def test_each_networks_tap_sends_tagged_with_its_network(runs: bool) -> None:
    """Over a link, sealed at once with the tag after the DIRECT header; to a peer with no
    link (C), through the core's send_ip with the tag, as before."""

    async def go() -> None:
        h = TwoNetworks(runs=runs)
        sent: list[tuple[NodeId, bytes, bytes]] = []
        inner = h.b.send_ip

        def send_ip(dst: NodeId, packet: bytes, *, now: float, tag: bytes = b"") -> int | None:
            sent.append((dst, packet, tag))
            return inner(dst, packet, now=now, tag=tag)

        h.b.send_ip = send_ip  # type: ignore[method-assign]
        try:
            for dp in (h.one, h.two):
                dp.set_link_layer(TAP_MAC, VIRTUAL_MAC)
            # A_VIP's owner in network 1 is A; the frame leaves TAP 1 tagged 1.
            frame = TAP_MAC + VIRTUAL_MAC + b"\x08\x00" + _ip(B_VIP, A_VIP)
            h.one.owners.answer(A_VIP.packed, h.a.local_id, now=h.now)
            h.taps[0][1].send(frame)
            h.one._drain_tap()
            [(datagram, _)] = cast(SinkUdp, h.one.udp).sent
            got = h.a.receive_direct(datagram, B_EP, now=h.now, kind=KIND_IP, also=KIND_IP_NET)
            assert got == (h.b.local_id, bytes((TYPE_DIRECT, KIND_IP_NET)) + TAG1 + frame[14:])
            # In network 2 it is C's: TAP 2's frame goes to C, tagged 2.
            h.two.owners.answer(A_VIP.packed, C_ID, now=h.now)
            h.taps[1][1].send(TAP_MAC + VIRTUAL_MAC + b"\x08\x00" + _ip(B2_VIP, A_VIP))
            h.two._drain_tap()
            assert [(d, p, t) for d, p, t in sent] == [(C_ID, _ip(B2_VIP, A_VIP), TAG2)]
        finally:
            h.close()

    asyncio.run(go())
