"""The DHT service: signed records on the R nodes nearest a key, over the overlay (asyncio).

Kademlia is an asyncio library, so this layer is asyncio by nature (DESIGN.md §2); the pure
parts it leans on are :mod:`ipop.dht.record` (encoding, signature, replacement rule, which copy
a reader believes) and :mod:`ipop.dht.wire`. It runs unchanged on the simulator's virtual-time
loop: timers run on ``loop.time()``, record time (leases, seqs, certificates) comes from the
injected UNIX ``clock`` (the loop's time by default, as in the simulator), all randomness from
the injected ``rng``.

:class:`DhtService` owns the public API, the wiring of its parts, the overlay plumbing, the
periodic jobs and the task set; each sub-machine is a named object in its own module:

  * :class:`~ipop.dht.lookup.Lookups` (``lookups``): contacts, joining and rejoining through
    seeds, overlay links taken in as contacts, node lookups, a key's replica set;
  * :class:`~ipop.dht.replicas.ReplicaCalls` (``replica_calls``): stores and fetches at one
    replica or many (quorum return, stragglers in the background), belief in copies replicas
    return, refused records counted by reason;
  * :class:`~ipop.dht.read.QuorumReader` (``reader``): ``get``, its fast read of the nearest
    known nodes, the replica set's read with spares and widening, read repair;
  * :class:`~ipop.dht.write.QuorumWriter` (``writer``): signing, ``put``, ``create`` (quorum
    CAS, converging view, withdrawal), ``renew``, ``delete``, our own records, republish;
  * :class:`~ipop.dht.handoff.Handoff` (``handoff``): store-on-join;
  * round-trip times, retransmission and silent-peer marks are the protocol's
    (:class:`~ipop.dht.protocol.IpopKademliaProtocol`); tunables are :class:`DhtConfig`.

Theory of operation
  * Replica set of a key: the R nodes (XOR-)nearest its 20-byte id, found by kademlia's node
    lookup; this node counts too when it is among them. Quorum: ``config.quorum`` (default a
    majority of R, Brunet used 5 of 8); in a network smaller than R, a majority of the nodes,
    and never this node alone (a node that knows no other node cannot claim anything).
  * Writes (:mod:`ipop.dht.write`) count real acknowledgements and return at a quorum;
    ``create`` is a compare-and-set on the replica set.
  * Records: only a certified member's, under the keys of the network whose CA certified it
    (the namespace names the CA key: any network's records, not only ours) and within its
    rights (:mod:`ipop.dht.policy`). Replicas refuse the rest (:mod:`ipop.dht.storage`), readers
    disbelieve it (a copy a replica returns is checked like an offer), and this node does not
    even send a record its own replica would refuse (the write fails, counted).
  * Reads (:mod:`ipop.dht.read`) ask the nearest nodes known first and do not wait for a node
    late to answer.
  * Store-on-join (:mod:`ipop.dht.handoff`) keeps records where lookups look as the ring grows.
  * Owners alone republish (every ``republish_interval_s``, to the *current* R nearest).
  * Contacts include every overlay link's peer (:mod:`ipop.dht.lookup`).
  * Kademlia's ``Server`` is not used: its ``listen`` binds a UDP socket, its ``set`` counts
    "sent" as success, and its hourly refresh republishes every key any node holds (stale
    values come back). Its routing table and ``NodeSpiderCrawl`` lookup are used as they are.
  * Known limit: leases are absolute UNIX times on the owner's clock (``clock``, never the
    loop's monotonic time, which differs per host), judged on each replica's clock; hosts must
    agree on the time to within a small part of a lease (NTP does).
  * Invariant: every task the service or one of its parts starts is in ``_tasks``;
    ``close()`` cancels and awaits them and resolves every pending RPC, so nothing outlives it.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from ipaddress import IPv4Network
from typing import Any, TypeVar

from ipop.dht.config import DhtConfig
from ipop.dht.handoff import Handoff
from ipop.dht.hooks import ServiceHooks
from ipop.dht.lookup import Lookups
from ipop.dht.opstats import DhtOpStats
from ipop.dht.policy import RecordPolicy
from ipop.dht.protocol import IpopKademliaProtocol
from ipop.dht.read import QuorumReader
from ipop.dht.record import MAX_VALUE_BYTES, Record, namespace_of
from ipop.dht.replicas import ReplicaCalls
from ipop.dht.seal import SEAL_OVERHEAD, RecordSeal
from ipop.dht.shim import LinkedPeers, OverlayPort, OverlayShim
from ipop.dht.srv import allowed_slots, sealed_slots
from ipop.dht.storage import RecordStorage
from ipop.dht.write import QuorumWriter
from ipop.errors import LocalProtocolError, RemoteProtocolError
from ipop.identity import NodeIdentity
from ipop.tasks import TaskSet
from ipop.types import NodeId

__all__ = ["DhtConfig", "DhtService"]

log = logging.getLogger(__name__)
T = TypeVar("T")


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
        member: bool = True,
        revoked: Callable[[bytes], frozenset[int]] | None = None,
        overlay: str | None = None,
    ) -> None:
        """``clock``: UNIX time, for leases, seqs and certificates (a daemon's loop time is
        monotonic, and each host's differs); None: the loop's (the simulator's is UNIX-like).
        ``member``: False on an overlay-only node, which belongs to no network: it stores and
        serves every network's records that the network's own CA key vouches for, and has no
        namespace of its own (``identity`` is its overlay identity, which certifies nothing in
        any network). ``revoked``: other networks' revocations this node has heard of, by CA
        key (:class:`ipop.dht.policy.RecordPolicy`). ``overlay``: the namespace of the
        overlay's own CA, which every node of the overlay may read (default: ``identity``'s,
        a network that is its own overlay); any other namespace's records are shown to its
        members only (:meth:`ipop.dht.policy.RecordPolicy.may_read`)."""
        if port.local_id != identity.node_id:
            raise LocalProtocolError("overlay port and identity disagree on our node id")
        self._loop = asyncio.get_running_loop()
        self.identity = identity
        self.node_id = identity.node_id
        self.config = config or DhtConfig()
        self._rng = rng
        self._tasks = TaskSet(self._task_failed, loop=self._loop)
        self._closed = False
        self.stats: Counter[str] = Counter()
        self.ops = DhtOpStats()  # the public operations' outcomes and durations (metrics)
        self.background_errors: list[BaseException] = []
        # Record time (leases, seqs, certificates) is UNIX time; timers run on the loop.
        self._now = clock or self._loop.time
        # Our network's keys start with it (ipop.dht.record.namespace_of); we store any
        # namespace's records that its CA key vouches for (ipop.dht.policy).
        self.namespace = namespace_of(identity.trust)
        self.policy = RecordPolicy(
            identity.trust if member else None,
            subnet=self.config.subnet,
            revoked=revoked,
            readable=self.namespace if overlay is None else overlay,
        )
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
            may_read=self._may_read,
        )
        hooks = ServiceHooks(
            loop=self._loop,
            now=self._now,
            spawn=self._spawn,
            closed=self._is_closed,
            stats=self.stats,
        )
        self.lookups = Lookups(
            self.node_id,
            self.protocol,
            self.config,
            hooks=hooks,
            rng=rng,
            linked=port if isinstance(port, LinkedPeers) else None,
        )
        self.replica_calls = ReplicaCalls(
            self.node_id,
            self.storage,
            self.protocol,
            self.policy,
            hooks=hooks,
        )
        # Namespace -> the seal of a network of ours whose records are sealed (ipop.dht.seal).
        self._seals: dict[str, RecordSeal] = {}
        if member:
            self._add_proof(self.namespace, identity)
            self._add_seal(self.namespace, identity)
        self.reader = QuorumReader(
            self.node_id,
            self.config,
            self.protocol,
            self.lookups,
            self.replica_calls,
            hooks=hooks,
        )
        self.writer = QuorumWriter(
            identity,
            self.config,
            self.lookups,
            self.replica_calls,
            self.reader,
            hooks=hooks,
            rng=rng,
        )
        self.handoff = Handoff(
            self.node_id,
            self.config,
            self.protocol,
            self.storage,
            self.replica_calls,
            hooks=hooks,
        )
        self.protocol.on_new_contact = self.handoff.offer
        self.shim = OverlayShim(port)
        self.shim.connect(self.protocol)
        self._spawn(self._every(self.config.republish_interval_s, self.writer.republish_all))
        self._spawn(self._every(self.config.refresh_interval_s, self.lookups.refresh))

    # --- plumbing -------------------------------------------------------------------------------

    def add_network(self, identity: NodeIdentity, *, subnet: IPv4Network | None) -> None:
        """One more network of this node (a daemon in several, issue 17): its keys are signed
        with ``identity`` (our certificate there) and its records checked as our own
        network's are."""
        namespace = namespace_of(identity.trust)
        self.writer.add_signer(namespace, identity)
        self.policy.add_network(identity.trust, subnet=subnet)
        self._add_proof(namespace, identity)
        self._add_seal(namespace, identity)

    def _add_seal(self, namespace: str, identity: NodeIdentity) -> None:
        if identity.records_key is not None:
            self._seals[namespace] = RecordSeal(identity.records_key)

    def _stored(self, key: str) -> tuple[str, RecordSeal | None]:
        """The key ``key`` is stored under, and its network's seal (None: stored plain)."""
        seal = self._seals.get(key.partition(":")[0])
        return (key, None) if seal is None else (seal.stored_key(key), seal)

    def _sealed(self, key: str, value: bytes) -> tuple[str, bytes]:
        stored, seal = self._stored(key)
        return stored, value if seal is None else seal.seal(stored, self.node_id.to_bytes(), value)

    def _add_proof(self, namespace: str, identity: NodeIdentity) -> None:
        if namespace != self.policy.readable:  # the overlay's own: every node may read it
            self.replica_calls.proofs[namespace] = identity.cert.der

    def _may_read(self, asker: NodeId, key: str, proof: bytes) -> bool:
        return self.policy.may_read(asker, key, proof, now=self._now())

    def deliver(self, src: NodeId, payload: bytes) -> None:
        """The overlay hands us a DHT payload from authenticated ``src``."""
        self.shim.deliver(src, payload)

    @property
    def stats_drops(self) -> Counter[str]:
        """Records refused by this node's reads and writes, "<where>_<reason>"."""
        return self.replica_calls.drops

    @property
    def drops(self) -> Counter[str]:
        """Everything refused, by reason: bad datagrams, refused stores, bad fetched copies."""
        total: Counter[str] = Counter()
        total.update(self.protocol.drops)
        total.update(self.shim.drops)
        total.update({f"store_{k}": v for k, v in self.storage.refused.items()})
        total.update(self.stats_drops)
        return total

    def counters(self) -> dict[str, int]:
        """Our replica's store (:meth:`RecordStorage.counters`), our RPCs (requests
        served, retransmissions, timeouts) and strict reads that heard too few replicas (read
        again; then failed), for status."""
        return {
            **self.storage.counters(),
            "get_retried": self.stats["get_retried"],
            "get_no_quorum": self.stats["get_no_quorum"],
            **{
                (k if k.startswith("rpc_") else f"rpc_{k}"): v
                for k, v in self.protocol.counters.items()
            },
        }

    def contacts(self) -> list[NodeId]:
        """Every node in our routing table."""
        return self.lookups.contacts()

    def _spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        if self._closed:
            coro.close()
            raise LocalProtocolError("DhtService is closed")
        return self._tasks.spawn(coro)

    def _is_closed(self) -> bool:
        return self._closed

    def _task_failed(self, exc: BaseException) -> None:
        self.background_errors.append(exc)
        log.error("dht background task failed", exc_info=exc)

    async def _every(self, interval: float, job: Callable[[], Awaitable[None]]) -> None:
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

    # --- operations (see the parts' modules) ----------------------------------------------------

    async def bootstrap(self, known: Iterable[NodeId]) -> bool:
        """Join through ``known`` nodes; True once at least one answered and we looked us up.

        The nodes are remembered: if every contact is lost later (a partition, our own uplink
        down), the service joins through them again before its next operation.
        """
        return await self.lookups.bootstrap(known)

    async def replica_set(self, kid: bytes) -> list[NodeId]:
        """The R nodes nearest ``kid`` that answered the lookup, this node included if near."""
        return await self.lookups.replica_set(kid)

    async def _timed(self, op: str, work: Awaitable[T]) -> T:
        """``work``'s result, its outcome and duration recorded in :attr:`ops`."""
        start, outcome = self._loop.time(), "error"
        try:
            result = await work
            outcome = "no" if result is None or result is False else "ok"
            return result
        finally:
            self.ops.record(op, outcome, self._loop.time() - start)

    async def get(self, key: str, *, strict: bool = False) -> Record | None:
        """The live record for ``key`` a quorum view believes, or None; repairs stale copies.
        ``strict``: raise :class:`~ipop.dht.read.NoQuorum` rather than answer None when too
        few replicas were heard (:meth:`QuorumReader.get <ipop.dht.read.QuorumReader.get>`)."""
        return await self._timed("get", self._get(key, strict))

    async def _get(self, key: str, strict: bool) -> Record | None:
        stored, seal = self._stored(key)
        record = await self.reader.get(stored, strict=strict)
        if record is None or seal is None:
            return record
        # Replicas checked what a sealed record shows them; the rest is every reader's.
        try:
            view = seal.open(record, key)
            self.policy.admit(view, now=self._now(), opened=True)
        except RemoteProtocolError as exc:
            self.replica_calls.drop("opened", exc.reason)
            return None
        return view

    async def put(self, key: str, value: bytes, ttl: float) -> bool:
        """Write our record; True iff a quorum of the replica set acknowledged it."""
        return await self._timed("put", self.writer.put(*self._sealed(key, value), ttl))

    async def create(self, key: str, value: bytes, ttl: float) -> bool:
        """Claim ``key`` unless another owner holds a live record there (quorum CAS).

        True: a quorum of the replica set holds our record. False: someone else holds the key
        (or the votes kept splitting); then no replica that answered keeps our value.
        """
        return await self._timed("create", self.writer.create(*self._sealed(key, value), ttl))

    async def renew(self, key: str, ttl: float) -> bool:
        """Extend our own lease on ``key`` to ``now + ttl``; False if we do not hold it."""
        return await self._timed("renew", self.writer.renew(self._stored(key)[0], ttl))

    async def delete(self, key: str) -> bool:
        """Release our record on ``key`` (a signed tombstone); False if it is not ours."""
        return await self._timed("delete", self.writer.delete(self._stored(key)[0]))

    def max_value_bytes(self, namespace: str) -> int:
        """The longest value a record of ``namespace`` holds (a sealed one's carries
        :data:`~ipop.dht.seal.SEAL_OVERHEAD` bytes more)."""
        return MAX_VALUE_BYTES - (SEAL_OVERHEAD if namespace in self._seals else 0)

    def service_slots(self, namespace: str, name: str, proto: str) -> tuple[int, ...]:
        """The slots of service ``name``/``proto`` we may hold in ``namespace``
        (:func:`ipop.dht.srv.allowed_slots`; :func:`~ipop.dht.srv.sealed_slots` of its blinded
        name where the network's records are sealed, which is what its replicas check)."""
        seal = self._seals.get(namespace)
        if seal is None:
            return allowed_slots(self.node_id, name, proto)
        return sealed_slots(self.node_id, seal.service_id(name, proto))

    def owned(self) -> dict[str, Record]:
        """Our live records (the ones we republish), by the key they are stored under (a
        sealed network's: blinded, :mod:`ipop.dht.seal`)."""
        return self.writer.owned()
