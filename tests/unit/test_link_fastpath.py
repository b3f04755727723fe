"""The data-plane fast path of the session layer: LinkLayer.seal_direct / open_data.

Each must have exactly the effects of the slow path it replaces (seal + outbox, and
receive_datagram + LinkMessage) except for where the result goes.
"""

from __future__ import annotations

import random

import pytest

from ipop.identity import NetworkCA, NodeIdentity
from ipop.link.events import LinkMessage, LinkPathChanged
from ipop.link.layer import LinkConfig, LinkLayer
from ipop.types import Endpoint, NodeId, RelayPath, SocketPath

NOW = 1_795_305_600.0
A_EP = Endpoint("198.51.100.1", 5800)
B_EP = Endpoint("198.51.100.2", 5800)
B_EP2 = Endpoint("198.51.100.2", 5801)


def _pair(config: LinkConfig | None = None) -> tuple[LinkLayer, LinkLayer]:
    ca = NetworkCA.create("fastnet", now=NOW - 60)
    a = LinkLayer(NodeIdentity.generate(ca, "a", now=NOW - 60), rng=random.Random(1), config=config)
    b = LinkLayer(NodeIdentity.generate(ca, "b", now=NOW - 60), rng=random.Random(2), config=config)
    a.connect(B_EP, now=NOW)
    for _ in range(3):
        for data, _path in a.datagrams_to_send(now=NOW):
            b.receive_datagram(data, A_EP, now=NOW)
        for data, _path in b.datagrams_to_send(now=NOW):
            a.receive_datagram(data, B_EP, now=NOW)
    while a.next_event() or b.next_event():
        pass
    assert a.is_up(b.local_id) and b.is_up(a.local_id)
    return a, b


def test_seal_direct_is_seal_without_the_outbox() -> None:
    a, b = _pair()
    before = {i.peer: i for i in a.peers()}[b.local_id]
    sealed = a.seal_direct(b.local_id, memoryview(b"\x06\x02hello"), now=NOW + 1)
    assert sealed is not None
    data, path = sealed
    assert path == B_EP
    assert a.datagrams_to_send(now=NOW + 1) == []
    after = {i.peer: i for i in a.peers()}[b.local_id]
    assert after.packets_out == before.packets_out + 1
    assert after.bytes_out == before.bytes_out + len(data)
    assert after.last_tx == NOW + 1
    # The receiver's slow path opens it like any sealed DATA.
    b.receive_datagram(data, A_EP, now=NOW + 1)
    assert b.next_event() == LinkMessage(a.local_id, b"\x06\x02hello", A_EP)


def test_seal_direct_declines_without_session_or_on_a_relay_path() -> None:
    a, b = _pair()
    assert a.seal_direct(NodeId(7), b"x", now=NOW) is None
    a.set_path(b.local_id, RelayPath(NodeId(9), b.local_id))
    assert a.seal_direct(b.local_id, b"x", now=NOW) is None
    assert {i.peer: i for i in a.peers()}[b.local_id].packets_out == 1  # only the confirmation


def test_seal_direct_seals_for_a_punching_sockets_path() -> None:
    """A path port guessing found (a punching socket) is direct: the fast path seals for it
    and says which socket it leaves by; the receiver opens it like any DATA."""
    a, b = _pair()
    punched = SocketPath(3, B_EP2)
    a.set_path(b.local_id, punched)
    sealed = a.seal_direct(b.local_id, memoryview(b"\x06\x02hello"), now=NOW + 1)
    assert sealed is not None
    data, path = sealed
    assert path == punched
    b.receive_datagram(data, A_EP, now=NOW + 1)
    assert b.next_event() == LinkMessage(a.local_id, b"\x06\x02hello", A_EP)


def test_seal_direct_starts_a_rekey_like_seal() -> None:
    a, b = _pair(LinkConfig(rekey_after_messages=3, reject_after_messages=100))
    for _ in range(4):
        assert a.seal_direct(b.local_id, b"x", now=NOW) is not None
    assert a.stats["rekey_started"] == 1
    queued = a.datagrams_to_send(now=NOW)
    assert len(queued) == 1 and queued[0][1] == B_EP  # the Init, for the flush


def test_open_data_returns_the_payload_instead_of_an_event() -> None:
    a, b = _pair()
    data, _ = a.seal(b.local_id, b"\x06\x02packet", now=NOW + 1)
    before = {i.peer: i for i in b.peers()}[a.local_id]
    assert b.open_data(data, A_EP, now=NOW + 1) == (a.local_id, b"\x06\x02packet")
    assert b.next_event() is None
    after = {i.peer: i for i in b.peers()}[a.local_id]
    assert after.packets_in == before.packets_in + 1
    assert after.last_rx == NOW + 1
    # A replay is dropped and counted exactly as on the slow path.
    assert b.open_data(data, A_EP, now=NOW + 1) is None
    assert b.drops["replay"] == 1


def test_open_data_drops_garbage_like_receive_datagram() -> None:
    a, b = _pair()
    data, _ = a.seal(b.local_id, b"abc", now=NOW)
    tampered = data[:-1] + bytes([data[-1] ^ 1])
    assert b.open_data(tampered, A_EP, now=NOW) is None
    assert b.open_data(data[:10], A_EP, now=NOW) is None
    assert b.open_data(b"", A_EP, now=NOW) is None
    assert b.drops["auth_failed"] == 1
    assert b.drops["malformed"] == 1
    assert b.drops["empty"] == 1
    assert b.next_event() is None


def test_open_data_keeps_event_order_when_the_packet_roams() -> None:
    a, b = _pair()
    data, _ = a.seal(b.local_id, b"moved", now=NOW)
    assert b.open_data(data, Endpoint("198.51.100.1", 6000), now=NOW) is None
    ev = b.next_event()
    assert isinstance(ev, LinkPathChanged) and ev.reason == "roamed"
    assert b.next_event() == LinkMessage(a.local_id, b"moved", Endpoint("198.51.100.1", 6000))


def test_open_data_passes_keepalives_and_handshakes_through() -> None:
    a, b = _pair()
    keepalive, _ = a.seal(b.local_id, b"", now=NOW)
    assert b.open_data(keepalive, A_EP, now=NOW) is None
    assert b.next_event() is None
    # A handshake goes through receive_datagram: a rekey Init gets its Resp queued.
    a.connect(B_EP2, now=NOW, expected=b.local_id)
    (init, _), *_ = a.datagrams_to_send(now=NOW)
    answered = b.stats["handshake_answered"]
    assert b.open_data(init, A_EP, now=NOW + 0.001) is None
    assert b.stats["handshake_answered"] == answered + 1


@pytest.mark.parametrize("payload", [b"\x06\x02x", b"\x01something"])
def test_open_data_defers_to_events_already_queued(payload: bytes) -> None:
    a, b = _pair()
    data, _ = a.seal(b.local_id, b"first", now=NOW)
    b.receive_datagram(data, A_EP, now=NOW)  # leaves a LinkMessage queued
    data2, _ = a.seal(b.local_id, payload, now=NOW)
    assert b.open_data(data2, A_EP, now=NOW) is None
    assert b.next_event() == LinkMessage(a.local_id, b"first", A_EP)
    assert b.next_event() == LinkMessage(a.local_id, payload, A_EP)
