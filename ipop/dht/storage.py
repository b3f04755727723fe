"""A replica's record store: kademlia's ``IStorage`` holding authenticated, versioned records.

Theory of operation: every record enters through :meth:`RecordStorage.offer`, which checks the
signature and owner binding (:func:`ipop.dht.record.check_record`), the owner's membership and
right to the key (:meth:`ipop.dht.policy.RecordPolicy.admit`), then applies the replacement
rule (:func:`ipop.dht.record.decide_store`), then the bounds below. So the store holds, per key
id, at most one record, and that record is always authentic, owned by a certified member
allowed that key, and was never replaced except by its own owner with a higher seq, or after
it expired or was released by a tombstone.

Bounds (a store is a table keyed by what members send):
  * per owner, namespace and key kind, :meth:`~ipop.dht.policy.RecordPolicy.quota` records
    (tombstones count), the quota of the owner's certificate in that namespace. A new record
    beyond the quota displaces that owner's lowest-seq record of the kind (and namespace),
    unless it is itself the lowest: then it is refused. Why not refuse every newcomer: an honest
    node that lost its state and claims a new address must not be locked out by its own old
    lease for an hour; owners sign seqs from their clock, so "latest claim wins" and a read
    repair of the superseded record is refused. Only an owner's own records are ever displaced.
  * at most ``max_records`` records in all. When full, expired records go first; then a new
    key is refused (``store_full``), unless the records below can give way.
  * shares (issue 17: anyone on a shared overlay can mint a CA, a namespace, and certificates
    for any number of keys, so per-owner quotas alone bound nothing): an owner is *proven*
    here once it stored a record of its own itself (the STORE's sender, which the overlay
    authenticated, is the owner; local offers count as proven). A proven owner holds at most
    ``OWNER_SHARE`` of the store in all namespaces together (``store_owner_share``): one
    overlay identity, however many namespaces it mints for its key, never fills a replica.
    Records of owners not proven here (copies handed over or repaired by others, or made-up
    owners a flooder sends) take at most ``UNPROVEN_SHARE`` of it, and when the store is full
    the oldest of them gives way to a proven owner's new record (counted in ``evicted``).
    So a flooder holding one overlay identity can take a quarter of a replica with its own
    key and three quarters with made-up ones, and every member that stores its own records
    still gets in. An owner's handed-over records count as proven once it stores here itself.
  * each record is at most ``MAX_RECORD_BYTES`` (:mod:`ipop.dht.record`).

Time comes from the ``clock`` callable, UNIX time (leases are absolute times and certificates
are judged in it: the daemon's ``time.time``, the simulator's virtual time), never from
``time.monotonic()`` as kademlia's ``ForgetfulStorage`` does.

Stock kademlia republishes every stored key hourly from every node (``iter_older_than``),
which resurrects stale values. Here ``iter_older_than`` yields nothing: only owners republish
(:class:`ipop.dht.service.DhtService`), and leases are signed so copies can never extend them.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator

from kademlia.storage import IStorage

from ipop.dht.policy import POLICY_REASONS, Kind, RecordPolicy
from ipop.dht.record import (
    RECORD_REASONS,
    Record,
    StoreOutcome,
    check_record,
    decide_store,
    decode_record,
)
from ipop.errors import LocalProtocolError, RemoteProtocolError
from ipop.timing import DHT_MAX_TTL_S
from ipop.types import NodeId

# Share of the store one proven owner may hold, in every namespace together (module docstring).
OWNER_SHARE = 0.25
# Share of the store records of owners not proven here may take.
UNPROVEN_SHARE = 0.75

# Records one replica holds at most. Honest load is about 2 R records per replica whatever the
# network's size (each node: one address and one name, R copies each, spread over N nodes),
# plus routers' LAN hosts; ~1 KB each, so the bound caps memory near 16 MB.
DEFAULT_MAX_RECORDS = 16384

# Every reason a replica refuses an offer for: ``refused`` counts only these.
STORE_REASONS = (
    RECORD_REASONS
    | POLICY_REASONS
    | frozenset(
        {
            "stale",
            "conflict",
            "expired",
            "quota_ip",
            "quota_name",
            "quota_user",
            "quota_svc",
            "store_full",
            "store_owner_share",  # a proven owner's records fill its share of the store
        }
    )
)


# What a quota counts: one owner's records of one kind in one namespace.
_Slot = tuple[NodeId, str, Kind]


class RecordStorage(IStorage):  # type: ignore[misc]  # kademlia ships no type hints
    """Records by 20-byte key id; expired ones vanish on access."""

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        policy: RecordPolicy,
        max_ttl: float = DHT_MAX_TTL_S,
        max_records: int = DEFAULT_MAX_RECORDS,
    ) -> None:
        self._clock = clock
        self._policy = policy
        self._max_ttl = max_ttl
        self._max_records = max_records
        self._data: dict[bytes, Record] = {}
        # Key ids held per (owner, namespace, kind): what the quotas count. In step with _data.
        self._by_owner: dict[_Slot, set[bytes]] = {}
        self._slot: dict[bytes, _Slot] = {}
        # Key ids held per owner, every namespace: what OWNER_SHARE counts. In step with _data.
        self._owner_kids: dict[NodeId, set[bytes]] = {}
        # Owners that stored a record of their own here themselves (LRU, bounded).
        self._proven: OrderedDict[NodeId, None] = OrderedDict()
        # Key ids of records whose owner was not proven when they came, oldest first.
        self._unproven: OrderedDict[bytes, None] = OrderedDict()
        self._owner_cap = max(1, int(max_records * OWNER_SHARE))
        self._unproven_cap = max(1, int(max_records * UNPROVEN_SHARE))
        # Refusals by reason: the replica-side half of the DHT's drop counters.
        self.refused: Counter[str] = Counter()
        # Records that gave way to a newer one of the same owner and kind (quota).
        self.displaced = 0
        # Records of owners not proven here that gave way to a proven owner's (shares).
        self.evicted = 0

    def _refuse(self, reason: str) -> None:
        if reason not in STORE_REASONS:
            raise LocalProtocolError(f"unknown store refusal reason {reason!r}")
        self.refused[reason] += 1

    def offer(self, record: Record, *, sender: NodeId | None = None) -> StoreOutcome:
        """Authenticate ``record`` and store it if the policy, the rule and the bounds allow.
        ``sender``: the node whose STORE it came in (authenticated); None: this node's own
        offer (module docstring, "shares")."""
        now = self._clock()
        try:
            # A copy equal to the one held here passed check_record when it was stored, and
            # check_record depends on the record alone: its Ed25519 signature is not verified
            # again. Handoffs and repairs offer the same copy many times (at a 30-daemon cold
            # start, 44 of one replica's 72 checks were repeats). The policy (certificate,
            # expiry, revocation) still judges it now.
            if record != self._data.get(record.key_id):
                check_record(record)
            admitted = self._policy.admit(record, now=now)
        except RemoteProtocolError as exc:
            self._refuse(exc.reason)
            return StoreOutcome.INVALID
        if sender is None or sender == record.owner:
            self._prove(record.owner)
        kid = record.key_id
        current = self.lookup(kid)
        outcome = decide_store(current, record, now=now, max_ttl=self._max_ttl)
        if not outcome.accepted:
            self._refuse(outcome.name.lower())
            return outcome
        if outcome is StoreOutcome.UNCHANGED:
            return outcome
        quota = self._policy.quota(admitted.cert, admitted.kind)
        slot = (record.owner, admitted.namespace, admitted.kind)
        if not self._room_for(record, kid, slot, quota=quota):
            return StoreOutcome.REFUSED
        self._put(kid, record, slot)
        return outcome

    def _room_for(self, record: Record, kid: bytes, slot: _Slot, *, quota: int) -> bool:
        """Make room for ``record`` under the bounds (module docstring), or refuse it."""
        current = self._data.get(kid)
        if current is not None and current.owner == record.owner:
            return True  # a replacement: the owner's count does not change
        held = self._owned(slot)
        if len(held) >= quota:
            lowest = min(held, key=lambda k: self._data[k].seq)
            if self._data[lowest].seq >= record.seq:
                self._refuse(f"quota_{slot[2].value}")
                return False
            self._remove(lowest)
            self.displaced += 1
        proven = record.owner in self._proven
        if len(self._owner_kids.get(record.owner, ())) >= self._owner_cap:
            self.cull()
            if len(self._owner_kids.get(record.owner, ())) >= self._owner_cap:
                self._refuse("store_owner_share")
                return False
        if current is not None:
            return True  # the key's expired or released record makes way: no new room needed
        if not proven and len(self._unproven) >= self._unproven_cap:
            self.cull()
            if len(self._unproven) >= self._unproven_cap:
                self._refuse("store_full")
                return False
        if len(self._data) >= self._max_records:
            self.cull()
            if len(self._data) >= self._max_records:
                if not proven or not self._unproven:
                    self._refuse("store_full")
                    return False
                self._remove(next(iter(self._unproven)))
                self.evicted += 1
        return True

    def counters(self) -> dict[str, int]:
        """For status: records held, of them unproven, and records that gave way."""
        return {
            "store_records": len(self),
            "store_unproven": self.unproven,
            "store_displaced": self.displaced,
            "store_evicted": self.evicted,
        }

    @property
    def unproven(self) -> int:
        """Records held whose owner has not stored here itself (module docstring, shares)."""
        return len(self._unproven)

    def _prove(self, owner: NodeId) -> None:
        """``owner`` stored here itself: its records count as proven from now on."""
        if owner in self._proven:
            self._proven.move_to_end(owner)
            return
        self._proven[owner] = None
        if len(self._proven) > self._max_records:  # bounded: the least recent is forgotten
            self._proven.popitem(last=False)
        for kid in self._owner_kids.get(owner, ()):
            self._unproven.pop(kid, None)

    def _owned(self, slot: _Slot) -> set[bytes]:
        """Key ids of the unexpired records ``slot`` counts (expired ones are dropped)."""
        held = self._by_owner.get(slot, set())
        now = self._clock()
        for k in [k for k in held if self._data[k].expires_at <= now]:
            self._remove(k)
        return self._by_owner.get(slot, set())

    def _put(self, kid: bytes, record: Record, slot: _Slot) -> None:
        if kid in self._data:
            self._remove(kid)
        self._data[kid] = record
        self._slot[kid] = slot
        self._by_owner.setdefault(slot, set()).add(kid)
        self._owner_kids.setdefault(record.owner, set()).add(kid)
        if record.owner not in self._proven:
            self._unproven[kid] = None

    def _remove(self, kid: bytes) -> None:
        owner = self._data.pop(kid).owner
        slot = self._slot.pop(kid)
        held = self._by_owner[slot]
        held.discard(kid)
        if not held:
            del self._by_owner[slot]
        kids = self._owner_kids[owner]
        kids.discard(kid)
        if not kids:
            del self._owner_kids[owner]
        self._unproven.pop(kid, None)

    def lookup(self, kid: bytes) -> Record | None:
        """The unexpired record held for ``kid`` (tombstones included), else None."""
        record = self._data.get(kid)
        if record is None:
            return None
        if record.expires_at <= self._clock():
            self._remove(kid)
            return None
        return record

    def records(self) -> list[Record]:
        """Every unexpired record held (tombstones included): what a handoff may offer."""
        self.cull()
        return list(self._data.values())

    def held_by(self, owner: NodeId, kind: Kind | None = None) -> int:
        """How many unexpired records ``owner`` has here, of ``kind`` (None: all kinds), in
        every namespace."""
        slots = [s for s in self._by_owner if s[0] == owner and kind in (None, s[2])]
        return sum(len(self._owned(s)) for s in slots)

    def cull(self) -> int:
        """Drop every expired record; returns how many went."""
        now = self._clock()
        gone = [k for k, r in self._data.items() if r.expires_at <= now]
        for k in gone:
            self._remove(k)
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
