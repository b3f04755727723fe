"""A replica's store shared out by overlay identity (issue 17: anyone on a shared overlay can
mint a CA, a namespace and certificates for any number of keys, so per-owner quotas alone
bound nothing): ``RecordStorage`` shares, see :mod:`ipop.dht.storage`."""

from __future__ import annotations

from ipop.dht.policy import RecordPolicy
from ipop.dht.record import Record, StoreOutcome, ip_key, namespace_of, user_key
from ipop.dht.storage import OWNER_SHARE, UNPROVEN_SHARE, RecordStorage
from ipop.identity import NetworkCA, NodeIdentity
from ipop.testing.clock import SIM_EPOCH
from ipop.testing.identities import make_identity, make_network

NOW = SIM_EPOCH
MAX = 64  # a small store, so that the floods below fill it
_LAB = make_network("labnet", now=NOW)
ALICE = make_identity(_LAB, "alice", now=NOW, hostname="alice")
BOB = make_identity(_LAB, "bob", now=NOW, hostname="bob")
# The overlay identity that sends the flood.
FLOOD_SENDER = make_identity(make_network("shared", now=NOW), "m", now=NOW).node_id


def _replica() -> RecordStorage:
    """An overlay-only replica (a member of no network)."""
    return RecordStorage(lambda: NOW, policy=RecordPolicy(None), max_ttl=86400.0, max_records=MAX)


def _minted(n: int) -> list[Record]:
    """``n`` user records, each of a made-up owner under a CA the flooder minted (one CA per
    8 owners: a namespace costs nothing either)."""
    out = []
    for i in range(n):
        if i % 8 == 0:
            ca = NetworkCA.create(f"junk{i}", now=NOW)
        owner = NodeIdentity.generate(ca, f"k{i}", now=NOW)
        key = user_key(namespace_of(ca.trust), f"junk{i}")
        out.append(Record.sign(owner, key, bytes(100), seq=1, expires_at=NOW + 600))
    return out


def _alice_ip() -> Record:
    return Record.sign(
        ALICE, ip_key(namespace_of(_LAB.trust), "100.64.0.7"), b"", seq=1, expires_at=NOW + 600
    )


def test_made_up_owners_cannot_keep_a_member_out() -> None:
    """Before: the flood filled the store, and alice's own address record was refused
    (``store_full``). Now made-up owners (never the STORE's sender) get three quarters."""
    s = _replica()
    outcomes = [s.offer(r, sender=FLOOD_SENDER) for r in _minted(MAX)]
    taken = outcomes.count(StoreOutcome.STORED)
    assert taken == int(MAX * UNPROVEN_SHARE) and s.refused["store_full"] == MAX - taken
    assert s.offer(_alice_ip(), sender=ALICE.node_id) is StoreOutcome.STORED


def test_when_full_a_proven_owners_record_evicts_the_oldest_unproven_one() -> None:
    s = _replica()
    members = [make_identity(_LAB, f"n{i}", now=NOW) for i in range(MAX)]
    ns = namespace_of(_LAB.trust)
    flood = _minted(int(MAX * UNPROVEN_SHARE))
    assert all(s.offer(r, sender=FLOOD_SENDER) is StoreOutcome.STORED for r in flood)
    # Members fill the rest, then more come: each evicts the oldest made-up record.
    for i, m in enumerate(members):
        rec = Record.sign(m, ip_key(ns, f"100.64.1.{i}"), b"", seq=1, expires_at=NOW + 600)
        assert s.offer(rec, sender=m.node_id) is StoreOutcome.STORED
    assert len(s) == MAX and s.evicted == len(flood)
    assert s.lookup(flood[0].key_id) is None
    # Full of proven owners' records: a newcomer is refused, nothing of theirs evicted.
    late = make_identity(_LAB, "late", now=NOW)
    rec = Record.sign(late, ip_key(ns, "100.64.2.1"), b"", seq=1, expires_at=NOW + 600)
    assert s.offer(rec, sender=late.node_id) is StoreOutcome.REFUSED


def test_one_identity_minting_namespaces_for_its_own_key_holds_a_quarter() -> None:
    """The flooder's own key, certified by as many CAs as it likes (quotas are per namespace):
    all of them together hold ``OWNER_SHARE`` of the store."""
    s = _replica()
    seed = NodeIdentity.generate(make_network("seed", now=NOW), "m", now=NOW)
    stored = 0
    for i in range(MAX):
        ca = NetworkCA.create(f"mint{i}", now=NOW)
        me = NodeIdentity(
            seed.private_key, ca.sign_node(seed.public_key_raw, "m", now=NOW), ca.trust
        )
        rec = Record.sign(
            me, user_key(namespace_of(ca.trust), "x"), b"y", seq=1, expires_at=NOW + 600
        )
        stored += s.offer(rec, sender=me.node_id) is StoreOutcome.STORED
    assert stored == int(MAX * OWNER_SHARE)
    assert s.refused["store_owner_share"] == MAX - stored


def test_handed_over_records_count_once_their_owner_stores_itself() -> None:
    """Alice's record handed over by bob (a handoff) is unproven here, so it could give way;
    once alice stores here herself, her records count as proven."""
    s = _replica()
    rec = _alice_ip()
    assert s.offer(rec, sender=BOB.node_id) is StoreOutcome.STORED
    assert s.unproven == 1
    own = Record.sign(
        ALICE, user_key(namespace_of(_LAB.trust), "motd"), b"hi", seq=1, expires_at=NOW + 600
    )
    assert s.offer(own, sender=ALICE.node_id) is StoreOutcome.STORED
    assert s.unproven == 0
