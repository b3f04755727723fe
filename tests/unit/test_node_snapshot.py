"""NodeCore.snapshot(): every layer's status material in one frozen object; PublicView."""

from __future__ import annotations

import dataclasses
import random

import pytest

from ipop.core import NodeCore, NodeSnapshot, PublicView
from ipop.testing.identities import make_identity, make_network
from ipop.types import Endpoint

NOW = 1_800_000_000.0
A_EP = Endpoint("198.51.100.1", 5800)
# b sits behind a NAT: its socket is 198.18.0.2:5800, a sees it at 203.0.113.2:40000.
B_SOCKET, B_PUBLIC = Endpoint("198.18.0.2", 5800), Endpoint("203.0.113.2", 40000)


def _linked() -> tuple[NodeCore, NodeCore, float]:
    ca = make_network("snap", now=NOW - 60)
    a = NodeCore(make_identity(ca, "a", now=NOW - 60), rng=random.Random(1), bootstrap=[])
    b = NodeCore(make_identity(ca, "b", now=NOW - 60), rng=random.Random(2), bootstrap=[A_EP])
    a.overlay.set_local_endpoints([A_EP])
    b.overlay.set_local_endpoints([B_SOCKET])
    a.start(now=NOW)
    b.start(now=NOW)
    t = NOW
    for _ in range(40):  # deliver until quiet, a timer tick now and then
        t += 0.5
        for core in (a, b):
            core.handle_timer(now=t)
        moved = True
        while moved:
            moved = False
            for data, dst in a.datagrams_to_send(now=t):
                if dst == B_PUBLIC:
                    b.receive_datagram(data, A_EP, now=t)
                    moved = True
            for data, dst in b.datagrams_to_send(now=t):
                if dst == A_EP:
                    a.receive_datagram(data, B_PUBLIC, now=t)
                    moved = True
    return a, b, t


def test_a_fresh_core_has_an_empty_snapshot() -> None:
    ca = make_network("snap", now=NOW - 60)
    core = NodeCore(make_identity(ca, "c", now=NOW - 60), rng=random.Random(1), bootstrap=[])
    snap = core.snapshot()
    assert snap.node_id == core.local_id and snap.links == () and snap.shortcuts == {}
    assert snap.public == PublicView(None, False, False) and not snap.overlay.routable
    assert list(snap.drops) == ["link", "overlay", "stun", "crl", "network_crl"]
    assert list(snap.counters) == ["link", "overlay", "node", "crl", "network_crl"]
    assert snap.crl_number == 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.crl_number = 1  # type: ignore[misc]


def test_the_snapshot_holds_each_layers_own_reading() -> None:
    a, b, _ = _linked()
    snap = b.snapshot()
    assert isinstance(snap, NodeSnapshot)
    assert [i.peer for i in snap.links] == [a.local_id] == [i.peer for i in b.link.peers()]
    assert snap.overlay == b.overlay.snapshot()
    assert snap.endpoints == b.overlay.endpoints()
    # a told b where it saw b come from: one public address, its port not b's socket's.
    assert snap.public == PublicView(B_PUBLIC.host, symmetric=False, translated=True)
    assert snap.public == b.public_view()
    assert snap.counters["link"] == dict(b.link.stats) and snap.counters["node"] == dict(b.stats)
    # A copy: the layers counting on does not change a snapshot already taken.
    before = dict(snap.counters["link"])
    b.link.stats["handshake_ok"] += 1
    assert snap.counters["link"] == before
