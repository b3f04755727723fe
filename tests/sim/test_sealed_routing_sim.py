"""IP routed over the ring is sealed end to end: the node in the middle forwards it, and
reads none of it (DESIGN.md section 4; issue 17: overlay-only forwarders).

Before: a routed message under the pairwise key was only MAC'd, so every forwarder opened the
inner packets from its links in the clear. Two nodes behind symmetric NATs (no punching) with
no relay exchange their IP through the public node for good: it must see ciphertext only.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from ipaddress import IPv4Network

import pytest

from ipop.aio.stack import Node
from ipop.dht.alloc import allocate_ip
from ipop.dht.record import ip_key, namespace_of
from ipop.link.events import LinkEvent, LinkMessage
from ipop.overlay.messages import FLAG_SEALED, IP_KINDS, KIND_IP, KIND_IP_NET, TYPE_ROUTED, Routed
from ipop.overlay.node import OverlayConfig
from ipop.testing.clock import SIM_EPOCH, run_virtual
from ipop.testing.identities import make_network
from ipop.testing.netsim import Network
from ipop.testing.simnode import start_nodes
from ipop.testing.waiting import until
from ipop.vnet.networks import network_tag

NETWORK = "sealsim"
MARK = b"only-the-ends-may-read-this:"


async def _until(cond: Callable[[], bool], deadline_s: float, what: str) -> None:
    assert await until(cond, deadline_s, every_s=0.05), f"timed out waiting for {what}"


def _watch(node: Node) -> list[bytes]:
    """Every overlay message ``node``'s links hand its overlay: what a forwarder can read."""
    seen: list[bytes] = []
    overlay = node.core.overlay
    inner = overlay.on_link_event

    def on_link_event(ev: LinkEvent, *, now: float) -> None:
        if type(ev) is LinkMessage:
            seen.append(ev.payload)
        inner(ev, now=now)

    overlay.on_link_event = on_link_event  # type: ignore[method-assign]
    return seen


def _send(node: Node, dst: Node, packet: bytes, tag: bytes) -> None:
    assert node.core.send_ip(dst.node_id, packet, now=node.clock(), tag=tag) is None
    assert node.driver is not None
    node.driver.pump()


def _collect(node: Node, src: Node, tag: bytes) -> list[bytes]:
    got: list[bytes] = []

    def on_ip(origin: object, packet: bytes) -> None:
        if origin == src.node_id:
            got.append(packet)

    def on_net_ip(origin: object, payload: bytes) -> None:
        if origin == src.node_id and payload[: len(tag)] == tag:
            got.append(payload[len(tag) :])

    if tag:
        node.on_net_ip = on_net_ip
    else:
        node.on_ip = on_ip
    return got


# A node in several networks tags its IP (KIND_IP_NET, ipop.vnet.networks): sealed alike.
@pytest.mark.parametrize("tag", [b"", network_tag(b"k" * 32)], ids=["untagged", "tagged"])
def test_the_forwarder_between_two_members_never_reads_their_routed_ip(tag: bytes) -> None:
    async def body() -> None:
        net = Network(rng=random.Random(7))
        ca = make_network(NETWORK, now=asyncio.get_running_loop().time(), seed="sealsim")
        ns = namespace_of(ca.trust)
        hosts = [net.add_host("b"), net.add_host("a", "symmetric"), net.add_host("c", "symmetric")]
        nodes = start_nodes(
            hosts, ca, rng=random.Random(8), overlay_config=OverlayConfig(relay_after_s=1e6)
        )
        b, a, c = nodes
        to_c = _collect(c, a, tag)
        to_a = _collect(a, c, tag)
        try:
            await _until(lambda: a.dht_ready.is_set() and c.dht_ready.is_set(), 60, "the DHT")
            assert a.dht is not None and c.dht is not None
            # c holds an address; a resolves it as the daemon does (lookup_owner): the record's
            # owner and certificate, which the core keeps for sealing.
            vip = await allocate_ip(
                c.dht, IPv4Network("100.64.0.0/24"), namespace=ns, rng=random.Random(1)
            )
            record = await a.dht.get(ip_key(ns, vip))
            assert record is not None and record.owner == c.node_id
            assert a.core.learn_certificate(record.owner, record.cert, now=a.clock())
            assert a.core.origin.sealable(c.node_id)
            assert not a.core.overlay.is_linked(c.node_id)  # no link: routed, through b
            seen = _watch(b)
            out = [MARK + b"a to c %d" % i + bytes(200 * i) for i in range(4)]
            for packet in out:
                _send(a, c, packet, tag)
            await _until(lambda: len(to_c) >= len(out), 10, "a's packets at c")
            back = [MARK + b"c to a %d" % i for i in range(3)]
            for packet in back:
                _send(c, a, packet, tag)
            await _until(lambda: len(to_a) >= len(back), 10, "c's answers at a")
            assert sorted(to_c) == sorted(out) and sorted(to_a) == sorted(back)
            assert not a.core.overlay.is_linked(c.node_id)  # it all went through b
            routed = [Routed.decode(p) for p in seen if p[0] == TYPE_ROUTED]
            ip = [m for m in routed if m.kind in IP_KINDS]
            assert len(ip) >= len(out) + len(back)  # b carried every one of them ...
            assert all(m.flags & FLAG_SEALED for m in ip)
            assert {m.kind for m in ip} == {KIND_IP_NET if tag else KIND_IP}
            assert not [p for p in seen if MARK in p]  # ... and read none
            assert a.core.stats["ip_unsealable"] == 0 and c.core.stats["ip_unsealable"] == 0
            assert not b.core.overlay.drops["origin_unsealed"]
        finally:
            await asyncio.gather(*(n.close() for n in nodes))

    run_virtual(body(), start=SIM_EPOCH)
