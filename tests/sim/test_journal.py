"""Links up and down, path changes and punching become structured notes (ipop.journal)."""

from __future__ import annotations

import asyncio
import functools
import random
import re

from ipop.aio.stack import Node
from ipop.journal import NOTE_EVENTS, Journal, Note
from ipop.testing.clock import SIM_EPOCH, run_virtual
from ipop.testing.identities import make_network, seeded_identity
from ipop.testing.netsim import Network
from ipop.testing.simnode import all_dht_ready
from ipop.types import Endpoint, NodeId, RelayPath

PORT = 5800
KINDS = ["none", "none", "port-restricted-cone", "symmetric", "full-cone", "restricted-cone"]
LINE = re.compile(r"^event=[a-z_]+ peer=[0-9a-f]{8}( [a-z_]+=\S+)*$")


def test_the_stack_notes_first_links_at_info_and_losses_at_debug() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        net = Network(rng=random.Random(4))
        ca = make_network("simnet", now=loop.time())
        keys = random.Random(5)  # ring positions from a seed: reproducible runs
        nodes: list[Node] = []
        boot: list[Endpoint] = []
        for i, kind in enumerate(KINDS):
            host = net.add_host(f"h{i}", kind)
            nd = Node(
                seeded_identity(ca, f"h{i}", keys, now=loop.time()),
                bootstrap=boot,
                clock=loop.time,
                rng=random.Random(i),
            )
            nd.attach(
                host.bind(PORT, nd.datagram_received),
                open_socket=functools.partial(host.bind, 0),
            )
            nd.start()
            nodes.append(nd)
            boot = boot or [Endpoint(host.address, PORT)]  # the first node, public
            await asyncio.sleep(0.05)
        notes: dict[int, list[Note]] = {i: [] for i in range(len(nodes))}
        try:
            await all_dht_ready(nodes[1:])
            for i, nd in enumerate(nodes):
                notes[i] += nd.core.journal.drain()
                ups = [n for n in notes[i] if n.event == "link_up"]
                assert ups and all(n.rare for n in ups)  # every first link is news
            gone = nodes[0]
            linked_to_gone = [
                i for i, nd in enumerate(nodes[1:], 1) if nd.core.link.is_up(gone.node_id)
            ]
            assert linked_to_gone
            await gone.close()
            deadline = loop.time() + 60
            while loop.time() < deadline:
                await asyncio.sleep(1)
                for i in linked_to_gone:
                    notes[i] += nodes[i].core.journal.drain()
                if all(_lost(notes[i], gone.node_id) for i in linked_to_gone):
                    break
            for i in linked_to_gone:
                down = _lost(notes[i], gone.node_id)
                assert down and not down[0].rare  # a link going is routine: debug
            for got in notes.values():
                for n in got:
                    assert n.event in NOTE_EVENTS
                    assert LINE.match(n.line()), n.line()
        finally:
            await asyncio.gather(*(nd.close() for nd in nodes[1:]))

    run_virtual(body(), start=SIM_EPOCH)


def _lost(notes: list[Note], peer: NodeId) -> list[Note]:
    return [n for n in notes if n.event == "link_down" and n.peer == peer]


def test_journal_levels_and_bounds() -> None:
    j = Journal(max_notes=4, max_known=2)
    a, b, c = NodeId(1), NodeId(2), NodeId(3)
    ep = Endpoint("198.51.100.7", 5800)
    j.link_up(a, ep, now=0)
    j.path_changed(a, Endpoint("198.51.100.7", 5900), "roamed", now=1)  # direct -> direct
    j.path_changed(a, RelayPath(a, c), "relay", now=2)  # direct -> relayed
    j.link_down(a, "timeout", now=3)
    first, roam, relayed, down = j.drain()
    assert first.rare and not roam.rare and relayed.rare and not down.rare
    assert "path=relayed was=direct" in relayed.line()
    j.link_up(a, ep, now=4)
    (again,) = j.drain()
    assert not again.rare  # a link that comes back is not news
    j.link_up(b, ep, now=5)
    j.link_up(c, ep, now=6)  # a is forgotten (max_known=2)
    j.link_up(c, ep, now=7)
    j.link_up(a, ep, now=8)
    j.link_up(a, ep, now=9)  # 5 notes, room for 4
    assert len(j) == 4 and j.dropped == 1
    assert [n.rare for n in j.drain()] == [True, False, True, False]
