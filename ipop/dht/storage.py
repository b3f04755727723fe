"""A replica's record store: kademlia's ``IStorage`` holding authenticated, versioned records.

Theory of operation: every record enters through :meth:`RecordStorage.offer`, which checks the
signature and owner binding (:func:`ipop.dht.record.check_record`) and then applies the
replacement rule (:func:`ipop.dht.record.decide_store`). So the store holds, per key id, at
most one record, and that record is always authentic and was never replaced except by its own
owner with a higher seq, or after it expired or was released by a tombstone.

Time comes from the ``clock`` callable (the event loop's ``time``; the simulator's is
virtual), never from ``time.monotonic()`` as kademlia's ``ForgetfulStorage`` does.

Stock kademlia republishes every stored key hourly from every node (``iter_older_than``),
which resurrects stale values. Here ``iter_older_than`` yields nothing: only owners republish
(:class:`ipop.dht.service.DhtService`), and leases are signed so copies can never extend them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator

from kademlia.storage import IStorage

from ipop.dht.record import Record, StoreOutcome, check_record, decide_store, decode_record
from ipop.errors import LocalProtocolError, RemoteProtocolError
from ipop.timing import DHT_MAX_TTL_S


class RecordStorage(IStorage):  # type: ignore[misc]  # kademlia ships no type hints
    """Records by 20-byte key id; expired ones vanish on access."""

    def __init__(self, clock: Callable[[], float], *, max_ttl: float = DHT_MAX_TTL_S) -> None:
        self._clock = clock
        self._max_ttl = max_ttl
        self._data: dict[bytes, Record] = {}
        # Refusals by reason: the replica-side half of the DHT's drop counters.
        self.refused: Counter[str] = Counter()

    def offer(self, record: Record) -> StoreOutcome:
        """Authenticate ``record`` and store it if the replacement rule allows."""
        try:
            check_record(record)
        except RemoteProtocolError as exc:
            self.refused[exc.reason] += 1
            return StoreOutcome.INVALID
        now = self._clock()
        kid = record.key_id
        outcome = decide_store(self._data.get(kid), record, now=now, max_ttl=self._max_ttl)
        if outcome is StoreOutcome.STORED:
            self._data[kid] = record
        elif not outcome.accepted:
            self.refused[outcome.name.lower()] += 1
        return outcome

    def lookup(self, kid: bytes) -> Record | None:
        """The unexpired record held for ``kid`` (tombstones included), else None."""
        record = self._data.get(kid)
        if record is None:
            return None
        if record.expires_at <= self._clock():
            del self._data[kid]
            return None
        return record

    def cull(self) -> int:
        """Drop every expired record; returns how many went."""
        now = self._clock()
        gone = [k for k, r in self._data.items() if r.expires_at <= now]
        for k in gone:
            del self._data[k]
        return len(gone)

    def __len__(self) -> int:
        self.cull()
        return len(self._data)

    # --- kademlia's IStorage interface (values are encoded records) -------------------------

    def __setitem__(self, key: bytes, value: bytes) -> None:
        record = decode_record(value)
        if record.key_id != key:
            raise LocalProtocolError("record stored under a key id that is not its own")
        self.offer(record)

    def __getitem__(self, key: bytes) -> bytes:
        record = self.lookup(key)
        if record is None:
            raise KeyError(key)
        return record.encode()

    def get(self, key: bytes, default: bytes | None = None) -> bytes | None:
        record = self.lookup(key)
        return default if record is None else record.encode()

    def iter_older_than(self, seconds_old: float) -> list[tuple[bytes, bytes]]:
        # Deliberately empty: see the module docstring (only owners republish).
        return []

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
        self.cull()
        return iter([(k, r.encode()) for k, r in self._data.items()])
