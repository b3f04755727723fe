"""The lane (issue 16, the latency target; ipop.link.lane): the native thread and its twin.

1. The native ``_fastpath.Lane`` and :class:`PyLane` are equal: the same routes, frames and
   datagrams (valid, replayed, too old, tampered, cut, from another address, spoofed or
   misaddressed inside, past a limit, for another index) give the same datagrams out, packets
   in, hand-ups, windows, counters and harvests.
2. What the lane may not do, each with a test: deliver a packet the data plane would not
   (another address, a spoofed source, not for us), open a counter twice (with Python opening
   the same keys meanwhile), move a window on a forged datagram, send past the rekey
   threshold or a route's expiry.
3. The thread itself, over a fake TAP (a SOCK_SEQPACKET pair) and UDP sockets on 127.0.0.1:
   lone packets both ways, everything else handed up, the baton (after a hand-up the thread
   leaves the fd to Python until ``done``), a prompt stop.
4. :class:`ipop.aio.lane.LaneRoutes` on a linked pair of cores: routes what the data plane
   would send on the same keys, counts what the lane did as the link's own, and unroutes when
   the link's keys, path or owner answers change.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipop.aio.lane import LaneRoutes
from ipop.errors import ConfigError
from ipop.link import fastpath
from ipop.link.fastpath import PyBatchAead
from ipop.link.lane import PyLane
from ipop.link.replay import ReplayWindow
from ipop.overlay.messages import KIND_IP, TYPE_DIRECT
from ipop.tools.bench import dataplane_bench as bench
from ipop.types import Endpoint
from ipop.vnet.filter import PacketFilter
from ipop.vnet.owners import OwnerTable
from ipop.vnet.packet import IPPROTO_UDP, build_ipv4

NATIVE = fastpath.native_class()
needs_native = pytest.mark.skipif(
    NATIVE is None,
    reason="ipop.link._fastpath not built (needs gcc, python3-dev, libssl-dev at pip install)",
)
LEAD = bytes((TYPE_DIRECT, KIND_IP))
SEND_KEY, RECV_KEY = bytes(range(32)), bytes(range(1, 33))
LOCAL_INDEX, REMOTE_INDEX = 0x0A0B0C0D, 0x01020304
PEER = ("127.0.0.1", 5801)
ME = int(IPv4Address("100.64.0.10"))
PEER_VIPS = (int(IPv4Address("100.64.0.20")), int(IPv4Address("100.64.0.21")))
OTHER = int(IPv4Address("100.64.0.99"))
ETH = bytes(10) + b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\xfe\x08\x00"
NOW = 1000.0


def _mod() -> Any:
    from ipop.link import _fastpath  # type: ignore[attr-defined]

    return _fastpath


class Side:
    """One implementation's lane with its keys (the same key material for both)."""

    def __init__(self, native: bool, width: int = 64) -> None:
        if native:
            mod = _mod()
            self.lane: Any = mod.Lane(-1, -1, -1, -1, LEAD)
            self.send: Any = mod.BatchAead(1, SEND_KEY)
            self.recv: Any = mod.BatchAead(1, RECV_KEY)
            self.window: Any = mod.Window(width)
        else:
            self.lane = PyLane(LEAD)
            self.send, self.recv = PyBatchAead(1, SEND_KEY), PyBatchAead(1, RECV_KEY)
            self.window = ReplayWindow(width)

    def route(self, vips: tuple[int, ...] = PEER_VIPS, **kw: Any) -> bool:
        args: dict[str, Any] = {
            "max_frame": 1500,
            "counter_limit": 1 << 40,
            "expires": NOW + 60,
            "recv_limit": 1 << 40,
            "port": PEER[1],
        }
        args.update(kw)
        ok: bool = self.lane.route(
            LOCAL_INDEX, vips, self.send, REMOTE_INDEX, PEER[0], args["port"], args["max_frame"],
            args["counter_limit"], args["expires"], self.recv, self.window, args["recv_limit"],
        )  # fmt: skip
        return ok

    def state(self) -> tuple[Any, ...]:
        return (self.send.counter, self.window.top, bytes(self.window.seen))


def frame(dst: int, payload: bytes = b"x" * 40, src: int = ME, vnet: bytes = bytes(10)) -> bytes:
    packet = build_ipv4(IPv4Address(src), IPv4Address(dst), IPPROTO_UDP, payload)
    return vnet + ETH[10:] + packet


def datagram(counter: int, plain: bytes, index: int = LOCAL_INDEX) -> bytes:
    """What the peer seals to us under our index."""
    return PyBatchAead(1, RECV_KEY).seal(index, counter, [plain])[0]


def ip_in(src: int = PEER_VIPS[0], dst: int = ME, payload: bytes = b"pong") -> bytes:
    return LEAD + build_ipv4(IPv4Address(src), IPv4Address(dst), IPPROTO_UDP, payload)


# --- 1. the native lane is its twin ---------------------------------------------------------

_FRAME_KINDS = ["ok", "other_vip", "unrouted", "gso", "csum", "arp", "short", "big"]
_DGRAM_KINDS = ["ok", "replay", "tamper", "cut", "addr", "spoof", "not_ours", "kind", "index"]


def _frame_of(kind: int | str, size: int, vip: int) -> bytes:
    body = bytes(size % 1400)
    if kind == "other_vip":
        return frame(PEER_VIPS[1], body)
    if kind == "unrouted":
        return frame(OTHER, body)
    if kind == "gso":
        return frame(PEER_VIPS[0], body, vnet=b"\x00\x01" + bytes(8))
    if kind == "csum":
        return frame(PEER_VIPS[0], body, vnet=b"\x01" + bytes(9))
    if kind == "arp":
        f = bytearray(frame(PEER_VIPS[0], body))
        f[22:24] = b"\x08\x06"
        return bytes(f)
    if kind == "short":
        return frame(PEER_VIPS[0])[: 10 + 14 + (size % 20)]
    if kind == "big":
        return frame(PEER_VIPS[0], bytes(1600 + size % 100))
    return frame(vip, body)


def _dgram_of(kind: str, counter: int, size: int, seen: list[bytes]) -> tuple[bytes, int]:
    port = PEER[1]
    plain = ip_in(payload=bytes(size % 300))
    if kind == "replay" and seen:
        return seen[size % len(seen)], port
    if kind == "spoof":
        plain = ip_in(src=OTHER)
    elif kind == "not_ours":
        plain = ip_in(dst=OTHER)
    elif kind == "kind":
        plain = bytes((TYPE_DIRECT, 9)) + plain[2:]
    d = datagram(counter, plain, LOCAL_INDEX + (kind == "index"))
    if kind == "tamper":
        d = d[:20] + bytes([d[20] ^ 1]) + d[21:]
    elif kind == "cut":
        d = d[: size % len(d)]
    elif kind == "addr":
        port += 1
    seen.append(d)
    return d, port


@needs_native
@settings(max_examples=120, deadline=None)
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("frame"), st.sampled_from(_FRAME_KINDS), st.integers(0, 3000)),
            st.tuples(st.just("dgram"), st.sampled_from(_DGRAM_KINDS), st.integers(0, 80)),
            st.tuples(
                st.just("route"),
                st.sampled_from([1, 2]),
                st.sampled_from([100, 1500, 4000]),
                st.sampled_from([3, 1 << 40]),
            ),
            st.tuples(st.just("limits"), st.sampled_from([5, 1 << 40]), st.booleans()),
            st.tuples(st.just("local"), st.booleans(), st.booleans()),
            st.tuples(st.just("unroute"), st.just(0), st.just(0)),
            st.tuples(st.just("harvest"), st.just(0), st.just(0)),
        ),
        max_size=50,
    ),
    width=st.sampled_from([1, 8, 64]),
)
def test_the_native_lane_is_its_twin(ops: list[tuple[Any, ...]], width: int) -> None:
    sides = [Side(True, width), Side(False, width)]
    for side in sides:
        side.lane.set_local((ME,), ETH)
        side.route()
    seen: list[bytes] = []
    now = NOW
    for op in ops:
        now += 0.001
        name = op[0]
        if name == "frame":
            f = _frame_of(op[1], op[2], PEER_VIPS[0])
            got = [s.lane.process(f, now) for s in sides]
        elif name == "dgram":
            d, port = _dgram_of(op[1], op[2], op[2] * 7, seen)
            got = [s.lane.receive(d, PEER[0], port, now) for s in sides]
        elif name == "route":
            vips = PEER_VIPS[: op[1]]
            got = [s.route(vips, max_frame=op[2], counter_limit=op[3]) for s in sides]
        elif name == "limits":
            expires = now - 1 if op[2] else now + 60
            got = [s.route(recv_limit=op[1], expires=expires) for s in sides]
        elif name == "local":
            acc, eth = ((ME,) if op[1] else (OTHER,)), (ETH if op[2] else b"")
            got = [s.lane.set_local(acc, eth) for s in sides]
        elif name == "unroute":
            got = [s.lane.unroute(LOCAL_INDEX) for s in sides]
        else:
            got = [s.lane.harvest() for s in sides]
        assert got[0] == got[1], (op, got)
        assert sides[0].state() == sides[1].state(), op
    assert sides[0].lane.harvest() == sides[1].lane.harvest()


@pytest.mark.parametrize("native", [pytest.param(True, marks=needs_native), False])
def test_a_lone_packet_out_is_the_datagram_the_link_seals(native: bool) -> None:
    side = Side(native)
    assert side.route()
    f = frame(PEER_VIPS[1], b"ping")
    got = side.lane.process(f, NOW)
    assert got is not None
    data, host, port = got
    assert (host, port) == PEER
    # What LinkLayer._seal_run would send: DATA under the peer's index, counter 0, the
    # DIRECT IP message (the ethertype's two bytes become the DIRECT header).
    assert data == PyBatchAead(1, SEND_KEY).seal(REMOTE_INDEX, 0, [LEAD + f[24:]])[0]
    assert side.send.counter == 1
    (counts,) = side.lane.harvest()
    assert counts[:5] == (LOCAL_INDEX, 1, len(data), NOW, NOW)
    assert side.lane.harvest() == []


@pytest.mark.parametrize("native", [pytest.param(True, marks=needs_native), False])
def test_frames_the_lane_may_not_send_go_up(native: bool) -> None:
    side = Side(native)
    assert side.route(max_frame=200, counter_limit=2, expires=NOW + 1)
    assert side.lane.process(frame(OTHER), NOW) is None  # not routed
    assert side.lane.process(frame(PEER_VIPS[0], bytes(300)), NOW) is None  # too big
    assert side.lane.process(frame(PEER_VIPS[0]), NOW + 1) is None  # expired
    gso = frame(PEER_VIPS[0], vnet=b"\x01\x01" + bytes(8))
    assert side.lane.process(gso, NOW) is None  # an offload batch: Python cuts it
    assert side.lane.process(frame(PEER_VIPS[0]), NOW) is not None
    assert side.lane.process(frame(PEER_VIPS[0]), NOW) is not None
    assert side.lane.process(frame(PEER_VIPS[0]), NOW) is None  # the rekey threshold
    assert side.send.counter == 2


# --- 2. what the lane may not do ----------------------------------------------------------


@pytest.mark.parametrize("native", [pytest.param(True, marks=needs_native), False])
def test_only_what_the_data_plane_would_deliver_is_delivered(native: bool) -> None:
    side = Side(native)
    assert side.route()
    side.lane.set_local((ME,), ETH)
    ok = ip_in()
    assert side.lane.receive(datagram(0, ok), *PEER, NOW) == ("tap", ok[2:])
    # From another address (a roam, or someone else's): opened, up to Python, never written.
    assert side.lane.receive(datagram(1, ok), PEER[0], PEER[1] + 1, NOW) == (
        "opened",
        LOCAL_INDEX,
        1,
        ok,
    )
    # A source address the peer does not hold, and a packet not for us: Python's verdicts.
    spoofed, elsewhere = ip_in(src=OTHER), ip_in(dst=OTHER)
    assert side.lane.receive(datagram(2, spoofed), *PEER, NOW)[0] == "opened"
    assert side.lane.receive(datagram(3, elsewhere), *PEER, NOW)[0] == "opened"
    # Not IP (an overlay message inside the same keys): up, opened.
    other = bytes((TYPE_DIRECT, 9)) + b"hello"
    assert side.lane.receive(datagram(4, other), *PEER, NOW) == ("opened", LOCAL_INDEX, 1, other)
    # Without the header the data plane writes behind (no TAP yet): nothing is written.
    side.lane.set_local((ME,), b"")
    assert side.lane.receive(datagram(5, ok), *PEER, NOW)[0] == "opened"
    assert side.window.top == 5


@pytest.mark.parametrize("native", [pytest.param(True, marks=needs_native), False])
def test_forged_replayed_and_expired_datagrams_go_up_unopened(native: bool) -> None:
    side = Side(native)
    assert side.route(recv_limit=100, expires=NOW + 10)
    side.lane.set_local((ME,), ETH)
    good = datagram(7, ip_in())
    forged = good[:-1] + bytes([good[-1] ^ 1])
    assert side.lane.receive(forged, *PEER, NOW) is None
    assert side.window.top == -1  # a forgery never moves the window
    assert side.lane.receive(good, *PEER, NOW) is not None
    assert side.lane.receive(good, *PEER, NOW) is None  # replayed
    assert side.lane.receive(datagram(100, ip_in()), *PEER, NOW) is None  # the message limit
    assert side.lane.receive(datagram(8, ip_in()), *PEER, NOW + 10) is None  # expired
    assert side.lane.receive(datagram(9, ip_in(), LOCAL_INDEX + 1), *PEER, NOW) is None
    assert side.lane.receive(good[:20], *PEER, NOW) is None
    assert side.window.top == 7


@needs_native
def test_a_counter_opened_by_python_is_not_opened_again_by_the_lane() -> None:
    """The link and the lane share one window (the native one): whoever opens first takes
    the counter, the other sees a replay."""
    side = Side(True)
    assert side.route()
    side.lane.set_local((ME,), ETH)
    first, second = datagram(3, ip_in()), datagram(4, ip_in())
    _stop, got = side.recv.open([first], 0, LOCAL_INDEX, 1 << 40, side.window)
    assert got == [ip_in()]
    assert side.lane.receive(first, *PEER, NOW) is None
    assert side.lane.receive(second, *PEER, NOW) is not None
    _stop, got = side.recv.open([second], 0, LOCAL_INDEX, 1 << 40, side.window)
    assert got == ["replay"]
    assert side.window.take(4) == "replay" and side.window.take(5) is None


@needs_native
def test_the_python_link_and_the_lane_take_counters_from_one_place() -> None:
    side = Side(True)
    assert side.route()
    assert side.send.take(3) == 0
    data, _, _ = side.lane.process(frame(PEER_VIPS[0]), NOW)
    assert data[5:13] == (3).to_bytes(8, "big")
    assert side.send.seal_next(REMOTE_INDEX, [b"x"])[0][5:13] == (4).to_bytes(8, "big")
    assert side.send.counter == 5


@needs_native
def test_bad_routes_are_refused_and_change_nothing() -> None:
    side = Side(True)
    bad: list[dict[str, Any]] = [{"max_frame": 10}, {"port": 0}, {"max_frame": 70000}]
    for kw in bad:
        with pytest.raises(ValueError):
            side.route(**kw)
    with pytest.raises(ValueError):
        side.route(vips=tuple(range(9)))
    with pytest.raises(TypeError):
        side.lane.route(
            LOCAL_INDEX, (), side.send, 1, "h", 1, 100, 1, 1.0, side.recv, ReplayWindow(8), 1
        )
    with pytest.raises(ValueError):
        side.lane.route(
            LOCAL_INDEX, (), side.send, 1, "not-an-ip", 1, 100, 1, 1.0, side.recv, side.window, 1
        )
    with pytest.raises(ValueError):
        side.lane.done(0, 1)  # nothing was handed up
    assert side.lane.unroute(LOCAL_INDEX) is None
    assert side.lane.process(frame(PEER_VIPS[0]), NOW) is None


@needs_native
@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300), port=st.integers(1, 65535))
def test_garbage_never_raises_never_sends_and_never_delivers(data: bytes, port: int) -> None:
    side = Side(True)
    assert side.route()
    side.lane.set_local((ME,), ETH)
    assert side.lane.receive(data, PEER[0], port, NOW) is None
    got = side.lane.process(data, NOW)
    # A frame is only ever sealed whole, to a routed address.
    assert got is None or (
        len(data) >= 44 and data[40:44] in [v.to_bytes(4, "big") for v in PEER_VIPS]
    )
    assert side.window.top == -1


# --- 3. the thread ---------------------------------------------------------------------------


class Rig:
    """A native lane on its thread, with a fake TAP and two UDP sockets on 127.0.0.1."""

    def __init__(self) -> None:
        mod = _mod()
        self.tap_kernel, tap = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        tap.setblocking(False)
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.udp.setblocking(False)
        self.peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.peer.bind(("127.0.0.1", 0))
        self.peer.settimeout(5)
        self.tap_up, tap_c = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.udp_up, udp_c = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for s in (self.tap_up, self.udp_up, self.tap_kernel):
            s.settimeout(5)
        self._keep = (tap, tap_c, udp_c)
        self.lane = mod.Lane(tap.fileno(), self.udp.fileno(), tap_c.fileno(), udp_c.fileno(), LEAD)
        self.send, self.recv, self.window = (
            mod.BatchAead(1, SEND_KEY),
            mod.BatchAead(1, RECV_KEY),
            mod.Window(64),
        )
        port = self.peer.getsockname()[1]
        assert self.lane.route(
            LOCAL_INDEX, PEER_VIPS, self.send, REMOTE_INDEX, "127.0.0.1", port, 1500, 1 << 40,
            time.monotonic() + 60, self.recv, self.window, 1 << 40,
        )  # fmt: skip
        self.lane.set_local((ME,), ETH)
        self.lane.start()

    def close(self) -> None:
        self.lane.stop()
        for s in (*self._keep, self.tap_kernel, self.udp, self.peer, self.tap_up, self.udp_up):
            s.close()


@pytest.fixture
def rig() -> Iterator[Rig]:
    if NATIVE is None:
        pytest.skip("ipop.link._fastpath not built (needs gcc, python3-dev, libssl-dev)")
    r = Rig()
    try:
        yield r
    finally:
        r.close()


def _wait(cond: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 5
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out: {what}")
        time.sleep(0.001)


def test_the_thread_moves_lone_packets_both_ways(rig: Rig) -> None:
    f = frame(PEER_VIPS[0], b"ping")
    rig.tap_kernel.send(f)
    data, _ = rig.peer.recvfrom(2048)
    assert data == PyBatchAead(1, SEND_KEY).seal(REMOTE_INDEX, 0, [LEAD + f[24:]])[0]
    pong = ip_in(payload=b"pong")
    rig.peer.sendto(datagram(0, pong), rig.udp.getsockname())
    assert rig.tap_kernel.recv(2048) == ETH + pong[2:]
    _wait(lambda: rig.lane.stats()["delivered"] == 1, "delivered counted")
    assert rig.lane.stats()["fast"] == 1
    (counts,) = rig.lane.harvest()
    assert counts[1] == 1 and counts[5] == 1


def test_the_thread_hands_up_the_rest_and_leaves_the_fd_to_python_until_done(rig: Rig) -> None:
    arp = bytearray(frame(PEER_VIPS[0]))
    arp[22:24] = b"\x08\x06"
    rig.tap_kernel.send(bytes(arp))
    assert rig.tap_up.recv(4096) == bytes(arp)
    # Python holds the baton now: a lone packet stays in the TAP for Python to read.
    rig.tap_kernel.send(frame(PEER_VIPS[0], b"later"))
    _wait(lambda: rig.lane.stats()["inflight"] == 1, "in flight")
    rig.peer.setblocking(False)
    with pytest.raises(BlockingIOError):
        rig.peer.recvfrom(2048)
    rig.peer.settimeout(5)
    rig.lane.done(0, 1)  # (Python would have read it itself; here the lane takes it back)
    data, _ = rig.peer.recvfrom(2048)
    assert data[5:13] == bytes(8)  # the lane's first datagram: counter 0
    # A datagram for nobody's index: up as read, with its source.
    rig.peer.sendto(b"\xc3" + bytes(40), rig.udp.getsockname())
    record = rig.udp_up.recv(4096)
    port = rig.peer.getsockname()[1]
    assert record[:16] == bytes(2) + port.to_bytes(2, "big") + socket.inet_aton(
        "127.0.0.1"
    ) + bytes(8)
    assert record[16:] == b"\xc3" + bytes(40)
    rig.lane.done(1, 1)
    assert rig.lane.stats()["udp_inflight"] == 0


def test_stop_returns_promptly_with_python_behind(rig: Rig) -> None:
    for _ in range(3):
        rig.tap_kernel.send(b"\x00" * 60)
    _wait(lambda: rig.lane.stats()["up"] >= 1, "a hand-up")
    # Python holds the baton (it never read the hand-up) and frames wait: stop() returns.
    stopper = threading.Thread(target=rig.lane.stop)
    stopper.start()
    _wait(lambda: not stopper.is_alive(), "stop() returned")


# --- 4. the routes ---------------------------------------------------------------------------


class Routes:
    def __init__(self) -> None:
        self.now = time.time()
        self.a, self.b = bench.linked_pair(self.now)
        self.a.link.pmtu.limits[self.b.local_id] = 1400
        owners = OwnerTable()
        self.filter = PacketFilter(self.a.local_id, bench.SUBNET, owners)
        owners.answer(bench.B_VIP.packed, self.b.local_id, now=self.now)
        self.lane = PyLane(LEAD)
        self.routes = LaneRoutes(self.lane, self.a, self.filter, growth=29 + 2 - 14)

    def sync(self) -> None:
        self.routes.sync(self.now)


def test_routes_follow_the_link_and_count_what_the_lane_did() -> None:
    r = Routes()
    r.routes.wanted.add(bench.B_VIP.packed)
    r.sync()
    kp = r.a.link.direct_keys(r.b.local_id)
    assert kp is not None
    assert list(r.lane._routes) == [kp[0].local_index]
    route = r.lane._routes[kp[0].local_index]
    ep = kp[1]
    assert isinstance(ep, Endpoint) and (route.host, route.port) == (ep.host, ep.port)
    assert route.max_frame == 1400 - 17 and route.vips == (int(bench.B_VIP),)
    before = r.a.stats["sent_direct"]
    st_ = r.a.link._peers[r.b.local_id]
    tx = st_.tx_packets
    now_mono = time.monotonic()
    got = r.lane.process(frame(int(bench.B_VIP)), now_mono)
    assert got is not None
    # The datagram opens at b as the data plane's own would.
    assert r.b.receive_direct(got[0], bench.A_EP, now=r.now, kind=KIND_IP) is not None
    r.sync()
    assert r.a.stats["sent_direct"] == before + 1
    assert st_.tx_packets == tx + 1
    # The link goes away: the route with it.
    r.a.link.close(r.b.local_id, now=r.now)
    r.sync()
    assert r.lane._routes == {}
    assert r.routes.routes == {}


def test_no_route_for_what_the_data_plane_would_not_send_directly() -> None:
    r = Routes()
    r.routes.wanted.add(IPv4Address("100.64.0.77").packed)  # nobody's
    r.routes.wanted.add(bench.A_VIP.packed)  # outside the owner table
    r.sync()
    assert r.lane._routes == {}
    del r.a.link.pmtu.limits[r.b.local_id]  # not probed yet
    r.routes.wanted.add(bench.B_VIP.packed)
    r.sync()
    assert r.lane._routes == {}
    assert r.routes.routes == {}  # no candidate lingers
    r.a.link.pmtu.limits[r.b.local_id] = 1400
    kp = r.a.link.direct_keys(r.b.local_id)
    assert kp is not None
    kp[0].rekey_counter_at = kp[0].send_counter  # a rekey is due: the data plane starts it
    r.routes.wanted.add(bench.B_VIP.packed)
    r.sync()
    assert r.lane._routes == {}


def test_a_bad_ipop_lane_names_the_variable_and_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    async def plane() -> None:
        with bench.planes(time.time()):
            pass

    monkeypatch.setenv("IPOP_LANE", "fast")
    with pytest.raises(ConfigError, match="IPOP_LANE: 'fast' is neither on nor off"):
        asyncio.run(plane())
    monkeypatch.setenv("IPOP_LANE", "off")
    asyncio.run(plane())
