"""A relayed link in runs is the relayed link one by one (issue 16, deliverable 3).

The same traffic crosses A -> R -> B (``relay_bench.relayed_trio``: direct links to R, a session
between A and B through it) once as the data plane sends it one packet at a time
(``send_ip``, ``receive_direct``, the overlay's events) and once in runs (``send_relayed_run``,
``receive_direct_run``: forwards opened, checked and re-sealed a run at a time, deliveries
and the end-to-end datagrams inside them opened in runs), with each fastpath backend. Among
the valid datagrams: replayed and tampered ones on either hop, forwards the relay must refuse
(a target it holds no link to, a loop back to the origin) or cannot decode, deliveries naming
a spoofed origin (the receiver itself, the relay) or carrying a tampered, replayed or
unknown end-to-end datagram, and, at the receiver's data plane, inner packets with a spoofed
source or another destination. Both ways must give the same messages, TAP frames, drops and
counters on all three nodes.
"""

from __future__ import annotations

import asyncio
import socket
import time
from ipaddress import IPv4Address
from typing import Any

import pytest

from ipop.core import NodeCore
from ipop.link import fastpath
from ipop.overlay.events import Delivered
from ipop.overlay.messages import KIND_IP, KIND_IP_NET, TYPE_DIRECT, RelayDeliver, RelayForward
from ipop.tools.bench import dataplane_bench as planes
from ipop.tools.bench import relay_bench as bench
from ipop.types import NodeId
from ipop.vnet.networks import network_tag
from ipop.vnet.packet import IPPROTO_UDP, build_ipv4

NATIVE = fastpath.native_class()
BACKENDS = [
    "python",
    pytest.param("native", marks=pytest.mark.skipif(NATIVE is None, reason="not built")),
]
STRANGER = NodeId(0xC0FFEE)
NOW = time.time()
IDS = bench.identities(NOW - 10)  # one trio for every scenario: the same ids, the same times


def _tamper(data: bytes, at: int) -> bytes:
    b = bytearray(data)
    b[at % len(b)] ^= 0x40
    return bytes(b)


def _counters(core: NodeCore, *peers: NodeCore) -> dict[str, Any]:
    out: dict[str, Any] = {
        "link_drops": dict(core.link.drops),
        "link_stats": dict(core.link.stats),
        "node": dict(core.stats),
        "overlay_drops": dict(core.overlay.drops),
        "overlay_stats": dict(core.overlay.stats),
    }
    for i, peer in enumerate(peers):
        st = core.link._peers[peer.local_id]
        kp = st.current
        assert kp is not None
        out[f"session {i}"] = (
            (st.rx_packets, st.rx_bytes, st.last_rx, st.tx_packets, st.tx_bytes, st.last_tx),
            (kp.send_counter, kp.replay.top, bytes(kp.replay.seen)),
        )
    return out


def _receive(core: NodeCore, datagrams: list[bytes], ep: Any, now: float, runs: bool) -> list[Any]:
    """What the data plane hands the TAP checks: returned runs, or Delivered events."""
    return bench.ip_received(core, datagrams, ep, now, runs=runs)


def _scenario(backend: str, runs: bool, inner: list[bytes] | None = None) -> dict[str, Any]:
    fastpath.use(backend)
    now = NOW
    trio = bench.relayed_trio(now - 10, IDS)
    a, r, b = trio.a, trio.r, trio.b
    packets = inner or [b"\x45" + bytes(40 + k) for k in range(24)]
    msgs = [bytes((TYPE_DIRECT, KIND_IP)) + p for p in packets]

    # A, the sender: a run, or one by one.
    if runs:
        assert a.send_relayed_run(b.local_id, msgs, now=now)
    else:
        for m in msgs:
            assert a.send_ip(b.local_id, m[2:], now=now) is None
    a.flush(now=now)
    to_r = bench._deliver(a, bench.R_EP, now)
    assert len(to_r) == len(msgs)

    # R, the relay: the forwards, and what a member may send besides.
    def fwd(target: NodeId, data: bytes) -> bytes:
        return a.link.seal(r.local_id, RelayForward(target, data).encode(), now=now)[0]

    stream = [*to_r[:6], to_r[2], _tamper(to_r[6], 30), *to_r[7:10]]
    stream += [fwd(STRANGER, b"\xc3" + bytes(40)), fwd(a.local_id, b"\xc3" + bytes(40))]
    # A refused target again, after valid ones: its verdict is counted (and told) each time.
    stream += [*to_r[10:12], fwd(STRANGER, b"\xc3" + bytes(41)), *to_r[12:14]]
    stream += [a.link.seal(r.local_id, b"\x02" + bytes(5), now=now)[0]]  # undecodable
    stream += [fwd(b.local_id, _tamper(b"\xc3" + bytes(60), 3)), *to_r[14:]]
    before = r.overlay.stats["relayed"]
    relayed = _receive(r, stream, bench.A_EP, now, runs)
    out = r.datagrams_to_send(now=now)
    to_b = [d for d, p in out if p == bench.B_EP]
    refusals = [d for d, p in out if p == bench.A_EP]

    # B, the receiver: the deliveries, and what a lying relay may send besides.
    def dlv(origin: NodeId, data: bytes) -> bytes:
        return r.link.seal(b.local_id, RelayDeliver(origin, data).encode(), now=now)[0]

    inner_e2e = a.link.seal(b.local_id, msgs[0], now=now)[0]  # a valid end-to-end datagram
    stream = [*to_b[:5], to_b[1], _tamper(to_b[5], 40), *to_b[6:9]]
    stream += [dlv(b.local_id, inner_e2e), dlv(r.local_id, inner_e2e)]  # spoofed origins
    stream += [dlv(a.local_id, _tamper(inner_e2e, 30)), *to_b[9:12]]  # tampered inside
    stream += [dlv(b.local_id, inner_e2e), *to_b[12:13]]  # a spoofed origin again
    stream += [dlv(a.local_id, inner_e2e), dlv(a.local_id, inner_e2e)]  # once, then a replay
    stream += [dlv(STRANGER, b"\xc3" + bytes(60)), *to_b[13:]]  # an origin B holds no link to
    stream += [r.link.seal(b.local_id, b"\x03" + bytes(7), now=now)[0]]  # undecodable
    delivered = _receive(b, stream, bench.R_EP, now, runs)
    # A hears R's refusal (no link of its own to that target: a stale one, counted).
    assert _receive(a, refusals, bench.R_EP, now, runs) == []
    return {
        "relayed": (relayed, r.overlay.stats["relayed"] - before),
        "to_b": len(to_b),
        "delivered": [(src == a.local_id, p) for src, p in delivered],
        "a": _counters(a, r, b),
        "r": _counters(r, a, b),
        "b": _counters(b, r, a),
    }


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_relayed_link_in_runs_is_the_relayed_link_one_by_one(backend: str) -> None:
    ref = _scenario("python", False)
    got = _scenario(backend, True)
    for key in ref:
        assert got[key] == ref[key], key
    # R's own TAP gets nothing of it; R passed on the 23 of A's 24 it got untampered, and the
    # forward whose inside was tampered (R cannot tell); not the replay, not the refused.
    assert ref["relayed"] == ([], 24)
    assert ref["a"]["overlay_drops"] == {"relay_refused_stale": 2}  # R told A of STRANGER
    assert ref["r"]["overlay_drops"] == {"relay_no_link": 2, "relay_loop": 1, "truncated": 1}
    assert ref["r"]["link_drops"] == {"replay": 1, "auth_failed": 1}
    assert ref["b"]["overlay_drops"] == {"relay_bad_deliver": 3, "truncated": 1}
    # Outer and inner: a replay and a tampered datagram each; the junk A forwarded and the
    # stranger's name no key of B's (the stranger's starts a handshake back, as one by one).
    assert ref["b"]["link_drops"] == {"replay": 2, "auth_failed": 2, "unknown_index": 2}
    assert ref["b"]["link_stats"]["rehandshake_relayed_unknown"] == 1
    assert len(ref["delivered"]) == 24 - 2 + 1  # R lost two; the lying relay's valid copy


# --- the receiver's data plane: the same checks on what a relayed link brings ----------------


def _plane_scenario(backend: str, runs: bool) -> tuple[list[bytes], dict[str, int]]:
    c_vip, d_vip = IPv4Address("100.64.0.30"), IPv4Address("100.64.0.99")
    good = [build_ipv4(planes.A_VIP, planes.B_VIP, IPPROTO_UDP, bytes(k)) for k in range(16)]
    spoofed = build_ipv4(c_vip, planes.B_VIP, IPPROTO_UDP, b"spoofed")
    misaddressed = build_ipv4(planes.A_VIP, d_vip, IPPROTO_UDP, b"x")
    inner = [*good[:8], spoofed, misaddressed, *good[8:]]

    async def go() -> tuple[list[bytes], dict[str, int]]:
        fastpath.use(backend)
        now = NOW
        trio = bench.relayed_trio(now - 10, IDS)
        a, r, b = trio.a, trio.r, trio.b
        msgs = [bytes((TYPE_DIRECT, KIND_IP)) + p for p in inner]
        assert a.send_relayed_run(b.local_id, msgs, now=now)
        a.flush(now=now)
        r.receive_direct_run(bench._deliver(a, bench.R_EP, now), bench.A_EP, now=now, kind=2)
        r.flush(now=now)
        to_b = bench._deliver(r, bench.B_EP, now)
        tap, kernel = planes.fake_tap()
        dp = planes.dataplane(b, tap.fileno(), clock=lambda: now, runs=runs)
        try:
            dp.set_own_ip(planes.B_VIP)
            dp.owners.answer(planes.A_VIP.packed, a.local_id, now=now)
            dp.owners.answer(c_vip.packed, STRANGER, now=now)
            dp.owners.answer(d_vip.packed, r.local_id, now=now)
            tap_out: list[tuple[bytes, bytes | memoryview]] = []
            dp._tap_out = tap_out
            dp._take(to_b, bench.R_EP, now, tap_out)
            dp._flush_core(now)
            # What Node does with the slow path's Delivered IP packets (its driver's pump).
            while (ev := b.next_event()) is not None:
                if type(ev) is Delivered and ev.kind == KIND_IP:
                    dp._from_overlay(ev.src, ev.payload)
            dp._tap_out = None
            frames = [bytes(h) + bytes(q) for h, q in tap_out]
            return frames, {str(k): v for k, v in dp.drops.items()}
        finally:
            dp.close()
            for s in (tap, kernel):
                s.close()
            assert isinstance(dp.udp.sock, socket.socket)
            dp.udp.sock.close()

    return asyncio.run(go())


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_receivers_data_plane_in_runs_is_the_data_plane_one_by_one(backend: str) -> None:
    ref = _plane_scenario("python", False)
    assert _plane_scenario(backend, True) == ref
    frames, drops = ref
    assert len(frames) == 16
    assert drops == {"spoofed_inner_src": 1, "inner_dst_not_ours": 1}


# --- a daemon in several networks: tagged IP (KIND_IP_NET) over a relayed link -----------------


def _tagged_scenario(backend: str, runs: bool) -> dict[str, Any]:
    """A sends plain and tagged IP to B through R; B takes both kinds, as a daemon in several
    networks' data plane asks (``kind=KIND_IP, also=KIND_IP_NET``). Besides the run, R brings a
    replay and a tampered delivery, and one end-to-end datagram no run takes (B opens it
    alone, with the same two kinds)."""
    fastpath.use(backend)
    now = NOW
    trio = bench.relayed_trio(now - 10, IDS)
    a, r, b = trio.a, trio.r, trio.b
    tag = network_tag(b"1" * 32)
    packets = [build_ipv4(planes.A_VIP, planes.B_VIP, IPPROTO_UDP, bytes(k)) for k in range(12)]
    tagged = bytes((TYPE_DIRECT, KIND_IP_NET)) + tag
    msgs = [
        (tagged + p if k % 3 else bytes((TYPE_DIRECT, KIND_IP)) + p) for k, p in enumerate(packets)
    ]
    assert a.send_relayed_run(b.local_id, msgs, now=now)
    a.flush(now=now)
    r.receive_direct_run(bench._deliver(a, bench.R_EP, now), bench.A_EP, now=now, kind=KIND_IP)
    r.flush(now=now)
    to_b = bench._deliver(r, bench.B_EP, now)
    assert len(to_b) == len(msgs)

    def dlv(data: bytes) -> bytes:
        return r.link.seal(b.local_id, RelayDeliver(a.local_id, data).encode(), now=now)[0]

    inner = a.link.seal(b.local_id, tagged + packets[0], now=now)[0]
    stream = [*to_b[:4], to_b[1], _tamper(to_b[4], 40), *to_b[5:8], dlv(inner), *to_b[8:]]
    if runs:
        # The link declines a run at that one (as it does with an event queued, say): B's
        # core opens it alone, as one by one.
        take_run = b.link.open_run

        def open_run(datagrams: list[bytes], start: int, path: Any, **kw: Any) -> Any:
            ends = enumerate(datagrams[start:], start) if kw.get("head") else ()
            at = [i for i, d in ends if d.endswith(inner)]
            if at and at[0] == start:
                return None
            return take_run(datagrams[: at[0]] if at else datagrams, start, path, **kw)

        b.link.open_run = open_run  # type: ignore[method-assign]
        got = b.receive_direct_run(stream, bench.R_EP, now=now, kind=KIND_IP, also=KIND_IP_NET)
    else:
        each = (
            b.receive_direct(d, bench.R_EP, now=now, kind=KIND_IP, also=KIND_IP_NET) for d in stream
        )
        got = [g for g in each if g is not None]
    b.flush(now=now)
    # What the data plane gets: IP returned, or (one by one, as the slow path has it)
    # Delivered events of either IP kind; as (from A, kind, payload after the kind).
    returned = [(src == a.local_id, msg[1], msg[2:]) for src, msg in got]
    delivered, other = [], []
    while (ev := b.next_event()) is not None:
        if type(ev) is Delivered and ev.kind in (KIND_IP, KIND_IP_NET):
            delivered.append((ev.src == a.local_id, ev.kind, ev.payload))
        else:
            other.append(repr(ev))
    return {
        "returned": returned,
        "ip": returned + delivered,
        "other": other,
        "b": _counters(b, r, a),
    }


@pytest.mark.parametrize("backend", BACKENDS)
def test_tagged_ip_over_a_relayed_link_in_runs_is_one_by_one(backend: str) -> None:
    ref = _tagged_scenario("python", False)
    got = _tagged_scenario(backend, True)
    assert ref["returned"] == []  # one by one, what a relay brings comes as events
    assert got["ip"] == ref["ip"] and got["other"] == ref["other"] and got["b"] == ref["b"]
    # In runs every IP message came straight back to the data plane, tagged or not (none
    # became an event); the replay and the tampered delivery did not.
    ip = got["returned"]
    assert ip == ref["ip"]
    assert len(ip) == 12 - 1 + 1 and all(from_a for from_a, _, _ in ip)
    # Eight of the twelve tagged; the tampered one was (the fifth); the one alone is.
    assert sum(kind == KIND_IP_NET for _, kind, _ in ip) == 8 - 1 + 1
