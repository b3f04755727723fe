"""The DHT over a fake overlay, on virtual time: operations, create races, forgeries."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from ipaddress import IPv4Network

import pytest

from ipop.dht.lookup import Lookups
from ipop.dht.names import lookup_name
from ipop.dht.protocol import kad_node
from ipop.dht.read import NoQuorum
from ipop.dht.record import Record, StoreOutcome, key_id
from ipop.dht.service import DhtService
from ipop.dht.wire import (
    M_FETCH,
    M_STORE,
    MSG_ID_BYTES,
    PingRequested,
    StoreRequested,
    encode_message,
)
from ipop.testing.fake_overlay import TESTNET_NS, DhtCluster, holders, live_owners, run_cluster
from ipop.timing import DHT_RPC_ATTEMPTS, DHT_RPC_MIN_RETRY_S, DHT_RPC_RETRY_S
from ipop.types import NodeId

K = f"{TESTNET_NS}:user:alice"


async def offer_everywhere(
    cluster: DhtCluster, sender: DhtService, record: Record
) -> list[StoreOutcome]:
    """``sender`` sends ``record`` to every replica of its key, as a STORE RPC."""
    outcomes = []
    for peer in await sender.replica_set(record.key_id):
        if peer == sender.node_id:
            outcomes.append(sender.storage.offer(record))
            continue
        answer = await sender.protocol.store_record(peer, record)
        assert answer is not None
        outcomes.append(answer.outcome)
    return outcomes


# --- every operation --------------------------------------------------------------------------


def test_put_get_renew_delete() -> None:
    async def body(c: DhtCluster) -> None:
        loop = asyncio.get_running_loop()
        a, b, reader = c.nodes[1], c.nodes[5], c.nodes[9]
        assert await reader.get(K) is None
        assert await a.put(K, b"one", 60)
        got = await reader.get(K)
        assert got is not None and got.value == b"one" and got.owner == a.node_id
        assert await a.put(K, b"two", 60)
        got = await reader.get(K)
        assert got is not None and got.value == b"two"
        # Nobody but the owner may replace a live record.
        assert not await b.put(K, b"evil", 60)
        assert not await b.renew(K, 600)
        assert not await b.delete(K)
        got = await reader.get(K)
        assert got is not None and got.value == b"two"
        # Renewal moves the expiry; the copies at the replicas follow.
        before = got.expires_at
        await asyncio.sleep(30)
        assert await a.renew(K, 60)
        got = await reader.get(K)
        assert got is not None and got.expires_at == pytest.approx(loop.time() + 60, abs=3)
        assert got.expires_at > before + 25
        assert len([1 for _, r in holders(c, K) if r == got]) >= 5
        # Delete releases the key: reads miss, and another node may claim it.
        assert await a.delete(K)
        assert await reader.get(K) is None
        assert await b.create(K, b"bob", 60)
        got = await reader.get(K)
        assert got is not None and got.owner == b.node_id

    run_cluster(body, n=14)


def test_writes_count_real_acknowledgements() -> None:
    """Stock kademlia reports success when every store was lost; we must not."""

    async def body(c: DhtCluster) -> None:
        c.overlay.check = lambda src, dst, p: not (p[0] == 0 and p[1 + MSG_ID_BYTES] == M_STORE)
        a = c.nodes[3]
        assert not await a.put(K, b"lost", 60)
        assert not await a.create(K, b"lost", 60)
        c.overlay.check = None
        assert await a.put(K, b"kept", 60)

    run_cluster(body, n=12)


def test_one_lost_datagram_costs_a_retry_not_an_eviction() -> None:
    async def body(c: DhtCluster) -> None:
        loop = asyncio.get_running_loop()
        a, b = c.nodes[2], c.nodes[7]
        dropped: list[bytes] = []

        def drop_first(src: NodeId, dst: NodeId, payload: bytes) -> bool:
            if src == a.node_id and dst == b.node_id and not dropped:
                dropped.append(payload)
                return False
            return True

        c.overlay.check = drop_first
        rto = a.protocol.rtt.timeout(b.node_id)
        # Adapted to the cluster's measured round trips, between the floor and the ceiling.
        assert DHT_RPC_MIN_RETRY_S <= rto < DHT_RPC_RETRY_S
        start = loop.time()
        answer = await a.protocol.call(b.node_id, PingRequested())
        elapsed = loop.time() - start
        assert answer is not None and dropped
        assert rto <= elapsed < rto + 0.2  # one timeout plus a round trip, not 5 s
        assert b.node_id in a.contacts()
        assert a.protocol.counters["retransmissions"] == 1

    run_cluster(body, n=10)


def test_joining_looks_up_narrower_than_a_replica_set() -> None:
    """A node's join converges on R + 2 nodes around itself (it only gathers contacts); a
    replica set is looked up ksize wide (see DhtConfig.lookup_k), and still found exactly."""

    async def body(c: DhtCluster) -> None:
        def served() -> int:
            return sum(n.protocol.counters["requests_served"] for n in c.nodes)

        newcomer = c.add_node()
        before = served()
        assert await newcomer.bootstrap([c.nodes[0].node_id])
        join_cost = served() - before
        before = served()
        replicas = await newcomer.replica_set(bytes(20))
        lookup_cost = served() - before
        everyone = sorted((n.node_id for n in c.nodes), key=lambda n: n.value)
        assert replicas == everyone[:8]  # XOR distance to the all-zero key is the value
        # (Measured: 12 requests against 22; with one width for both, about equal.)
        assert join_cost * 3 < lookup_cost * 2, (join_cost, lookup_cost)

    run_cluster(body, n=60, seed=3)


def test_a_create_offers_to_a_narrow_view_first_and_is_judged_on_a_ksize_wide_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A create's first lookup only picks whom to offer the claim to: R + 2 wide. The lookup
    the claim is judged on is ksize wide, as a replica set's (ipop.dht.write), and the claim
    lands on the key's true replicas. It costs fewer requests than two replica-set lookups
    and the stores (measured, 24 and 60 settled nodes, seeds 1-5: 38-48 requests a create,
    48-51 with both lookups ksize wide; here 40 against 50)."""
    widths: list[int | None] = []
    lookup = Lookups.lookup

    async def spy(self: Lookups, target: bytes, **kw: int | bool | None) -> list[NodeId]:
        widths.append(kw.get("width"))  # type: ignore[arg-type]
        return await lookup(self, target, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(Lookups, "lookup", spy)

    async def body(c: DhtCluster) -> None:
        def served() -> int:
            return sum(n.protocol.counters["requests_served"] for n in c.nodes)

        creator = c.nodes[5]
        key = f"{TESTNET_NS}:ip:100.64.0.9"
        kid = key_id(key)
        widths.clear()  # the cluster's joins
        before = served()
        assert await creator.create(key, b"", 600)
        create_cost = served() - before
        assert widths == [creator.config.width, None], widths
        before = served()
        replicas = await creator.replica_set(kid)
        lookup_cost = served() - before
        target = int.from_bytes(kid, "big")
        nearest = sorted((n.node_id for n in c.nodes), key=lambda n: n.value ^ target)[:8]
        assert sorted(replicas, key=lambda n: n.value ^ target) == nearest
        held = {svc.node_id for svc, r in holders(c, key) if r.owner == creator.node_id}
        assert len(held & set(nearest)) >= creator.config.needed(len(nearest)), held
        assert create_cost < 2 * lookup_cost + len(nearest), (create_cost, lookup_cost)

    run_cluster(body, n=60, seed=4)


# --- create: compare-and-set --------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5, 6])
def test_two_racing_creates_exactly_one_wins(seed: int) -> None:
    async def body(c: DhtCluster) -> None:
        rng = random.Random(seed)
        a, b = rng.sample(c.nodes, 2)
        key = f"{TESTNET_NS}:ip:100.64.0.{seed + 10}"
        results = await asyncio.gather(a.create(key, b"", 120), b.create(key, b"", 120))
        assert sorted(results) == [False, True], results
        winner, loser = (a, b) if results[0] else (b, a)
        for reader in (a, b, c.nodes[0]):
            got = await reader.get(key)
            assert got is not None and got.owner == winner.node_id
        # The loser's value is nowhere live.
        assert live_owners(c, key) == {winner.node_id}
        assert key not in loser.owned()

    run_cluster(body, n=16, seed=seed)


def test_four_racing_creates_exactly_one_wins() -> None:
    async def body(c: DhtCluster) -> None:
        racers = c.nodes[2:6]
        key = f"{TESTNET_NS}:ip:100.64.0.77"
        results = await asyncio.gather(*(r.create(key, b"", 120) for r in racers))
        assert results.count(True) == 1, results
        winner = racers[results.index(True)]
        assert live_owners(c, key) == {winner.node_id}

    run_cluster(body, n=16, seed=11)


def test_split_vote_withdraws_and_gives_up() -> None:
    """A rival's half-finished claim (4 of 8 replicas) blocks a quorum: we back off, retry,
    give up, and leave no live copy of our value behind."""

    async def body(c: DhtCluster) -> None:
        a, b = c.nodes[1], c.nodes[2]
        loop = asyncio.get_running_loop()
        rival = Record.sign(b.identity, K, b"b", seq=1, expires_at=loop.time() + 600)
        replicas = await a.replica_set(rival.key_id)
        by_id = {svc.node_id: svc for svc in c.nodes}
        half = [p for p in replicas if p not in (a.node_id, b.node_id)][:4]
        for p in half:
            assert by_id[p].storage.offer(rival) is StoreOutcome.STORED
        t0 = loop.time()
        assert not await a.create(K, b"a", 600)
        assert a.stats["create_split"] == a.config.create_rounds
        assert a.stats["create_gave_up"] == 1
        assert loop.time() - t0 > 2.0  # it did back off between rounds
        assert live_owners(c, K) == {b.node_id}
        # Once the rival's copies expire, the key is ours.
        await asyncio.sleep(600)
        assert await a.create(K, b"a", 600)

    run_cluster(body, n=16)


def test_expiry_frees_the_key() -> None:
    async def body(c: DhtCluster) -> None:
        a, b = c.nodes[1], c.nodes[2]
        assert await a.create(K, b"a", 20)
        assert not await b.create(K, b"b", 20)
        await asyncio.sleep(21)
        assert await b.get(K) is None
        assert holders(c, K) == [] or all(r.tombstone for _, r in holders(c, K))
        assert await b.create(K, b"b", 20)
        got = await a.get(K)
        assert got is not None and got.owner == b.node_id

    run_cluster(body, n=12)


# --- forgeries and stale versions -----------------------------------------------------------


def test_stale_version_is_refused() -> None:
    async def body(c: DhtCluster) -> None:
        a, other = c.nodes[1], c.nodes[6]
        assert await a.put(K, b"v1", 300)
        v1 = a.owned()[K]
        assert await a.put(K, b"v2", 300)
        # Anyone replaying the old version (a lagging replica, an attacker) is refused.
        outcomes = await offer_everywhere(c, other, v1)
        assert set(outcomes) <= {StoreOutcome.STALE}, outcomes
        assert len(outcomes) == 8
        got = await other.get(K)
        assert got is not None and got.value == b"v2"

    run_cluster(body, n=14)


def test_forged_records_are_refused() -> None:
    async def body(c: DhtCluster) -> None:
        a, mallory = c.nodes[1], c.nodes[4]
        assert await a.put(K, b"genuine", 300)
        genuine = a.owned()[K]
        loop = asyncio.get_running_loop()
        bad_sig = dataclasses.replace(genuine, value=b"evil", seq=genuine.seq + 1)
        own = Record.sign(
            mallory.identity, K, b"evil", seq=genuine.seq + 1, expires_at=loop.time() + 300
        )
        wrong_owner = dataclasses.replace(own, owner=a.node_id)
        assert set(await offer_everywhere(c, mallory, bad_sig)) == {StoreOutcome.INVALID}
        assert set(await offer_everywhere(c, mallory, wrong_owner)) == {StoreOutcome.INVALID}
        # A valid record of her own cannot replace a live record of another owner.
        assert set(await offer_everywhere(c, mallory, own)) == {StoreOutcome.CONFLICT}
        assert not await mallory.put(K, b"evil", 300)
        assert not await mallory.create(K, b"evil", 300)
        for reader in c.nodes[:6]:
            got = await reader.get(K)
            assert got == genuine
        refused = sum(svc.drops["store_record_bad_signature"] for svc in c.nodes)
        assert refused >= 8
        assert sum(svc.drops["store_record_owner_mismatch"] for svc in c.nodes) >= 8

    run_cluster(body, n=14)


def test_message_with_mismatched_sender_is_dropped() -> None:
    async def body(c: DhtCluster) -> None:
        a, mallory = c.nodes[1], c.nodes[4]
        loop = asyncio.get_running_loop()
        record = Record.sign(a.identity, K, b"x", seq=1, expires_at=loop.time() + 60)
        replicas = [p for p in await mallory.replica_set(record.key_id) if p != mallory.node_id]
        target = next(svc for svc in c.nodes if svc.node_id == replicas[0])
        # Mallory relays a STORE that claims to come from a (kademlia id a, link id mallory).
        payload = encode_message(b"\x00" * MSG_ID_BYTES, a.node_id, StoreRequested(record))
        served = target.protocol.counters["requests_served"]
        c.overlay.inject(mallory.node_id, target.node_id, payload)
        await asyncio.sleep(0.1)
        assert target.drops["sender_mismatch"] == 1
        assert target.protocol.counters["requests_served"] == served
        assert target.storage.lookup(record.key_id) is None
        # The same bytes over a's own link are fine.
        c.overlay.inject(a.node_id, target.node_id, payload)
        await asyncio.sleep(0.1)
        assert target.storage.lookup(record.key_id) == record

    run_cluster(body, n=10)


def test_overlay_links_become_contacts() -> None:
    """A node that knows nobody in the DHT still finds the record through its overlay links."""

    class Linked:
        def __init__(self, peers: list[NodeId]) -> None:
            self.peers = peers

        def linked_peers(self) -> list[NodeId]:
            return self.peers

    async def body(c: DhtCluster) -> None:
        assert await c.nodes[1].put(K, b"one", 60)
        loner = c.add_node()  # never bootstrapped: no kademlia contact at all
        assert loner.contacts() == []
        loner.lookups.linked = Linked([c.nodes[3].node_id, c.nodes[7].node_id])
        got = await loner.get(K)
        assert got is not None and got.value == b"one"
        assert {c.nodes[3].node_id, c.nodes[7].node_id} <= set(loner.contacts())

    run_cluster(body, n=12)


def test_a_silent_peer_costs_later_calls_one_try_until_it_speaks() -> None:
    """A peer that left a whole call unanswered (paused, killed) gets one try per call, so it
    holds each later lookup round for one timeout, not DHT_RPC_ATTEMPTS of them; anything it
    sends (it resumed) restores the full tries."""

    async def body(c: DhtCluster) -> None:
        loop = asyncio.get_running_loop()
        a, b = c.nodes[2], c.nodes[7]
        muted = [True]
        c.overlay.check = lambda src, dst, payload: not (muted[0] and b.node_id in (src, dst))
        rto = a.protocol.rtt.timeout(b.node_id)
        assert await a.protocol.call(b.node_id, PingRequested()) is None
        start = loop.time()
        assert await a.protocol.call(b.node_id, PingRequested()) is None
        assert loop.time() - start < rto + 0.01
        assert a.protocol.counters["rpc_silent_peer"] == 1
        muted[0] = False
        assert await b.protocol.call(a.node_id, PingRequested()) is not None
        assert b.node_id not in a.protocol._silent

    run_cluster(body, n=10)


def test_an_unanswered_try_makes_a_peer_unresponsive_until_it_speaks() -> None:
    """Reads skip a peer that left a try unanswered (ipop.dht.service get), so the mark must
    go as soon as anything arrives from it: a retransmission's answer, or a request."""

    async def body(c: DhtCluster) -> None:
        a, b = c.nodes[2], c.nodes[7]
        muted = [1]  # datagrams from a to b still to drop

        def drop(src: NodeId, dst: NodeId, payload: bytes) -> bool:
            if src == a.node_id and dst == b.node_id and muted[0]:
                muted[0] -= 1
                return False
            return True

        c.overlay.check = drop
        assert await a.protocol.call(b.node_id, PingRequested()) is not None
        assert not a.protocol.unresponsive(b.node_id)  # the retry's answer cleared it
        muted[0] = 1
        assert await a.protocol.call(b.node_id, PingRequested(), attempts=1) is None
        assert a.protocol.unresponsive(b.node_id)
        assert await b.protocol.call(a.node_id, PingRequested()) is not None
        assert not a.protocol.unresponsive(b.node_id)

    run_cluster(body, n=10)


# --- reads do not wait for a dead replica ----------------------------------------------------


def _nearest_known(c: DhtCluster, reader: DhtService, key: str) -> list[DhtService]:
    """The R nodes nearest ``key`` that ``reader`` knows (what its first read asks)."""
    by_id = {svc.node_id: svc for svc in c.nodes}
    target = int.from_bytes(key_id(key), "big")
    known = sorted([*reader.contacts(), reader.node_id], key=lambda n: n.value ^ target)
    return [by_id[p] for p in known[: reader.config.replicas]]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_get_does_not_wait_for_a_dead_replica_its_quorum_needs(seed: int) -> None:
    """Among the nodes nearest a key that a reader knows, 4 live ones hold the record and the
    5th copy of its quorum (5 of 8) was on a node that just died (a bootstrap that stopped).
    The get must answer long before that node's tries run out: before, it waited for all of
    them (4 x its timeout), then for it again in the lookup (1 s where a get takes 0.05 s)."""

    async def body(c: DhtCluster) -> None:
        loop = asyncio.get_running_loop()
        writer, reader = c.nodes[1], c.nodes[9]
        assert await writer.put(K, b"one", 600)
        kid = key_id(K)
        nearest = _nearest_known(c, reader, K)
        dead = next(svc for svc in nearest if svc not in (reader, writer))
        copies = [svc for svc in nearest if svc is not dead and svc.storage.lookup(kid)]
        assert len(copies) >= 4
        for svc in copies[4:]:
            svc.storage._remove(kid)  # replicas the record never reached (a forming ring)
        budget = DHT_RPC_ATTEMPTS * reader.protocol.rtt.timeout(dead.node_id)
        await c.remove(dead)
        start = loop.time()
        got = await reader.get(K)
        elapsed = loop.time() - start
        assert got is not None and got.value == b"one" and got.owner == writer.node_id
        # One timeout for the dead node, then a lookup and a read of the live replica set.
        assert elapsed < budget / 2, (elapsed, budget)
        # It is not asked again until it speaks: the next get costs a round trip or two.
        start = loop.time()
        assert await reader.get(K) == got
        assert loop.time() - start < 0.05

    run_cluster(body, n=14, seed=seed, latency=0.005, jitter=0.002)


def test_a_replica_set_read_asks_the_next_node_for_a_replica_that_stopped_answering() -> None:
    """A replica that answered the lookup but not the fetch (it died in between) holds its
    seat in the read for one timeout, then the next-nearest node the lookup found answers in
    its place: a key nobody holds reads as missing without waiting for all its tries."""

    async def body(c: DhtCluster) -> None:
        loop = asyncio.get_running_loop()
        reader = c.nodes[9]
        kid = key_id(K)
        replicas = await reader.replica_set(kid)
        mute = next(p for p in replicas if p != reader.node_id)
        c.overlay.check = lambda src, dst, p: not (dst == mute and p[1 + MSG_ID_BYTES] == M_FETCH)
        budget = DHT_RPC_ATTEMPTS * reader.protocol.rtt.timeout(mute)
        start = loop.time()
        assert await reader.get(K) is None
        elapsed = loop.time() - start
        assert elapsed < budget / 2, (elapsed, budget)
        assert reader.stats["read_spares_asked"] >= 1

    run_cluster(body, n=14, latency=0.005, jitter=0.002)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_key_nobody_holds_asks_each_node_once(seed: int) -> None:
    """The read of a missing key (a name not registered yet, a typo behind a search domain)
    asks the nearest nodes it knows, looks the replica set up and reads that, widened: the
    nodes the first read heard from are not asked again (it read the key's 8 nearest twice)."""

    async def body(c: DhtCluster) -> None:
        reader = c.nodes[9]
        asked: dict[NodeId, int] = {}

        def count(src: NodeId, dst: NodeId, payload: bytes) -> bool:
            if src == reader.node_id and payload[1 + MSG_ID_BYTES] == M_FETCH:
                asked[dst] = asked.get(dst, 0) + 1
            return True

        c.overlay.check = count
        assert await reader.get(K) is None
        assert asked and max(asked.values()) == 1, asked
        assert reader.stats["get_missing"] == 1

    run_cluster(body, n=40, seed=seed)


def test_a_strict_read_that_hears_too_few_replicas_raises_rather_than_answer_absent() -> None:
    """A reader whose fetches all go unanswered (it has just restarted into a ring whose
    replicas are busy, or a path is cut) has not learned that a name is absent: a strict get
    reads once more, then raises NoQuorum (DNS then answers SERVFAIL, which no resolver
    caches; before, it answered None, an NXDOMAIN cached for seconds). A non-strict get keeps
    answering None, and a quorum of replicas that answered "nothing" is an answer."""

    async def body(c: DhtCluster) -> None:
        writer = c.nodes[1]
        assert await writer.put(K, b"one", 600)
        reader = next(svc for svc in c.nodes if svc.storage.lookup(key_id(K)) is None)

        def mute(src: NodeId, dst: NodeId, payload: bytes) -> bool:
            return not (src == reader.node_id and payload[1 + MSG_ID_BYTES] == M_FETCH)

        c.overlay.check = mute
        assert await reader.get(K) is None
        with pytest.raises(NoQuorum):
            await reader.get(K, strict=True)
        assert reader.stats["get_retried"] == 1 and reader.stats["get_no_quorum"] == 1
        with pytest.raises(NoQuorum):
            await lookup_name(reader, TESTNET_NS, "alice", IPv4Network("100.64.0.0/10"))
        # Fetches reach a quorum again, of replicas that hold nothing: absent is an answer.
        nobody = f"{TESTNET_NS}:user:nobody"
        others = [p for p in await reader.replica_set(key_id(nobody)) if p != reader.node_id]
        few = set(others[: len(others) // 2 - 1])  # fewer than a quorum can spare
        c.overlay.check = lambda src, dst, p: (
            not (src == reader.node_id and dst in few and p[1 + MSG_ID_BYTES] == M_FETCH)
        )
        assert await reader.get(nobody, strict=True) is None
        assert reader.stats["get_no_quorum"] == 2  # the name's first read only

    run_cluster(body, n=14, latency=0.005, jitter=0.002)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_reads_lookup_does_not_wait_for_a_node_that_just_died(seed: int) -> None:
    """The node nearest a key just died, and every other node still names it: the lookup of
    a get (here of a key nobody holds) counts it as silent after one timeout instead of
    waiting for its tries in a round (before: 2 x its timeout, 0.28 s in all; now 0.18 s).
    A node the reader never heard (its timeout borrowed from all peers') may be far rather
    than dead, and near the key it is waited for to the end of its call's 2 tries (0.24 s;
    test_a_reads_lookup_reaches_replicas_a_region_away), once: the next get skips it."""

    async def body(c: DhtCluster) -> None:
        loop = asyncio.get_running_loop()
        reader = c.nodes[9]
        dead = next(svc for svc in _nearest_known(c, reader, K) if svc is not reader)
        rto = reader.protocol.rtt.timeout(dead.node_id)
        heard = reader.protocol.rtt.sampled(dead.node_id)
        await c.remove(dead)
        start = loop.time()
        assert await reader.get(K) is None
        elapsed = loop.time() - start
        # One timeout (two if never heard), and round trips of 10 ms.
        assert elapsed < (2 if heard else 3) * rto, (elapsed, rto, heard)
        start = loop.time()
        assert await reader.get(K) is None
        assert loop.time() - start < rto

    run_cluster(body, n=14, seed=seed, latency=0.005, jitter=0.002)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_reads_lookup_reaches_replicas_a_region_away(seed: int) -> None:
    """Every node near a key is a region away from the reader (0.16 s round trips where its
    own region answers in 0.01 s), and the reader knows none of them: its read's lookup must
    reach them through its own region's answers. Before, the lookup counted each as silent at
    the timeout it borrowed from its near peers (0.1 s), found only its own region, and the
    get missed a record every replica held (3 of 100 gets at 1,000 simulated nodes)."""

    async def body(c: DhtCluster) -> None:
        writer = c.nodes[1]
        assert await writer.put(K, b"one", 600)
        target = int.from_bytes(key_id(K), "big")
        ordered = sorted(c.nodes, key=lambda svc: svc.node_id.value ^ target)
        far = {svc.node_id for svc in ordered[:12]}
        reader = ordered[-1]
        for node in far:
            reader.protocol.router.remove_contact(kad_node(node))
            reader.protocol.rtt._peers.pop(node, None)  # never heard: the shared estimate

        def region(src: NodeId, dst: NodeId, payload: bytes) -> bool:
            if (src in far) == (dst in far):
                return True
            c.overlay.inject(src, dst, payload, delay=0.08)
            return False

        c.overlay.check = region
        assert not any(n in far for n in reader.contacts())
        got = await reader.get(K)
        assert got is not None and got.value == b"one" and got.owner == writer.node_id

    run_cluster(body, n=40, seed=seed, latency=0.005, jitter=0.002)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_reads_lookup_does_not_wait_for_a_slow_peer_before_asking_the_next(seed: int) -> None:
    """A third of the nodes answer in 0.09 s, the rest in 0.01 s (all within the timeout):
    a read's lookup asks the next nearest node as soon as any answer makes room, so the slow
    peers cost it about two of their round trips, not one per round of the crawl (in rounds:
    0.45, 0.27 and 0.19 s for seeds 1-3; now 0.19-0.20 s); and it still finds the key's
    nearest nodes."""
    slow_s = 0.045  # one way

    async def body(c: DhtCluster) -> None:
        loop = asyncio.get_running_loop()
        slow = {svc.node_id for i, svc in enumerate(c.nodes) if i % 3 == 0}
        reader = next(svc for svc in c.nodes if svc.node_id not in slow)
        target = int.from_bytes(key_id(K), "big")
        nearest = sorted((svc.node_id for svc in c.nodes), key=lambda n: n.value ^ target)

        def delay(src: NodeId, dst: NodeId, payload: bytes) -> bool:
            if src not in slow and dst not in slow:
                return True
            c.overlay.inject(src, dst, payload, delay=slow_s)
            return False

        c.overlay.check = delay
        start = loop.time()
        found = await reader.lookups.lookup(key_id(K), hasty=True)
        elapsed = loop.time() - start
        by_distance = sorted(found, key=lambda n: n.value ^ target)
        assert by_distance[:8] == [n for n in nearest if n != reader.node_id][:8]
        assert elapsed < 2.5 * 2 * slow_s, elapsed

    run_cluster(body, n=60, seed=seed, latency=0.005, jitter=0.002)


def test_late_replicas_seats_do_not_hand_the_read_to_a_rival() -> None:
    """A guard (it passes on the old code too): a read that does not wait for late replicas
    still counts R votes at most (spares only fill seats, lookups leave unresponsive nodes
    out). With 3 of a key's 8 nearest nodes not answering reads and a rival's copy on every
    node beyond them, the owner's 5 copies outvote the rival's 3, read after read."""

    async def body(c: DhtCluster) -> None:
        loop = asyncio.get_running_loop()
        a, b = c.nodes[1], c.nodes[2]
        assert await a.put(K, b"a", 600)
        kid = key_id(K)
        target = int.from_bytes(kid, "big")
        ordered = sorted(c.nodes, key=lambda svc: svc.node_id.value ^ target)
        # A reader outside the key's 8 nearest (which nodes those are depends on the key).
        reader = next(svc for svc in ordered[8:] if svc not in (a, b))
        rival = Record.sign(b.identity, K, b"b", seq=1, expires_at=loop.time() + 600)
        for svc in ordered[8:]:
            if svc.storage.lookup(kid) is not None:
                svc.storage._remove(kid)
            assert svc.storage.offer(rival) is StoreOutcome.STORED
        assert all(svc.storage.lookup(kid) != rival for svc in ordered[:8])
        slow = {svc.node_id for svc in ordered[:3]}
        c.overlay.check = lambda src, dst, p: not (dst in slow and p[1 + MSG_ID_BYTES] == M_FETCH)
        for _ in range(3):
            got = await reader.get(K)
            assert got is not None and got.owner == a.node_id, got

    run_cluster(body, n=16, latency=0.005, jitter=0.002)
