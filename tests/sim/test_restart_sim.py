"""A node killed abruptly and restarted at once (simulator): same identity, same state
directory (its remembered peers, its previous address), same port.

The killed node says no goodbye: its DHT records stay live and every peer still holds a
session with it. The restart must get its old address back within seconds, and traffic
between it and its peers (one behind a port-restricted NAT among them) must resume within
2 s: each peer replaces the dead session as soon as the restarted node's handshake with it
completes (ipopd's soak saw 15-38 s, or no recovery at all, and new addresses).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import random
from dataclasses import dataclass, field
from pathlib import Path

from ipop.aio.peerstore import PeerStore
from ipop.aio.stack import Node
from ipop.dht.alloc import allocate_ip
from ipop.dht.record import namespace_of
from ipop.identity import NodeIdentity
from ipop.testing.clock import SIM_EPOCH, run_virtual
from ipop.testing.identities import make_network, seeded_identity
from ipop.testing.nat import nat_kind
from ipop.testing.netsim import Host, Network, SimSocket
from ipop.testing.simnode import all_dht_ready
from ipop.types import Endpoint

PORT = 5800
NETWORK = "restart"
# The CA is seeded: its key names the DHT namespace, so it places every key on the ring.
NS = namespace_of(make_network(NETWORK, seed=NETWORK, now=SIM_EPOCH).trust)
SUBNET = ipaddress.ip_network("100.64.0.0/10")
# More peers than the old bound on remembered peers (16): a restarted ipopd in a 30-node soak
# had linked to every other node (the sweeps ping all pairs). None: a public host.
_MIX: tuple[str | None, ...] = (
    "port-restricted-cone",
    "restricted-cone",
    "full-cone",
    "port-restricted-cone",
    None,
)
KINDS: tuple[str | None, ...] = (None, None, *(_MIX * 4))
VICTIM = 2  # behind a port-restricted NAT
FILTERED_PEER = 5  # behind another port-restricted NAT
# The victim behind a symmetric NAT: its direct sessions with filtering peers run on its
# punching sockets (ipop.nat.portguess), which die with it, and symmetric peers reach it through
# relays only. Neither kind is in its remembered peers.
SYMMETRIC_KINDS: tuple[str | None, ...] = (
    None,
    None,
    "symmetric",
    "restricted-cone",
    "full-cone",
    "symmetric",
    None,
    "port-restricted-cone",
    "symmetric",
    None,
    "full-cone",
    None,
)
PUNCHED_PEER = 7  # port-restricted: linked to the symmetric victim by port guessing
RESTART_AFTER_S = 2.0  # as the soak does


@dataclass
class Outcome:
    vip_before: ipaddress.IPv4Address | None = None
    vip_after: ipaddress.IPv4Address | None = None
    vip_after_s: float | None = None
    # Peers that held a session with the victim when it was killed.
    linked: set[int] = field(default_factory=set)
    # Peer index -> seconds after the restart until a ping each way got through.
    to_victim_s: dict[int, float] = field(default_factory=dict)
    from_victim_s: dict[int, float] = field(default_factory=dict)


def _restart_scenario(seed: int, state: Path, kinds: tuple[str | None, ...] = KINDS) -> Outcome:
    out = Outcome()

    async def body() -> None:
        loop = asyncio.get_running_loop()
        net = Network(rng=random.Random(seed), internet_latency_s=0.01)
        ca = make_network(NETWORK, seed=NETWORK, now=loop.time())
        hosts = [
            net.add_public_host(f"h{i}")
            if kind is None
            else net.add_nat(f"nat{i}", nat_kind(kind)).add_host(f"h{i}")
            for i, kind in enumerate(kinds)
        ]
        # Keys (so ring positions) from the seed too: with fresh random keys each run was
        # another arrangement, and 3 of 100 missed a bound (a peer back after 6.06 s; the
        # guessed peer not linked before the kill), which made the suite flaky.
        key_rng = random.Random(f"restart-keys-{seed}")
        ids = [seeded_identity(ca, f"h{i}", key_rng, now=loop.time()) for i in range(len(hosts))]
        boot = [Endpoint(hosts[0].address, PORT)]
        socks: dict[Node, SimSocket] = {}

        def start(i: int, host: Host, identity: NodeIdentity, rng_seed: float) -> Node:
            node = Node(
                identity,
                bootstrap=[] if i == 0 else boot,
                clock=loop.time,
                rng=random.Random(rng_seed),
            )
            node.core.overlay.set_local_endpoints([Endpoint(host.address, PORT)])
            # What ipopd does at start: the remembered peers from its state directory.
            node.core.overlay.set_remembered(PeerStore(state / f"h{i}", network=NETWORK).load())
            socks[node] = host.bind(PORT, node.datagram_received)
            node.attach(socks[node], open_socket=functools.partial(host.bind, 0))
            node.start()
            return node

        async def close(node: Node) -> None:
            await node.close()
            sock = socks.pop(node, None)
            if sock is not None:
                sock.close()

        rng = random.Random(seed + 1)
        nodes = [start(i, h, ids[i], rng.random()) for i, h in enumerate(hosts)]
        try:
            await all_dht_ready(nodes)
            victim = nodes[VICTIM]
            assert victim.dht is not None
            out.vip_before = await allocate_ip(
                victim.dht, SUBNET, namespace=NS, rng=random.Random(seed)
            )
            # Traffic both ways with every peer: each gets a direct link (a shortcut).
            for _ in range(8):
                for i, node in enumerate(nodes):
                    if i != VICTIM:
                        node.send_ip(victim.node_id, b"\x45" + bytes(39))
                        victim.send_ip(node.node_id, b"\x45" + bytes(39))
                await asyncio.sleep(0.5)
            # ipopd notes its direct links every few seconds and writes them down.
            store = PeerStore(state / f"h{VICTIM}", network=NETWORK)
            store.note(
                (info.path for info in victim.core.link.peers()),
                own=[Endpoint(hosts[VICTIM].address, PORT)],
            )
            store.save(now=loop.time())
            await asyncio.sleep(10)

            # kill -9: no goodbye, records stay live, every peer keeps its session.
            gone = victim.node_id
            out.linked = {i for i, n in enumerate(nodes) if n.core.link.is_up(gone)}
            await close(victim)
            await asyncio.sleep(RESTART_AFTER_S)
            restarted = nodes[VICTIM] = start(VICTIM, hosts[VICTIM], ids[VICTIM], 0.5)
            t0 = loop.time()

            async def claim() -> None:
                await restarted.dht_ready.wait()
                assert restarted.dht is not None
                out.vip_after = await allocate_ip(
                    restarted.dht,
                    SUBNET,
                    namespace=NS,
                    rng=random.Random(seed + 2),
                    preferred=out.vip_before,
                )
                out.vip_after_s = loop.time() - t0

            async def ping(a: Node, b: Node, into: dict[int, float], i: int) -> None:
                while loop.time() - t0 < 30:
                    try:
                        await a.ping(b.node_id, timeout_s=0.5)
                    except TimeoutError:
                        continue
                    into[i] = loop.time() - t0
                    return

            peers = [i for i in range(len(nodes)) if i != VICTIM]
            await asyncio.gather(
                claim(),
                *(ping(nodes[i], restarted, out.to_victim_s, i) for i in peers),
                *(ping(restarted, nodes[i], out.from_victim_s, i) for i in peers),
            )
        finally:
            await asyncio.gather(*(close(n) for n in nodes))

    run_virtual(body(), start=SIM_EPOCH)
    return out


def test_restarted_node_gets_its_address_back_within_seconds(tmp_path: Path) -> None:
    for seed in (1, 2):
        out = _restart_scenario(seed, tmp_path / str(seed))
        assert out.vip_after == out.vip_before, (seed, out)
        assert out.vip_after_s is not None and out.vip_after_s <= 3.0, (seed, out)


def test_peers_switch_to_the_restarted_session_within_2_s(tmp_path: Path) -> None:
    for seed in (1, 2):
        out = _restart_scenario(seed, tmp_path / str(seed))
        slow_to = {i: round(t, 1) for i, t in out.to_victim_s.items() if t > 2.0}
        slow_from = {i: round(t, 1) for i, t in out.from_victim_s.items() if t > 2.0}
        assert out.linked == set(range(len(KINDS))) - {VICTIM}, (seed, out)
        assert len(out.to_victim_s) == len(out.from_victim_s) == len(KINDS) - 1, (seed, out)
        assert not slow_to and not slow_from, (seed, slow_to, slow_from)
        # The peer behind a port-restricted NAT is among them (covered by the loop above).
        assert out.to_victim_s[FILTERED_PEER] <= 2.0


def test_peers_of_a_restarted_node_behind_a_symmetric_nat_recover_in_seconds(
    tmp_path: Path,
) -> None:
    """Its peers' sessions ran on its punching sockets or through relays, none remembered.
    Over 60 runs before: the port-guessed peer recovered after 17-22 s or not within 30 s
    (half the runs), relayed peers after up to 21 s, the address after up to 16 s. Now:
    every peer and the address within 4.3 s."""
    for seed in (1, 2):
        out = _restart_scenario(seed, tmp_path / str(seed), SYMMETRIC_KINDS)
        assert out.vip_after == out.vip_before, (seed, out)
        assert out.vip_after_s is not None and out.vip_after_s <= 6.0, (seed, out)
        assert PUNCHED_PEER in out.linked, (seed, out)
        assert len(out.to_victim_s) == len(out.from_victim_s) == len(SYMMETRIC_KINDS) - 1
        worst = {i: max(out.to_victim_s[i], out.from_victim_s[i]) for i in out.to_victim_s}
        assert max(worst.values()) <= 6.0, (seed, worst)
