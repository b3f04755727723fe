"""A relayed pair, and a routed one, whose hop to the target has a 1,124-byte MTU (issue 14,
finding 4).

Before: only direct paths were probed, so a relayed peer had no size limit; every inner packet
above ~1,015 bytes was sealed, wrapped for the relay and dropped by the small hop (DF: no
fragmentation, no ICMP), a black hole for the inner sender. Now the relayed path is probed end
to end through the relay, and a packet too big for it is refused with the MTU that fits, which
the data plane turns into ICMP "fragmentation needed" toward the inner sender. A pair that
cannot link at all exchanges IP routed over the ring for good: its route is probed end to end
with routed probes, and mid-size packets that would carry the sender's certificate carry it
only within what the route was seen to carry.
"""

from __future__ import annotations

import asyncio
import random
import struct
from collections.abc import Callable

from ipop.aio.stack import Node
from ipop.core import ROUTED_IP_MTU
from ipop.link.pmtu import MAX_DATAGRAM, RELAY_OVERHEAD
from ipop.overlay.node import OverlayConfig
from ipop.testing.clock import SIM_EPOCH, run_virtual
from ipop.testing.identities import make_network
from ipop.testing.netsim import UDP_IP_OVERHEAD, Network
from ipop.testing.simnode import start_nodes
from ipop.types import RelayPath
from ipop.vnet.packet import IPPROTO_UDP, build_ipv4
from ipop.vnet.toobig import frag_needed

SMALL_MTU = 1124
# The largest inner packet the small hop carries: its UDP payload less the relay's framing
# and the DIRECT message's header, DATA header and tag (29 + 2).
FITS = SMALL_MTU - UDP_IP_OVERHEAD - RELAY_OVERHEAD - 31
A_VIP, B_VIP = bytes([100, 64, 0, 10]), bytes([100, 64, 0, 20])


async def _until(cond: Callable[[], bool], deadline_s: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while not cond():
        assert loop.time() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def _packet(size: int) -> bytes:
    return build_ipv4(
        A_VIP, B_VIP, IPPROTO_UDP, struct.pack("!HHHH", 40000, 5201, 0, 0) + bytes(size - 28)
    )


def _send(node: Node, dst: Node, packet: bytes) -> int | None:
    mtu = node.core.send_ip(dst.node_id, packet, now=node.clock())
    assert node.driver is not None
    node.driver.pump()
    return mtu


def _world(seed: int, config: OverlayConfig | None) -> tuple[Network, list[Node]]:
    """A public node and two behind symmetric NATs (they cannot punch); ``b``'s LAN, the last
    hop toward it, carries SMALL_MTU bytes. Call on the running loop."""
    net = Network(rng=random.Random(seed))
    ca = make_network("relaymtu", now=asyncio.get_running_loop().time())
    boot = net.add_host("boot")
    ha = net.add_host("a", "symmetric")
    hb = net.add_nat("b-nat", "symmetric", lan=net.add_lan("b-lan", mtu=SMALL_MTU)).add_host("b")
    nodes = start_nodes([boot, ha, hb], ca, rng=random.Random(seed + 1), overlay_config=config)
    return net, nodes


def test_a_relayed_pair_with_a_small_hop_answers_frag_needed_and_never_overfills_a_hop() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        net, nodes = _world(31, None)
        r, a, b = nodes
        got: list[bytes] = []
        b.on_ip = lambda src, packet: got.append(packet)
        try:
            await _until(lambda: a.dht_ready.is_set() and b.dht_ready.is_set(), 60, "the DHT")
            # Two symmetric NATs: the pair links through the public node.
            path = RelayPath(via=r.node_id, peer=b.node_id)
            await _until(lambda: a.core.link.path_of(b.node_id) == path, 30, "the relayed link")
            # Until a probe answers: what the first hop carries (1,500 bytes, not probed).
            assert a.core.ip_mtu(b.node_id) == MAX_DATAGRAM - RELAY_OVERHEAD - 31
            assert _send(a, b, _packet(200)) is None  # data flows: the relayed path is probed
            prober = a.core.link.pmtu

            def settled() -> bool:  # a result, and the next round a minute away
                t = prober.next_time()
                return b.node_id in prober.limits and t is not None and t > loop.time() + 30

            await _until(settled, 10, "the probe's result")
            assert prober.stats["acks"] > 0
            mtu = a.core.ip_mtu(b.node_id)
            assert mtu is not None and FITS - 8 < mtu <= FITS  # to the probe's 8-byte step
            before = net.stats["mtu"]
            for size in (1400, 1200, mtu + 1):  # the old TAP MTU, and just too big
                packet = _packet(size)
                assert _send(a, b, packet) == mtu
                answer = frag_needed(packet, mtu)
                assert answer is not None
                assert answer[12:16] == B_VIP and answer[16:20] == A_VIP  # toward the sender
                assert answer[20:22] == b"\x03\x04"
                assert struct.unpack("!H", answer[26:28])[0] == mtu
            fits = [_packet(size) for size in (mtu, 900, 576)]
            for packet in fits:
                assert _send(a, b, packet) is None
            await _until(lambda: len(got) >= 4, 5, "the packets that fit")
            assert got[1:] == fits
            assert a.core.link.path_of(b.node_id) == path  # still relayed: the path tested
            assert net.stats["mtu"] == before  # no datagram above any hop's MTU
            assert a.core.stats["ip_too_big"] == 3
        finally:
            await asyncio.gather(*(n.close() for n in nodes))

    run_virtual(body(), start=SIM_EPOCH)


def test_a_routed_pair_with_a_small_hop_is_probed_end_to_end() -> None:
    """No relay (relay_after_s beyond any deadline): x and y stay unlinked and their IP goes
    routed through the public node, whose hop to y carries 1,124 bytes."""

    async def body() -> None:
        loop = asyncio.get_running_loop()
        net, nodes = _world(41, OverlayConfig(relay_after_s=1e6))
        _, a, b = nodes
        got: list[bytes] = []
        b.on_ip = lambda src, packet: got.append(packet)
        try:
            await _until(lambda: a.dht_ready.is_set() and b.dht_ready.is_set(), 60, "the DHT")
            assert not a.core.overlay.is_linked(b.node_id)
            assert a.core.ip_mtu(b.node_id) == ROUTED_IP_MTU  # a 1,500-byte hop's, unprobed
            assert _send(a, b, _packet(200)) is None  # IP flows routed: the route is probed
            prober = a.core.route_pmtu

            def settled() -> bool:
                t = prober.next_time()
                return b.node_id in prober.limits and t is not None and t > loop.time() + 30

            await _until(settled, 10, "the probe's result")
            assert b.core.stats["route_probes_answered"] > 0
            mtu = a.core.ip_mtu(b.node_id)
            # The largest routed message the small hop carries: its UDP payload less a DATA
            # header and tag, the routed header, ts and a MAC (a signature: 48 bytes less).
            fits = SMALL_MTU - UDP_IP_OVERHEAD - 29 - 45 - 4 - 16
            assert mtu is not None and fits - 48 - 8 < mtu <= fits, (mtu, fits)
            before = net.stats["mtu"]
            for size in (1400, 1200, mtu + 1):
                assert _send(a, b, _packet(size)) == mtu
            # 800 bytes would carry the certificate under the default budget (~1,250 bytes on
            # the wire): now it goes without, within the route's size.
            fits_now = [_packet(size) for size in (mtu, 800, 600, 576)]
            for packet in fits_now:
                assert _send(a, b, packet) is None
            await _until(lambda: len(got) >= 5, 5, "the packets that fit")
            assert got[1:] == fits_now
            assert not a.core.overlay.is_linked(b.node_id)  # still routed: the path tested
            assert net.stats["mtu"] == before  # no datagram above any hop's MTU
        finally:
            await asyncio.gather(*(n.close() for n in nodes))

    run_virtual(body(), start=SIM_EPOCH)
