"""The native data path and its pure-Python twin are equal (issue 16; ipop.link.fastpath).

Three levels, each fed the same packets both ways, each requiring the same outputs, verdicts
and counters:

1. one key (:class:`BatchAead`): the native ``_fastpath.BatchAead`` against
   :class:`PyBatchAead`: the same wire bytes when sealing, and for runs of datagrams (valid,
   replayed, too old, past the message limit, tampered header, ciphertext or tag, keepalives,
   another key index, truncated, not DATA) the same stop, results and replay window;
2. the node (:class:`NodeCore`): :meth:`receive_direct_run` / :meth:`seal_ip_run` with each
   backend against the per-packet :meth:`receive_direct` / :meth:`seal_ip`: the same messages,
   link drops, link and node counters and per-session counters;
3. the data plane: in runs against one by one, with spoofed and misaddressed inner packets
   among them: the same frames on the TAP and the same drops.

The native side is skipped, with the reason, when ``ipop.link._fastpath`` was not built.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from ipaddress import IPv4Address
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipop.core import NodeCore
from ipop.errors import ConfigError
from ipop.link import fastpath
from ipop.link.config import LINK_DROP_REASONS
from ipop.link.crypto import AES_256_GCM, CHACHA20_POLY1305, CIPHER_IDS
from ipop.link.fastpath import BatchAead, PyBatchAead
from ipop.link.replay import ReplayWindow, Window
from ipop.overlay.messages import KIND_IP, TYPE_DIRECT
from ipop.tools.bench import dataplane_bench as bench
from ipop.types import NodeId, SocketPath
from ipop.vnet.packet import IPPROTO_UDP, build_ipv4
from ipop.wire.header import DATA_HEADER, TYPE_DATA

NATIVE = fastpath.native_class()
needs_native = pytest.mark.skipif(
    NATIVE is None,
    reason="ipop.link._fastpath not built (needs gcc, python3-dev, libssl-dev at pip install)",
)
BACKENDS = ["python", pytest.param("native", marks=needs_native)]
KEY = bytes(range(32))
INDEX = 0x01020304


def _native(cipher_id: int, key: bytes) -> BatchAead:
    assert NATIVE is not None
    return NATIVE(cipher_id, key)


def _window(aead: BatchAead, width: int) -> Window:
    """The window ``aead``'s open takes: the native one for the native key (shared with the
    lane's thread), else :class:`ReplayWindow`."""
    if isinstance(aead, PyBatchAead):
        return ReplayWindow(width)
    from ipop.link import _fastpath  # type: ignore[attr-defined]

    window: Window = _fastpath.Window(width)
    return window


# --- 1. one key ------------------------------------------------------------------------------


@needs_native
@pytest.mark.parametrize("cipher", [AES_256_GCM, CHACHA20_POLY1305])
def test_seal_gives_the_same_wire_bytes(cipher: str) -> None:
    cid = CIPHER_IDS[cipher]
    payloads: list[bytes | bytearray | memoryview] = [
        b"",
        b"\x06\x01",
        bytes(1402),
        bytearray(b"x" * 9000),
        memoryview(b"0123456789")[3:7],
    ]
    for counter in (0, 1, (1 << 31) - 3, (1 << 64) - 5):
        ours = PyBatchAead(cid, KEY).seal(INDEX, counter, payloads)
        assert _native(cid, KEY).seal(INDEX, counter, payloads) == ours
        assert [DATA_HEADER.unpack_from(d) for d in ours] == [
            (TYPE_DATA, INDEX, counter + i) for i in range(len(payloads))
        ]


def _tamper(data: bytes, at: int) -> bytes:
    b = bytearray(data)
    b[at % len(b)] ^= 0x40
    return bytes(b)


def _scenario(seal: Callable[[int, bytes], bytes]) -> list[bytes]:
    """Every kind of datagram a run may meet, in an order that exercises the window."""
    p = b"\x06\x01" + bytes(100)
    out = [seal(c, p) for c in (0, 1, 2)]
    out += [seal(1, p), seal(5, p), seal(3, p), seal(3, p)]  # replay, gap, late, replay
    out += [seal(4, b"")]  # keepalive
    out += [_tamper(seal(6, p), 7)]  # header (counter) tampered
    out += [_tamper(seal(7, p), 20), _tamper(seal(8, p), -1)]  # ciphertext, tag
    out += [seal(7, p), seal(40, p), seal(9, p), seal(33, p), seal(33, p)]  # jump; too old
    out += [seal(1000, p), seal(999, p)]  # past the limit (expired), then in order
    out += [seal(41, p)[:20]]  # truncated: the run stops
    out += [seal(42, p)]
    out += [b"\xc3" + (INDEX + 1).to_bytes(4, "big") + seal(43, p)[5:]]  # another index
    out += [seal(44, p), b"\xc1" + bytes(40), seal(45, p), b"", seal(46, p)]
    return out


def _equal_runs(datagrams: list[bytes], aeads: list[BatchAead], width: int) -> int:
    """Open ``datagrams`` with each AEAD, resuming after every stop; compare all the way."""
    windows = [_window(a, width) for a in aeads]
    i = steps = 0
    while i < len(datagrams):
        got = [a.open(datagrams, i, INDEX, 1000, w) for a, w in zip(aeads, windows, strict=True)]
        assert all(g == got[0] for g in got), (i, got)
        assert all(w.top == windows[0].top and w.seen == windows[0].seen for w in windows)
        stop, results = got[0]
        assert all(r in LINK_DROP_REASONS for r in results if isinstance(r, str))
        i = stop if stop > i else i + 1
        steps += 1
    return steps


@needs_native
@pytest.mark.parametrize("cipher", [AES_256_GCM, CHACHA20_POLY1305])
@pytest.mark.parametrize("width", [8, 32, 2048])
def test_open_gives_the_same_verdicts_and_window(cipher: str, width: int) -> None:
    cid = CIPHER_IDS[cipher]
    ref = PyBatchAead(cid, KEY)
    datagrams = _scenario(lambda c, p: ref.seal(INDEX, c, [p])[0])
    _equal_runs(datagrams, [ref, _native(cid, KEY)], width)
    # The twin's verdicts are the per-packet path's definitions (spot checks).
    _stop, results = ref.open(datagrams, 0, INDEX, 1000, ReplayWindow(width))
    assert results[:4] == [b"\x06\x01" + bytes(100)] * 3 + ["replay"]
    assert "auth_failed" in results and "expired_key" in results


@needs_native
@settings(max_examples=150, deadline=None)
@given(
    ops=st.lists(
        st.tuples(
            st.integers(0, 300),  # counter
            st.sampled_from(["ok", "hdr", "ct", "tag", "cut", "index", "type"]),
            st.integers(0, 2000),  # where to tamper
        ),
        max_size=60,
    ),
    width=st.sampled_from([1, 7, 64, 2048]),
    limit=st.sampled_from([50, 1 << 40]),
)
def test_random_runs_are_equal(ops: list[tuple[int, str, int]], width: int, limit: int) -> None:
    ref, nat = PyBatchAead(1, KEY), _native(1, KEY)
    datagrams = []
    for counter, how, at in ops:
        d = ref.seal(INDEX, counter, [bytes(at % 300)])[0]
        if how == "hdr":
            d = _tamper(d, 1 + at % 12)
        elif how == "ct":
            d = _tamper(d, 13 + at)
        elif how == "tag":
            d = _tamper(d, -1 - at % 16)
        elif how == "cut":
            d = d[: at % len(d)]
        elif how == "index":
            d = d[:1] + (at + 7).to_bytes(4, "big") + d[5:]
        elif how == "type":
            d = bytes([0xC0 + at % 64]) + d[1:]
        datagrams.append(d)
    wr, wn = ReplayWindow(width), _window(nat, width)
    i = 0
    while i < len(datagrams):
        got_r = ref.open(datagrams, i, INDEX, limit, wr)
        got_n = nat.open(datagrams, i, INDEX, limit, wn)
        assert got_r == got_n
        assert (wr.top, wr.seen) == (wn.top, wn.seen)
        i = got_r[0] if got_r[0] > i else i + 1


FWD = b"\x02" + bytes(range(20))  # a RELAY_FORWARD's head (type, target)
DLV = b"\x03" + bytes(range(1, 21))  # the RELAY_DELIVER head a relay puts in its place


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cipher", [AES_256_GCM, CHACHA20_POLY1305])
def test_sealing_behind_a_head_is_sealing_the_head_and_the_rest(backend: str, cipher: str) -> None:
    cid = CIPHER_IDS[cipher]
    aead = PyBatchAead(cid, KEY) if backend == "python" else _native(cid, KEY)
    ref = PyBatchAead(cid, KEY)
    # A relay's forwards to one target: the run ends at the first that is not one (another
    # target, another type, a bare head, a cut head), each sealed as the delivery it becomes.
    payloads = [FWD + b"a", FWD + bytes(1400), b"\x02" + bytes(20) + b"x", FWD + b"b"]
    got = aead.seal(INDEX, 7, payloads, DLV, FWD)
    assert got == ref.seal(INDEX, 7, [DLV + b"a", DLV + bytes(1400)])
    for stop in (FWD, FWD[:-1], b"\x03" + FWD[1:] + b"z", b""):
        assert aead.seal(INDEX, 7, [FWD + b"a", stop, FWD + b"c"], DLV, FWD) == got[:1]
    assert aead.seal(INDEX, 7, [b"", FWD + b"a"], DLV, FWD) == []
    # A sender's forwards: the head before each datagram as it is; memoryviews as bytes.
    datagrams = [b"", bytes(1413), memoryview(b"0123456789")[2:5]]
    assert aead.seal(INDEX, 0, datagrams, FWD) == ref.seal(
        INDEX, 0, [FWD, FWD + bytes(1413), FWD + b"234"]
    )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("width", [8, 2048])
def test_opening_behind_a_head_is_opening_what_follows_it(backend: str, width: int) -> None:
    ref = PyBatchAead(1, KEY)
    aead = ref if backend == "python" else _native(1, KEY)
    plain = _scenario(lambda c, p: ref.seal(INDEX, c, [p])[0])
    wrapped = [DLV + d for d in plain]
    # Where the head is another origin's, cut, or missing, the run stops as at a non-DATA.
    wrapped[5] = b"\x03" + bytes(20) + plain[5]
    wrapped[9] = DLV[:-1]
    wrapped[14] = plain[14]
    expect = [*plain[:5], b"", *plain[6:9], b"", *plain[10:14], b"", *plain[15:]]
    windows = _window(aead, width), ReplayWindow(width)
    i = 0
    while i < len(wrapped):
        got = aead.open(wrapped, i, INDEX, 1000, windows[0], DLV)
        assert got == ref.open(expect, i, INDEX, 1000, windows[1]), i
        assert (windows[0].top, windows[0].seen) == (windows[1].top, windows[1].seen)
        i = got[0] if got[0] > i else i + 1


@needs_native
def test_native_refuses_bad_arguments_without_touching_the_window() -> None:
    nat = _native(1, KEY)
    with pytest.raises(ValueError):
        _native(1, b"short")
    with pytest.raises(ValueError):
        _native(9, KEY)
    with pytest.raises(TypeError):
        nat.open(cast(list[bytes], ()), 0, INDEX, 10, _window(nat, 8))
    with pytest.raises(TypeError):  # the native key opens with the native window only
        nat.open([], 0, INDEX, 10, cast(ReplayWindow, object()))
    with pytest.raises(TypeError):
        nat.open([], 0, INDEX, 10, ReplayWindow(8))
    with pytest.raises(OverflowError):
        nat.seal(-1, 0, [b""])
    with pytest.raises(OverflowError):
        nat.open([], 0, INDEX, 1 << 64, _window(nat, 8))
    with pytest.raises(ValueError):
        nat.open([], 0, INDEX, 1 << 63, _window(nat, 8))  # counters beyond the window's int64
    with pytest.raises(ValueError):
        nat.seal(INDEX, (1 << 64) - 1, [b"", b""])  # the second counter would wrap
    w = _window(nat, 8)
    assert nat.open([cast(bytes, bytearray(40))], 0, INDEX, 10, w) == (0, [])
    assert w.top == -1
    assert nat.open([], 5, INDEX, 10, w) == (0, [])


# --- 2. the node -----------------------------------------------------------------------------


def _byte_counts(core: NodeCore, peer: NodeCore) -> tuple[int, int]:
    st = core.link._peers[peer.local_id]
    return st.rx_bytes, st.tx_bytes


def _session(core: NodeCore, peer: NodeCore, linked: tuple[int, int]) -> dict[str, Any]:
    """The session's state; byte counts from `linked` on, since each pair's handshake
    signatures (fresh keys per scenario) differ in length by a byte or two."""
    st = core.link._peers[peer.local_id]
    kp = st.current
    assert kp is not None
    rx_bytes, tx_bytes = st.rx_bytes - linked[0], st.tx_bytes - linked[1]
    return {
        "rx": (st.rx_packets, rx_bytes, st.last_rx, st.path_rx, st.rx_streak),
        "tx": (st.tx_packets, tx_bytes, st.last_tx, kp.send_counter),
        "window": (kp.replay.top, bytes(kp.replay.seen)),
    }


def _node_counters(core: NodeCore) -> dict[str, Any]:
    return {
        "link_drops": dict(core.link.drops),
        "link_stats": dict(core.link.stats),
        "node": dict(core.stats),
        "overlay_drops": dict(core.overlay.drops),
    }


def _node_scenario(
    backend: str, runs: bool, now: float
) -> tuple[list[Any], dict[str, Any], dict[str, Any]]:
    """The same traffic through a fresh pair, in runs or one by one; what came out."""
    fastpath.use(backend)
    a, b = bench.linked_pair(now)
    a_linked, b_linked = _byte_counts(a, b), _byte_counts(b, a)
    msg = bytes((TYPE_DIRECT, KIND_IP)) + b"\x45" + bytes(60)
    msgs = [msg[:-i] if i else msg for i in range(20)]
    if runs:
        sealed = a.seal_ip_run(b.local_id, msgs, now=now)
        assert sealed is not None
        datagrams, path = sealed
    else:
        got = [a.seal_ip(b.local_id, m, now=now) for m in msgs]
        datagrams = [g[0] for g in got if g is not None]
        path = got[0][1] if got[0] is not None else None
    # A keepalive and a PMTU-sized slow-path message in the middle, a replay, tampering,
    # another index, a truncated and an unknown datagram.
    keepalive = a.link.seal(b.local_id, b"", now=now)[0]
    # Between runs of IP: DIRECT of another kind, a bare DIRECT type byte (each taken one by
    # one, as the event path takes them).
    other = [a.link.seal(b.local_id, m, now=now)[0] for m in (b"\x06\x09other", b"\x06")]
    stream = [*datagrams[:5], keepalive, *datagrams[5:8], *other, *datagrams[8:10]]
    stream += [datagrams[3], datagrams[9]]
    stream += [_tamper(datagrams[10], 30), _tamper(datagrams[11], 2), _tamper(datagrams[12], -3)]
    stream += [datagrams[13][:1] + b"\x00\x00\x00\x07" + datagrams[13][5:], datagrams[14][:25]]
    stream += [b"\xc7junk", *datagrams[15:], datagrams[15]]
    if runs:
        out: list[Any] = b.receive_direct_run(stream, bench.A_EP, now=now, kind=KIND_IP)
    else:
        out = []
        for d in stream:
            got1 = b.receive_direct(d, bench.A_EP, now=now, kind=KIND_IP)
            if got1 is not None:
                out.append(got1)
    b.flush(now=now)
    a.flush(now=now)
    out = [(src == a.local_id, m) for src, m in out] + [path]
    return (
        out,
        {**_node_counters(b), **_session(b, a, b_linked)},
        {**_node_counters(a), **_session(a, b, a_linked)},
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_node_in_runs_is_the_node_one_by_one(backend: str) -> None:
    now = time.time()
    ref = _node_scenario("python", False, now)
    got = _node_scenario(backend, True, now)
    assert got[0] == ref[0]
    assert got[1] == ref[1]  # receiver: drops, counters, session, replay window
    assert got[2] == ref[2]  # sender: counters, send counter
    assert ref[1]["link_drops"] == {
        "replay": 3,
        "auth_failed": 2,  # ciphertext, tag
        "unknown_index": 2,  # the tampered index, the other index
        "malformed": 1,
        "unknown_type": 1,
    }


def test_a_run_past_the_rekey_threshold_is_declined_and_sealed_one_by_one() -> None:
    now = time.time()
    a, b = bench.linked_pair(now)
    kp = a.link._peers[b.local_id].current
    assert kp is not None
    msg = bytes((TYPE_DIRECT, KIND_IP)) + b"\x45" + bytes(30)
    assert a.seal_ip_run(b.local_id, [msg], now=now) is not None  # (PMTU probes sealed too)
    kp.rekey_counter_at = kp.send_counter + 2
    before = kp.send_counter
    assert a.seal_ip_run(b.local_id, [msg] * 3, now=now) is None
    assert kp.send_counter == before  # nothing sealed, nothing counted
    assert a.seal_ip_run(b.local_id, [msg] * 2, now=now) is not None


# --- 3. the data plane -----------------------------------------------------------------------


def _plane_scenario(backend: str, runs: bool) -> tuple[list[bytes], dict[str, int], int]:
    async def go() -> tuple[list[bytes], dict[str, int], int]:
        fastpath.use(backend)
        now = time.time()
        with bench.planes(now, runs) as p:
            c_vip, d_vip = IPv4Address("100.64.0.30"), IPv4Address("100.64.0.99")
            p.dpb.owners.answer(c_vip.packed, NodeId(0xC0FFEE), now=now)  # another node's
            p.dpa.owners.answer(d_vip.packed, p.b.local_id, now=now)  # A believes B holds it
            good = [build_ipv4(bench.A_VIP, bench.B_VIP, IPPROTO_UDP, bytes(k)) for k in range(32)]
            spoofed = build_ipv4(c_vip, bench.B_VIP, IPPROTO_UDP, b"spoofed")
            misaddressed = build_ipv4(bench.A_VIP, d_vip, IPPROTO_UDP, b"x")
            # A's TAP: sealed in runs or one by one; B's side gets them, plus two replays.
            for packet in [*good[:10], spoofed, misaddressed, *good[10:]]:
                p.tap_a.send(bench.VIRTUAL_MAC + bench.TAP_MAC + b"\x08\x00" + packet)
            p.dpa._tap_seen = now  # busy: a whole batch per wake-up
            p.dpa._drain_tap()
            sent = [d for d, _ in cast(bench.SinkUdp, p.dpa.udp).sent]
            tap_out: list[tuple[bytes, bytes | memoryview]] = []
            p.dpb._take(sent + sent[:2], bench.A_EP, now, tap_out)
            p.dpb._flush_core(now)
            frames = [bytes(h) + bytes(q) for h, q in tap_out]
            drops = {str(k): v for k, v in p.dpb.drops.items()}
            return frames, {**drops, **dict(p.b.link.drops)}, len(sent)

    return asyncio.run(go())


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_data_plane_in_runs_is_the_data_plane_one_by_one(backend: str) -> None:
    ref = _plane_scenario("python", False)
    assert _plane_scenario(backend, True) == ref
    frames, drops, sent = ref
    assert len(frames) == 32 and sent == 34
    assert drops == {"spoofed_inner_src": 1, "inner_dst_not_ours": 1, "replay": 2}


def _punched_scenario(runs: bool) -> tuple[int, dict[str, int]]:
    """Datagrams handed over one by one by a punching socket's drain, as Node does."""

    async def go() -> tuple[int, dict[str, int]]:
        now = time.time()
        with bench.planes(now, runs) as p:
            msg = bytes((TYPE_DIRECT, KIND_IP)) + build_ipv4(
                bench.A_VIP, bench.B_VIP, IPPROTO_UDP, b"guessed"
            )
            sealed = [p.a.seal_ip(p.b.local_id, msg, now=now) for _ in range(6)]
            datagrams = [s[0] for s in sealed if s is not None]
            # Two paths: the session's own, then another (the slow path's roaming rules).
            for d in datagrams[:4] + datagrams[:1]:
                p.dpb._receive_punched(d, cast(SocketPath, bench.A_EP))
            for d in datagrams[4:]:
                p.dpb._receive_punched(d, SocketPath(3, bench.A_EP))
            await asyncio.sleep(0)  # the batch runs from the loop
            await asyncio.sleep(0)
            frames = 0
            with contextlib.suppress(BlockingIOError):
                while p.tap_b.recv(65535):
                    frames += 1
            return frames, {**dict(p.b.link.drops), **dict(p.b.link.stats)}

    return asyncio.run(go())


def test_punched_datagrams_in_runs_are_punched_datagrams_one_by_one() -> None:
    ref = _punched_scenario(False)
    assert _punched_scenario(True) == ref
    assert ref[0] == 6 and ref[1]["replay"] == 1


def test_the_backend_is_chosen_by_the_driver() -> None:
    assert fastpath.use("python") == "python"
    assert isinstance(fastpath.batch_aead(AES_256_GCM, KEY), PyBatchAead)
    with pytest.raises(ConfigError, match="IPOP_FASTPATH: 'fast' is not a data path"):
        fastpath.use("fast")
    if NATIVE is None:
        with pytest.raises(ConfigError, match="was not built"):
            fastpath.use("native")
    else:
        assert fastpath.use("native") == "native"
        assert not isinstance(fastpath.batch_aead(AES_256_GCM, KEY), PyBatchAead)
    assert fastpath.use("auto") == ("python" if NATIVE is None else "native")
    assert random.Random(0)  # (hypothesis and random are both deterministic here)


@needs_native
def test_the_fuzz_harness_finds_native_and_twin_equal_on_random_runs() -> None:
    from ipop.tools.bench.fastpath_fuzz import LANE_FRAMES, fuzz

    # 300 inputs, then the lane's thread fed as many frames as datagrams.
    assert fuzz(300, 7, None, None, guided=False) == 300 + 2 * LANE_FRAMES


# --- TCP receive coalescing (ipop.vnet.gro.coalesce and its native twin) ----------------------


@needs_native
def test_the_data_plane_coalesces_with_the_backend_it_was_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ipop.link import _fastpath  # type: ignore[attr-defined]
    from ipop.vnet.gro import coalesce

    assert fastpath.use("python") == "python" and fastpath.native_coalesce() is None
    assert fastpath.use("native") == "native"
    assert fastpath.native_coalesce() is _fastpath.coalesce

    async def plane_coalesce() -> object:
        with bench.planes(time.time()) as p:
            return p.dpb._coalesce

    # The driver's choice reaches the data plane (IPOP_FASTPATH, read when it starts).
    for choice, want in (("python", coalesce), ("native", _fastpath.coalesce)):
        monkeypatch.setenv("IPOP_FASTPATH", choice)
        assert asyncio.run(plane_coalesce()) is want, choice


@needs_native
def test_the_coalesce_fuzz_case_fails_when_the_twins_differ() -> None:
    """The harness can fail: a native side that loses a packet, or copies one it should hand
    back as given, is caught on random inputs."""
    from ipop.link import _fastpath  # type: ignore[attr-defined]
    from ipop.tools.bench.fastpath_fuzz import coalesce_input
    from ipop.vnet.gro import coalesce

    def loses_one(packets: list[bytes]) -> list[tuple[bytes, Any]]:
        return list(_fastpath.coalesce(packets))[:-1]

    def copies(packets: list[bytes]) -> list[tuple[bytes, Any]]:
        return [(v, bytes(p)) for v, p in _fastpath.coalesce(packets)]

    rng = random.Random(3)
    inputs = [rng.randbytes(rng.randrange(60, 600)) for _ in range(50)]
    for data in inputs:
        coalesce_input(data, _fastpath.coalesce, coalesce)  # equal: no error
    for wrong in (loses_one, copies):
        with pytest.raises(AssertionError, match="coalesce"):
            for data in inputs:
                coalesce_input(data, wrong, coalesce)


# --- the TAP's offloads cut and finished (ipop.vnet.offload and its native twins) --------------


@needs_native
def test_offload_twins_cut_and_finish_alike_and_the_data_plane_picks_by_backend(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ipop.link import _fastpath  # type: ignore[attr-defined]
    from ipop.tools.bench.fastpath_fuzz import offload_input
    from ipop.vnet import offload

    rng = random.Random(11)
    for _ in range(300):
        offload_input(rng.randbytes(rng.randrange(8, 600)), _fastpath)
    assert fastpath.use("python") == "python" and fastpath.native_offload() is None
    assert fastpath.use("native") == "native"
    assert fastpath.native_offload() == (_fastpath.split_tcp, _fastpath.finish_frame)

    async def plane_cutters() -> tuple[object, object]:
        with bench.planes(time.time()) as p:
            return p.dpb._split_tcp, p.dpb._finish_frame

    for choice, want in (
        ("python", (offload.split_tcp, offload.finish_frame)),
        ("native", (_fastpath.split_tcp, _fastpath.finish_frame)),
    ):
        monkeypatch.setenv("IPOP_FASTPATH", choice)
        assert asyncio.run(plane_cutters()) == want, choice


@needs_native
def test_the_offload_fuzz_case_fails_when_the_twins_differ() -> None:
    """The harness can fail: a native side whose segments lose a byte, or that finishes a
    checksum one off, is caught on random inputs."""
    from types import SimpleNamespace

    from ipop.link import _fastpath  # type: ignore[attr-defined]
    from ipop.tools.bench.fastpath_fuzz import offload_input

    def short_segments(*args: Any, **kw: Any) -> Any:
        got = _fastpath.split_tcp(*args, **kw)
        return [seg[:-1] for seg in got] if isinstance(got, list) else got

    def off_by_one(frame: bytearray) -> Any:
        why = _fastpath.finish_frame(frame)
        if why is None:
            frame[-1] ^= 1
        return why

    rng = random.Random(12)
    inputs = [rng.randbytes(rng.randrange(60, 600)) for _ in range(100)]
    for wrong in (
        SimpleNamespace(split_tcp=short_segments, finish_frame=_fastpath.finish_frame),
        SimpleNamespace(split_tcp=_fastpath.split_tcp, finish_frame=off_by_one),
    ):
        with pytest.raises(AssertionError, match="differs"):
            for data in inputs:
                offload_input(data, wrong)
