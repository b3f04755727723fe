"""The DHT service's parts through their own public interfaces: Lookups, ReplicaCalls,
QuorumReader, QuorumWriter, Handoff (ipop.dht.{lookup,replicas,read,write,handoff}), and the
pure ``nearer`` count store-on-join decides with."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from ipop.dht import record as record_module
from ipop.dht.config import DhtConfig
from ipop.dht.handoff import nearer
from ipop.dht.record import Record, StoreOutcome, key_id, namespace_of, user_key
from ipop.dht.replicas import ReplicaCalls
from ipop.dht.storage import STORE_REASONS
from ipop.dht.wire import StoreAnswered
from ipop.errors import LocalProtocolError
from ipop.testing.fake_overlay import DhtCluster, run_cluster
from ipop.testing.identities import make_network
from ipop.testing.waiting import until
from ipop.types import NodeId


def key(c: DhtCluster, rest: str = "parts") -> str:
    """A user key of the cluster's network (its namespace names the cluster's CA)."""
    return user_key(c.namespace, rest)


def test_nearer_counts_nodes_strictly_nearer_and_stops_at_the_limit() -> None:
    target = 0b1000
    nodes = [0b1001, 0b1010, 0b1100, 0b0000, 0b1000]  # distances 1, 2, 4, 8, 0
    assert nearer(nodes, target, 3, limit=10) == 3  # 1, 2 and 0 are < 3
    assert nearer(nodes, target, 1, limit=10) == 1  # only the target itself
    assert nearer(nodes, target, 100, limit=2) == 2  # counting stops at the limit
    assert nearer([], target, 100, limit=2) == 0


def test_replica_calls_acks_count_accepted_answers_only() -> None:
    answers: dict[NodeId, StoreAnswered | None] = {
        NodeId(1): StoreAnswered(StoreOutcome.STORED, None),
        NodeId(2): StoreAnswered(StoreOutcome.UNCHANGED, None),
        NodeId(3): StoreAnswered(StoreOutcome.CONFLICT, None),
        NodeId(4): None,
    }
    assert ReplicaCalls.acks(answers) == 2
    assert ReplicaCalls.acks({}) == 0


def test_replica_calls_count_drops_by_checked_reason() -> None:
    async def body(c: DhtCluster) -> None:
        calls = c.nodes[0].replica_calls
        reason = sorted(STORE_REASONS)[0]
        calls.drop("fetched", reason)
        assert calls.drops == {f"fetched_{reason}": 1}
        assert c.nodes[0].drops[f"fetched_{reason}"] == 1  # the service's total includes it
        with pytest.raises(LocalProtocolError):
            calls.drop("fetched", "made_up")

    run_cluster(body, n=3)


def test_replica_calls_refuse_to_send_what_replicas_would_refuse() -> None:
    async def body(c: DhtCluster) -> None:
        svc = c.nodes[0]
        now = asyncio.get_running_loop().time()
        ours = Record.sign(svc.identity, key(c), b"v", seq=1, expires_at=now + 60)
        other = namespace_of(make_network("othernet", now=now).trust)
        foreign = Record.sign(svc.identity, user_key(other, "x"), b"v", seq=1, expires_at=now + 60)
        bare = Record.sign(svc.identity, "othernet:user:x", b"v", seq=1, expires_at=now + 60)
        assert svc.replica_calls.allowed(ours)
        assert not svc.replica_calls.allowed(foreign)  # not certified by that namespace's CA
        assert not svc.replica_calls.allowed(bare)
        assert svc.replica_calls.drops["own_key_wrong_ca"] == 1
        assert svc.replica_calls.drops["own_key_bad_namespace"] == 1

    run_cluster(body, n=3)


def test_replica_calls_store_quorum_and_fetch() -> None:
    async def body(c: DhtCluster) -> None:
        svc = c.nodes[2]
        now = asyncio.get_running_loop().time()
        record = Record.sign(svc.identity, key(c), b"v", seq=1, expires_at=now + 60)
        replicas = await svc.lookups.replica_set(record.key_id)
        assert len(replicas) == svc.config.replicas
        need = svc.config.needed(len(replicas))
        answers = await svc.replica_calls.store_quorum(replicas, record, need)
        assert set(answers) == set(replicas)
        assert ReplicaCalls.acks(answers) >= need
        answered, got = await svc.replica_calls.fetch_at(replicas[0], record.key_id)
        assert answered and got is not None and got.value == b"v"

    run_cluster(body, n=10)


def test_replica_calls_verify_the_copies_of_one_record_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A read fetches one record from R replicas: its signature is verified once, and a
    copy that differs in a byte is still refused."""
    verified: list[bytes] = []
    real = record_module.verify_signature

    def counting(pub: bytes, sig: bytes, data: bytes) -> bool:
        verified.append(sig)
        return real(pub, sig, data)

    monkeypatch.setattr(record_module, "verify_signature", counting)

    async def body(c: DhtCluster) -> None:
        svc = c.nodes[2]
        now = asyncio.get_running_loop().time()
        record = Record.sign(svc.identity, key(c), b"v", seq=1, expires_at=now + 60)
        replicas = await svc.lookups.replica_set(record.key_id)
        await svc.replica_calls.store_quorum(replicas, record, len(replicas))
        others = [p for p in replicas if p != svc.node_id][:4]
        verified.clear()
        for peer in others:
            answered, got = await svc.replica_calls.fetch_at(peer, record.key_id)
            assert answered and got == record
        assert verified == [record.sig]
        assert svc.replica_calls.checker.hits == len(others) - 1
        # Another signature over the same body is verified (and refused), not taken as seen.
        forged = dataclasses.replace(record, sig=bytes(64))
        answer = StoreAnswered(StoreOutcome.CONFLICT, forged)
        assert svc.replica_calls.verified_current(answer, record.key_id) is None
        assert verified == [record.sig, bytes(64)]
        assert svc.replica_calls.drops["answer_record_bad_signature"] == 1

    run_cluster(body, n=10)


def test_lookups_known_nearest_is_sorted_by_distance_and_includes_us() -> None:
    async def body(c: DhtCluster) -> None:
        svc = c.nodes[4]
        kid = key_id(key(c))
        near = svc.lookups.known_nearest(kid, 5)
        target = int.from_bytes(kid, "big")
        assert len(near) == 5
        assert near == sorted(near, key=lambda n: n.value ^ target)
        everyone = svc.lookups.known_nearest(kid, 100)
        assert svc.node_id in everyone
        assert set(svc.lookups.contacts()) | {svc.node_id} == set(everyone)

    run_cluster(body, n=8)


def test_lookups_bootstrap_through_nobody_fails() -> None:
    async def body(c: DhtCluster) -> None:
        loner = c.add_node()
        assert not await loner.lookups.bootstrap([loner.node_id])  # only ourselves: nobody
        assert loner.lookups.contacts() == []
        assert await loner.lookups.bootstrap([c.nodes[0].node_id])
        assert c.nodes[0].node_id in loner.lookups.contacts()

    run_cluster(body, n=4)


def test_writer_owns_what_it_wrote_and_reader_reads_it() -> None:
    async def body(c: DhtCluster) -> None:
        owner, other = c.nodes[1], c.nodes[6]
        assert await owner.writer.put(key(c), b"one", 60)
        assert set(owner.writer.owned()) == {key(c)}
        got = await other.reader.get(key(c))
        assert got is not None and got.value == b"one" and got.owner == owner.node_id
        assert not await other.writer.create(key(c), b"mine", 60)  # a live claim of another owner
        assert other.writer.owned() == {}
        assert await owner.writer.delete(key(c))
        assert owner.writer.owned() == {}

    run_cluster(body, n=10)


def test_handoff_offers_a_newcomer_the_records_it_is_near() -> None:
    # R=3 in 10 nodes: a newcomer is among the 3 nearest of some keys and not of others.
    config = DhtConfig(replicas=3, ksize=20)

    async def body(c: DhtCluster) -> None:
        keys = [key(c, f"k{i}") for i in range(12)]
        for i, k in enumerate(keys):
            assert await c.nodes[i % 10].put(k, b"v", 600)
        newcomer = c.add_node()  # not bootstrapped: nobody knows it yet
        everyone = [s.node_id for s in c.nodes]

        def among_nearest(k: str) -> bool:
            target = int.from_bytes(key_id(k), "big")
            ranked = sorted(everyone, key=lambda n: n.value ^ target)
            return newcomer.node_id in ranked[: config.replicas]

        expected = {k for k in keys if among_nearest(k)}
        assert expected and expected != set(keys)
        for holder in c.nodes[:10]:
            holder.handoff.offer(newcomer.node_id)
        assert sum(s.stats["handoffs"] for s in c.nodes) >= len(expected)

        def held() -> set[str]:
            return {r.key for r in newcomer.storage.records()}

        assert await until(lambda: held() == expected, 5.0), (held(), expected)

    run_cluster(body, n=10, config=config)


def test_handoff_offers_nothing_once_closed() -> None:
    async def body(c: DhtCluster) -> None:
        holder = c.nodes[0]
        assert await holder.put(key(c), b"v", 600)
        newcomer = c.add_node()
        await holder.close()
        holder.handoff.offer(newcomer.node_id)
        assert holder.stats["handoffs"] == 0

    run_cluster(body, n=5)
