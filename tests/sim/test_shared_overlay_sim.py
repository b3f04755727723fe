"""Members with overlay credentials apart from network credentials (issue 17, item 1), full
stacks on the simulated internet in virtual time.

Every node holds ONE key with two certificates: one of the overlay CA ('shared'), which its
links and routing present, and one of the network CA ('simnet'), which its DHT records
carry. An intruder with a valid network certificate but an overlay certificate of another
overlay CA (of the same name) never gets a link.
"""

from __future__ import annotations

import asyncio
import functools
import random
from ipaddress import IPv4Address, IPv4Network

from ipop.aio.stack import Node
from ipop.dht.alloc import allocate_ip
from ipop.dht.record import Record, StoreOutcome, ip_key, namespace_of
from ipop.identity import NetworkCA, NodeIdentity, cert_serial
from ipop.overlay.messages import KIND_IP
from ipop.testing.clock import SIM_EPOCH, run_virtual
from ipop.testing.identities import make_network, seeded_identity
from ipop.testing.netsim import Network
from ipop.testing.simnode import all_dht_ready
from ipop.testing.waiting import until
from ipop.types import Endpoint, NodeId

PORT = 5800
SUBNET = IPv4Network("100.64.0.0/24")
KINDS = ["none", "port-restricted-cone", "full-cone", "symmetric"]


def _node(
    net: Network,
    name: str,
    kind: str,
    overlay_ca: NetworkCA,
    network_ca: NetworkCA | None,
    keys: random.Random,
    boot: list[Endpoint],
    rng: random.Random,
    *,
    own_trust: bool = False,
) -> tuple[Node, Endpoint]:
    """``network_ca`` None: an overlay-only node. ``own_trust``: the member's network trust is
    its own (as on a real machine), so a revocation list installed at one member is not
    thereby known at all of them."""
    loop = asyncio.get_running_loop()
    host = net.add_host(name, kind)
    if network_ca is None:
        ident = seeded_identity(overlay_ca, name, keys, now=loop.time())
        node = Node(
            ident, bootstrap=boot, clock=loop.time, rng=random.Random(rng.random()),
            overlay_only=True,
        )  # fmt: skip
    else:
        member = seeded_identity(network_ca, name, keys, now=loop.time(), hostname=name)
        if own_trust:
            member = NodeIdentity(member.private_key, member.cert, member.trust.fork())
        node = Node(
            member.certified_by(overlay_ca, name, now=loop.time()),
            member=member,
            bootstrap=boot,
            clock=loop.time,
            rng=random.Random(rng.random()),
        )
    node.attach(
        host.bind(PORT, node.datagram_received), open_socket=functools.partial(host.bind, 0)
    )
    node.start()
    return node, Endpoint(host.address, PORT)


def test_members_link_with_overlay_certs_and_sign_records_with_network_certs() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        rng, keys = random.Random(11), random.Random(12)
        net = Network(rng=random.Random(13))
        overlay_ca = make_network("shared", now=loop.time())
        network_ca = make_network("simnet", now=loop.time())
        nodes: list[Node] = []
        boot: list[Endpoint] = []
        for i in range(8):
            node, ep = _node(
                net, f"h{i}", KINDS[i % 4] if i else "none", overlay_ca, network_ca, keys, boot,
                rng,
            )  # fmt: skip
            nodes.append(node)
            boot = boot or [ep]
            await asyncio.sleep(0.05)
        try:
            await all_dht_ready(nodes[1:])
            # Links carry the overlay certificates: every session's peer certificate is the
            # overlay CA's, and verifies against it (not against the network CA).
            for nd in nodes:
                peers = nd.core.link.peers()
                assert peers
                for info in peers:
                    cert = nd.core.link._peers[info.peer].cert
                    assert cert.network == "shared"
                    assert overlay_ca.trust.verify(cert.der, now=loop.time()).node_id == info.peer
            # Routed and direct IP both arrive.
            a, b = nodes[2], nodes[7]
            got: list[tuple[NodeId, bytes]] = []
            b.on_ip = lambda src, pkt: got.append((src, pkt))
            assert a.send(b.node_id, KIND_IP, b"over-the-overlay")
            assert await until(lambda: bool(got), 10, every_s=0.05)
            assert got == [(a.node_id, b"over-the-overlay")]
            # DHT records carry the network certificate.
            ns = namespace_of(network_ca.trust)
            vip = await allocate_ip(a.dht, SUBNET, namespace=ns, rng=random.Random(1))  # type: ignore[arg-type]
            assert isinstance(vip, IPv4Address)
            assert b.dht is not None
            record = await b.dht.get(ip_key(ns, vip))
            assert record is not None and record.owner == a.node_id
            cert = network_ca.trust.verify(record.cert, now=loop.time())
            assert cert.network == "simnet" and cert.node_id == a.node_id
            assert record.cert == a.member.cert.der != a.identity.cert.der
        finally:
            await asyncio.gather(*(nd.close() for nd in nodes))

    run_virtual(body(), start=SIM_EPOCH)


def test_an_overlay_cert_of_another_overlay_ca_is_refused_at_the_handshake() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        rng, keys = random.Random(21), random.Random(22)
        net = Network(rng=random.Random(23))
        overlay_ca = make_network("shared", now=loop.time())
        rogue_overlay = make_network("shared", now=loop.time())  # same name, other key
        network_ca = make_network("simnet", now=loop.time())
        nodes: list[Node] = []
        boot: list[Endpoint] = []
        for i in range(3):
            node, ep = _node(net, f"h{i}", "none", overlay_ca, network_ca, keys, boot, rng)
            nodes.append(node)
            boot = boot or [ep]
        intruder, _ = _node(net, "x", "none", rogue_overlay, network_ca, keys, boot, rng)
        try:
            await all_dht_ready(nodes[1:])
            first = nodes[0]
            assert await until(
                lambda: first.core.link.drops["cert_bad_signature"] > 0, 30, every_s=0.05
            )
            await asyncio.sleep(5)  # give it time to try every member it may have heard of
            assert not intruder.core.link.peers()
            assert all(not nd.core.link.is_up(intruder.node_id) for nd in nodes)
            # Its network certificate is valid: the overlay certificate alone kept it out.
            network_ca.trust.verify(intruder.member.cert.der, now=loop.time())
        finally:
            await asyncio.gather(*(nd.close() for nd in [*nodes, intruder]))

    run_virtual(body(), start=SIM_EPOCH)


def test_a_node_refuses_an_overlay_and_network_identity_of_two_keys() -> None:
    import pytest

    from ipop.errors import LocalProtocolError
    from ipop.testing.identities import make_identity

    ovl = make_network("shared", now=SIM_EPOCH)
    netw = make_network("simnet", now=SIM_EPOCH)
    a = make_identity(ovl, "a", now=SIM_EPOCH)
    b: NodeIdentity = make_identity(netw, "a", now=SIM_EPOCH)
    with pytest.raises(LocalProtocolError):
        Node(a, member=b, bootstrap=[], clock=lambda: SIM_EPOCH, rng=random.Random(1))


def test_a_networks_crl_given_to_one_member_reaches_every_node_of_the_overlay() -> None:
    """Issue 17: a network's revocation list is not the overlay's, yet it must reach every
    member (and the overlay-only replicas that serve its records) without an operator pushing
    it to each: before NetworkCrls it stayed in the one member it was pushed to."""

    async def body() -> None:
        loop = asyncio.get_running_loop()
        rng, keys = random.Random(31), random.Random(32)
        net = Network(rng=random.Random(33))
        overlay_ca = make_network("shared", now=loop.time())
        network_ca = make_network("simnet", now=loop.time())
        nodes: list[Node] = []
        boot: list[Endpoint] = []
        for i in range(3):  # overlay-only: they hold no network certificate
            node, ep = _node(net, f"o{i}", "none", overlay_ca, None, keys, boot, rng)
            nodes.append(node)
            boot = boot or [ep]
        members: list[Node] = []
        for i in range(5):
            node, _ = _node(
                net, f"m{i}", KINDS[i % 4], overlay_ca, network_ca, keys, boot, rng,
                own_trust=True,
            )  # fmt: skip
            members.append(node)
        everyone = [*nodes, *members]
        try:
            await all_dht_ready(everyone[1:])
            victim = members[4]
            crl = network_ca.make_crl(
                [(cert_serial(victim.member.cert), loop.time())], number=3, now=loop.time()
            )
            key = network_ca.trust.public_key_raw
            members[0].apply_crl(crl)
            assert members[0].member.trust.crl_number == 3
            # The overlay's own list is untouched: links are the overlay CA's to cut.
            assert members[0].identity.trust.crl_number == 0

            def spread() -> bool:
                return all(m.member.trust.crl_number == 3 for m in members) and all(
                    o.core.network_crls.holds(key) == 3 for o in nodes
                )

            assert await until(spread, 30, every_s=0.05), [
                m.member.trust.crl_number for m in members
            ]
            assert all(m.member.trust.is_revoked(victim.member.cert) for m in members)
            # An overlay-only replica refuses the revoked member's records from now on.
            ns = namespace_of(network_ca.trust)
            record = Record.sign(
                victim.member, ip_key(ns, "100.64.0.77"), b"", seq=1, expires_at=loop.time() + 600
            )
            replica = nodes[1].dht
            assert replica is not None
            assert replica.storage.offer(record) is StoreOutcome.INVALID
            assert replica.storage.refused["cert_revoked"] == 1
        finally:
            await asyncio.gather(*(nd.close() for nd in everyone))

    run_virtual(body(), start=SIM_EPOCH)
