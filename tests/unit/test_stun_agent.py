"""ipop.nat.stun: the sans-IO STUN agent (server, change requests, client transactions), the NAT
classification, and NodeCore's demultiplexing of STUN off the overlay socket."""

from __future__ import annotations

import itertools
import random

import pytest

from ipop.core import NodeCore
from ipop.errors import LocalProtocolError
from ipop.nat.kinds import NAT_KINDS, NatKind
from ipop.nat.stun import (
    SOURCE_ALT_BOTH,
    SOURCE_ALT_PORT,
    SOURCE_PRIMARY,
    STUN_DROP_REASONS,
    StunAgent,
    classify,
    direct_expected,
    filtering_behaviour,
    mapping_behaviour,
)
from ipop.testing.identities import make_identity, make_network
from ipop.types import Endpoint
from ipop.wire.stun import (
    BINDING_REQUEST,
    BINDING_RESPONSE,
    MAGIC_COOKIE,
    StunMessage,
    decode,
    encode,
)

NOW = 1_700_000_000.0
PRIMARY = Endpoint("203.0.113.10", 5800)
CLIENT = Endpoint("203.0.113.101", 40000)
TID = MAGIC_COOKIE.to_bytes(4, "big") + bytes(12)
CLASSIC = bytes(range(1, 17))


def _serving() -> StunAgent:
    return StunAgent(rng=random.Random(1), serve=True)


def _server(alt_host: str | None = "203.0.113.20") -> StunAgent:
    agent = _serving()
    agent.set_sources(PRIMARY, alt_port=5801, alt_host=alt_host)
    return agent


def _req(
    *, change_ip: bool = False, change_port: bool = False, tid: bytes = TID, padding: int = 80
) -> bytes:
    """A Binding request, padded (as ipop's client pads) so that the answer fits."""
    msg = StunMessage(
        BINDING_REQUEST, tid, change_ip=change_ip, change_port=change_port, padding=padding
    )
    return encode(msg)


def test_binding_is_answered_with_the_source_address() -> None:
    agent = _serving()
    agent.receive(_req(), CLIENT, now=NOW)
    [(source, data, dst)] = agent.datagrams_to_send()
    assert (source, dst) == (SOURCE_PRIMARY, CLIENT)
    msg = decode(data)
    assert msg.msg_type == BINDING_RESPONSE and msg.transaction == TID
    assert msg.xor_mapped == CLIENT and msg.mapped == CLIENT
    assert msg.other is None  # no alternate: nothing advertised


def test_classic_request_gets_classic_answer() -> None:
    agent = _server()
    agent.receive(_req(tid=CLASSIC), CLIENT, now=NOW)
    [(_, data, _)] = agent.datagrams_to_send()
    msg = decode(data)
    assert msg.classic and msg.mapped == CLIENT and msg.xor_mapped is None
    assert msg.other == Endpoint("203.0.113.20", 5801)  # as CHANGED-ADDRESS
    assert data[20:22] == b"\x00\x01"


@pytest.mark.parametrize(
    ("via", "change_ip", "change_port", "source"),
    [
        (SOURCE_PRIMARY, True, True, SOURCE_ALT_BOTH),
        (SOURCE_PRIMARY, False, True, SOURCE_ALT_PORT),
        (SOURCE_ALT_BOTH, False, False, SOURCE_ALT_BOTH),
        (SOURCE_ALT_BOTH, True, True, SOURCE_PRIMARY),
        (SOURCE_ALT_PORT, False, True, SOURCE_PRIMARY),
        (SOURCE_ALT_PORT, True, False, SOURCE_ALT_BOTH),
    ],
)
def test_change_request_leaves_from_the_named_socket(
    via: int, change_ip: bool, change_port: bool, source: int
) -> None:
    agent = _server()
    agent.receive(_req(change_ip=change_ip, change_port=change_port), CLIENT, now=NOW, via=via)
    [(got_source, data, dst)] = agent.datagrams_to_send()
    assert (got_source, dst) == (source, CLIENT)
    assert decode(data).origin == agent.sources[source]


@pytest.mark.parametrize(
    ("alt_host", "change_ip", "change_port"),
    [(None, True, True), ("203.0.113.20", True, False), (None, False, False)],
)
def test_change_we_cannot_serve_is_dropped_not_faked(
    alt_host: str | None, change_ip: bool, change_port: bool
) -> None:
    agent = _serving()
    if alt_host is not None or not (change_ip or change_port):
        agent.set_sources(PRIMARY, alt_port=5801, alt_host=alt_host)
    agent.receive(_req(change_ip=change_ip, change_port=change_port), CLIENT, now=NOW)
    out = agent.datagrams_to_send()
    if change_ip or change_port:
        assert out == [] and agent.drops["change_unsupported"] == 1
    else:
        assert len(out) == 1


def test_garbage_and_strays_are_counted() -> None:
    agent = _server()
    agent.receive(b"\x00\x01\x00\x04" + TID, CLIENT, now=NOW)
    agent.receive(encode(StunMessage(BINDING_RESPONSE, TID, mapped=CLIENT)), CLIENT, now=NOW)
    unknown = _req()[:2] + b"\x00\x08" + TID + b"\x00\x06\x00\x04abcd"
    agent.receive(unknown, CLIENT, now=NOW)
    agent.receive(_req(), CLIENT, now=NOW, via=7)
    assert agent.datagrams_to_send() == []
    assert agent.drops == {
        "stun_bad_length": 1,
        "stun_unmatched": 1,
        "stun_unknown_attr": 1,
        "stun_bad_source": 1,
    }


def test_every_drop_is_counted_under_a_known_reason() -> None:
    agent = _server()
    rng = random.Random(4)
    for k in range(3000):
        junk = bytes([rng.randrange(4)]) + rng.randbytes(rng.randrange(0, 120))
        for data in (junk, _req(padding=0), _req()):
            agent.receive(data, CLIENT, now=NOW + k / 100, via=rng.randrange(4))
    agent.datagrams_to_send()
    assert agent.drops and set(agent.drops) <= STUN_DROP_REASONS


def test_set_sources_refuses_nonsense() -> None:
    agent = StunAgent(rng=random.Random(1))
    with pytest.raises(LocalProtocolError):
        agent.set_sources(PRIMARY, alt_port=5800, alt_host=None)
    with pytest.raises(LocalProtocolError):
        agent.set_sources(PRIMARY, alt_port=5801, alt_host=PRIMARY.host)


def test_client_transaction_matches_and_records_the_source() -> None:
    client = StunAgent(rng=random.Random(2))
    server = _server()
    key = client.request(PRIMARY, now=NOW, change_ip=True, change_port=True)
    [(_, data, dst)] = client.datagrams_to_send()
    assert dst == PRIMARY and client.take_result(key) is None and client.pending(key)
    server.receive(data, CLIENT, now=NOW)
    [(source, reply, _)] = server.datagrams_to_send()
    client.receive(reply, server.sources[source], now=NOW + 0.01)
    outcome = client.take_result(key)
    assert outcome is not None and outcome.answer is not None
    assert outcome.answer.mapped == CLIENT
    assert outcome.answer.source == Endpoint("203.0.113.20", 5801)
    assert outcome.answer.rtt_s == pytest.approx(0.01)
    assert client.take_result(key) is None  # handed out once
    client.receive(reply, PRIMARY, now=NOW)  # a duplicate is a stray now
    assert client.drops["stun_unmatched"] == 1


def test_client_retransmits_with_doubling_rto_then_times_out() -> None:
    client = StunAgent(rng=random.Random(3))
    key = client.request(PRIMARY, now=NOW, rto_s=0.1, timeout_s=1.0)
    sends = [NOW] if client.datagrams_to_send() else []
    t = NOW
    while client.pending(key):
        timer = client.get_timer()
        assert timer is not None and timer > t
        t = timer
        client.handle_timer(now=t)
        if client.datagrams_to_send():
            sends.append(t)
    gaps = [round(b - a, 6) for a, b in itertools.pairwise(sends)]
    assert gaps == [0.1, 0.2, 0.4]
    outcome = client.take_result(key)
    assert outcome is not None and outcome.answer is None
    assert t == pytest.approx(NOW + 1.0) and client.get_timer() is None


def test_client_refuses_misuse() -> None:
    client = StunAgent(rng=random.Random(3))
    with pytest.raises(LocalProtocolError):
        client.request(PRIMARY, now=NOW, rto_s=0)
    for _ in range(64):
        client.request(PRIMARY, now=NOW)
    with pytest.raises(LocalProtocolError):
        client.request(PRIMARY, now=NOW)


def test_classic_client_request() -> None:
    client = StunAgent(rng=random.Random(4))
    client.request(PRIMARY, now=NOW, classic=True)
    [(_, data, _)] = client.datagrams_to_send()
    assert decode(data).classic


# --- classification ---------------------------------------------------------------------------


def test_classify_every_combination() -> None:
    assert classify("dependent", None) == "symmetric"
    assert classify("dependent", "endpoint-independent") == "symmetric"
    assert classify("none", None) is NatKind.NONE
    assert classify("none", "endpoint-independent") is NatKind.NONE
    assert classify("none", "address-dependent") == "restricted-cone"
    assert classify("endpoint-independent", "endpoint-independent") == "full-cone"
    assert classify("endpoint-independent", "address-dependent") == "restricted-cone"
    assert classify("endpoint-independent", "address-and-port-dependent") == (
        "port-restricted-cone"
    )
    assert classify("endpoint-independent", None) is None
    assert classify(None, "endpoint-independent") is None


def test_filtering_behaviour() -> None:
    assert filtering_behaviour(True, None) == "endpoint-independent"
    assert filtering_behaviour(False, True) == "address-dependent"
    assert filtering_behaviour(False, False) == "address-and-port-dependent"
    assert filtering_behaviour(None, None) is None
    assert filtering_behaviour(False, None) is None


def test_mapping_behaviour() -> None:
    s1, s2 = Endpoint("203.0.113.10", 5800), Endpoint("203.0.113.11", 5800)
    m1, m2 = Endpoint("203.0.113.101", 5800), Endpoint("203.0.113.101", 61000)
    local = [Endpoint("198.18.1.2", 5800)]
    assert mapping_behaviour([], local) is None
    assert mapping_behaviour([(s1, m1)], local) is None  # one destination tells nothing
    assert mapping_behaviour([(s1, m1), (s2, m1)], local) == "endpoint-independent"
    assert mapping_behaviour([(s1, m1), (s2, m2)], local) == "dependent"
    assert mapping_behaviour([(s1, local[0])], local) == "none"


def test_direct_expected_matches_the_measured_table() -> None:
    # shared/reference/README.md: plain punching 3/3 unless symmetric meets symmetric or
    # port-restricted; port guessing (ipop.nat.portguess) adds symmetric x port-restricted.
    measured = {
        ("port-restricted-cone", "port-restricted-cone"): True,
        ("symmetric", "port-restricted-cone"): True,
        ("symmetric", "symmetric"): False,
        ("symmetric", "full-cone"): True,
        ("symmetric", "restricted-cone"): True,
        ("port-restricted-cone", "full-cone"): True,
        ("port-restricted-cone", "restricted-cone"): True,
    }
    for (a, b), ok in measured.items():
        assert direct_expected(a, b) is ok, (a, b)
        assert direct_expected(b, a) is ok, (b, a)
    assert all(direct_expected(NatKind.NONE, k) for k in NAT_KINDS)
    assert direct_expected(None, NatKind.NONE) is None


# --- NodeCore demultiplexing ------------------------------------------------------------------


@pytest.fixture
def core() -> NodeCore:
    ca = make_network(now=NOW)
    ident = make_identity(ca, "n1", now=NOW)
    return NodeCore(ident, rng=random.Random(5), bootstrap=[], stun_serve=True)


def test_node_core_answers_stun_and_keeps_it_from_the_link(core: NodeCore) -> None:
    core.receive_datagram(_req(), CLIENT, now=NOW)
    assert core.receive_direct(_req(tid=CLASSIC), CLIENT, now=NOW, kind=4) is None
    out = core.datagrams_to_send(now=NOW)
    assert [dst for _, dst in out] == [CLIENT, CLIENT]
    assert decode(out[0][0]).xor_mapped == CLIENT
    assert core.stats["stun_in"] == 2
    assert core.link.drops["unknown_type"] == 0


def test_node_core_alt_sources_go_to_the_io_layer(core: NodeCore) -> None:
    core.stun.set_sources(PRIMARY, alt_port=5801, alt_host="203.0.113.20")
    core.receive_datagram(_req(change_ip=True, change_port=True), CLIENT, now=NOW)
    assert core.stun.drops["no_alt_socket"] == 1  # no I/O layer attached: counted
    sent: list[tuple[int, bytes, Endpoint]] = []
    core.stun_alt_send = lambda s, d, e: sent.append((s, d, e))
    core.receive_datagram(_req(change_ip=True, change_port=True), CLIENT, now=NOW)
    assert [(s, e) for s, _, e in sent] == [(SOURCE_ALT_BOTH, CLIENT)]
    assert core.datagrams_to_send(now=NOW) == []


def test_node_core_drives_client_timers(core: NodeCore) -> None:
    base = core.get_timer()
    key = core.stun.request(PRIMARY, now=NOW, rto_s=0.05, timeout_s=0.2)
    core.stun_flush()
    assert [d for _, d in core.datagrams_to_send(now=NOW)] != []
    timer = core.get_timer()
    assert timer is not None and timer <= NOW + 0.05 and (base is None or timer <= base)
    core.handle_timer(now=NOW + 0.05)
    assert len(core.datagrams_to_send(now=NOW + 0.05)) >= 1  # the retransmission
    core.handle_timer(now=NOW + 0.2)
    outcome = core.stun.take_result(key)
    assert outcome is not None and outcome.answer is None


def test_stun_over_a_relay_is_dropped(core: NodeCore) -> None:
    from ipop.types import NodeId, RelayPath

    path = RelayPath(NodeId(1), NodeId(2))
    core.receive_datagram(_req(), path, now=NOW)
    assert core.stun.drops["stun_relayed"] == 1
    assert core.datagrams_to_send(now=NOW) == []
