"""Interned NodeIds (ipop.idcache) and the DHT lookup heap that tests membership by id."""

from __future__ import annotations

import random

import pytest
from kademlia.node import Node, NodeHeap

from ipop import idcache
from ipop.dht.lookup import IndexedNodeHeap
from ipop.types import NodeId


def test_decoding_shares_one_object_per_id_and_matches_nodeid() -> None:
    raw = bytes(range(20))
    first = idcache.node_id_from_bytes(raw)
    assert first == NodeId.from_bytes(raw)
    assert idcache.node_id_from_bytes(bytearray(raw)) is first
    assert idcache.node_id_from_hex(raw.hex()) == first
    assert idcache.node_id_from_hex(raw.hex()) is idcache.node_id_from_hex(raw.hex())
    with pytest.raises(ValueError):
        idcache.node_id_from_bytes(raw[:19])
    with pytest.raises(ValueError):
        idcache.node_id_from_hex("zz")


def test_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(idcache, "_MAX", 8)
    monkeypatch.setattr(idcache, "_BY_BYTES", {})
    for i in range(100):
        assert idcache.node_id_from_bytes(i.to_bytes(20, "big")).value == i
    assert len(idcache._BY_BYTES) <= 8


def test_indexed_heap_behaves_like_kademlias() -> None:
    rng = random.Random(4)
    me = Node(rng.randbytes(20))
    pool = [Node(rng.randbytes(20)) for _ in range(60)]
    stock, ours = NodeHeap(me, 20), IndexedNodeHeap(me, 20)
    for _ in range(30):
        batch = rng.sample(pool, 8)
        for heap in (stock, ours):
            heap.push(batch)
            heap.push(batch[0])  # a single node, already present
        gone = [n.id for n in rng.sample(pool, 2)]
        stock.remove(gone)
        ours.remove(gone)
        probe = rng.choice(pool)
        assert (probe in ours) == (probe in stock)
        assert ours.get_ids() == stock.get_ids()
        assert len(ours.heap) == len(stock.heap)
