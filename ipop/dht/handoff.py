"""Store-on-join (kademlia's): :class:`Handoff` offers a new contact the records it is near.

When a node enters our routing table and fewer than R of the nodes we know are nearer a key we
hold than it, we offer it that record (at most ``MAX_HANDOFF_RECORDS`` per contact) if we are
one of the ``HANDOFF_SENDERS`` nearest holders we know of the key, not every replica. Lookups for
the key will reach the newcomer, so records stay where lookups look as the ring grows, not only
after the owner's next republish (a network grown from 2 to 24 nodes answered NXDOMAIN for the
first names for up to 66 s). Any replica may hand records on: they are signed and carry their
owner's certificate, the receiver checks them like any offer, and copies never extend a lease.
It also guards creates: a newcomer near a claimed key holds the claim, so a later racer meets
CONFLICT there instead of a fresh majority (tests/sim/test_dht_handoff.py).
"""

from __future__ import annotations

import asyncio

from ipop.dht.config import DhtConfig
from ipop.dht.hooks import ServiceHooks
from ipop.dht.protocol import IpopKademliaProtocol
from ipop.dht.record import Record
from ipop.dht.replicas import ReplicaCalls
from ipop.dht.storage import RecordStorage
from ipop.types import NodeId

__all__ = ["HANDOFF_SENDERS", "MAX_HANDOFF_RECORDS", "MAX_HANDOFF_SCAN", "Handoff", "nearer"]

# Records offered to one new contact at most, and records looked at for it at most
# (store-on-join): bounds the work a contact costs. Honest load is ~2 R records per node (see
# ipop.dht.storage), so both bounds only bite on a store filled by misbehaving members, whose
# records then wait for their owners' republish.
MAX_HANDOFF_RECORDS = 64
MAX_HANDOFF_SCAN = 1024
# Holders of a record that hand it to a newcomer: the nearest this many of the key we know
# (kademlia lets only the nearest one send). Each of the R replicas used to send its copy:
# in a 32-daemon cold start that was ~77 of a node's ~96 stores in its first 10 s, all but one
# of each set turned away as copies the newcomer already held. Two, so that one holder that
# died or never heard of the newcomer does not leave it without the record until the owner's
# republish.
HANDOFF_SENDERS = 2


def nearer(nodes: list[int], target: int, distance: int, limit: int) -> int:
    """How many of ``nodes`` are nearer ``target`` than ``distance`` (counting stops at limit)."""
    count = 0
    for node in nodes:
        if node ^ target < distance:
            count += 1
            if count >= limit:
                break
    return count


class Handoff:
    """Store-on-join for one node; see the module docstring. ``offer`` is the protocol's
    ``on_new_contact``."""

    def __init__(
        self,
        node_id: NodeId,
        config: DhtConfig,
        protocol: IpopKademliaProtocol,
        storage: RecordStorage,
        calls: ReplicaCalls,
        *,
        hooks: ServiceHooks,
    ) -> None:
        self._hooks = hooks
        self.node_id = node_id
        self.config = config
        self.protocol = protocol
        self.storage = storage
        self._calls = calls

    def offer(self, peer: NodeId) -> None:
        """Store-on-join: offer ``peer`` (a new contact) the records it is now near.

        A record goes to ``peer`` when fewer than R of the nodes this node knows are nearer its
        key than ``peer`` (lookups for the key will reach ``peer``, so it must hold the record
        before the owner's next republish), and this node is itself among the
        ``HANDOFF_SENDERS`` nearest it knows, ``peer`` aside: the other replicas leave it to
        those (their copies would be turned away as held already), and a node holding a copy
        it is no replica of, e.g. a racer's early copy taken while the ring was forming, does
        not spread it. The records are signed by their owners and carry their certificates,
        so any replica may hand them on and the receiver checks them like any offer; copies
        never extend a lease. At most ``MAX_HANDOFF_RECORDS`` per contact out of
        ``MAX_HANDOFF_SCAN`` looked at, in one tracked task.
        """
        if self._hooks.closed():
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
            if nearer(others, target, theirs, r) + (mine < theirs) >= r:
                continue
            if nearer(others, target, mine, HANDOFF_SENDERS) >= HANDOFF_SENDERS:
                continue
            records.append(record)
            if len(records) >= MAX_HANDOFF_RECORDS:
                break
        if records:
            self._hooks.stats["handoffs"] += len(records)
            self._hooks.spawn(self._store_many(peer, records))

    async def _store_many(self, peer: NodeId, records: list[Record]) -> None:
        await asyncio.gather(*(self._calls.store_at(peer, r) for r in records))
