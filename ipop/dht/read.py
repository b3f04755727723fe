"""Quorum reads of the DHT: :class:`QuorumReader` (``get``), with read repair.

``get`` first asks the R nearest nodes this node knows, without a lookup, and returns once a
quorum of them holds copies of one owner's record (so a dead replica, e.g. a bootstrap that
stopped, costs nothing). Finding no such record there, it looks the replica set up, returns once
a quorum answered and a live record is among the answers, widens to every node the lookup found
if the R nearest hold nothing (a ring still forming), believes
:func:`~ipop.dht.record.choose_best`, and repairs replicas that hold nothing, an expired copy or
an older seq (read repair). Repairs copy signed bytes, so they never extend a lease.

A read does not wait for a node late to answer (past its retransmission timeout): once the
first read's quorum needs such a node the lookup starts (the first read goes on, whichever
decides first answers); a replica set member that is late gets the next-nearest node the
lookup found asked for its seat (a read counts R votes at most, so the quorum is unchanged); a
node that left a try unanswered, with nothing from it since, is neither asked first nor looked
up by reads (the protocol's ``unresponsive``), and a read's lookup counts a node late to answer
as silent after one timeout. Why: a replica that had just died held a get for all its tries
(0.4-1 s where a get takes 0.05 s).

A read that heard fewer than a quorum of the replica set, and no record, has not learned that
the key is absent: ``get(key, strict=True)`` then reads once more, with a full lookup, and
raises :class:`NoQuorum` if that read is no better. Why: a name lookup answered NXDOMAIN for a
live node (cached by the resolver) when the replicas it found did not answer in time, e.g.
right after the asking node restarted; SERVFAIL, not cached, is the true answer then.

Copies a replica returns are checked like offers (:meth:`ipop.dht.replicas.ReplicaCalls.fetch_at`):
a forged one reads as an empty replica.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from ipop.dht.config import DhtConfig
from ipop.dht.hooks import ServiceHooks
from ipop.dht.lookup import Lookups
from ipop.dht.protocol import IpopKademliaProtocol
from ipop.dht.record import Record, choose_best, key_id, newest_by_owner
from ipop.dht.replicas import ReplicaCalls
from ipop.errors import IpopError
from ipop.types import NodeId

__all__ = ["NoQuorum", "QuorumReader"]

# One replica's fetch in a read: (answered, authentic record or None).
_Fetch = asyncio.Task[tuple[bool, Record | None]]


class NoQuorum(IpopError):
    """A strict read heard too few of a key's replicas to tell that the key is absent."""


class QuorumReader:
    """One node's DHT reads; see the module docstring."""

    def __init__(
        self,
        node_id: NodeId,
        config: DhtConfig,
        protocol: IpopKademliaProtocol,
        lookups: Lookups,
        calls: ReplicaCalls,
        *,
        hooks: ServiceHooks,
    ) -> None:
        self._hooks = hooks
        self.node_id = node_id
        self.config = config
        self.protocol = protocol
        self._lookups = lookups
        self._calls = calls

    async def get(self, key: str, *, strict: bool = False) -> Record | None:
        """The live record for ``key`` a quorum view believes, or None; repairs stale copies.

        ``strict``: None only when a quorum of the replica set answered (holding nothing
        live); a read that heard fewer is tried once more with a full lookup, then raises
        :class:`NoQuorum`. Not strict: None for either.

        First the R nearest nodes this node already knows are asked (unresponsive ones left
        out), without a lookup; a record a quorum of them holds is the answer (no waiting for
        a dead replica).
        Else a lookup finds the replica set, which is read the same way, widened to every node
        the lookup found if the R nearest hold nothing (a ring still forming, records not yet
        handed over), and repaired in the background. The lookup starts as soon as the first
        read's quorum needs a node that is late to answer (dead, or one datagram lost), and
        whichever read reaches a verdict first answers.
        """
        kid, proof = key_id(key), self._calls.proof_for(key)
        best, heard = await self._get(kid, proof)
        if best is None and not heard and strict:
            self._hooks.stats["get_retried"] += 1
            fetches: dict[NodeId, _Fetch] = {}
            try:
                best, heard = await self._read_replica_set(kid, proof, fetches, hasty=False)
            finally:
                for task in fetches.values():
                    task.cancel()
            if best is None and not heard:
                self._hooks.stats["get_no_quorum"] += 1
                raise NoQuorum(f"too few replicas of {key!r} answered")
        self._hooks.stats["get_found" if best else "get_missing"] += 1
        return best

    async def _get(self, kid: bytes, proof: bytes) -> tuple[Record | None, bool]:
        """``get``'s reads: (the record, whether a quorum of the replica set was heard)."""
        await self._lookups.ensure_contacts()
        r = self.config.replicas
        # Unresponsive nodes are not counted on (see _read), nor asked: the nearest others are.
        known = [
            p for p in self._lookups.known_nearest(kid, 2 * r) if not self.protocol.unresponsive(p)
        ]
        stalled = asyncio.Event()
        # Every fetch of this get, by node: a node the first read asked is not asked again
        # by the replica set's read, which takes its answer, or waits for it.
        fetches: dict[NodeId, _Fetch] = {}
        fast = self._hooks.spawn(
            self._read(known[:r], kid, proof, stalled=stalled, fetches=fetches)
        )
        slow: asyncio.Task[tuple[Record | None, bool]] | None = None
        heard = True  # a record an agreed quorum holds is an answer
        try:
            waiter = self._hooks.spawn(stalled.wait())
            try:
                await asyncio.wait({fast, waiter}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
            best: Record | None = fast.result()[0] if fast.done() else None
            if best is None:
                slow = self._hooks.spawn(self._read_replica_set(kid, proof, fetches))
                await asyncio.wait({fast, slow}, return_when=asyncio.FIRST_COMPLETED)
                best = fast.result()[0] if fast.done() else None
                if best is None:
                    best, heard = await slow
        finally:
            for task in (fast, slow, *fetches.values()):
                if task is not None and not task.done():
                    task.cancel()
        return best, heard

    async def _read_replica_set(
        self, kid: bytes, proof: bytes, fetches: dict[NodeId, _Fetch], *, hasty: bool = True
    ) -> tuple[Record | None, bool]:
        """``get``'s read of the replica set a lookup finds (widened, repaired): the record,
        and whether a quorum of the replica set answered."""
        r = self.config.replicas
        # Hasty: unresponsive nodes are not asked, nor late ones waited for: this read would
        # not wait for them either.
        found = await self._lookups.lookup(kid, hasty=hasty)
        target = int.from_bytes(kid, "big")
        ordered = sorted(set(found) | {self.node_id}, key=lambda n: n.value ^ target)
        replicas = ordered[:r]
        best, held = await self._read(replicas, kid, proof, spares=ordered[r:], fetches=fetches)
        heard = len(held) >= self.config.needed(len(replicas))  # this node alone: never
        if best is None and len(ordered) > len(replicas):
            self._hooks.stats["get_widened"] += 1
            best, _ = await self._read(ordered[len(replicas) :], kid, proof, fetches=fetches)
        self._plan_repairs(held, best)
        return best, heard or best is not None

    async def _read(
        self,
        peers: list[NodeId],
        kid: bytes,
        proof: bytes,
        *,
        fetches: dict[NodeId, _Fetch],
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

        ``fetches`` (node -> its fetch, shared by the reads of one ``get``): a node already
        asked is not asked again, its fetch's answer (or its wait) counts here too, and no
        fetch is cancelled here (``get`` cancels what is left when it returns). Why: the read
        of a key nobody holds (a name not registered yet, a typo behind a search domain) asked
        its nearest nodes twice, before and after the lookup, which mostly finds the same
        nodes.
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
            task = fetches.get(peer)
            if task is None:
                task = fetches[peer] = self._hooks.spawn(self._calls.fetch_at(peer, kid, proof))
            seat[task], rank[task], peer_of[task] = index, asked[index], peer
            asked[index] += 1
            wait = 0.0 if self.protocol.unresponsive(peer) else self.protocol.rtt.timeout(peer)
            due[task] = self._hooks.loop.time() + wait
            return task

        # Fetches in the order asked, never a set's: a set of tasks iterates in the order of
        # their addresses, and which late peer's seat gets the next spare must not depend on
        # where a task was allocated (a simulation's run would not repeat from its seed).
        pending = dict.fromkeys(ask(p, i) for i, p in enumerate(peers))
        late: set[_Fetch] = set()
        votes: dict[int, tuple[int, NodeId, Record | None]] = {}
        best: Record | None = None
        while pending:
            timers = [due[t] for t in pending if t not in late]
            timeout = max(0.0, min(timers) - self._hooks.loop.time()) if timers else None
            done, _ = await asyncio.wait(
                pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            for task in [t for t in pending if t in done]:
                answered, record = task.result()
                vote = votes.get(seat[task])
                if answered and (vote is None or rank[task] < vote[0]):
                    votes[seat[task]] = (rank[task], peer_of[task], record)
            # Nodes of a seat farther than the one whose vote it holds are not needed.
            pending = {
                t: None
                for t in pending
                if t not in done and not (seat[t] in votes and rank[t] > votes[seat[t]][0])
            }
            now = self._hooks.loop.time()
            for task in [t for t in pending if t not in late and due[t] <= now]:
                late.add(task)
                self.protocol.missed(peer_of[task])
                if queue:
                    pending[ask(queue.pop(0), seat[task])] = None
                    self._hooks.stats["read_spares_asked"] += 1
            held = {peer: record for _, peer, record in votes.values()}
            best = choose_best([r for r in held.values() if r is not None], now=self._hooks.now())
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
            elif (len(held) >= need and best is not None) or all(seat[t] in votes for t in pending):
                break
        held = {peer: record for _, peer, record in votes.values()}
        if agreed and best is not None:
            owners = Counter(r.owner for r in held.values() if r is not None)
            best = best if owners[best.owner] >= need else None
        return best, held

    def _plan_repairs(self, held: dict[NodeId, Record | None], best: Record | None) -> None:
        """Read repair: copies of ``best`` (or an owner's newest) where replicas lack them."""
        now = self._hooks.now()
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
        if repairs and not self._hooks.closed():
            self._hooks.stats["read_repairs"] += len(repairs)
            self._hooks.spawn(self._repair(repairs))

    async def _repair(self, repairs: dict[NodeId, Record]) -> None:
        await asyncio.gather(*(self._calls.store_at(p, r) for p, r in repairs.items()))
