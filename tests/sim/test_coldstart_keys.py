"""Cold start of a network of many hosts behind port-restricted NATs (issue 14): right after
every node joined, everyone pings everyone, so shortcuts are punched between every pair at
once, each to every endpoint of the other, with Inits crossing from both ends. The two ends
of every session must end up able to open what the other seals: before spare and older keys
(ipop.link.layer), a responder dropped the answers its peer had kept, and a node that
completed several handshakes at once dropped keys its peer still sealed with; each showed as
DATA under an index it had retired (4-103 per cold start here, lab: ``unknown_index``), and
pairs of the lab's 30-daemon cold start lost both pings.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from ipop.aio.stack import Node
from ipop.testing.clock import SIM_EPOCH, run_virtual
from ipop.testing.identities import make_network
from ipop.testing.netsim import Host, Network
from ipop.testing.simnode import all_dht_ready, start_nodes

# A pair passes if any of three pings answers within 1 s. The lab's sweep tries twice; in
# about one cold start of 40 here, one node's view of the ring still missed a neighbour for
# a second or two (its messages to some targets found no route until a pull of its peers'
# neighbour lists filled the gap), and a third try lets the pair show it recovered. Every
# pair must still answer; the sessions' keys must still agree.
PINGS = 3
PING_TIMEOUT_S = 1.0


def _hosts(net: Network) -> list[Host]:
    """25 hosts, lab-like: 3 public, 2 full-cone, 6 port-restricted NATs of 3 hosts each, a
    symmetric NAT of 2."""
    hosts = [net.add_public_host(f"pub{i}") for i in range(3)]
    hosts += [net.add_host(f"fc{i}", "full-cone") for i in range(2)]
    for n in range(6):
        nat = net.add_nat(f"prc{n}", "port-restricted-cone")
        hosts += [nat.add_host(f"prc{n}-{j}") for j in range(3)]
    nat = net.add_nat("sym", "symmetric")
    return hosts + [nat.add_host(f"sym-{j}") for j in range(2)]


async def _pair_answers(a: Node, b: Node) -> bool:
    for _ in range(PINGS):
        try:
            await a.ping(b.node_id, timeout_s=PING_TIMEOUT_S)
        except TimeoutError:
            continue
        return True
    return False


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_no_session_diverges_when_everyone_pings_everyone_at_a_cold_start(seed: int) -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        net = Network(rng=random.Random(seed), internet_latency_s=0.005, internet_jitter_s=0.005)
        ca = make_network("cold", now=loop.time())
        hosts = _hosts(net)
        nodes = start_nodes(hosts, ca, rng=random.Random(seed + 100))
        try:
            await all_dht_ready(nodes)
            pairs = [(a, b) for a in nodes for b in nodes if a is not b]
            answered = await asyncio.gather(*(_pair_answers(a, b) for a, b in pairs))
            # Every session settles: traffic both ways a few seconds later, keys all agreed.
            await asyncio.sleep(3.0)
            again = await asyncio.gather(*(_pair_answers(a, b) for a, b in pairs))
            # Nobody's NAT rebound: where a peer sees a punching socket is that socket's own
            # mapping, and it made nodes roam (re-key everything) at every cold start.
            rebound = {
                h.name: v
                for n, h in zip(nodes, hosts, strict=True)
                if (v := n.core.overlay.stats["roamed_rebound"])
            }
        finally:
            await asyncio.gather(*(n.close() for n in nodes))
        name = {n.node_id: h.name for n, h in zip(nodes, hosts, strict=True)}
        diverged = {
            name[n.node_id]: v for n in nodes if (v := n.core.link.stats["data_under_retired_keys"])
        }
        assert not diverged, f"DATA under keys the receiver dropped: {diverged}"
        assert not rebound, f"roamed on a punching socket's mapping: {rebound}"
        # Pairs with the symmetric NAT's hosts link by port guessing or through a relay, whose
        # first seconds this test does not cover (one such pair lost both pings in about one
        # run of 40); every other pair must answer from the first sweep on.
        lost = [
            f"{name[a.node_id]}->{name[b.node_id]}"
            for (a, b), ok in zip(pairs, answered, strict=True)
            if not ok and "sym" not in name[a.node_id] + name[b.node_id]
        ]
        assert not lost, f"{len(lost)} of {len(pairs)} pairs lost every ping: {lost}"
        lost = [
            f"{name[a.node_id]}->{name[b.node_id]}"
            for (a, b), ok in zip(pairs, again, strict=True)
            if not ok
        ]
        assert not lost, f"{len(lost)} pairs lost every ping 3 s later: {lost}"
        assert not net.callback_errors

    run_virtual(body(), start=SIM_EPOCH)
