"""Who the DHT knows and how it finds the nodes nearest a key: :class:`Lookups`.

Owns the contacts side of :class:`~ipop.dht.service.DhtService`: joining through seed nodes
(and joining again through them once every contact is lost), taking the overlay's linked peers
in as contacts, the periodic refresh lookups, and kademlia's node lookup as the service uses it
(:class:`LiveNodeCrawl`, which keeps only nodes that answered, and reads' hasty variant, which
does not wait for unresponsive or late peers), down to a key's replica set.

Contacts: besides kademlia's own (whoever asks or answers us), every overlay link's peer
(:class:`~ipop.dht.shim.LinkedPeers`, when the port offers it), taken in before each lookup at
most every ``timing.DHT_LINK_ABSORB_S``. Why: the DHT joins through ring-near peers, which
share our id's prefix, so a self-lookup learns only our own region; far links span the ring,
and without them a cluster of nodes can know nobody in the other half of the id space (a
1,000-node run: a put and a get whose lookups never left such a cluster).

Round-trip times, retransmission and silent-peer marks are the protocol's
(:class:`~ipop.dht.protocol.IpopKademliaProtocol`); this module only asks it.
"""

from __future__ import annotations

import asyncio
import heapq
import random
from collections.abc import Iterable
from typing import Any

from kademlia.crawling import NodeSpiderCrawl
from kademlia.node import Node, NodeHeap

from ipop import timing
from ipop.dht.config import DhtConfig
from ipop.dht.hooks import ServiceHooks
from ipop.dht.protocol import IpopKademliaProtocol, kad_node
from ipop.dht.shim import LinkedPeers
from ipop.idcache import node_id_from_bytes
from ipop.types import NodeId

__all__ = ["IndexedNodeHeap", "LiveNodeCrawl", "Lookups"]

_Call = asyncio.Task[tuple[bool, Any]]  # one find_node call of a hasty crawl


class IndexedNodeHeap(NodeHeap):  # type: ignore[misc]  # kademlia is untyped
    """Kademlia's NodeHeap with an id set: stock membership scans the whole heap per push.

    Why: a lookup pushes every node of every answer, so the stock test was quadratic and the
    biggest DHT cost of a 1,000-node simulation. Order and contents are exactly the stock ones.
    """

    def __init__(self, node: Any, maxsize: int) -> None:
        super().__init__(node, maxsize)
        self._ids: set[bytes] = set()

    def push(self, nodes: Any) -> None:
        if not isinstance(nodes, list):
            nodes = [nodes]
        for node in nodes:
            if node.id not in self._ids:
                self._ids.add(node.id)
                heapq.heappush(self.heap, (self.node.distance_to(node), node))

    def remove(self, peers: Any) -> None:
        super().remove(peers)
        self._ids = {node.id for _, node in self.heap}

    def __contains__(self, node: Any) -> bool:
        return node.id in self._ids


class LiveNodeCrawl(NodeSpiderCrawl):  # type: ignore[misc]  # kademlia is untyped
    """Kademlia's node lookup, keeping only nodes that answered.

    Stock ``NodeSpiderCrawl`` drops a silent node from its heap, but a later answer that
    mentions it pushes it back, already marked contacted, so dead nodes can end up in the
    result (measured: half of a key's replica set after 10 of 24 nodes left).

    ``hasty`` (a read's lookup) has no rounds: it keeps ``alpha`` calls waited for while
    answers bring nearer nodes and asks all of the k nearest once one brought none (stock
    kademlia's rule), each as soon as an answer makes room. Why: a round waited for its
    slowest peer, and in a world-wide overlay round trips differ tenfold (1,000 simulated
    nodes: read lookups took 1.01 s at the median, 0.59 s without rounds). Nor does it wait
    for a peer late to answer (past its retransmission timeout): a node that just died is
    named by every answer, so it cost each read's lookup its tries. An unresponsive peer
    counts as silent without being asked, and so does a late one whose timeout comes from its
    own round trips. A late one whose timeout is borrowed from all peers' (we never heard it)
    may just be far: its call goes on beside the next asks and its answer is taken when it
    comes; the crawl waits for it at the end only while it is nearer the target than the
    ``enough``-th nearest node that answered (the replica set is not settled without it).
    Why: in a world-wide overlay the peers near a key may all be a region away, slower than
    the near peers that set the shared estimate; cut off at that estimate, a read's lookup
    found 4-6 nodes, none near the key, and the read missed a record all of the key's
    replicas held (3 of 100 gets at 1,000 simulated nodes). The price: a node near the key
    that just died and was never heard holds the first read after its death for its call's
    tries (2 borrowed timeouts, not 1); its silence is remembered after that.
    """

    def __init__(self, *args: Any, hasty: bool = False, enough: int = 1) -> None:
        super().__init__(*args)
        self.answered: set[bytes] = set()
        self._hasty = hasty
        self._enough = enough
        stock: Any = self.nearest
        indexed = IndexedNodeHeap(self.node, self.ksize)
        indexed.push([node for _, node in stock.heap])
        self.nearest: Any = indexed

    async def find(self) -> Any:
        if self._hasty:
            return await self._find_hasty()
        return await self._find(self.protocol.call_find_node)

    async def _nodes_found(self, responses: dict[bytes, tuple[bool, Any]]) -> Any:
        # Stock NodeSpiderCrawl._nodes_found, except that answers list contact objects
        # (IpopKademliaProtocol.call_find_node) instead of tuples to rebuild them from.
        self._take(responses)
        if self.nearest.have_contacted_all():
            return list(self.nearest)
        return await self.find()

    def _take(self, responses: dict[bytes, tuple[bool, Any]]) -> None:
        silent = []
        for peer, (ok, nodes) in responses.items():
            if ok:
                self.answered.add(peer)
                self.nearest.push(nodes)
            else:
                silent.append(peer)
        self.nearest.remove(silent)

    async def _find_hasty(self) -> Any:
        protocol: IpopKademliaProtocol = self.protocol
        loop = asyncio.get_running_loop()
        calls: dict[_Call, Node] = {}
        due: dict[_Call, float] = {}
        late: set[_Call] = set()  # far maybe: still asked
        # Calls kept waited for at once: alpha while answers bring nearer nodes, all of the
        # k nearest once one brought none (stock kademlia's rounds, without waiting for a
        # round's slowest peer before the next asks).
        window = self.alpha

        def take(done: set[_Call]) -> None:
            nonlocal window
            before = self.nearest.get_ids()
            # In the order asked: ``done`` is a set, iterated in the order of the tasks'
            # addresses, and the order answers are taken in reaches the routing table.
            done_in_order = [t for t in calls if t in done]
            self._take({calls[t].id: t.result() for t in done_in_order})
            for task in done_in_order:
                del calls[task]
                late.discard(task)
            window = self.alpha if self.nearest.get_ids() != before else self.ksize

        try:
            while True:
                active = sum(1 for t in calls if t not in late)
                unresponsive = []
                for peer in self.nearest.get_uncontacted()[: max(0, window - active)]:
                    self.nearest.mark_contacted(peer)
                    node = node_id_from_bytes(peer.id)
                    if protocol.unresponsive(node):
                        unresponsive.append(peer)
                        continue
                    task = loop.create_task(protocol.call_find_node(peer, self.node))
                    calls[task] = peer
                    due[task] = loop.time() + protocol.rtt.timeout(node)
                self.nearest.remove(unresponsive)
                waiting = [t for t in calls if t not in late]
                if not waiting:
                    if self.nearest.get_uncontacted():
                        continue
                    bound = self._settled_at()  # (once: it walks the heap)
                    if not any(
                        bound is None or self.node.distance_to(calls[t]) < bound for t in late
                    ):
                        break
                    done, _ = await asyncio.wait(late, return_when=asyncio.FIRST_COMPLETED)
                    take(done)
                    continue
                wait = max(0.0, min(due[t] for t in waiting) - loop.time())
                done, _ = await asyncio.wait(
                    set(calls), timeout=wait, return_when=asyncio.FIRST_COMPLETED
                )
                if done:
                    take(done)
                now = loop.time()
                for task in [t for t in calls if t not in late and due[t] <= now]:
                    node = node_id_from_bytes(calls[task].id)
                    if protocol.rtt.sampled(node):
                        task.cancel()
                        protocol.missed(node)
                        self.nearest.remove([calls.pop(task)])
                    else:
                        late.add(task)
        finally:
            for task in calls:
                task.cancel()
        return list(self.nearest)

    def _settled_at(self) -> int | None:
        """The distance to the target of the ``enough``-th nearest node that answered (a late
        peer nearer than that may change the replica set); None while fewer answered."""
        answered = [n for n in self.nearest if n.id in self.answered]
        if len(answered) < self._enough:
            return None
        return int(self.node.distance_to(answered[self._enough - 1]))


class Lookups:
    """One node's DHT contacts and lookups; see the module docstring."""

    def __init__(
        self,
        node_id: NodeId,
        protocol: IpopKademliaProtocol,
        config: DhtConfig,
        *,
        hooks: ServiceHooks,
        rng: random.Random,
        linked: LinkedPeers | None,
    ) -> None:
        self._hooks = hooks
        self.node_id = node_id
        self.protocol = protocol
        self.config = config
        self._rng = rng
        # The overlay's linked peers, taken in as contacts (None: the port does not offer them).
        self.linked = linked
        self._seeds: list[NodeId] = []
        self._absorbed: set[NodeId] = set()
        self._absorb_at = -float("inf")

    def contacts(self) -> list[NodeId]:
        """Every node in our routing table."""
        return [
            node_id_from_bytes(n.id) for b in self.protocol.router.buckets for n in b.get_nodes()
        ]

    async def bootstrap(self, known: Iterable[NodeId]) -> bool:
        """Join through ``known`` nodes; True once at least one answered and we looked us up.

        The nodes are remembered: if every contact is lost later (a partition, our own uplink
        down), the service joins through them again before its next operation.
        """
        peers = [n for n in dict.fromkeys(known) if n != self.node_id]
        self._seeds = list(dict.fromkeys([*self._seeds, *peers]))
        return await self._join(peers)

    async def _join(self, peers: list[NodeId]) -> bool:
        if not peers:
            return False
        if not await self._first_answer(peers):
            self._hooks.stats["bootstrap_failed"] += 1
            return False
        await self.lookup(self.node_id.to_bytes(), width=self.config.width)
        self._hooks.stats["bootstrapped"] += 1
        return bool(self.contacts())

    async def _first_answer(self, peers: list[NodeId]) -> bool:
        """Ping ``peers``; True as soon as one answered (the rest go on in the background).

        Why not all: a restarted node's near peers include paused and dead ones, each of which
        held the join for every try of its ping (1.6 s), measured to the next second.
        """
        pending: set[asyncio.Task[tuple[bool, Any]]] = {
            self._hooks.spawn(self.protocol.ping_node(kad_node(p))) for p in peers
        }
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if any(task.result()[0] for task in done):
                return True
        return False

    def _absorb_links(self) -> None:
        """Take the overlay's linked peers in as contacts where a bucket has room for them.

        Each peer is looked at once, and a full bucket is left alone: kademlia would ping its
        head for every newcomer it cannot place, and a full bucket needs no help.
        """
        now = self._hooks.loop.time()
        if self.linked is None or now < self._absorb_at:
            return
        self._absorb_at = now + timing.DHT_LINK_ABSORB_S
        router = self.protocol.router
        for peer in self.linked.linked_peers():
            if peer in self._absorbed or peer == self.node_id:
                continue
            self._absorbed.add(peer)
            node = kad_node(peer)
            bucket = router.buckets[router.get_bucket_for(node)]
            if len(bucket) < router.ksize or bucket.has_in_range(router.node):
                self.protocol.welcome_if_new(node)

    async def ensure_contacts(self) -> None:
        """Join through the remembered seeds again if every contact is lost."""
        if not self.contacts() and self._seeds:
            self._hooks.stats["rejoins"] += 1
            await self._join(self._seeds)

    async def refresh(self) -> None:
        """The periodic refresh: our own id and a random one looked up."""
        await self.ensure_contacts()
        await self.lookup(self.node_id.to_bytes(), width=self.config.width)
        await self.lookup(self._rng.getrandbits(160).to_bytes(20, "big"), width=self.config.width)

    async def lookup(
        self,
        target: bytes,
        *,
        width: int | None = None,
        hasty: bool = False,
    ) -> list[NodeId]:
        """The nodes nearest ``target`` that answered, ``width`` of them at most; nodes
        ``hasty`` (a read's): nodes unresponsive or late to answer are not waited for (and so
        not found)."""
        self._absorb_links()
        node = Node(target)
        width = width or self.config.ksize
        nearest = self.protocol.router.find_neighbors(node, width)
        if not nearest:
            return []
        spider = LiveNodeCrawl(
            self.protocol,
            node,
            nearest,
            width,
            self.config.alpha,
            hasty=hasty,
            enough=self.config.replicas,
        )
        found = await spider.find()
        return [node_id_from_bytes(n.id) for n in found if n.id in spider.answered]

    async def replica_set(self, kid: bytes, *, width: int | None = None) -> list[NodeId]:
        """The R nodes nearest ``kid`` that answered the lookup (``width`` wide, default
        ``ksize``), this node included if near."""
        await self.ensure_contacts()
        found = set(await self.lookup(kid, width=width)) | {self.node_id}
        target = int.from_bytes(kid, "big")
        return sorted(found, key=lambda n: n.value ^ target)[: self.config.replicas]

    def known_nearest(self, kid: bytes, count: int) -> list[NodeId]:
        """The ``count`` nodes nearest ``kid`` in our routing table, nearest first, this node
        included if near."""
        near = self.protocol.router.find_neighbors(Node(kid), count)
        found = {node_id_from_bytes(n.id) for n in near} | {self.node_id}
        target = int.from_bytes(kid, "big")
        return sorted(found, key=lambda n: n.value ^ target)[:count]
