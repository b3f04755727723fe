"""An in-memory overlay for DHT tests: exact delivery by node id, with latency and loss.

It implements :class:`ipop.dht.shim.OverlayPort` for each attached node. ``send_dht`` delivers
through ``loop.call_later(latency)`` (so on the virtual-time loop latency costs no wall time),
drops a datagram with probability ``loss`` drawn from a seeded ``random.Random``, and drops
everything to or from a node that has left. ``check`` sees every datagram before the loss draw
and may veto it (return False): tests use it to inspect, count or censor traffic. ``inject``
delivers arbitrary bytes as if the link layer had authenticated them from ``src`` (forgery
tests). :class:`DhtCluster` and :func:`run_cluster` build whole DHT networks on it.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ipop.dht.record import Record, StoreOutcome, key_id, namespace_of
from ipop.dht.service import DhtConfig, DhtService
from ipop.identity import NodeIdentity
from ipop.testing.clock import SIM_EPOCH, run_virtual
from ipop.testing.identities import make_network
from ipop.types import NodeId

T = TypeVar("T")
Deliver = Callable[[NodeId, bytes], None]
Check = Callable[[NodeId, NodeId, bytes], bool]


class FakePort:
    """One node's view of the fake overlay (an ``OverlayPort``)."""

    def __init__(self, overlay: FakeOverlay, node_id: NodeId) -> None:
        self._overlay = overlay
        self._id = node_id

    @property
    def local_id(self) -> NodeId:
        return self._id

    def send_dht(self, dst: NodeId, payload: bytes) -> None:
        self._overlay.send(self._id, dst, payload)


class FakeOverlay:
    def __init__(
        self,
        *,
        rng: random.Random,
        latency: float = 0.02,
        jitter: float = 0.0,
        loss: float = 0.0,
        check: Check | None = None,
    ) -> None:
        self._rng = rng
        self.latency = latency
        self.jitter = jitter
        self.loss = loss
        self.check = check
        self._receivers: dict[NodeId, Deliver | None] = {}
        self._handles: set[asyncio.TimerHandle] = set()
        self.stats: Counter[str] = Counter()

    def add(self, node_id: NodeId) -> FakePort:
        """A port for ``node_id``; call :meth:`attach` once its receiver exists."""
        self._receivers[node_id] = None
        return FakePort(self, node_id)

    def attach(self, node_id: NodeId, deliver: Deliver) -> None:
        self._receivers[node_id] = deliver

    def remove(self, node_id: NodeId) -> None:
        """The node leaves: everything to or from it is lost from now on."""
        self._receivers.pop(node_id, None)

    @property
    def members(self) -> list[NodeId]:
        return list(self._receivers)

    def send(self, src: NodeId, dst: NodeId, payload: bytes) -> None:
        self.stats["sent"] += 1
        if src not in self._receivers:
            self.stats["from_departed"] += 1
            return
        if self.check is not None and not self.check(src, dst, payload):
            self.stats["vetoed"] += 1
            return
        if self.loss and self._rng.random() < self.loss:
            self.stats["lost"] += 1
            return
        delay = self.latency + (self._rng.random() * self.jitter if self.jitter else 0.0)
        self._schedule(delay, src, dst, payload)

    def inject(self, src: NodeId, dst: NodeId, payload: bytes, *, delay: float = 0.0) -> None:
        """Deliver ``payload`` to ``dst`` as if authenticated from ``src`` (no loss, no check)."""
        self._schedule(delay, src, dst, payload)

    def _schedule(self, delay: float, src: NodeId, dst: NodeId, payload: bytes) -> None:
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle

        def fire() -> None:
            self._handles.discard(handle)
            deliver = self._receivers.get(dst)
            if deliver is None:
                self.stats["to_departed"] += 1
                return
            self.stats["delivered"] += 1
            deliver(src, payload)

        handle = loop.call_later(delay, fire)
        self._handles.add(handle)

    def close(self) -> None:
        """Cancel every datagram still in flight."""
        for handle in self._handles:
            handle.cancel()
        self._handles.clear()


# Every cluster's CA key comes from this seed, so the namespace of its keys, hence every key
# id and replica set, is the same in every run (and known before a cluster exists).
CA_SEED = "dht-cluster-testnet-ca"
TESTNET_NS = namespace_of(make_network("testnet", now=SIM_EPOCH, seed=CA_SEED).trust)


class DhtCluster:
    """N :class:`~ipop.dht.service.DhtService` nodes of one network on one :class:`FakeOverlay`.

    Build it inside the (virtual-time) loop with :meth:`create`; :meth:`close` closes every
    node and cancels datagrams in flight.
    """

    def __init__(
        self,
        overlay: FakeOverlay,
        *,
        seed: int,
        config: DhtConfig | None,
        hostnames: Mapping[int, str] | None = None,
        routers: Mapping[int, int] | None = None,
        clock: Callable[[], float] | None = None,
        shared: str | None = None,
        records_key: bytes | None = None,
    ) -> None:
        """``shared``: the namespace of the overlay's own CA when the cluster models networks
        on a shared overlay (every node may read it; others' records need a member's proof,
        ``DhtService(overlay=)``); None: the cluster's network is its own overlay.
        ``records_key``: the network's (:mod:`ipop.dht.seal`): its members seal its records."""
        self.records_key = records_key
        self.overlay = overlay
        self.shared = shared
        self.clock = clock  # every node's record clock (None: the loop's time)
        # Certificate fields of the i-th node made (hostname; router: its LAN host quota).
        self.hostnames = dict(hostnames or {})
        self.routers = dict(routers or {})
        self.config = config
        self.seed = seed
        self.ca = make_network("testnet", now=asyncio.get_running_loop().time(), seed=CA_SEED)
        self.namespace = namespace_of(self.ca.trust)  # == TESTNET_NS
        self.nodes: list[DhtService] = []
        self._count = 0
        self._key_rng = random.Random(f"keys-{seed}")

    @classmethod
    async def create(
        cls,
        n: int,
        *,
        seed: int,
        loss: float = 0.0,
        latency: float = 0.02,
        jitter: float = 0.01,
        config: DhtConfig | None = None,
        bootstrap: bool = True,
        hostnames: Mapping[int, str] | None = None,
        routers: Mapping[int, int] | None = None,
        clock: Callable[[], float] | None = None,
        shared: str | None = None,
        records_key: bytes | None = None,
    ) -> DhtCluster:
        overlay = FakeOverlay(
            rng=random.Random(f"overlay-{seed}"), latency=latency, jitter=jitter, loss=loss
        )
        cluster = cls(
            overlay,
            seed=seed,
            config=config,
            hostnames=hostnames,
            routers=routers,
            clock=clock,
            shared=shared,
            records_key=records_key,
        )
        for _ in range(n):
            cluster.add_node()
        if bootstrap:
            results = await cluster.bootstrap_all()
            if not all(results):
                raise AssertionError(f"bootstrap failed for {results.count(False)} nodes")
        return cluster

    def add_node(self, identity: NodeIdentity | None = None) -> DhtService:
        """A new node (fresh identity unless given: a restart reuses one); not bootstrapped."""
        now = asyncio.get_running_loop().time()
        self._count += 1
        if identity is None:
            # Keys from the seed, so node ids (and so every lookup and race) replay exactly.
            key = Ed25519PrivateKey.from_private_bytes(self._key_rng.randbytes(32))
            raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
            index = self._count - 1
            cert = self.ca.sign_node(
                raw,
                f"node{self._count}",
                now=now,
                hostname=self.hostnames.get(index),
                router_hosts=self.routers.get(index, 0),
            )
            identity = NodeIdentity(key, cert, self.ca.trust)
            identity.records_key = self.records_key
        port = self.overlay.add(identity.node_id)
        svc = DhtService(
            identity,
            port,
            rng=random.Random(f"dht-{self.seed}-{self._count}"),
            config=self.config,
            clock=self.clock,
            overlay=self.shared,
        )
        self.overlay.attach(identity.node_id, svc.deliver)
        self.nodes.append(svc)
        return svc

    async def bootstrap_all(self) -> list[bool]:
        """Every node but the first joins through the first, all at once."""
        first = self.nodes[0].node_id
        rest = self.nodes[1:]
        results = await asyncio.gather(*(svc.bootstrap([first]) for svc in rest))
        # The first node learns the others from their requests; a lookup fills its table.
        if rest:
            await self.nodes[0].bootstrap([rest[0].node_id])
        return [True, *results]

    async def remove(self, svc: DhtService) -> None:
        """``svc`` leaves abruptly (no goodbye): its records are gone with it."""
        self.overlay.remove(svc.node_id)
        self.nodes.remove(svc)
        await svc.close()

    async def close(self) -> None:
        for svc in self.nodes:
            await svc.close()
        self.overlay.close()


def run_cluster(
    body: Callable[[DhtCluster], Awaitable[T]],
    *,
    n: int,
    seed: int = 1,
    loss: float = 0.0,
    latency: float = 0.02,
    jitter: float = 0.01,
    config: DhtConfig | None = None,
    hostnames: Mapping[int, str] | None = None,
    routers: Mapping[int, int] | None = None,
    clock: Callable[[], float] | None = None,
    shared: str | None = None,
    records_key: bytes | None = None,
) -> T:
    """Run ``body`` on a fresh ``n``-node cluster on virtual time, then close it.

    Fails (AssertionError) if any task outlives the cluster or a background task crashed.
    """

    async def main() -> T:
        cluster = await DhtCluster.create(
            n,
            seed=seed,
            loss=loss,
            latency=latency,
            jitter=jitter,
            config=config,
            hostnames=hostnames,
            routers=routers,
            clock=clock,
            shared=shared,
            records_key=records_key,
        )
        nodes = list(cluster.nodes)
        try:
            return await body(cluster)
        finally:
            await cluster.close()
            leftover = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            assert not leftover, leftover
            errors = [e for svc in nodes for e in svc.background_errors]
            assert not errors, errors

    return run_virtual(main())


def holders(cluster: DhtCluster, key: str) -> list[tuple[DhtService, Record]]:
    """Who holds an unexpired copy of ``key`` right now (inspected directly)."""
    kid = key_id(key)
    found = []
    for svc in cluster.nodes:
        r = svc.storage.lookup(kid)
        if r is not None:
            found.append((svc, r))
    return found


def live_owners(cluster: DhtCluster, key: str) -> set[NodeId]:
    """Owners of the live (unexpired, not released) copies of ``key`` held anywhere."""
    now = asyncio.get_running_loop().time()
    return {r.owner for _, r in holders(cluster, key) if r.live(now=now)}


async def offer_everywhere(sender: DhtService, record: Record) -> list[StoreOutcome]:
    """``sender`` sends ``record`` as a STORE RPC to every other replica of its key."""
    outcomes = []
    for peer in await sender.replica_set(record.key_id):
        if peer != sender.node_id:
            answer = await sender.protocol.store_record(peer, record)
            assert answer is not None
            outcomes.append(answer.outcome)
    return outcomes
