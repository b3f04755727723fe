"""Relay channels (issue 16, deliverable 3; :mod:`ipop.overlay.channels`): a relayed link's data
crosses its relay unopened, and nobody but the channel's own ends can use one.

The trio of ``relay_bench`` (A and B linked through R) with channels on. A sends its runs on the
channel R bound for it; R and B take what arrives (A's datagrams and what strangers, other
members and a lying relay may send besides) one by one and in runs, with each fastpath backend,
and must give the same datagrams, IP packets, drops and counters; the assertions after that
say what those are. The tables' own rules (numbers, bounds, expiry, refreshes) are tested alone.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipop.core import NodeCore
from ipop.errors import RemoteProtocolError
from ipop.link import fastpath
from ipop.overlay import channels as channels_mod
from ipop.overlay.channels import ChannelBindings, ChannelTable
from ipop.overlay.messages import (
    CHANNEL_BIND,
    CHANNEL_BOUND,
    KIND_IP,
    TYPE_DIRECT,
    RelayChannel,
    decode_message,
)
from ipop.tools.bench import relay_bench as bench
from ipop.types import Endpoint, NodeId, RelayPath
from ipop.wire.header import (
    CHANNEL_HEADER,
    DATA_MIN_BYTES,
    TYPE_CHANNEL_FROM_RELAY,
    TYPE_CHANNEL_TO_RELAY,
    TYPE_DATA,
)

NATIVE = fastpath.native_class()
BACKENDS = [
    "python",
    pytest.param("native", marks=pytest.mark.skipif(NATIVE is None, reason="not built")),
]
STRANGER = NodeId(0xC0FFEE)
STRANGER_EP = Endpoint("203.0.113.99", 4000)
NOW = time.time()
IDS = bench.identities(NOW - 10)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _tamper(data: bytes, at: int) -> bytes:
    b = bytearray(data)
    b[at % len(b)] ^= 0x40
    return bytes(b)


def _take(
    core: NodeCore, stream: list[tuple[bytes, Endpoint]], now: float, runs: bool
) -> list[Any]:
    """``stream`` as the data plane hands it over (consecutive datagrams from one address as
    one run, or each alone): the IP packets that come up, returned or as events."""
    out: list[tuple[NodeId, bytes]] = []
    i = 0
    while i < len(stream):
        j = i
        while j < len(stream) and stream[j][1] == stream[i][1]:
            j += 1
        datagrams, ep = [d for d, _ in stream[i:j]], stream[i][1]
        out += bench.ip_received(core, datagrams, ep, now, runs=runs)
        i = j
    return out


def _counters(core: NodeCore) -> dict[str, Any]:
    return {
        "link_drops": dict(core.link.drops),
        "overlay_drops": dict(core.overlay.drops),
        "overlay_stats": {k: v for k, v in core.overlay.stats.items() if "channel" in k},
        "sessions": [(i.peer, i.packets_in, i.bytes_in, i.last_rx) for i in core.link.peers()],
    }


def _scenario(backend: str, runs: bool) -> dict[str, Any]:
    fastpath.use(backend)
    now = NOW
    trio = bench.relayed_trio(now - 10, IDS, channels=True)
    a, r, b = trio.a, trio.r, trio.b
    packets = [b"\x45" + bytes(40 + k) for k in range(16)]
    msgs = [bytes((TYPE_DIRECT, KIND_IP)) + p for p in packets]
    r_rx = r.link._peers[a.local_id].rx_packets
    assert a.send_relayed_run(b.local_id, msgs, now=now)
    a.flush(now=now)
    to_r = bench._deliver(a, bench.R_EP, now)
    assert [d[0] for d in to_r] == [TYPE_CHANNEL_TO_RELAY] * 16  # nothing sealed for R
    number = CHANNEL_HEADER.unpack_from(to_r[0])[1]

    # R, the relay: A's datagrams, and what others may send to R's channel.
    other = CHANNEL_HEADER.pack(TYPE_CHANNEL_TO_RELAY, number ^ 1)
    stream = [(d, bench.A_EP) for d in to_r[:6]]
    stream += [(to_r[6], STRANGER_EP)]  # a spoofed source
    stream += [(to_r[7], bench.B_EP)]  # another member, on A's channel
    stream += [(other + to_r[8][5:], bench.A_EP)]  # a channel nobody bound
    stream += [(to_r[8][:4], bench.A_EP)]  # too short for a header
    stream += [(d, bench.A_EP) for d in [*to_r[8:], to_r[6], to_r[7]]]  # (the real ones late)
    relayed = _take(r, stream, now, runs)
    out = r.datagrams_to_send(now=now)
    to_b = [d for d, p in out if p == bench.B_EP]
    told = [d for d, p in out if p == bench.A_EP]  # the unbound number, told A once
    assert len(told) + len(to_b) == len(out)
    # R opened nothing of it: its session with A heard none of these.
    assert r.link._peers[a.local_id].rx_packets == r_rx

    # B, the target: R's datagrams, and what a lying relay, a member or a stranger may send.
    e2e = a.link.seal_relayed_run(b.local_id, [msgs[0]], now=now)
    assert e2e is not None
    spare = bytes((TYPE_CHANNEL_FROM_RELAY,)) + to_b[0][1:5] + e2e[0][0]
    stream = [(d, bench.R_EP) for d in to_b[:4]]
    stream += [(to_b[1], bench.R_EP)]  # a replay
    stream += [(_tamper(to_b[4], 40), bench.R_EP)]  # tampered inside
    stream += [(spare, bench.A_EP)]  # valid inside, but not from the relay its session runs via
    stream += [(spare, STRANGER_EP)]  # the same from a stranger
    stream += [(to_b[0][:5] + bytes(10), bench.R_EP)]  # too short for DATA inside
    stream += [(to_b[0][:5] + b"\xc1" + bytes(60), bench.R_EP)]  # not DATA inside
    stream += [(d, bench.R_EP) for d in to_b[5:]]
    stream += [(spare, bench.R_EP)]  # the spoofed copies burnt nothing: from R it opens
    delivered = _take(b, stream, now, runs)
    return {
        "relayed": relayed,
        "told": len(told),
        # (The ciphertexts differ between runs: each trio's handshakes draw fresh keys.)
        "to_b": [d[:18] for d in to_b],
        "delivered": [(src == a.local_id, p) for src, p in delivered],
        "packets": [*packets[:6], *packets[8:], packets[6], packets[7]],  # as R passed them
        "r": _counters(r),
        "b": _counters(b),
    }


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_channel_in_runs_is_the_channel_one_by_one(backend: str) -> None:
    ref = _scenario("python", False)
    got = _scenario(backend, True)
    for key in ref:
        assert got[key] == ref[key], key
    # R passed on the 16 that came from A's address on A's channel, as they were but the type
    # (the spoofed copies cost the real ones nothing).
    assert ref["relayed"] == []
    assert len(ref["to_b"]) == 16
    assert all(d[0] == TYPE_CHANNEL_FROM_RELAY for d in ref["to_b"])
    assert ref["r"]["overlay_drops"] == {
        "relay_channel_source": 2,
        "relay_channel_unknown": 1,
        "relay_channel_malformed": 1,
    }
    assert ref["r"]["overlay_stats"]["relay_channel_forwarded"] == 16
    assert ref["told"] == ref["r"]["overlay_stats"]["relay_channel_told_unknown"] == 1
    # B took each of A's packets once, and the spare copy from R; nothing else.
    assert ref["delivered"] == [(True, p) for p in ref["packets"] if p != ref["packets"][4]] + [
        (True, ref["packets"][0])
    ]
    assert ref["b"]["overlay_drops"] == {
        "relay_channel_relay": 2,
        "relay_channel_malformed": 1,
        "relay_channel_unknown": 1,
    }
    assert ref["b"]["link_drops"] == {"replay": 1, "auth_failed": 1}


def _trio() -> bench.Trio:
    return bench.relayed_trio(NOW - 10, IDS, channels=True)


def _run_to_r(trio: bench.Trio, n: int = 4) -> list[bytes]:
    a, b = trio.a, trio.b
    msgs = [bytes((TYPE_DIRECT, KIND_IP)) + b"\x45" + bytes(40)] * n
    assert a.send_relayed_run(b.local_id, msgs, now=NOW)
    a.flush(now=NOW)
    return bench._deliver(a, bench.R_EP, NOW)


def test_a_channel_whose_target_left_is_dropped_and_forgotten() -> None:
    trio = _trio()
    a, r, b = trio.a, trio.r, trio.b
    to_r = _run_to_r(trio)
    r.overlay._forget(b.local_id, NOW)  # R's link to B is gone
    r.receive_direct_run(to_r, bench.A_EP, now=NOW, kind=KIND_IP)
    r.flush(now=NOW)
    assert [p for _, p in r.datagrams_to_send(now=NOW)] == [bench.A_EP]  # (UNKNOWN told)
    assert r.overlay.drops["relay_channel_unknown"] == 4  # forgotten with the link
    assert len(r.overlay._relay.channels.table) == 0
    # A's next BIND for B is refused as a forward would be: A drops its relayed link.
    bind = a.link.seal(r.local_id, RelayChannel(CHANNEL_BIND, b.local_id).encode(), now=NOW)[0]
    r.receive_datagram(bind, bench.A_EP, now=NOW)
    assert r.overlay.drops["relay_no_link"] == 1
    assert len(r.overlay._relay.channels.table) == 0


def test_a_target_whose_link_went_relayed_makes_the_channel_stale() -> None:
    trio = _trio()
    r, b = trio.r, trio.b
    to_r = _run_to_r(trio)
    row = r.overlay._table.get(b.local_id)
    assert row is not None
    row.path = RelayPath(via=STRANGER, peer=b.local_id)  # as if B moved behind a relay
    r.receive_direct_run(to_r, bench.A_EP, now=NOW, kind=KIND_IP)
    assert [p for _, p in r.datagrams_to_send(now=NOW)] == []
    assert r.overlay.drops["relay_channel_stale"] == 4
    assert len(r.overlay._relay.channels.table) == 0


def test_a_bound_nobody_asked_for_binds_nothing() -> None:
    trio = _trio()
    a, r, b = trio.a, trio.r, trio.b
    bound = len(a.overlay.relay_channels.bindings)
    # R names a channel for a target A never asked it about; B (a member, not A's relay for
    # anything) names one for A's link to R.
    lie = RelayChannel(CHANNEL_BOUND, STRANGER, 7).encode()
    a.receive_datagram(r.link.seal(a.local_id, lie, now=NOW)[0], bench.R_EP, now=NOW)
    b_says = RelayChannel(CHANNEL_BOUND, r.local_id, 9).encode()
    a.overlay._relay.channels.on_message(decode_message(b_says), b.local_id, NOW)  # type: ignore[arg-type]
    assert a.overlay.drops["relay_channel_unasked"] == 2
    assert len(a.overlay.relay_channels.bindings) == bound


def test_a_full_relay_answers_no_channel_and_the_link_keeps_to_forwards(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(channels_mod, "MAX_PER_ORIGIN", 0)
    trio = bench.relayed_trio(NOW - 10, IDS, channels=False)
    a, r, b = trio.a, trio.r, trio.b
    a.overlay._relay.channels._use = True
    msgs = [bytes((TYPE_DIRECT, KIND_IP)) + b"\x45" + bytes(40)] * 3
    for step in range(3):
        assert a.send_relayed_run(b.local_id, msgs, now=NOW + step)
        trio.move(NOW + step)
        trio.move(NOW + step)
    assert a.overlay.stats["relay_channel_none"] == 1  # asked once, told "none"
    assert a.overlay.stats["relay_channel_asked"] == 1  # not again before REFRESH_S
    assert len(a.overlay.relay_channels.bindings) == 0
    assert r.overlay.stats["relayed"] >= 9  # every packet went inside RELAY_FORWARD


def test_a_relay_that_lost_its_channels_tells_the_origin_which_binds_again() -> None:
    trio = _trio()
    a, r, b = trio.a, trio.r, trio.b
    old = CHANNEL_HEADER.unpack_from(_run_to_r(trio, 1)[0])[1]
    r.overlay._relay.channels.table = ChannelTable(first=old + 1000)  # as after a restart
    bench._deliver(r, bench.B_EP, NOW)
    stale = _run_to_r(trio, 3)
    # From a stranger's address: dropped, nobody told.
    r.receive_direct_run(stale, STRANGER_EP, now=NOW, kind=KIND_IP)
    r.flush(now=NOW)
    assert r.datagrams_to_send(now=NOW) == []
    # From A's: dropped, and A told once (a second run at once tells nobody).
    for _ in range(2):
        r.receive_direct_run(stale, bench.A_EP, now=NOW, kind=KIND_IP)
        r.flush(now=NOW)
    out = r.datagrams_to_send(now=NOW)
    assert [p for _, p in out] == [bench.A_EP]
    assert r.overlay.drops["relay_channel_unknown"] == 9
    assert r.overlay.stats["relay_channel_told_unknown"] == 1
    a.receive_datagram(out[0][0], bench.R_EP, now=NOW)
    assert a.overlay.stats["relay_channel_lost"] == 1
    # A's next run asks R again and goes inside RELAY_FORWARD meanwhile; then the new channel.
    to_r = _run_to_r(trio, 2)
    assert all(d[0] != TYPE_CHANNEL_TO_RELAY for d in to_r)
    assert a.overlay.stats["relay_channel_asked"] == 2
    r.receive_direct_run(to_r, bench.A_EP, now=NOW, kind=KIND_IP)
    r.flush(now=NOW)
    for data, ep in r.datagrams_to_send(now=NOW):  # the run to B, BOUND to A
        (b if ep == bench.B_EP else a).receive_datagram(data, bench.R_EP, now=NOW)
    to_r = _run_to_r(trio, 2)
    assert {CHANNEL_HEADER.unpack_from(d) for d in to_r} == {(TYPE_CHANNEL_TO_RELAY, old + 1000)}
    r.receive_direct_run(to_r, bench.A_EP, now=NOW, kind=KIND_IP)
    r.flush(now=NOW)
    to_b = bench._deliver(r, bench.B_EP, NOW)
    assert len(b.receive_direct_run(to_b, bench.R_EP, now=NOW, kind=KIND_IP)) == 2


@pytest.mark.parametrize("channels", [True, False])
@pytest.mark.parametrize("runs", [True, False])
def test_a_target_whose_session_runs_through_another_relay_still_takes_it(
    channels: bool, runs: bool
) -> None:
    """Each end keys a relayed link through a relay of its choice, so B's session with A may
    run through Y while A sends through R: B takes A's datagrams from R as from Y, on a
    channel as inside RELAY_DELIVER (the session's own checks decide)."""
    trio = bench.relayed_trio(NOW - 10, IDS, channels=channels)
    a, r, b = trio.a, trio.r, trio.b
    st = b.link._peers[a.local_id]
    st.path = RelayPath(via=STRANGER, peer=a.local_id)  # as if B had keyed it through Y
    to_r = _run_to_r(trio, 4)
    assert (to_r[0][0] == TYPE_CHANNEL_TO_RELAY) is channels
    r.receive_direct_run(to_r, bench.A_EP, now=NOW, kind=KIND_IP)
    r.flush(now=NOW)
    to_b = bench._deliver(r, bench.B_EP, NOW)
    got = _take(b, [(d, bench.R_EP) for d in to_b], NOW, runs)
    assert len(got) == 4
    assert b.overlay.drops["relay_channel_relay"] == 0


# --- the message and the tables alone ---------------------------------------------------------


def test_the_channel_message_round_trips_and_refuses_junk() -> None:
    msg = RelayChannel(CHANNEL_BOUND, NodeId(12345), 0xDEADBEEF)
    assert decode_message(msg.encode()) == msg
    with pytest.raises(RemoteProtocolError) as exc:
        decode_message(msg.encode()[:-1])
    assert exc.value.reason == "truncated"
    with pytest.raises(RemoteProtocolError) as exc:
        decode_message(bytes((0x0C, 0x04)) + msg.encode()[2:])
    assert exc.value.reason == "bad_flags"


def test_the_relays_table_numbers_bounds_and_expiry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(channels_mod, "MAX_PER_ORIGIN", 2)
    monkeypatch.setattr(channels_mod, "MAX_CHANNELS", 3)
    a, b, c, d = (NodeId(k) for k in (1, 2, 3, 4))
    t = ChannelTable(first=(1 << 32) - 1)  # the last number; 0 is never one
    ab = t.bind(a, b, now=0.0)
    assert ab == (1 << 32) - 1
    assert t.bind(a, b, now=1.0) == ab  # the same pair keeps its number
    ac = t.bind(a, c, now=1.0)
    assert ac == 1
    assert t.bind(a, d, now=1.0) == 0  # A's share is used up
    bc = t.bind(b, c, now=1.0)
    assert t.bind(c, d, now=1.0) == 0  # the table is full
    assert len({ab, ac, bc}) == 3
    got = t.get(ab, now=1.0)
    assert got is not None and (got.origin, got.target) == (a, b)
    # Not asked for within TTL_S: gone.
    assert t.get(ab, now=1.0 + channels_mod.TTL_S + 0.1) is None
    assert t.bind(c, d, now=1.0 + channels_mod.TTL_S + 0.1) != 0  # (expired ones make room)
    assert len(t) == 1
    t.forget(d)  # every channel from or to D
    assert len(t) == 0


def test_the_origins_bindings_ask_refresh_and_expire() -> None:
    via, peer = NodeId(1), NodeId(2)
    bs = ChannelBindings()
    assert bs.bound(via, peer, 5, now=0.0) is False  # never asked: nothing taken
    assert bs.use(via, peer, now=0.0) == (0, True)  # ask
    assert bs.use(via, peer, now=1.0) == (0, False)  # asked, waiting
    assert bs.use(via, peer, now=0.0 + channels_mod.RETRY_S) == (0, True)  # unanswered: again
    assert bs.bound(via, peer, 5, now=2.5)
    assert bs.use(via, peer, now=3.0) == (5, False)
    refresh = 2.0 + channels_mod.REFRESH_S
    assert bs.use(via, peer, now=refresh) == (5, True)  # a refresh, still on the channel
    # No answer to the refreshes: past USE_S since the last answer, back to forwards.
    assert bs.use(via, peer, now=2.5 + channels_mod.USE_S + 0.1)[0] == 0
    bs.forget(peer)
    assert bs.use(via, peer, now=100.0) == (0, True)  # forgotten: asked afresh
    assert len(bs) == 0


def test_a_channel_datagram_carries_one_whole_data_datagram() -> None:
    trio = _trio()
    to_r = _run_to_r(trio, 1)
    assert to_r[0][5] == TYPE_DATA


# --- garbage: never an exception, never an answer, never a forward it was not bound for -------

_FUZZ_TRIO: list[bench.Trio] = []


def _fuzz_trio() -> tuple[bench.Trio, bytes, bytes]:
    """One trio for every example (building one costs more than the examples), with a valid
    datagram of A's channel as R got it and as B got it."""
    if not _FUZZ_TRIO:
        _FUZZ_TRIO.append(_trio())
    trio = _FUZZ_TRIO[0]
    to_r = _run_to_r(trio, 1)
    trio.r.receive_direct_run(to_r, bench.A_EP, now=NOW, kind=KIND_IP)
    trio.r.flush(now=NOW)
    to_b = bench._deliver(trio.r, bench.B_EP, NOW)
    assert len(to_b) == 1
    # B took it already: a copy the example leaves whole (flips that cancel) is a replay.
    assert len(trio.b.receive_direct_run(to_b, bench.R_EP, now=NOW, kind=KIND_IP)) == 1
    return trio, to_r[0], to_b[0]


@FUZZ
@given(
    tails=st.lists(st.binary(max_size=90), min_size=1, max_size=6),
    flips=st.lists(st.integers(min_value=0, max_value=200), max_size=3),
    source=st.sampled_from([bench.A_EP, bench.B_EP, bench.R_EP, STRANGER_EP]),
    runs=st.booleans(),
)
def test_channel_garbage_never_raises_nor_answers(
    tails: list[bytes], flips: list[int], source: Endpoint, runs: bool
) -> None:
    trio, valid_r, valid_b = _fuzz_trio()
    r, b = trio.r, trio.b
    for core, valid, kind in ((r, valid_r, 0xC5), (b, valid_b, 0xC6)):
        datagrams = [bytes((kind,)) + t for t in tails]
        if flips:  # a valid datagram of the channel with bytes flipped past its header
            bad = bytearray(valid)
            for at in flips:
                bad[5 + at % (len(bad) - 5)] ^= 0x5A
            datagrams.append(bytes(bad))
        if runs:
            got = core.receive_direct_run(datagrams, source, now=NOW, kind=KIND_IP)
        else:
            got = [core.receive_direct(d, source, now=NOW, kind=KIND_IP) for d in datagrams]
            got = [g for g in got if g is not None]
        core.flush(now=NOW)
        out = core.datagrams_to_send(now=NOW)
        while core.next_event() is not None:
            pass
        assert got == []  # nothing forged opens
        if core is r:
            # R passes on only what came from A's address with A's channel's header.
            forwarded = [
                d
                for d in datagrams
                if source == bench.A_EP and d[:5] == valid[:5] and len(d) >= 5 + DATA_MIN_BYTES
            ]
            passed = [d for d, p in out if p == bench.B_EP and d[0] == 0xC6]
            assert passed == [b"\xc6" + d[1:] for d in forwarded]
            # Besides, at most an UNKNOWN (a DATA over the link) to the linked peer at the
            # source, A or B (once per RETRY_S: NOW stands still here), and none to others.
            told = [p for d, p in out if d[0] != 0xC6]
            linked = source in (bench.A_EP, bench.B_EP)
            assert told in ([], [source]) if linked else told == []
        else:
            assert out == []
