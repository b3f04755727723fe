"""An in-memory stand-in for the DHT service, for driving daemons without a ring (tests only).

:class:`FakeDht` offers what :class:`ipop.dht.alloc.DhtLike` names (plus ``put``) over one
dict: ``create`` is the compare-and-set of the real service (a key held by another owner is
refused; one held by the asking owner is granted again, as the replacement rule does), records
never expire, and nothing is signed. Every operation yields to the loop once (a real one is a
round trip), waits for :attr:`gate` if it is cleared, and is counted in :attr:`calls`.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from ipop.dht.record import MAX_VALUE_BYTES, Record
from ipop.dht.srv import allowed_slots
from ipop.types import NodeId

__all__ = ["FakeDht"]


class FakeDht:
    def __init__(self, node_id: NodeId) -> None:
        self._node_id = node_id
        self.calls: Counter[str] = Counter()
        self.drops: Counter[str] = Counter()  # what status reads of the real one (none here)
        self.store: dict[str, int] = {}  # what counters() says of a replica's store
        self.records: dict[str, tuple[NodeId, bytes]] = {}
        self.gate = asyncio.Event()
        self.gate.set()

    @property
    def node_id(self) -> NodeId:
        return self._node_id

    def max_value_bytes(self, namespace: str) -> int:
        return MAX_VALUE_BYTES  # records here are never sealed

    def service_slots(self, namespace: str, name: str, proto: str) -> tuple[int, ...]:
        return allowed_slots(self._node_id, name, proto)  # records here are never sealed

    def counters(self) -> dict[str, int]:
        return dict(self.store)

    def hold(self, key: str, owner: NodeId, value: bytes = b"") -> None:
        """Make ``owner`` the holder of ``key`` (another node's record, or one of ours that
        outlived a restart)."""
        self.records[key] = (owner, value)

    async def _op(self, name: str) -> None:
        self.calls[name] += 1
        await asyncio.sleep(0)
        await self.gate.wait()

    async def create(self, key: str, value: bytes, ttl: float) -> bool:
        await self._op("create")
        held = self.records.get(key)
        if held is not None and held[0] != self._node_id:
            return False
        self.records[key] = (self._node_id, value)
        return True

    async def put(self, key: str, value: bytes, ttl: float) -> bool:
        return await self.create(key, value, ttl)

    async def renew(self, key: str, ttl: float) -> bool:
        await self._op("renew")
        held = self.records.get(key)
        return held is not None and held[0] == self._node_id

    async def delete(self, key: str) -> bool:
        await self._op("delete")
        held = self.records.get(key)
        if held is None or held[0] != self._node_id:
            return False
        del self.records[key]
        return True

    async def get(self, key: str, *, strict: bool = False) -> Record | None:
        await self._op("get")
        held = self.records.get(key)
        if held is None:
            return None
        owner, value = held
        return Record(
            key=key, value=value, seq=1, owner=owner, owner_pub=b"", expires_at=0.0, sig=b""
        )
