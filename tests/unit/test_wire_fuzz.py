"""Hypothesis: garbage and mutated datagrams never raise out of, or get answers from, the core."""

from __future__ import annotations

import random
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipop.errors import RemoteProtocolError
from ipop.link import echo
from ipop.link.events import LinkEvent, ObservedEndpoint
from ipop.link.layer import LinkLayer
from ipop.link.pmtu import PROBE_TAG
from ipop.testing.clock import SIM_EPOCH
from ipop.testing.identities import make_identity, make_network
from ipop.types import Endpoint, NodeId, Path, RelayPath
from ipop.wire.handshake import (
    MAC2_BYTES,
    MAX_CERT_BYTES,
    MAX_CIPHERS,
    CookieReply,
    HandshakeInit,
    HandshakeResp,
)

NOW = SIM_EPOCH
A_EP = Endpoint("198.51.100.1", 5800)
B_EP = Endpoint("203.0.113.2", 5800)
B_EP2 = Endpoint("203.0.113.2", 5801)
C_EP = Endpoint("203.0.113.3", 5800)
CA = make_network(now=NOW - 60)
ID_A = make_identity(CA, "alice", now=NOW - 60)
ID_B = make_identity(CA, "bob", now=NOW - 60)
ID_C = make_identity(CA, "carol", now=NOW - 60)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@dataclass
class Scene:
    """B with an up session to A, an initiation of its own toward C, and valid datagrams."""

    b: LinkLayer
    valid: dict[str, bytes]


def _drain(ep: LinkLayer) -> tuple[list[tuple[bytes, Path]], list[LinkEvent]]:
    evs = []
    while (e := ep.next_event()) is not None:
        evs.append(e)
    return ep.datagrams_to_send(now=NOW), evs


def _up_pair(seed: int) -> tuple[LinkLayer, LinkLayer]:
    """A and B with a session up (A initiated), nothing queued at B."""
    a = LinkLayer(ID_A, rng=random.Random(seed))
    b = LinkLayer(ID_B, rng=random.Random(seed + 1))
    a.connect(B_EP, now=NOW)
    for _ in range(3):
        for d, _p in a.datagrams_to_send(now=NOW):
            b.receive_datagram(d, A_EP, now=NOW)
        for d, _p in b.datagrams_to_send(now=NOW):
            a.receive_datagram(d, B_EP, now=NOW)
    assert b.is_up(ID_A.node_id)
    return a, b


def make_scene(seed: int) -> Scene:
    a, b = _up_pair(seed)
    c = LinkLayer(ID_C, rng=random.Random(seed + 2))
    data, _ = a.seal(ID_B.node_id, b"payload", now=NOW)
    b.connect(C_EP, now=NOW)
    ((init_b, _),) = b.datagrams_to_send(now=NOW)
    c.receive_datagram(init_b, B_EP, now=NOW)
    ((resp_c, _),) = c.datagrams_to_send(now=NOW)
    a.connect(B_EP2, now=NOW + 1, expected=ID_B.node_id)
    ((init_a, _),) = a.datagrams_to_send(now=NOW + 1)
    _drain(b)
    return Scene(b, {"data": data, "resp": resp_c, "init": init_a})


def assert_silent(b: LinkLayer, data: bytes, path: Path) -> None:
    before = sum(b.drops.values())
    b.receive_datagram(data, path, now=NOW + 1)
    out, evs = _drain(b)
    assert out == [] and evs == []
    assert sum(b.drops.values()) == before + 1  # every refusal is counted


PATHS = st.sampled_from([A_EP, C_EP, RelayPath(ID_C.node_id, ID_A.node_id)])


@FUZZ
@given(data=st.binary(max_size=1500), seed=st.integers(0, 3), path=PATHS)
def test_random_bytes_never_raise_nor_answer(data: bytes, seed: int, path: Path) -> None:
    scene = make_scene(seed)
    assert_silent(scene.b, data, path)


@st.composite
def mutations(draw: st.DrawFn, original: bytes) -> bytes:
    buf = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete", "append"]))
        i = draw(st.integers(0, max(0, len(buf) - 1)))
        if kind == "flip" and buf:
            buf[i] ^= draw(st.integers(1, 255))
        elif kind == "set" and buf:
            buf[i] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del buf[i:]
        elif kind == "insert":
            buf[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete" and buf:
            del buf[i : i + draw(st.integers(1, 8))]
        elif kind == "append":
            buf += draw(st.binary(min_size=1, max_size=8))
    return bytes(buf)


@FUZZ
@given(which=st.sampled_from(["data", "resp", "init"]), seed=st.integers(0, 3), data=st.data())
def test_mutated_valid_datagrams_never_raise_nor_answer(
    which: str, seed: int, data: st.DataObject
) -> None:
    scene = make_scene(seed)
    original = scene.valid[which]
    path = {"data": A_EP, "resp": C_EP, "init": A_EP}[which]
    mutated = data.draw(mutations(original))
    # An Init's mac2 (its last 16 bytes) is outside the signature and ignored when we are not
    # under load: a copy differing only there is the genuine Init, rightly answered.
    same_init = (
        which == "init"
        and len(mutated) == len(original)
        and (mutated[:-MAC2_BYTES] == original[:-MAC2_BYTES])
    )
    if mutated != original and not same_init:
        assert_silent(scene.b, mutated, path)


def test_the_unmutated_datagrams_are_accepted() -> None:
    """Control for the two tests above: the originals do get through."""
    scene = make_scene(0)
    b = scene.b
    b.receive_datagram(scene.valid["data"], A_EP, now=NOW + 1)
    b.receive_datagram(scene.valid["resp"], C_EP, now=NOW + 1)
    b.receive_datagram(scene.valid["init"], A_EP, now=NOW + 1)
    out, evs = _drain(b)
    assert not b.drops
    assert [type(e).__name__ for e in evs] == ["LinkMessage", "LinkUp"]
    assert len(out) == 2  # the keepalive confirming C, the Resp to A's new Init


INDEX = st.integers(0, (1 << 32) - 1)
KEY32 = st.binary(min_size=32, max_size=32)
SIG = st.binary(min_size=64, max_size=64)
CERT = st.binary(min_size=1, max_size=MAX_CERT_BYTES)
IPV4 = st.integers(1, (1 << 32) - 1).map(lambda n: ".".join(str(b) for b in n.to_bytes(4, "big")))
OBSERVED = st.none() | st.builds(Endpoint, IPV4, st.integers(1, 65535))
RESPONDER = st.builds(NodeId, st.integers(0, (1 << 160) - 1)) | st.builds(
    Endpoint, IPV4, st.integers(1, 65535)
)


@given(
    st.builds(
        HandshakeInit,
        sender_index=INDEX,
        ephemeral=KEY32,
        timestamp_ms=st.integers(0, (1 << 64) - 1),
        ciphers=st.lists(st.integers(0, 255), min_size=1, max_size=MAX_CIPHERS).map(tuple),
        responder=RESPONDER,
        cert_der=CERT,
        signature=SIG,
        mac2=st.binary(min_size=16, max_size=16),
    )
)
def test_init_round_trips(msg: HandshakeInit) -> None:
    assert HandshakeInit.parse(msg.encode()) == msg


@given(
    st.builds(
        HandshakeResp,
        sender_index=INDEX,
        receiver_index=INDEX,
        ephemeral=KEY32,
        cipher=st.integers(0, 255),
        observed=OBSERVED,
        cert_der=CERT,
        signature=SIG,
    )
)
def test_resp_round_trips(msg: HandshakeResp) -> None:
    assert HandshakeResp.parse(msg.encode()) == msg


@given(st.binary(max_size=1200))
def test_parsers_on_garbage_raise_only_remote_errors_or_round_trip(data: bytes) -> None:
    for cls in (HandshakeInit, HandshakeResp, CookieReply):
        try:
            msg = cls.parse(data)
        except RemoteProtocolError as exc:
            assert exc.reason == "malformed"
        else:
            assert msg.encode() == data


@FUZZ
@given(tail=st.binary(max_size=40), seed=st.integers(0, 1))
def test_sealed_probe_kind_garbage_never_raises_nor_moves_our_endpoint(
    tail: bytes, seed: int
) -> None:
    """Authenticated payloads of the link's own kind (path MTU probes, rebinding echoes:
    PROBE_TAG first) from a peer: nothing raises, nothing but a well-formed *seen* (the
    peer's own observation) reports an endpoint of ours unasked, and only a well-formed echo
    or probe is answered, never with more bytes than it had."""
    a, b = _up_pair(seed)
    _drain(b)
    payload = bytes([PROBE_TAG]) + tail
    data, _ = a.seal(ID_B.node_id, payload, now=NOW + 1)
    b.receive_datagram(data, A_EP, now=NOW + 1)
    out, evs = _drain(b)
    msg = echo.parse(payload)
    if msg is None or msg[0] != echo.SEEN:
        assert not [e for e in evs if isinstance(e, ObservedEndpoint)]
    assert all(len(d) <= len(data) for d, _ in out)
    if msg is None and tail[:1] not in (b"\x00", b"\x01"):
        assert out == []
