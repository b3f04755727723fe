"""A CRL handed to one node reaches every node over links, and the revoked node is cut off."""

from __future__ import annotations

import asyncio
import functools
import random

import pytest

from ipop.aio.stack import Node
from ipop.identity import CrlError, NodeIdentity, cert_serial
from ipop.testing.clock import SIM_EPOCH, run_virtual
from ipop.testing.identities import make_network, seeded_identity
from ipop.testing.netsim import Network
from ipop.types import Endpoint

PORT = 5800
N = 20
KINDS = ["none", "full-cone", "port-restricted-cone", "none", "restricted-cone"]


def _own_trust(identity: NodeIdentity) -> NodeIdentity:
    # One CaTrust per node, as on real machines: a CRL must travel to be known elsewhere.
    return NodeIdentity(identity.private_key, identity.cert, identity.trust.fork())


def test_a_crl_given_to_one_node_reaches_all_and_cuts_the_revoked_node_off() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        rng = random.Random(11)
        net = Network(rng=random.Random(12))
        ca = make_network("simnet", now=loop.time())
        keys = random.Random(13)  # ring positions from a seed: reproducible runs
        nodes: list[Node] = []
        boot: list[Endpoint] = []
        for i in range(N):
            host = net.add_host(f"h{i}", "none" if i == 0 else KINDS[i % len(KINDS)])
            node = Node(
                _own_trust(seeded_identity(ca, f"h{i}", keys, now=loop.time())),
                bootstrap=boot,
                clock=loop.time,
                rng=random.Random(rng.random()),
            )
            node.attach(
                host.bind(PORT, node.datagram_received),
                open_socket=functools.partial(host.bind, 0),
            )
            node.start()
            nodes.append(node)
            if i == 0:
                boot = [Endpoint(host.address, PORT)]
            await asyncio.sleep(0.05)
        try:
            await asyncio.wait_for(asyncio.gather(*(nd.routable.wait() for nd in nodes)), 60)
            await asyncio.sleep(10)  # let the ring settle: links everywhere
            revoked = nodes[7]
            honest = [nd for nd in nodes if nd is not revoked]
            linked = [nd for nd in honest if nd.core.link.is_up(revoked.node_id)]
            assert len(linked) >= 2, "the revoked node should start with several links"
            crl = ca.make_crl(
                [(cert_serial(revoked.identity.cert), loop.time())], number=1, now=loop.time()
            )
            # A forged list (another CA of the same name) handed over first changes nothing.
            forger = make_network("simnet", now=loop.time())
            forged = forger.make_crl([(cert_serial(nodes[3].identity.cert), 0)], number=2, now=0)
            with pytest.raises(CrlError, match="crl_bad_signature"):
                nodes[15].apply_crl(forged)
            assert all(nd.identity.trust.crl_number == 0 for nd in nodes)

            start = loop.time()
            # The node with the fewest links among those not linked to the revoked one (with
            # random node keys, one may now and then be linked to everyone).
            source = min(
                (nd for nd in honest if not nd.core.link.is_up(revoked.node_id)),
                key=lambda nd: len(nd.core.link.peers()),
            )
            # Some nodes are not linked to the source: the list must travel more than one hop.
            far = [
                nd for nd in honest if nd is not source and not source.core.link.is_up(nd.node_id)
            ]
            assert far
            source.apply_crl(crl)
            # Before it travels, nobody else knows: no shared trust object in this test.
            assert sum(nd.identity.trust.crl_number == 1 for nd in nodes) == 1

            def done() -> bool:
                return all(nd.identity.trust.crl_number == 1 for nd in honest) and not any(
                    nd.core.link.is_up(revoked.node_id) for nd in honest
                )

            while not done() and loop.time() - start < 60:
                await asyncio.sleep(0.5)
            took = loop.time() - start
            assert done(), [nd.identity.trust.crl_number for nd in honest]
            assert took < 60
            # The revoked node holds no session either (it was told CLOSING, then refused).
            while revoked.core.link.peers() and loop.time() - start < 60:
                await asyncio.sleep(0.5)
            assert revoked.core.link.peers() == []
            # It keeps knocking, and gets nothing: still cut off well after.
            await asyncio.sleep(30)
            assert not any(nd.core.link.is_up(revoked.node_id) for nd in honest)
            assert sum(nd.core.link.drops["cert_revoked"] for nd in honest) >= 1
            closed = sum(nd.core.stats["revoked_links_closed"] for nd in honest)
            assert closed >= len(linked)
            assert all(nd.identity.trust.crl_number == 1 for nd in far)
            # A list no newer than the one in force (number 1 again, revoking another node) is
            # refused: the victim keeps its links.
            victim = nodes[3]
            older = ca.make_crl(
                [(cert_serial(victim.identity.cert), loop.time())], number=1, now=loop.time()
            )
            with pytest.raises(CrlError, match="crl_stale"):
                honest[5].apply_crl(older)
            assert not any(nd.identity.trust.is_revoked(victim.identity.cert) for nd in nodes)
            # The honest network still works: everyone routable, pings across it.
            reply = await honest[1].ping(honest[-1].node_id, timeout_s=5)
            assert reply.rtt_s > 0
            print(f"CRL reached {len(honest)} nodes ({len(far)} not linked to the source),")
            print(f"{closed} links closed, in {took:.1f} s of virtual time")
        finally:
            await asyncio.gather(*(nd.close() for nd in nodes))

    run_virtual(body(), start=SIM_EPOCH)
