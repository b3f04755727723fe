"""The DHT service: signed records on the R nodes nearest a key, over the overlay (asyncio).

Kademlia is an asyncio library, so this layer is asyncio by nature (DESIGN.md §2); the pure
parts it leans on are :mod:`ipop.dht.record` (encoding, signature, replacement rule, which copy
a reader believes) and :mod:`ipop.dht.wire`. It runs unchanged on the simulator's virtual-time
loop: timers run on ``loop.time()``, record time (leases, seqs, certificates) comes from the
injected UNIX ``clock`` (the loop's time by default, as in the simulator), all randomness from
the injected ``rng``.

Theory of operation
  * Replica set of a key: the R nodes (XOR-)nearest its 20-byte id, found by kademlia's node
    lookup; this node counts too when it is among them. Quorum: ``config.quorum`` (default a
    majority of R, Brunet used 5 of 8); in a network smaller than R, a majority of the nodes,
    and never this node alone (a node that knows no other node cannot claim anything).
  * Every write counts real acknowledgements (STORED or UNCHANGED answers), never "sent",
    and returns once a quorum acknowledged; stores to the other replicas finish in the
    background (``_store_quorum``), so a paused or dead replica does not hold a write.
  * ``create`` is a compare-and-set on the replica set: each replica applies the replacement
    rule atomically, so at most one owner can collect a quorum from one replica set (two
    majorities intersect). The set must be the true one: a create that collected its acks
    looks the set up again until a lookup adds nobody it has not asked (``_converge``). A
    round that falls short withdraws our copy everywhere (a signed tombstone, higher seq), the
    current replica set included, and again ``timing.DHT_WITHDRAW_AGAIN_S`` later, so no
    replica keeps a value whose create failed; if no rival holds a quorum either (a split
    vote), it retries after a jittered, doubling pause so that one racer goes first.
  * Records: only a certified member's, under this network's keys and within its rights
    (:mod:`ipop.dht.policy`). Replicas refuse the rest (:mod:`ipop.dht.storage`), readers
    disbelieve it (a copy a replica returns is checked like an offer), and this node does not
    even send a record its own replica would refuse (the write fails, counted).
  * ``get`` first asks the R nearest nodes this node knows, without a lookup, and returns once
    a quorum of them holds copies of one owner's record (so a dead replica, e.g. a bootstrap
    that stopped, costs nothing). Finding no such record there, it looks the replica set up,
    returns once a quorum answered and a live record is among the answers, widens to every
    node the lookup found if the R nearest hold nothing (a ring still forming), believes
    :func:`~ipop.dht.record.choose_best`, and repairs replicas that hold nothing, an expired
    copy or an older seq (read repair). Repairs copy signed bytes, so they never extend a
    lease. A read does not wait for a node late to answer (past its retransmission timeout):
    once the first read's quorum needs such a node the lookup starts (the first read goes on,
    whichever decides first answers); a replica set member that is late gets the next-nearest
    node the lookup found asked for its seat (a read counts R votes at most, so the quorum is
    unchanged); a node that left a try unanswered, with nothing from it since, is neither
    asked first nor looked up by reads (the protocol's ``unresponsive``), and a read's lookup
    counts a node late to answer as silent after one timeout. Why: a replica that had just
    died held a get for all its tries (0.4-1 s where a get takes 0.05 s).
  * Store-on-join (kademlia's): when a node enters our routing table and fewer than R of the
    nodes we know are nearer a key we hold than it, we offer it that record (at most
    ``MAX_HANDOFF_RECORDS`` per contact). Lookups for the key will reach the newcomer, so
    records stay where lookups look as the ring grows, not only after the owner's next
    republish (a network grown from 2 to 24 nodes answered NXDOMAIN for the first names for
    up to 66 s). Any replica may hand records on: they are signed and carry their owner's
    certificate, the receiver checks them like any offer, and copies never extend a lease.
    It also guards creates: a newcomer near a claimed key holds the claim, so a later racer
    meets CONFLICT there instead of a fresh majority (tests/sim/test_dht_handoff.py).
  * Owners alone republish (every ``republish_interval_s``, to the *current* R nearest): that
    re-replicates records whose replicas left. Renewing is the owner signing a higher seq with a
    later expiry. Nobody else can extend a lease.
  * Contacts: besides kademlia's own (whoever asks or answers us), every overlay link's peer
    (:class:`~ipop.dht.shim.LinkedPeers`, when the port offers it), taken in before each lookup
    at most every ``timing.DHT_LINK_ABSORB_S``. Why: the DHT joins through ring-near peers,
    which share our id's prefix, so a self-lookup learns only our own region; far links span
    the ring, and without them a cluster of nodes can know nobody in the other half of the id
    space (a 1,000-node run: a put and a get whose lookups never left such a cluster).
  * Kademlia's ``Server`` is not used: its ``listen`` binds a UDP socket, its ``set`` counts
    "sent" as success, and its hourly refresh republishes every key any node holds (stale
    values come back). Its routing table and ``NodeSpiderCrawl`` lookup are used as they are.
  * Known limit: leases are absolute UNIX times on the owner's clock (``clock``, never the
    loop's monotonic time, which differs per host), judged on each replica's clock; hosts must
    agree on the time to within a small part of a lease (NTP does).
  * Invariant: every task the service starts is in ``_tasks``; ``close()`` cancels and awaits
    them and resolves every pending RPC, so nothing outlives it.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import random
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from ipaddress import IPv4Network
from typing import Any, TypeVar

from kademlia.crawling import NodeSpiderCrawl
from kademlia.node import Node, NodeHeap

from ipop import timing
from ipop.dht.policy import RecordPolicy
from ipop.dht.protocol import IpopKademliaProtocol, kad_node
from ipop.dht.record import (
    Record,
    StoreOutcome,
    check_record,
    choose_best,
    key_id,
    newest_by_owner,
)
from ipop.dht.shim import LinkedPeers, OverlayPort, OverlayShim
from ipop.dht.storage import DEFAULT_MAX_RECORDS, STORE_REASONS, RecordStorage
from ipop.dht.wire import MAX_FIND_NODES, StoreAnswered
from ipop.errors import ConfigError, LocalProtocolError, RemoteProtocolError
from ipop.idcache import node_id_from_bytes
from ipop.identity import NodeIdentity
from ipop.tasks import TaskSet
from ipop.timing import (
    DHT_CREATE_BACKOFF_S,
    DHT_CREATE_ROUNDS,
    DHT_MAX_TTL_S,
    DHT_REFRESH_INTERVAL_S,
    DHT_REPUBLISH_INTERVAL_S,
    DHT_RESPONSE_CACHE_S,
    DHT_RPC_ATTEMPTS,
    DHT_RPC_MIN_RETRY_S,
    DHT_RPC_RETRY_S,
)
from ipop.types import NodeId

log = logging.getLogger(__name__)
T = TypeVar("T")
# Records offered to one new contact at most, and records looked at for it at most
# (store-on-join): bounds the work a contact costs. Honest load is ~2 R records per node (see
# ipop.dht.storage), so both bounds only bite on a store filled by misbehaving members, whose
# records then wait for their owners' republish.
MAX_HANDOFF_RECORDS = 64
MAX_HANDOFF_SCAN = 1024
# Rounds a create looks the replica set up again until two lookups agree (converged).
CREATE_VIEW_ROUNDS = 4
# One replica's fetch in a read: (answered, authentic record or None).
_Fetch = asyncio.Task[tuple[bool, Record | None]]


@dataclass(frozen=True, slots=True)
class DhtConfig:
    """Tunables of one DHT node; defaults from :mod:`ipop.timing` and Brunet (R=8, 5 of 8)."""

    replicas: int = 8
    quorum: int | None = None  # None: a majority of ``replicas``
    ksize: int = 20
    # How many nearest nodes the lookups that only gather contacts (the join's, the refresh)
    # converge on (None: ``replicas`` + 2). Why not ``ksize``: a lookup asks until its k
    # nearest have all answered, so its cost grows with k; at 1,000 nodes the joins' k=20
    # lookups were a fifth of all overlay traffic. Lookups for a replica set keep ``ksize``:
    # with k=10 two creators racing in a fresh 50-node network saw different replica sets and
    # both won (tests/sim/test_dht_alloc.py), and at 1,000 nodes one put in 100 landed on 8
    # nodes none of which was among the key's 8 nearest.
    lookup_k: int | None = None
    alpha: int = 3
    rpc_retry_s: float = DHT_RPC_RETRY_S  # the ceiling of the adaptive timeout
    rpc_min_retry_s: float = DHT_RPC_MIN_RETRY_S
    rpc_attempts: int = DHT_RPC_ATTEMPTS
    answer_cache_s: float = DHT_RESPONSE_CACHE_S
    republish_interval_s: float = DHT_REPUBLISH_INTERVAL_S
    refresh_interval_s: float = DHT_REFRESH_INTERVAL_S
    max_ttl_s: float = DHT_MAX_TTL_S
    create_rounds: int = DHT_CREATE_ROUNDS
    create_backoff_s: float = DHT_CREATE_BACKOFF_S
    # The network's virtual subnet: ip keys and name values outside it are refused (None: the
    # DHT does not know it, e.g. a bare test cluster, and addresses are not range-checked).
    subnet: IPv4Network | None = None
    # Records one replica holds at most (ipop.dht.storage).
    max_records: int = DEFAULT_MAX_RECORDS

    def __post_init__(self) -> None:
        if self.replicas < 3:
            raise ConfigError("dht.replicas", f"{self.replicas} < 3", "use 3 or more (8 default)")
        if self.quorum is not None and not self.replicas // 2 < self.quorum <= self.replicas:
            raise ConfigError(
                "dht.quorum",
                f"{self.quorum} is not a majority of {self.replicas} replicas",
                f"use {self.replicas // 2 + 1}..{self.replicas}, or leave it unset",
            )
        if self.ksize < self.replicas:
            raise ConfigError("dht.ksize", "smaller than dht.replicas", "make ksize >= replicas")
        if self.lookup_k is not None and not self.replicas <= self.lookup_k <= MAX_FIND_NODES:
            raise ConfigError(
                "dht.lookup_k",
                f"{self.lookup_k} not in [{self.replicas}, {MAX_FIND_NODES}]",
                "leave it unset (replicas + 2) or use a value in that range",
            )
        if self.rpc_attempts < 1 or self.rpc_retry_s <= 0 or self.create_rounds < 1:
            raise ConfigError("dht.rpc", "attempts, retry and rounds must be positive")
        if self.max_records < 1:
            raise ConfigError("dht.max_records", f"{self.max_records} < 1", "use 1 or more")

    @property
    def width(self) -> int:
        """The contact lookups' width actually used (see ``lookup_k``)."""
        if self.lookup_k is not None:
            return self.lookup_k
        return min(self.replicas + 2, MAX_FIND_NODES)

    def needed(self, replica_count: int) -> int:
        """Acknowledgements a write needs from a replica set of ``replica_count`` nodes.

        A set of one is this node alone: it knows no other node (not joined, or cut off), and
        agreeing with itself proves nothing, so no write can succeed (more than 1 is needed).
        """
        if replica_count <= 1:
            return 2
        if replica_count >= self.replicas:
            return self.quorum if self.quorum is not None else self.replicas // 2 + 1
        return replica_count // 2 + 1


class _IndexedNodeHeap(NodeHeap):  # type: ignore[misc]  # kademlia is untyped
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


class _LiveNodeCrawl(NodeSpiderCrawl):  # type: ignore[misc]  # kademlia is untyped
    """Kademlia's node lookup, keeping only nodes that answered.

    Stock ``NodeSpiderCrawl`` drops a silent node from its heap, but a later answer that
    mentions it pushes it back, already marked contacted, so dead nodes can end up in the
    result (measured: half of a key's replica set after 10 of 24 nodes left).
    """

    def __init__(self, *args: Any, hasty: bool = False) -> None:
        super().__init__(*args)
        self.answered: set[bytes] = set()
        self._hasty = hasty
        stock: Any = self.nearest
        indexed = _IndexedNodeHeap(self.node, self.ksize)
        indexed.push([node for _, node in stock.heap])
        self.nearest: Any = indexed

    async def find(self) -> Any:
        return await self._find(self._ask)

    async def _ask(self, peer: Node, target: Node) -> tuple[bool, Any]:
        if not self._hasty:
            return await self.protocol.call_find_node(peer, target)  # type: ignore[no-any-return]
        # A hasty lookup (a read's) counts an unresponsive peer as silent without asking it,
        # and one late to answer (past its retransmission timeout) as silent then: a round
        # waits for its slowest peer, and a node that just died is named by every answer,
        # so it cost each read's lookup its tries. The nodes a late peer would have named are
        # named by the others as well.
        protocol: IpopKademliaProtocol = self.protocol
        node = node_id_from_bytes(peer.id)
        if protocol.unresponsive(node):
            return (False, None)
        try:
            return await asyncio.wait_for(
                protocol.call_find_node(peer, target), protocol.rtt.timeout(node)
            )
        except TimeoutError:
            protocol.missed(node)
            return (False, None)

    async def _nodes_found(self, responses: dict[bytes, tuple[bool, Any]]) -> Any:
        # Stock NodeSpiderCrawl._nodes_found, except that answers list contact objects
        # (IpopKademliaProtocol.call_find_node) instead of tuples to rebuild them from.
        silent = []
        for peer, (ok, nodes) in responses.items():
            if ok:
                self.answered.add(peer)
                self.nearest.push(nodes)
            else:
                silent.append(peer)
        self.nearest.remove(silent)
        if self.nearest.have_contacted_all():
            return list(self.nearest)
        return await self.find()


def _nearer(nodes: list[int], target: int, distance: int, limit: int) -> int:
    """How many of ``nodes`` are nearer ``target`` than ``distance`` (counting stops at limit)."""
    count = 0
    for node in nodes:
        if node ^ target < distance:
            count += 1
            if count >= limit:
                break
    return count


class DhtService:
    """One node's DHT. Build inside a running loop; the overlay calls :meth:`deliver`."""

    def __init__(
        self,
        identity: NodeIdentity,
        port: OverlayPort,
        *,
        rng: random.Random,
        config: DhtConfig | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        """``clock``: UNIX time, for leases, seqs and certificates (a daemon's loop time is
        monotonic, and each host's differs); None: the loop's (the simulator's is UNIX-like).
        """
        if port.local_id != identity.node_id:
            raise LocalProtocolError("overlay port and identity disagree on our node id")
        self._loop = asyncio.get_running_loop()
        self.identity = identity
        self.node_id = identity.node_id
        self.config = config or DhtConfig()
        self._rng = rng
        self._tasks = TaskSet(self._task_failed, loop=self._loop)
        self._closed = False
        self._owned: dict[str, Record] = {}
        self._last_seq = 0
        self._seeds: list[NodeId] = []
        self.stats: Counter[str] = Counter()
        self.stats_drops: Counter[str] = Counter()
        self.background_errors: list[BaseException] = []
        # Record time (leases, seqs, certificates) is UNIX time; timers run on the loop.
        self._now = clock or self._loop.time
        self.policy = RecordPolicy(identity.trust, subnet=self.config.subnet)
        self.storage = RecordStorage(
            self._now,
            policy=self.policy,
            max_ttl=self.config.max_ttl_s,
            max_records=self.config.max_records,
        )
        self.protocol = IpopKademliaProtocol(
            self.node_id,
            self.storage,
            self.config.ksize,
            rng=rng,
            clock=self._loop.time,
            spawn=self._spawn,
            retry_s=self.config.rpc_retry_s,
            min_retry_s=self.config.rpc_min_retry_s,
            attempts=self.config.rpc_attempts,
            answer_cache_s=self.config.answer_cache_s,
        )
        self.protocol.on_new_contact = self._hand_off
        self.shim = OverlayShim(port)
        self.shim.connect(self.protocol)
        self._linked = port if isinstance(port, LinkedPeers) else None
        self._absorbed: set[NodeId] = set()
        self._absorb_at = -float("inf")
        self._spawn(self._every(self.config.republish_interval_s, self._republish_all))
        self._spawn(self._every(self.config.refresh_interval_s, self._refresh))

    # --- plumbing -------------------------------------------------------------------------------

    def deliver(self, src: NodeId, payload: bytes) -> None:
        """The overlay hands us a DHT payload from authenticated ``src``."""
        self.shim.deliver(src, payload)

    @property
    def drops(self) -> Counter[str]:
        """Everything refused, by reason: bad datagrams, refused stores, bad fetched copies."""
        total: Counter[str] = Counter()
        total.update(self.protocol.drops)
        total.update(self.shim.drops)
        total.update({f"store_{k}": v for k, v in self.storage.refused.items()})
        total.update(self.stats_drops)
        return total

    def contacts(self) -> list[NodeId]:
        return [
            node_id_from_bytes(n.id) for b in self.protocol.router.buckets for n in b.get_nodes()
        ]

    def _spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        if self._closed:
            coro.close()
            raise LocalProtocolError("DhtService is closed")
        return self._tasks.spawn(coro)

    def _task_failed(self, exc: BaseException) -> None:
        self.background_errors.append(exc)
        log.error("dht background task failed", exc_info=exc)

    async def _every(self, interval: float, job: Any) -> None:
        while True:
            # Jitter so a thousand nodes started together do not republish in lockstep.
            await asyncio.sleep(interval * (0.9 + 0.2 * self._rng.random()))
            await job()

    async def close(self) -> None:
        """Stop: cancel and await our tasks, resolve pending RPCs, detach from the overlay."""
        if self._closed:
            return
        self._closed = True
        self.protocol.shutdown()
        await self._tasks.close()
        self.shim.close()

    # --- membership -----------------------------------------------------------------------------

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
            self.stats["bootstrap_failed"] += 1
            return False
        await self._lookup(self.node_id.to_bytes(), width=self.config.width)
        self.stats["bootstrapped"] += 1
        return bool(self.contacts())

    async def _first_answer(self, peers: list[NodeId]) -> bool:
        """Ping ``peers``; True as soon as one answered (the rest go on in the background).

        Why not all: a restarted node's near peers include paused and dead ones, each of which
        held the join for every try of its ping (1.6 s), measured to the next second.
        """
        pending: set[asyncio.Task[tuple[bool, Any]]] = {
            self._spawn(self.protocol.ping_node(kad_node(p))) for p in peers
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
        now = self._loop.time()
        if self._linked is None or now < self._absorb_at:
            return
        self._absorb_at = now + timing.DHT_LINK_ABSORB_S
        router = self.protocol.router
        for peer in self._linked.linked_peers():
            if peer in self._absorbed or peer == self.node_id:
                continue
            self._absorbed.add(peer)
            node = kad_node(peer)
            bucket = router.buckets[router.get_bucket_for(node)]
            if len(bucket) < router.ksize or bucket.has_in_range(router.node):
                self.protocol.welcome_if_new(node)

    async def _ensure_contacts(self) -> None:
        if not self.contacts() and self._seeds:
            self.stats["rejoins"] += 1
            await self._join(self._seeds)

    def _hand_off(self, peer: NodeId) -> None:
        """Store-on-join: offer ``peer`` (a new contact) the records it is now near.

        A record goes to ``peer`` when fewer than R of the nodes this node knows are nearer its
        key than ``peer`` (lookups for the key will reach ``peer``, so it must hold the record
        before the owner's next republish), and this node is itself among the R nearest it
        knows, ``peer`` aside (a node holding a copy it is no replica of, e.g. a racer's
        early copy taken while the ring was forming, does not spread it). The records are
        signed by their owners and carry their certificates, so any replica may hand them on
        and the receiver checks them like any offer; copies never extend a lease. At most
        ``MAX_HANDOFF_RECORDS`` per contact out of ``MAX_HANDOFF_SCAN`` looked at, in one
        tracked task.
        """
        if self._closed:
            return
        others = [
            n.long_id
            for b in self.protocol.router.buckets
            for n in b.nodes.values()
            if n.long_id != peer.value
        ]
        r = self.config.replicas
        records = []
        for record in self.storage.records()[:MAX_HANDOFF_SCAN]:
            target = int.from_bytes(record.key_id, "big")
            mine = self.node_id.value ^ target
            theirs = peer.value ^ target
            if _nearer(others, target, theirs, r) + (mine < theirs) >= r:
                continue
            if _nearer(others, target, mine, r) >= r:
                continue
            records.append(record)
            if len(records) >= MAX_HANDOFF_RECORDS:
                break
        if records:
            self.stats["handoffs"] += len(records)
            self._spawn(self._store_many(peer, records))

    async def _store_many(self, peer: NodeId, records: list[Record]) -> None:
        await asyncio.gather(*(self._store_at(peer, r) for r in records))

    async def _refresh(self) -> None:
        await self._ensure_contacts()
        await self._lookup(self.node_id.to_bytes(), width=self.config.width)
        await self._lookup(self._rng.getrandbits(160).to_bytes(20, "big"), width=self.config.width)

    async def _lookup(
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
        spider = _LiveNodeCrawl(self.protocol, node, nearest, width, self.config.alpha, hasty=hasty)
        found = await spider.find()
        return [node_id_from_bytes(n.id) for n in found if n.id in spider.answered]

    async def replica_set(self, kid: bytes) -> list[NodeId]:
        """The R nodes nearest ``kid`` that answered the lookup, this node included if near."""
        await self._ensure_contacts()
        found = set(await self._lookup(kid)) | {self.node_id}
        target = int.from_bytes(kid, "big")
        return sorted(found, key=lambda n: n.value ^ target)[: self.config.replicas]

    # --- replica calls (local replica short-circuits the network) ------------------------------

    async def _store_at(self, peer: NodeId, record: Record) -> StoreAnswered | None:
        if peer == self.node_id:
            outcome = self.storage.offer(record)
            current = None if outcome.accepted else self.storage.lookup(record.key_id)
            return StoreAnswered(outcome, current)
        return await self.protocol.store_record(peer, record)

    async def _store_all(
        self, peers: list[NodeId], record: Record
    ) -> dict[NodeId, StoreAnswered | None]:
        answers = await asyncio.gather(*(self._store_at(p, record) for p in peers))
        return dict(zip(peers, answers, strict=True))

    async def _store_quorum(
        self, peers: list[NodeId], record: Record, need: int
    ) -> dict[NodeId, StoreAnswered | None]:
        """Offer ``record`` at ``peers``; return once ``need`` accepted it, or all answered.

        Every peer is a key of the result: None for one that had not answered (yet). The
        stores still running then go on in the background and their answers are not waited
        for: a quorum of acks is what a write or a claim is judged on (two majorities of one
        set intersect, so a straggler cannot change who won), and a paused or dead replica
        held every round for all its tries before (a restarted ipopd's claims took 10-26 s).
        A shortfall still waits for every answer: a lost claim counts its rivals on them.
        """
        answers: dict[NodeId, StoreAnswered | None] = dict.fromkeys(peers)
        tasks = {self._spawn(self._store_at(p, record)): p for p in peers}
        pending = set(tasks)
        acks = 0
        while pending and acks < need:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                answer = answers[tasks[task]] = task.result()
                acks += answer is not None and answer.outcome.accepted
        if pending:
            self.stats["store_stragglers"] += len(pending)
        return answers

    async def _fetch_at(self, peer: NodeId, kid: bytes) -> tuple[bool, Record | None]:
        """(answered, authentic record or None). A forged copy reads as an empty replica."""
        if peer == self.node_id:
            return True, self.storage.lookup(kid)
        found = await self.protocol.fetch_record(peer, kid)
        if found is None:
            return False, None
        if found.record is None:
            return True, None
        return True, self._believable(found.record, kid, "fetched")

    def _verified_current(self, answer: StoreAnswered | None, kid: bytes) -> Record | None:
        if answer is None or answer.current is None:
            return None
        return self._believable(answer.current, kid, "answer")

    def _believable(self, record: Record, kid: bytes, where: str) -> Record | None:
        """``record`` if it is authentic and the policy allows it (a replica could lie)."""
        try:
            check_record(record, expected_key_id=kid)
            self.policy.admit(record, now=self._now())
        except RemoteProtocolError as exc:
            self._drop(where, exc.reason)
            return None
        return record

    def _drop(self, where: str, reason: str) -> None:
        """Count a refused record: ``where`` it came from, ``reason`` from the checked list."""
        if reason not in STORE_REASONS:
            raise LocalProtocolError(f"unknown DHT drop reason {reason!r}")
        self.stats_drops[f"{where}_{reason}"] += 1

    def _allowed(self, record: Record) -> bool:
        """Would replicas take our ``record``? If not, do not send it (counted, logged once)."""
        try:
            self.policy.admit(record, now=self._now())
        except RemoteProtocolError as exc:
            if not self.stats_drops[f"own_{exc.reason}"]:
                log.warning("dht: not writing %s: %s", record.key, exc)
            self._drop("own", exc.reason)
            return False
        return True

    # --- signing ------------------------------------------------------------------------------

    def _sign(
        self, key: str, value: bytes, *, expires_at: float, tombstone: bool = False
    ) -> Record:
        now = self._now()
        if not now < expires_at <= now + self.config.max_ttl_s:
            raise LocalProtocolError(
                f"lease must end within (0, {self.config.max_ttl_s}] s from now"
            )
        # Seq from the clock in ms: a restarted owner outranks its old records without reading
        # them first; +1 keeps it strictly increasing within one millisecond.
        owned = self._owned.get(key)
        seq = max(self._last_seq + 1, int(now * 1000), owned.seq + 1 if owned else 0)
        self._last_seq = seq
        return Record.sign(
            self.identity, key, value, seq=seq, expires_at=expires_at, tombstone=tombstone
        )

    def _bump_past(self, answers: dict[NodeId, StoreAnswered | None], kid: bytes) -> bool:
        """If replicas hold a newer record of ours (an earlier incarnation), skip past it."""
        bumped = False
        for answer in answers.values():
            if answer is not None and answer.outcome is StoreOutcome.STALE:
                current = self._verified_current(answer, kid)
                if current is not None and current.owner == self.node_id:
                    self._last_seq = max(self._last_seq, current.seq)
                    bumped = True
        return bumped

    @staticmethod
    def _acks(answers: dict[NodeId, StoreAnswered | None]) -> int:
        return sum(1 for a in answers.values() if a is not None and a.outcome.accepted)

    # --- operations ---------------------------------------------------------------------------

    async def put(self, key: str, value: bytes, ttl: float) -> bool:
        """Write our record; True iff a quorum of the replica set acknowledged it."""
        ok = await self._write(key, value, expires_at=self._now() + ttl)
        self.stats["put_ok" if ok else "put_failed"] += 1
        return ok

    async def _write(
        self, key: str, value: bytes, *, expires_at: float, tombstone: bool = False
    ) -> bool:
        if not self._allowed(self._sign(key, value, expires_at=expires_at, tombstone=tombstone)):
            return False  # before any lookup: nobody would take it
        kid = key_id(key)
        replicas = await self.replica_set(kid)
        need = self.config.needed(len(replicas))
        for _ in range(2):
            record = self._sign(key, value, expires_at=expires_at, tombstone=tombstone)
            answers = await self._store_quorum(replicas, record, need)
            if self._acks(answers) >= need:
                if tombstone:
                    self._owned.pop(key, None)
                else:
                    self._owned[key] = record
                return True
            if not self._bump_past(answers, kid):
                break
        return False

    async def create(self, key: str, value: bytes, ttl: float) -> bool:
        """Claim ``key`` unless another owner holds a live record there (quorum CAS).

        True: a quorum of the replica set holds our record. False: someone else holds the key
        (or the votes kept splitting); then no replica that answered keeps our value.
        """
        if not self._allowed(self._sign(key, value, expires_at=self._now() + ttl)):
            return False  # before any lookup: nobody would take it
        kid = key_id(key)
        replicas = await self.replica_set(kid)
        need = self.config.needed(len(replicas))
        for attempt in range(self.config.create_rounds):
            record = self._sign(key, value, expires_at=self._now() + ttl)
            answers = await self._store_quorum(replicas, record, need)
            if self._acks(answers) >= need:
                replicas = await self._converge(kid, replicas, answers, record)
                need = self.config.needed(len(replicas))
                if self._acks({p: answers.get(p) for p in replicas}) >= need:
                    self._owned[key] = record
                    self.stats["create_ok"] += 1
                    return True
                self.stats["create_view_moved"] += 1
            await self._withdraw(list(answers), answers, record)
            if self._bump_past(answers, kid):
                continue
            rivals = Counter(
                current.owner
                for a in answers.values()
                if a is not None and a.outcome is StoreOutcome.CONFLICT
                if (current := self._verified_current(a, kid)) is not None
            )
            if rivals and max(rivals.values()) >= need:
                self.stats["create_lost"] += 1
                return False
            self.stats["create_split"] += 1
            pause = self.config.create_backoff_s * (2**attempt) * (0.25 + self._rng.random())
            await asyncio.sleep(pause)
            if attempt % 2 == 1:
                # Persistent shortfall may be a stale view of the ring: look again.
                replicas = await self.replica_set(kid)
                need = self.config.needed(len(replicas))
        self.stats["create_gave_up"] += 1
        return False

    async def _converge(
        self,
        kid: bytes,
        replicas: list[NodeId],
        answers: dict[NodeId, StoreAnswered | None],
        record: Record,
    ) -> list[NodeId]:
        """The replica set a claim is judged on: looked up again until it stops changing.

        A quorum of a partial view is no quorum: in a forming network two racers whose first
        lookups saw different parts of the ring could each win a majority of what they saw. So
        a create that collected its acks looks again, offers ``record`` to members it had not
        asked (their answers join ``answers``), and is judged on the newest set, once a lookup
        adds nobody new and the set holds R nodes or every node we know. A view still moving
        after ``CREATE_VIEW_ROUNDS`` lookups yields an empty set: no claim.
        """
        for _ in range(CREATE_VIEW_ROUNDS):
            fresh = await self.replica_set(kid)
            new = [p for p in fresh if p not in answers]
            known = len(self.contacts()) + 1
            if not new and len(fresh) >= min(self.config.replicas, known):
                return fresh
            # Only as many of the newcomers' acks as the fresh set still lacks are waited for.
            have = self._acks({p: answers[p] for p in fresh if p in answers})
            short = self.config.needed(len(fresh)) - have
            answers.update(await self._store_quorum(new, record, short))
        return []

    async def _withdraw(
        self,
        replicas: list[NodeId],
        answers: dict[NodeId, StoreAnswered | None],
        record: Record,
    ) -> None:
        """Replace our failed create's copy with a tombstone wherever it may have landed.

        That includes the key's whole current replica set, looked up afresh: replicas that
        took our copy may have handed it on (store-on-join) to nodes that joined since, or that
        held a rival's copy when we asked and took ours once the rival withdrew; a live copy
        left there would claim the key for us until it expires (measured before: 2 forming
        networks in 40 kept a loser's copy at 3 of the key's 8 nearest nodes). Copies handed on
        while the tombstone travelled, or taken where a rival's copy refused the tombstone
        until the rival withdrew too, are met by the same tombstone ``timing.DHT_WITHDRAW_AGAIN_S``
        later. A newer claim of ours made since is not touched (higher seq).
        """
        targets = []
        for peer in replicas:
            answer = answers.get(peer)
            # No answer: our store may have landed and only the reply was lost.
            if answer is None or answer.outcome.accepted:
                targets.append(peer)
        if not targets:
            return
        tomb = self._sign(record.key, b"", expires_at=record.expires_at, tombstone=True)
        await self._store_all(targets, tomb)
        current = await self.replica_set(record.key_id)
        await self._store_all([p for p in current if p not in targets], tomb)
        if not self._closed:
            self._spawn(self._withdraw_again(tomb))
        if self._owned.get(record.key) is not None:
            # An older claim of ours was overwritten on those replicas: it is gone.
            del self._owned[record.key]

    async def _withdraw_again(self, tomb: Record) -> None:
        await asyncio.sleep(timing.DHT_WITHDRAW_AGAIN_S)
        await self._store_all(await self.replica_set(tomb.key_id), tomb)

    async def get(self, key: str) -> Record | None:
        """The live record for ``key`` a quorum view believes, or None; repairs stale copies.

        First the R nearest nodes this node already knows are asked (unresponsive ones left
        out), without a lookup; a record a quorum of them holds is the answer (no waiting for
        a dead replica).
        Else a lookup finds the replica set, which is read the same way, widened to every node
        the lookup found if the R nearest hold nothing (a ring still forming, records not yet
        handed over), and repaired in the background. The lookup starts as soon as the first
        read's quorum needs a node that is late to answer (dead, or one datagram lost), and
        whichever read reaches a verdict first answers.
        """
        kid = key_id(key)
        await self._ensure_contacts()
        r = self.config.replicas
        # Unresponsive nodes are not counted on (see _read), nor asked: the nearest others are.
        known = [p for p in self._known_nearest(kid, 2 * r) if not self.protocol.unresponsive(p)]
        stalled = asyncio.Event()
        fast = self._spawn(self._read(known[:r], kid, stalled=stalled))
        slow: asyncio.Task[Record | None] | None = None
        try:
            waiter = self._spawn(stalled.wait())
            try:
                await asyncio.wait({fast, waiter}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
            best: Record | None = fast.result()[0] if fast.done() else None
            if best is None:
                slow = self._spawn(self._read_replica_set(kid))
                await asyncio.wait({fast, slow}, return_when=asyncio.FIRST_COMPLETED)
                best = fast.result()[0] if fast.done() else None
                if best is None:
                    best = await slow
        finally:
            for task in (fast, slow):
                if task is not None and not task.done():
                    task.cancel()
        self.stats["get_found" if best else "get_missing"] += 1
        return best

    async def _read_replica_set(self, kid: bytes) -> Record | None:
        """``get``'s read of the replica set a lookup finds (widened, repaired)."""
        r = self.config.replicas
        # Unresponsive nodes are not asked, nor late ones waited for: this read would not
        # wait for them either.
        found = await self._lookup(kid, hasty=True)
        target = int.from_bytes(kid, "big")
        ordered = sorted(set(found) | {self.node_id}, key=lambda n: n.value ^ target)
        replicas = ordered[:r]
        best, held = await self._read(replicas, kid, spares=ordered[r:])
        if best is None and len(ordered) > len(replicas):
            self.stats["get_widened"] += 1
            best, _ = await self._read(ordered[len(replicas) :], kid)
        self._plan_repairs(held, best)
        return best

    def _known_nearest(self, kid: bytes, count: int) -> list[NodeId]:
        """The ``count`` nodes nearest ``kid`` in our routing table, nearest first, this node
        included if near."""
        near = self.protocol.router.find_neighbors(Node(kid), count)
        found = {node_id_from_bytes(n.id) for n in near} | {self.node_id}
        target = int.from_bytes(kid, "big")
        return sorted(found, key=lambda n: n.value ^ target)[:count]

    async def _read(
        self,
        peers: list[NodeId],
        kid: bytes,
        *,
        stalled: asyncio.Event | None = None,
        spares: list[NodeId] | None = None,
    ) -> tuple[Record | None, dict[NodeId, Record | None]]:
        """(best record, what each peer counted holds) from fetching at ``peers``.

        ``stalled`` given: an agreed read of peers that may not be the replica set (the
        nearest we know): a record only once ``needed`` peers hold a copy of its owner's, None
        as soon as no owner can get there; ``stalled`` is set once no owner can get there
        without a peer that is late to answer (past its retransmission timeout, or already
        unresponsive), and the read goes on. Else: once ``needed`` peers answered and a live
        record is among the answers, or every peer answered or timed out. Either way a dead
        peer costs nothing once enough others answered; fetches still running then are
        cancelled.

        ``spares`` (nodes beyond ``peers``, nearest first): a peer late to answer gets the next
        spare asked for its seat as well, and the seat's vote is the answer of the nearest of
        its nodes that answered. So a verdict counts ``len(peers)`` votes at most, from the
        nearest nodes that answer, and ``needed`` of them is the same quorum as without spares;
        once every seat still waited for holds a spare's vote, late peers are not waited for.
        Why: a replica that just died (a bootstrap that stopped) held every read whose quorum
        needed it for all its tries (0.4 s and more; tests/sim/test_dht.py).
        """
        agreed = stalled is not None
        need = min(self.config.needed(len(peers)), len(peers))
        queue = [p for p in dict.fromkeys(spares or ()) if p not in peers]
        seat: dict[_Fetch, int] = {}
        rank: dict[_Fetch, int] = {}  # 0: the seat's own peer, 1: its first spare, ...
        due: dict[_Fetch, float] = {}
        peer_of: dict[_Fetch, NodeId] = {}
        asked = [0] * len(peers)

        def ask(peer: NodeId, index: int) -> _Fetch:
            task = self._spawn(self._fetch_at(peer, kid))
            seat[task], rank[task], peer_of[task] = index, asked[index], peer
            asked[index] += 1
            wait = 0.0 if self.protocol.unresponsive(peer) else self.protocol.rtt.timeout(peer)
            due[task] = self._loop.time() + wait
            return task

        pending = {ask(p, i) for i, p in enumerate(peers)}
        late: set[_Fetch] = set()
        votes: dict[int, tuple[int, NodeId, Record | None]] = {}
        best: Record | None = None
        try:
            while pending:
                timers = [due[t] for t in pending if t not in late]
                timeout = max(0.0, min(timers) - self._loop.time()) if timers else None
                done, pending = await asyncio.wait(
                    pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                for task in done:
                    answered, record = task.result()
                    vote = votes.get(seat[task])
                    if answered and (vote is None or rank[task] < vote[0]):
                        votes[seat[task]] = (rank[task], peer_of[task], record)
                # Nodes of a seat farther than the one whose vote it holds are not needed.
                moot = {t for t in pending if seat[t] in votes and rank[t] > votes[seat[t]][0]}
                for task in moot:
                    task.cancel()
                pending -= moot
                now = self._loop.time()
                for task in [t for t in pending if t not in late and due[t] <= now]:
                    late.add(task)
                    self.protocol.missed(peer_of[task])
                    if queue:
                        pending.add(ask(queue.pop(0), seat[task]))
                        self.stats["read_spares_asked"] += 1
                held = {peer: record for _, peer, record in votes.values()}
                best = choose_best([r for r in held.values() if r is not None], now=self._now())
                if stalled is not None:
                    owners = Counter(r.owner for r in held.values() if r is not None)
                    if best is not None and owners[best.owner] >= need:
                        break
                    top = max(owners.values(), default=0)
                    if top + len({seat[t] for t in pending}) < need:
                        best = None
                        break
                    if top + len({seat[t] for t in pending if t not in late}) < need:
                        stalled.set()
                elif (len(held) >= need and best is not None) or all(
                    seat[t] in votes for t in pending
                ):
                    break
        finally:
            for task in pending:
                task.cancel()
        held = {peer: record for _, peer, record in votes.values()}
        if agreed and best is not None:
            owners = Counter(r.owner for r in held.values() if r is not None)
            best = best if owners[best.owner] >= need else None
        return best, held

    def _plan_repairs(self, held: dict[NodeId, Record | None], best: Record | None) -> None:
        """Read repair: copies of ``best`` (or an owner's newest) where replicas lack them."""
        now = self._now()
        copies = [r for r in held.values() if r is not None]
        newest = newest_by_owner(copies, now=now)
        repairs: dict[NodeId, Record] = {}
        for peer, have in held.items():
            if have is None or have.expires_at <= now:
                if best is not None:
                    repairs[peer] = best
            elif newest[have.owner].seq > have.seq:
                repairs[peer] = newest[have.owner]
            elif best is not None and have.tombstone and have.owner != best.owner:
                # A released key someone else has claimed since: spread the new claim.
                repairs[peer] = best
        if repairs and not self._closed:
            self.stats["read_repairs"] += len(repairs)
            self._spawn(self._repair(repairs))

    async def _repair(self, repairs: dict[NodeId, Record]) -> None:
        await asyncio.gather(*(self._store_at(p, r) for p, r in repairs.items()))

    async def _own_record(self, key: str) -> Record | None:
        own = self._owned.get(key)
        if own is None:
            current = await self.get(key)
            if current is not None and current.owner == self.node_id:
                own = current
        return own

    async def renew(self, key: str, ttl: float) -> bool:
        """Extend our own lease on ``key`` to ``now + ttl``; False if we do not hold it."""
        own = await self._own_record(key)
        if own is None or own.expires_at <= self._now():
            self.stats["renew_not_owner"] += 1
            return False
        ok = await self._write(key, own.value, expires_at=self._now() + ttl)
        self.stats["renew_ok" if ok else "renew_failed"] += 1
        return ok

    async def delete(self, key: str) -> bool:
        """Release our record on ``key`` (a signed tombstone); False if it is not ours."""
        own = await self._own_record(key)
        now = self._now()
        if own is None or own.expires_at <= now:
            self.stats["delete_not_owner"] += 1
            return False
        ok = await self._write(key, b"", expires_at=own.expires_at, tombstone=True)
        self._owned.pop(key, None)
        self.stats["delete_ok" if ok else "delete_failed"] += 1
        return ok

    def owned(self) -> dict[str, Record]:
        """Our live records (the ones we republish)."""
        now = self._now()
        return {k: r for k, r in self._owned.items() if r.expires_at > now}

    async def _republish_all(self) -> None:
        now = self._now()
        for key in [k for k, r in self._owned.items() if r.expires_at <= now]:
            del self._owned[key]
        for record in list(self._owned.values()):
            replicas = await self.replica_set(record.key_id)
            answers = await self._store_all(replicas, record)
            self.stats["republished"] += self._acks(answers)
