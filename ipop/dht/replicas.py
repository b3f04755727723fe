"""Calls to one replica and what the DHT believes of the answers: :class:`ReplicaCalls`.

Owns storing a record at a peer (this node's own replica short-circuits the network), storing
at many and returning once a quorum acknowledged (stragglers finish in the background),
fetching a key's copy, and checking every copy a replica hands back as an offer would be
checked (a replica could lie), counting refused ones by reason in ``drops`` under
:data:`DROP_REASONS`: ``<where>_<reason>``, where the copy came from (:data:`DROP_SOURCES`)
and why it was refused (:data:`ipop.dht.storage.STORE_REASONS`). It also refuses to send a
record of our own that our own replica would refuse (:meth:`ReplicaCalls.allowed`). A fetch
carries our certificate in the key's namespace where a replica needs it to show us the record
(:attr:`ReplicaCalls.proofs`; :meth:`ipop.dht.policy.RecordPolicy.may_read`).

Every write counts real acknowledgements (STORED or UNCHANGED answers), never "sent".
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Final

from ipop.dht.hooks import ServiceHooks
from ipop.dht.policy import RecordPolicy
from ipop.dht.protocol import IpopKademliaProtocol
from ipop.dht.record import Record, RecordChecker
from ipop.dht.storage import STORE_REASONS, RecordStorage
from ipop.dht.wire import StoreAnswered
from ipop.errors import LocalProtocolError, RemoteProtocolError
from ipop.types import NodeId

__all__ = ["DROP_REASONS", "DROP_SOURCES", "ReplicaCalls"]

# Where a refused copy came from: a replica's FIND_VALUE answer, the copy a refusing replica
# says it holds, a record of our own that our replica would refuse, or the opened view of a
# sealed record a read believed (ipop.dht.seal: the rules its replicas could not apply).
DROP_SOURCES: Final = ("fetched", "answer", "own", "opened")
# Every reason ReplicaCalls.drops counts under: a bounded family, sources x store reasons,
# and a sealed value that does not open.
DROP_REASONS: Final = frozenset(f"{w}_{r}" for w in DROP_SOURCES for r in STORE_REASONS) | {
    "opened_sealed_value"
}

# The service's logger: these lines were its own before the parts moved out.
log = logging.getLogger("ipop.dht.service")


class ReplicaCalls:
    """Stores and fetches at replicas, and belief in their answers; see the module docstring."""

    def __init__(
        self,
        node_id: NodeId,
        storage: RecordStorage,
        protocol: IpopKademliaProtocol,
        policy: RecordPolicy,
        *,
        hooks: ServiceHooks,
    ) -> None:
        self._hooks = hooks
        self.node_id = node_id
        self.storage = storage
        self.protocol = protocol
        self.policy = policy
        # Records refused, "<where>_<reason>": fetched copies, answers' copies, our own.
        self.drops: Counter[str] = Counter()
        # Namespace -> our certificate (DER) there, sent with fetches of its keys: our
        # networks' on a shared overlay (none for the overlay's own: no proof needed).
        self.proofs: dict[str, bytes] = {}
        # The R copies of one record a read fetches are verified once (see RecordChecker).
        self.checker = RecordChecker()

    async def store_at(self, peer: NodeId, record: Record) -> StoreAnswered | None:
        """Offer ``record`` at ``peer`` (ours: straight to storage); None: no answer."""
        if peer == self.node_id:
            outcome = self.storage.offer(record)
            current = None if outcome.accepted else self.storage.lookup(record.key_id)
            return StoreAnswered(outcome, current)
        return await self.protocol.store_record(peer, record)

    async def store_all(
        self, peers: list[NodeId], record: Record
    ) -> dict[NodeId, StoreAnswered | None]:
        """Offer ``record`` at every peer and wait for every answer."""
        answers = await asyncio.gather(*(self.store_at(p, record) for p in peers))
        return dict(zip(peers, answers, strict=True))

    async def store_quorum(
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
        tasks = {self._hooks.spawn(self.store_at(p, record)): p for p in peers}
        pending = set(tasks)
        acks = 0
        while pending and acks < need:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                answer = answers[tasks[task]] = task.result()
                acks += answer is not None and answer.outcome.accepted
        if pending:
            self._hooks.stats["store_stragglers"] += len(pending)
        return answers

    def proof_for(self, key: str) -> bytes:
        """What a fetch of ``key`` shows a replica (:attr:`proofs`), or nothing."""
        return self.proofs.get(key.partition(":")[0], b"")

    async def fetch_at(
        self, peer: NodeId, kid: bytes, proof: bytes = b""
    ) -> tuple[bool, Record | None]:
        """(answered, authentic record or None). A forged copy reads as an empty replica.
        ``proof``: :meth:`proof_for` the key."""
        if peer == self.node_id:
            return True, self.storage.lookup(kid)
        found = await self.protocol.fetch_record(peer, kid, proof)
        if found is None:
            return False, None
        if found.record is None:
            return True, None
        return True, self._believable(found.record, kid, "fetched")

    def verified_current(self, answer: StoreAnswered | None, kid: bytes) -> Record | None:
        """The copy a refusing replica says it holds, if authentic and allowed."""
        if answer is None or answer.current is None:
            return None
        return self._believable(answer.current, kid, "answer")

    def _believable(self, record: Record, kid: bytes, where: str) -> Record | None:
        """``record`` if it is authentic and the policy allows it (a replica could lie)."""
        try:
            self.checker.check(record, expected_key_id=kid)
            self.policy.admit(record, now=self._hooks.now())
        except RemoteProtocolError as exc:
            self.drop(where, exc.reason)
            return None
        return record

    def drop(self, where: str, reason: str) -> None:
        """Count a refused record: ``where`` it came from, ``reason`` from the checked list."""
        name = f"{where}_{reason}"
        if name not in DROP_REASONS:
            raise LocalProtocolError(f"unknown DHT drop reason {name!r}")
        self.drops[name] += 1

    def allowed(self, record: Record) -> bool:
        """Would replicas take our ``record``? If not, do not send it (counted, logged once)."""
        try:
            self.policy.admit(record, now=self._hooks.now())
        except RemoteProtocolError as exc:
            if not self.drops[f"own_{exc.reason}"]:
                log.warning("dht: not writing %s: %s", record.key, exc)
            self.drop("own", exc.reason)
            return False
        return True

    @staticmethod
    def acks(answers: dict[NodeId, StoreAnswered | None]) -> int:
        """How many of ``answers`` acknowledged (STORED or UNCHANGED)."""
        return sum(1 for a in answers.values() if a is not None and a.outcome.accepted)
