"""One node in two networks on one shared overlay (issue 17, item 2), full stacks on the
simulated internet in virtual time: one key, one overlay certificate, one certificate per
network. Its DHT signs each network's records with that network's certificate (replicas,
members or not, check them against the CA key the namespace names), it learns each network's
members' certificates from their records, and its IP to each network goes tagged."""

from __future__ import annotations

import asyncio
import functools
import random
from ipaddress import IPv4Network

from ipop.aio.stack import Node
from ipop.dht.alloc import allocate_ip
from ipop.dht.record import ip_key, namespace_of
from ipop.identity import NetworkCA, NodeIdentity
from ipop.testing.clock import SIM_EPOCH, run_virtual
from ipop.testing.identities import make_network, seeded_identity
from ipop.testing.netsim import Network
from ipop.testing.simnode import all_dht_ready
from ipop.testing.waiting import until
from ipop.types import Endpoint, NodeId
from ipop.vnet.networks import network_tag

PORT = 5800
SUBNET = IPv4Network("100.64.0.0/24")  # both networks' range


def _node(
    net: Network,
    name: str,
    overlay_ca: NetworkCA,
    cas: list[NetworkCA],
    keys: random.Random,
    boot: list[Endpoint],
    rng: random.Random,
) -> tuple[Node, Endpoint]:
    """A node in the networks of ``cas`` (the first is its primary; none: overlay-only)."""
    loop = asyncio.get_running_loop()
    now = loop.time()
    members: list[NodeIdentity] = []
    for ca in cas:
        first = members[0] if members else None
        if first is None:
            members.append(seeded_identity(ca, name, keys, now=now, hostname=name))
        else:
            members.append(first.certified_by(ca, name, now=now))
    host = net.add_host(name, "none")
    if members:
        overlay = members[0].certified_by(overlay_ca, name, now=now)
    else:
        overlay = seeded_identity(overlay_ca, name, keys, now=now)
    node = Node(
        overlay,
        member=members[0] if members else None,
        bootstrap=boot,
        clock=loop.time,
        rng=random.Random(rng.random()),
        overlay_only=not members,
    )
    for member in members[1:]:
        node.add_network(member, SUBNET)
    node.attach(
        host.bind(PORT, node.datagram_received), open_socket=functools.partial(host.bind, 0)
    )
    node.start()
    return node, Endpoint(host.address, PORT)


def test_a_node_in_two_networks_signs_each_networks_records_with_its_certificate() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        rng, keys = random.Random(31), random.Random(32)
        net = Network(rng=random.Random(33))
        overlay_ca = make_network("shared", now=loop.time())
        ca_a, ca_b = (
            make_network("labnet", now=loop.time()),
            make_network("othernet", now=loop.time()),
        )
        roles = [("o0", []), ("o1", []), ("o2", []), ("a1", [ca_a]), ("b1", [ca_b])]
        roles.append(("ab", [ca_a, ca_b]))
        nodes: dict[str, Node] = {}
        boot: list[Endpoint] = []
        for name, cas in roles:
            node, ep = _node(net, name, overlay_ca, cas, keys, boot, rng)
            nodes[name] = node
            boot = boot or [ep]
            await asyncio.sleep(0.05)
        try:
            await all_dht_ready(nodes.values())
            ab, a1, b1 = nodes["ab"], nodes["a1"], nodes["b1"]
            assert ab.dht is not None and a1.dht is not None and b1.dht is not None
            ns_a, ns_b = namespace_of(ca_a.trust), namespace_of(ca_b.trust)
            # ab holds an address in each network, each record carrying that network's cert.
            vips = {}
            for ns in (ns_a, ns_b):
                vips[ns] = await allocate_ip(ab.dht, SUBNET, namespace=ns, rng=random.Random(1))
            for ns, ca in ((ns_a, ca_a), (ns_b, ca_b)):
                reader = a1 if ns == ns_a else b1
                assert reader.dht is not None
                record = await reader.dht.get(ip_key(ns, vips[ns]))
                assert record is not None and record.owner == ab.node_id
                assert ca.trust.verify(record.cert, now=loop.time()).node_id == ab.node_id
            # b1 holds one in B; ab takes b1's certificate from that record (B's CA).
            vip_b1 = await allocate_ip(b1.dht, SUBNET, namespace=ns_b, rng=random.Random(2))
            record = await ab.dht.get(ip_key(ns_b, vip_b1))
            assert record is not None and record.owner == b1.node_id
            assert ab.core.learn_certificate(b1.node_id, record.cert, now=loop.time())
            # ab's IP to b1 goes tagged with B, sealed as any IP: b1 gets the tag and packet.
            got: list[tuple[NodeId, bytes]] = []
            b1.on_net_ip = lambda src, payload: got.append((src, payload))
            tag_b = network_tag(ca_b.trust.public_key_raw)
            assert (
                ab.core.send_ip(b1.node_id, b"ip-of-othernet", now=loop.time(), tag=tag_b) is None
            )
            assert ab.driver is not None
            ab.driver.pump()
            assert await until(lambda: bool(got), 10, every_s=0.05)
            assert got == [(ab.node_id, tag_b + b"ip-of-othernet")]
            # a1 (labnet only) cannot sign for othernet: its write there is refused.
            assert not await a1.dht.put(ip_key(ns_b, vip_b1), vip_b1.packed, ttl=60)
        finally:
            await asyncio.gather(*(nd.close() for nd in nodes.values()))

    run_virtual(body(), start=SIM_EPOCH)
