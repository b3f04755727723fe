"""STUN is served only where configured, rate-limited, and never answers with more bytes than
it got (issue 13, finding 11a: every node used to answer STUN from anyone, a reflector).

Written against what main already had (``StunAgent(rng=...)``, ``agent.serve = True`` as a
plain attribute), so that they fail there for the behaviour, not for an import.
"""

from __future__ import annotations

import random

from ipop import timing
from ipop.core import NodeCore
from ipop.nat.stun import SOURCE_PRIMARY, StunAgent
from ipop.testing.identities import make_identity, make_network
from ipop.types import Endpoint
from ipop.wire.stun import BINDING_REQUEST, MAGIC_COOKIE, StunMessage, decode, encode

NOW = 1_700_000_000.0
PRIMARY = Endpoint("203.0.113.10", 5800)
CLIENT = Endpoint("203.0.113.101", 40000)
TID = MAGIC_COOKIE.to_bytes(4, "big") + bytes(12)
CLASSIC = bytes(range(1, 17))


def _serving(alternates: bool = True) -> StunAgent:
    agent = StunAgent(rng=random.Random(1))
    agent.serve = True
    if alternates:
        agent.set_sources(PRIMARY, alt_port=5801, alt_host="203.0.113.20")
    return agent


def _bare(tid: bytes = TID, **flags: bool) -> bytes:
    return encode(StunMessage(BINDING_REQUEST, tid, **flags))


# Large enough for any answer; made large with SOFTWARE (which main also parses) rather than
# PADDING, so the rate-limit tests fail on main for the rate, not for the attribute.
BIG = encode(StunMessage(BINDING_REQUEST, TID, software="p" * 64))


def test_a_node_not_configured_to_serve_answers_nothing() -> None:
    agent = StunAgent(rng=random.Random(1))
    agent.receive(_bare(), CLIENT, now=NOW)
    assert agent.datagrams_to_send() == []
    ca = make_network(now=NOW)
    core = NodeCore(make_identity(ca, "n1", now=NOW), rng=random.Random(5), bootstrap=[])
    core.receive_datagram(_bare(), CLIENT, now=NOW)
    assert core.datagrams_to_send(now=NOW) == []


def test_no_answer_is_larger_than_its_request() -> None:
    agent = _serving()
    shapes = [
        _bare(),
        _bare(CLASSIC),
        _bare(change_ip=True, change_port=True),
        _bare(change_port=True),
    ]
    for i, request in enumerate(shapes):
        agent.receive(request, Endpoint("203.0.113.101", 40000 + i), now=NOW)
        for _, answer, _ in agent.datagrams_to_send():
            assert len(answer) <= len(request), (len(answer), len(request))


def test_padded_requests_from_our_client_get_their_answers() -> None:
    server = _serving()
    client = StunAgent(rng=random.Random(2))
    for change_ip, change_port in ((False, False), (True, True), (False, True)):
        key = client.request(PRIMARY, now=NOW, change_ip=change_ip, change_port=change_port)
        [(_, request, dst)] = client.datagrams_to_send()
        assert dst == PRIMARY
        server.receive(request, CLIENT, now=NOW)
        [(source, answer, to)] = server.datagrams_to_send()
        assert to == CLIENT and len(answer) <= len(request)
        client.receive(answer, server.sources[source], now=NOW)
        outcome = client.take_result(key)
        assert outcome is not None and outcome.answer is not None
        assert outcome.answer.mapped == CLIENT
    assert server.drops["stun_unpadded"] == 0


def test_one_source_is_rate_limited() -> None:
    agent = _serving(alternates=False)
    request = BIG
    answered = 0
    for k in range(1000):
        agent.receive(request, CLIENT, now=NOW + k / 1000)
        answered += len(agent.datagrams_to_send())
    assert answered <= 26  # main answered all 1,000
    assert timing.STUN_SOURCE_BURST + timing.STUN_SOURCE_RATE_PER_S + 1 <= 26
    assert agent.drops["stun_rate_limited"] >= 1000 - answered


def test_all_sources_together_are_rate_limited() -> None:
    agent = _serving(alternates=False)
    request = BIG
    rng = random.Random(9)
    answered = 0
    for k in range(20_000):
        src = Endpoint(f"198.18.{rng.randrange(256)}.{rng.randrange(1, 255)}", 1024 + k % 60000)
        agent.receive(request, src, now=NOW + k / 20_000)
        answered += len(agent.datagrams_to_send())
    assert answered <= 1501  # main answered all 20,000
    assert timing.STUN_GLOBAL_BURST + timing.STUN_GLOBAL_RATE_PER_S + 1 <= 1501


def test_answer_still_reports_the_source() -> None:
    agent = _serving(alternates=False)
    agent.receive(BIG, CLIENT, now=NOW)
    [(source, answer, to)] = agent.datagrams_to_send()
    assert (source, to) == (SOURCE_PRIMARY, CLIENT)
    assert decode(answer).xor_mapped == CLIENT
