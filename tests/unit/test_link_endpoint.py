"""Sessions after the handshake: DATA integrity, replay, rekey, keepalive, liveness, roaming."""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable

import pytest

from ipop import timing
from ipop.errors import ConfigError, LocalProtocolError
from ipop.link.events import (
    LinkDown,
    LinkEvent,
    LinkMessage,
    LinkPathChanged,
    LinkUp,
    ObservedEndpoint,
)
from ipop.link.layer import LinkConfig, LinkLayer
from ipop.testing.clock import SIM_EPOCH
from ipop.testing.identities import make_identity, make_network
from ipop.types import Endpoint, Path

NOW = SIM_EPOCH
A_EP = Endpoint("198.51.100.1", 5800)
A_EP2 = Endpoint("198.51.100.1", 61000)  # A's NAT rebound to another port
B_EP = Endpoint("203.0.113.2", 5800)
_INF = float("inf")


def events(ep: LinkLayer) -> list[LinkEvent]:
    out = []
    while (ev := ep.next_event()) is not None:
        out.append(ev)
    return out


def payloads(evs: list[LinkEvent]) -> list[bytes]:
    return [e.payload for e in evs if isinstance(e, LinkMessage)]


class World:
    """A at A_EP, B at B_EP, a wire with a fixed one-way latency, and both cores' timers."""

    def __init__(
        self, config: LinkConfig | None = None, latency: float = 0.0, jitter: float = 0.0
    ) -> None:
        ca = make_network(now=NOW - 60)
        self.ida = make_identity(ca, "alice", now=NOW - 60)
        self.idb = make_identity(ca, "bob", now=NOW - 60)
        self.a = LinkLayer(self.ida, rng=random.Random(1), config=config)
        self.b = LinkLayer(self.idb, rng=random.Random(2), config=config)
        self.a_addr: Endpoint = A_EP
        self.latency = latency
        self.jitter = jitter
        self.rng = random.Random(3)
        self.now = NOW
        self.wire: list[tuple[float, int, bytes, Path, str]] = []
        self.seq = 0
        self.lost: Callable[[bytes, str], bool] = lambda data, to: False
        self.received: dict[str, list[LinkEvent]] = {"a": [], "b": []}

    def _collect(self) -> None:
        for name, ep in (("a", self.a), ("b", self.b)):
            for data, path in ep.datagrams_to_send(now=self.now):
                to = "b" if path == B_EP else "a"
                assert path in (B_EP, self.a_addr, A_EP, A_EP2)
                if self.lost(data, to):
                    continue
                src = B_EP if name == "b" else self.a_addr
                self.seq += 1
                delay = self.latency + self.rng.uniform(0, self.jitter)
                heapq.heappush(self.wire, (self.now + delay, self.seq, data, src, to))
            self.received[name] += events(ep)

    def run_until(self, t_end: float) -> None:
        """Advance virtual time to t_end, delivering datagrams and firing timers in order."""
        self._collect()
        while True:
            timers = [t for t in (self.a.get_timer(), self.b.get_timer()) if t is not None]
            t_next = min([*timers, *(w[0] for w in self.wire[:1])], default=_INF)
            if t_next > t_end:
                self.now = t_end
                return
            self.now = max(self.now, t_next)
            while self.wire and self.wire[0][0] <= self.now:
                _, _, data, src, to = heapq.heappop(self.wire)
                (self.a if to == "a" else self.b).receive_datagram(data, src, now=self.now)
            for ep in (self.a, self.b):
                t = ep.get_timer()
                if t is not None and t <= self.now:
                    ep.handle_timer(now=self.now)
            self._collect()

    def send(self, frm: str, payload: bytes) -> None:
        if frm == "a":
            self.a.send(self.idb.node_id, payload, now=self.now)
        else:
            self.b.send(self.ida.node_id, payload, now=self.now)
        self._collect()

    def up(self) -> None:
        self.a.connect(B_EP, now=self.now, expected=self.idb.node_id)
        self.run_until(self.now + 3 * self.latency + 0.001)
        assert self.a.is_up(self.idb.node_id) and self.b.is_up(self.ida.node_id)


def up_pair(config: LinkConfig | None = None) -> World:
    w = World(config)
    w.up()
    w.received = {"a": [], "b": []}
    return w


def sealed(w: World, payload: bytes) -> bytes:
    data, path = w.a.seal(w.idb.node_id, payload, now=w.now)
    assert path == B_EP
    return data


def test_tampered_packet_is_dropped_without_reply() -> None:
    w = up_pair()
    data = bytearray(sealed(w, b"secret payload"))
    for i in (12, 13, len(data) - 1):  # counter, ciphertext, tag
        bad = bytearray(data)
        bad[i] ^= 0x40
        w.b.receive_datagram(bytes(bad), A_EP, now=w.now)
    assert w.b.drops == {"auth_failed": 3}
    assert w.b.datagrams_to_send(now=w.now) == [] and events(w.b) == []
    w.b.receive_datagram(bytes(data), A_EP, now=w.now)  # the window did not move on forgeries
    assert payloads(events(w.b)) == [b"secret payload"]


def test_replayed_packet_is_dropped() -> None:
    w = up_pair()
    data = sealed(w, b"once")
    w.b.receive_datagram(data, A_EP, now=w.now)
    w.b.receive_datagram(data, A_EP, now=w.now)
    assert payloads(events(w.b)) == [b"once"]
    assert w.b.drops == {"replay": 1}
    assert w.b.datagrams_to_send(now=w.now) == []


def test_reordering_inside_window_accepted_outside_dropped_too_old() -> None:
    w = up_pair(LinkConfig(replay_window=64))
    packets = [sealed(w, b"%d" % i) for i in range(100)]
    w.b.receive_datagram(packets[99], A_EP, now=w.now)
    w.b.receive_datagram(packets[50], A_EP, now=w.now)  # 49 behind: inside
    w.b.receive_datagram(packets[20], A_EP, now=w.now)  # 79 behind: outside
    assert payloads(events(w.b)) == [b"99", b"50"]
    assert w.b.drops == {"too_old": 1}
    assert w.b.datagrams_to_send(now=w.now) == []


def test_unknown_index_short_and_unknown_type_are_dropped_silently() -> None:
    w = up_pair()
    data = sealed(w, b"x")
    w.b.receive_datagram(data[:1] + bytes(4) + data[5:], A_EP, now=w.now)
    w.b.receive_datagram(data[:28], A_EP, now=w.now)
    w.b.receive_datagram(b"\x00\x01\x00\x00", A_EP, now=w.now)
    w.b.receive_datagram(b"\xff" * 40, A_EP, now=w.now)
    assert w.b.drops == {"unknown_index": 1, "malformed": 1, "unknown_type": 2}
    assert w.b.datagrams_to_send(now=w.now) == [] and events(w.b) == []


def test_rekey_by_time_under_continuous_traffic_loses_nothing() -> None:
    cfg = LinkConfig(rekey_after_s=3.0, reject_after_s=6.0, previous_key_grace_s=1.0)
    w = World(cfg, latency=0.02)
    w.up()
    keys_a = {w.a.peers()[0].keys_established_at}
    keys_b = {w.b.peers()[0].keys_established_at}
    sent: dict[str, list[bytes]] = {"a": [], "b": []}
    for i in range(1000):  # 20 s at 50 packets/s each way, across several rekeys
        for frm in ("a", "b"):
            payload = b"%s%d" % (frm.encode(), i)
            w.send(frm, payload)
            sent[frm].append(payload)
        w.run_until(w.now + 0.02)
        keys_a.add(w.a.peers()[0].keys_established_at)
        keys_b.add(w.b.peers()[0].keys_established_at)
    w.run_until(w.now + 0.1)
    assert payloads(w.received["b"]) == sent["a"]
    assert payloads(w.received["a"]) == sent["b"]
    assert not w.a.drops and not w.b.drops
    assert len(keys_a) >= 5 and len(keys_b) >= 5
    assert w.a.peers()[0].rekeys >= 5
    assert not [e for e in w.received["a"] + w.received["b"] if isinstance(e, LinkDown)]


def test_rekey_by_count() -> None:
    cfg = LinkConfig(rekey_after_messages=50, reject_after_messages=80)
    w = World(cfg, latency=0.001)
    w.up()
    first = w.a.peers()[0].keys_established_at
    sent = []
    for i in range(500):
        w.send("a", b"%d" % i)
        sent.append(b"%d" % i)
        w.run_until(w.now + 0.001)
    w.run_until(w.now + 0.01)
    assert payloads(w.received["b"]) == sent
    assert not w.a.drops and not w.b.drops
    assert w.a.stats["rekey_started"] >= 9
    assert w.a.peers()[0].rekeys >= 9 and w.a.peers()[0].keys_established_at != first


def test_previous_keys_open_only_during_grace() -> None:
    cfg = LinkConfig(rekey_after_s=3.0, reject_after_s=6.0, previous_key_grace_s=1.0)
    w = up_pair(cfg)
    old1 = sealed(w, b"old1")
    old2 = sealed(w, b"old2")
    w.run_until(w.now + 3.01)  # the timer starts a rekey by time, even on an idle link
    assert w.a.peers()[0].rekeys == 1  # both timers fired at once: the collision rule
    assert w.b.peers()[0].rekeys == 1
    switched = w.b.peers()[0].keys_established_at
    w.b.receive_datagram(old1, A_EP, now=switched + 0.5)
    w.b.receive_datagram(old2, A_EP, now=switched + 1.5)
    assert payloads(events(w.b)) == [b"old1"]
    assert w.b.drops["expired_key"] == 1
    assert set(w.b.drops) <= {"expired_key", "handshake_collision"}  # both timers fired


def test_keepalive_then_linkdown_on_silence() -> None:
    # Path MTU probes and rebinding echoes are DATA too (they postpone keepalives): off, to
    # count keepalives alone.
    cfg = LinkConfig(
        keepalive_interval_s=15.0,
        link_timeout_s=50.0,
        path_mtu_probes=False,
        rebind_echoes=False,
    )
    w = up_pair(cfg)
    t0 = w.a.peers()[0].last_tx  # the key-confirmation keepalive; B has sent nothing since
    assert w.a.peers()[0].last_rx == t0
    w.lost = lambda data, to: to == "a"  # B's datagrams never reach A
    keepalives: list[float] = []
    orig = w.a.datagrams_to_send

    def spy(*, now: float) -> list[tuple[bytes, Path]]:
        out = orig(now=now)
        keepalives.extend(round(now - t0, 3) for d, _ in out if len(d) == 29)
        return out

    w.a.datagrams_to_send = spy  # type: ignore[method-assign]
    w.run_until(t0 + 49.99)
    assert w.a.is_up(w.idb.node_id)
    assert keepalives == [15.0, 30.0, 45.0]
    w.run_until(t0 + 50.0)
    assert [e for e in w.received["a"] if isinstance(e, LinkDown)] == [
        LinkDown(w.idb.node_id, "timeout")
    ]
    assert not w.a.is_up(w.idb.node_id)
    assert w.b.is_up(w.ida.node_id)  # B still hears A's keepalives
    assert not [e for e in w.received["b"] if isinstance(e, LinkMessage)]


def test_keys_past_reject_after_bring_the_link_down() -> None:
    cfg = LinkConfig(rekey_after_s=3.0, reject_after_s=6.0, keepalive_interval_s=1.0)
    w = up_pair(cfg)
    w.lost = lambda data, to: data[0] != 0xC3  # every handshake message is lost
    w.run_until(w.now + 5.9)
    assert w.a.is_up(w.idb.node_id) and w.a.stats["rekey_started"] >= 1
    w.run_until(w.now + 0.2)
    assert LinkDown(w.idb.node_id, "expired") in w.received["a"]
    with pytest.raises(LocalProtocolError):
        w.a.seal(w.idb.node_id, b"x", now=w.now)


def test_roaming_moves_a_direct_path_and_answers_go_there() -> None:
    w = up_pair()
    data = sealed(w, b"from new port")
    older = sealed(w, b"x")  # sealed later = newer counter; keep for the old-port replay case
    w.b.receive_datagram(data, A_EP2, now=w.now)
    evs = events(w.b)
    assert LinkPathChanged(w.ida.node_id, A_EP2, "roamed") in evs
    assert w.b.stats["roamed"] == 1
    _, path = w.b.seal(w.ida.node_id, b"reply", now=w.now)
    assert path == A_EP2
    late = sealed(w, b"y")
    w.b.receive_datagram(late, A_EP, now=w.now)  # newest again, from the first port
    assert w.b.stats["roamed"] == 2
    w.b.receive_datagram(older, A_EP2, now=w.now)  # reordered older packet: no move back
    assert w.b.stats["roamed"] == 2 and w.b.peers()[0].path == A_EP


def test_set_path_moves_the_session_and_requires_one() -> None:
    w = up_pair()
    w.a.set_path(w.idb.node_id, Endpoint("203.0.113.2", 6000))
    assert w.a.seal(w.idb.node_id, b"", now=w.now)[1] == Endpoint("203.0.113.2", 6000)
    with pytest.raises(LocalProtocolError):
        w.a.set_path(w.ida.node_id, A_EP)


def test_timer_is_none_when_idle_and_bounded_when_busy() -> None:
    w = World()
    assert w.a.get_timer() is None
    w.up()
    t = w.a.get_timer()
    assert t is not None and w.now < t <= w.now + 15.0
    w.a.close(w.idb.node_id, now=w.now)
    assert w.a.get_timer() is None
    ups = [e for e in w.received["a"] if isinstance(e, LinkUp)]
    assert len(ups) == 1


@pytest.mark.parametrize("seed", range(6))
def test_handshakes_crossing_over_different_paths_converge_without_loss(seed: int) -> None:
    cfg = LinkConfig(rekey_after_s=4.0, reject_after_s=8.0, previous_key_grace_s=2.0)
    w = World(cfg, latency=0.01, jitter=0.05)
    w.rng = random.Random(seed)
    # A dials B's endpoint while B dials another port of A's (both reach A): no pairing.
    w.a.connect(B_EP, now=w.now, expected=w.idb.node_id)
    w.b.connect(A_EP2, now=w.now, expected=w.ida.node_id)
    w.run_until(w.now + 0.5)
    assert w.a.is_up(w.idb.node_id) and w.b.is_up(w.ida.node_id)
    sent: dict[str, set[bytes]] = {"a": set(), "b": set()}
    for i in range(400):  # 20 s of traffic both ways, reordered by jitter, across rekeys
        for frm in ("a", "b"):
            payload = b"%s%d" % (frm.encode(), i)
            w.send(frm, payload)
            sent[frm].add(payload)
        w.run_until(w.now + 0.05)
    w.run_until(w.now + 3 * cfg.previous_key_grace_s)  # keepalives only, past every grace
    for frm in ("a", "b"):
        w.send(frm, b"final-" + frm.encode())
        sent[frm].add(b"final-" + frm.encode())
    w.run_until(w.now + 0.2)
    assert set(payloads(w.received["b"])) == sent["a"]
    assert set(payloads(w.received["a"])) == sent["b"]
    assert not [e for e in w.received["a"] + w.received["b"] if isinstance(e, LinkDown)]


def test_a_changed_mapping_is_reported_by_the_next_handshake() -> None:
    # Only a responder reports what it saw, so let A (the sender) reach the rekey by count.
    # Path MTU probes would count toward the 3 messages: off, so that A alone reaches them.
    cfg = LinkConfig(rekey_after_messages=3, reject_after_messages=100, path_mtu_probes=False)
    w = World(cfg, latency=0.01)
    w.up()
    ups = [e for e in w.received["a"] if isinstance(e, LinkUp)]
    assert [u.observed for u in ups] == [A_EP]
    w.a_addr = A_EP2  # A's NAT rebinds: B now sees A's datagrams from another port
    for i in range(4):
        w.send("a", b"from the new port %d" % i)
    w.run_until(w.now + 0.1)
    assert w.b.peers()[0].path == A_EP2
    assert w.a.stats["rekey_started"] == 1
    assert ObservedEndpoint(A_EP2, w.idb.node_id) in w.received["a"]
    assert w.a.peers()[0].observed == A_EP2


def test_link_config_refuses_nonsense() -> None:
    with pytest.raises(ConfigError):
        LinkConfig(ciphers=("rot13",))
    with pytest.raises(ConfigError):
        LinkConfig(rekey_after_s=10.0, reject_after_s=5.0)
    with pytest.raises(ConfigError):
        LinkConfig(keepalive_interval_s=0.0)


def test_a_peer_that_forgot_the_session_is_rehandshaken_long_before_the_link_timeout() -> None:
    cfg = LinkConfig(keepalive_interval_s=15.0, link_timeout_s=50.0, silent_peer_s=20.0)
    w = up_pair(cfg)
    t0 = w.now
    # B drops the session silently (a restart, a lost CLOSING): A still thinks it is up.
    w.b.close(w.ida.node_id, now=w.now)
    w.received = {"a": [], "b": []}
    assert w.a.is_up(w.idb.node_id) and not w.b.is_up(w.ida.node_id)
    w.send("a", b"into the void")
    w.run_until(t0 + 19.0)
    assert w.b.drops["unknown_index"] >= 1
    assert w.a.stats["silent_peer_rehandshake"] == 0
    w.run_until(t0 + 21.0)
    assert w.a.stats["silent_peer_rehandshake"] == 1
    assert w.b.is_up(w.ida.node_id)  # B accepted A's new handshake
    w.send("a", b"heard again")
    w.run_until(w.now + 0.01)
    assert payloads(w.received["b"]) == [b"heard again"]
    assert not [e for e in w.received["a"] if isinstance(e, LinkDown)]


def test_a_live_quiet_peer_is_not_rehandshaken() -> None:
    cfg = LinkConfig(keepalive_interval_s=15.0, link_timeout_s=50.0, silent_peer_s=20.0)
    w = up_pair(cfg)
    t0 = w.now
    for k in range(12):  # one-way traffic from A for a minute; B only sends keepalives
        w.run_until(t0 + 5.0 * k)
        w.send("a", b"tick")
    w.run_until(t0 + 60.0)
    assert w.a.stats["silent_peer_rehandshake"] == 0
    assert w.a.is_up(w.idb.node_id)


def test_roaming_to_another_address_waits_until_the_current_path_is_silent() -> None:
    w = up_pair()
    lan = Endpoint("198.18.7.2", 5800)  # the same peer reached over another of its paths
    w.b.receive_datagram(sealed(w, b"on the path"), A_EP, now=w.now)
    w.b.receive_datagram(sealed(w, b"other path"), lan, now=w.now + 0.1)
    assert w.b.stats["roam_held"] == 1 and w.b.peers()[0].path == A_EP  # both live: stay
    w.b.receive_datagram(sealed(w, b"still other"), lan, now=w.now + 0.2 + timing.PATH_SILENT_S)
    assert w.b.stats["roamed"] == 1 and w.b.peers()[0].path == lan  # old path went quiet


def test_data_under_keys_we_dropped_rekeys_the_session() -> None:
    quiet = LinkConfig(
        rekey_after_s=100.0,
        reject_after_s=200.0,
        handshake_timeout_s=2.0,
        keepalive_interval_s=50.0,
    )
    busy = LinkConfig(rekey_after_s=5.0, handshake_timeout_s=2.0, keepalive_interval_s=1.0)
    w = World(quiet)
    w.b = LinkLayer(w.idb, rng=random.Random(2), config=busy)
    w.up()
    # B rekeys and A answers, but B's key confirmation and keepalives are lost until A has
    # dropped its unconfirmed answer: B now seals with keys A no longer holds.
    w.lost = lambda data, to: to == "a" and data[0] == 0xC3
    w.run_until(w.now + 8.0)
    assert w.b.stats["rekey_started"] == 1 and w.a.stats["rehandshake_stale_keys"] == 0
    w.lost = lambda data, to: False
    w.run_until(w.now + 2.0)
    assert w.a.stats["rehandshake_stale_keys"] == 1
    w.send("b", b"after the repair")
    w.run_until(w.now + 1.0)
    assert b"after the repair" in payloads(w.received["a"])


def test_garbage_with_an_unknown_index_gets_nothing() -> None:
    w = up_pair()
    w.b.datagrams_to_send(now=w.now)
    data = bytearray(sealed(w, b"x"))
    data[1:5] = (0xDEADBEEF).to_bytes(4, "big")  # an index b never gave out
    for k in range(3):
        w.b.receive_datagram(bytes(data), A_EP, now=w.now + k)
    assert w.b.drops["unknown_index"] == 3 and w.b.stats["rehandshake_stale_keys"] == 0
    assert w.b.datagrams_to_send(now=w.now + 3) == []


def test_a_connect_without_retransmission_sends_one_init_and_fails_at_its_timeout() -> None:
    w = World()
    w.lost = lambda data, to: to == "b"  # nobody at B: every Init is lost
    sent: list[bytes] = []
    w.a.connect(B_EP, now=w.now, expected=w.idb.node_id, retransmit=False, timeout_s=3.0)
    sent += [d for d, _ in w.a.datagrams_to_send(now=w.now)]
    for step in range(1, 101):  # 10 s
        w.now = NOW + step * 0.1
        w.a.handle_timer(now=w.now)
        sent += [d for d, _ in w.a.datagrams_to_send(now=w.now)]
        if step * 0.1 < 2.95:
            assert not any(type(e).__name__ == "HandshakeFailed" for e in events(w.a))
    assert len(sent) == 1
    assert w.a.stats["handshake_failed"] == 1


def test_a_single_init_does_not_refuse_the_peers_crossing_init() -> None:
    """The larger id's one-shot connect-back crosses the smaller's own Init: the larger answers
    it (a retried Init would have won the collision), so the link comes up although the
    one-shot Init died at the other's NAT and will never be sent again."""
    w = World()
    a_big = w.ida.node_id > w.idb.node_id
    big, small = (w.a, w.b) if a_big else (w.b, w.a)
    big_name, small_name = ("a", "b") if a_big else ("b", "a")
    big_addr, small_addr = (w.a_addr, B_EP) if a_big else (B_EP, w.a_addr)
    w.lost = lambda data, to: to == small_name  # the one-shot Init dies at small's NAT
    big.connect(small_addr, now=w.now, expected=small.local_id, retransmit=False, timeout_s=3.0)
    w.run_until(w.now + 0.01)
    w.lost = lambda data, to: False
    small.connect(big_addr, now=w.now, expected=big.local_id)
    w.run_until(w.now + 1.0)
    assert w.a.is_up(w.idb.node_id) and w.b.is_up(w.ida.node_id)
    assert not big.drops["handshake_collision"], big_name


def test_a_one_shot_init_retries_once_we_want_that_link_ourselves() -> None:
    w = World()
    w.lost = lambda data, to: to == "b"
    w.a.connect(B_EP, now=w.now, expected=w.idb.node_id, retransmit=False, timeout_s=3.0)
    w.a.connect(B_EP, now=w.now + 0.1, expected=w.idb.node_id)  # no second initiation...
    sent = [d for d, _ in w.a.datagrams_to_send(now=w.now)]
    for step in range(1, 51):  # 5 s
        w.now = NOW + step * 0.1
        w.a.handle_timer(now=w.now)
        sent += [d for d, _ in w.a.datagrams_to_send(now=w.now)]
    assert len(sent) >= 3 and len(set(sent)) == 1  # ...but its Init, retried
    assert w.a.stats["handshake_failed"] == 0  # and the usual timeout, not the one-shot's


def test_after_our_address_changed_every_direct_session_is_keyed_afresh_from_it() -> None:
    w = up_pair()
    w.a_addr = A_EP2  # a's host roamed: its datagrams now come from A_EP2
    assert w.a.local_address_changed(now=w.now) == 1
    assert w.a.local_address_changed(now=w.now) == 0  # one handshake under way is enough
    w.run_until(w.now + 0.1)
    # b answered from where it saw the Init: a learns its new endpoint from the answer.
    assert ObservedEndpoint(A_EP2, w.idb.node_id) in w.received["a"]
    assert w.a.stats["roam_rehandshakes"] == 1
    assert w.a.is_up(w.idb.node_id) and w.b.is_up(w.ida.node_id)


def test_a_peer_that_says_it_moved_is_followed_without_waiting_for_silence() -> None:
    w = up_pair()
    lan = Endpoint("198.18.7.2", 5800)
    w.b.receive_datagram(sealed(w, b"on the path"), A_EP, now=w.now)
    w.b.receive_datagram(sealed(w, b"other path"), lan, now=w.now + 0.1)
    assert w.b.stats["roam_held"] == 1 and w.b.peers()[0].path == A_EP  # hysteresis holds
    events(w.b)
    w.b.peer_moved(w.ida.node_id, now=w.now + 0.15)  # its word: it left A_EP
    assert w.b.peers()[0].path == lan
    assert LinkPathChanged(w.ida.node_id, lan, "roamed") in events(w.b)
    # And with no candidate yet, the next DATA from elsewhere moves the session at once.
    v = up_pair()
    v.b.receive_datagram(sealed(v, b"on the path"), A_EP, now=v.now)
    v.b.peer_moved(v.ida.node_id, now=v.now + 0.01)
    assert v.b.peers()[0].path == A_EP
    v.b.receive_datagram(sealed(v, b"moved"), lan, now=v.now + 0.02)
    assert v.b.peers()[0].path == lan and v.b.stats["roam_held"] == 0


def test_both_sides_know_the_handshake_round_trip_for_status() -> None:
    w = World(latency=0.04)
    w.up()
    (a_info,) = w.a.peers()
    (b_info,) = w.b.peers()
    assert a_info.rtt_s == pytest.approx(0.08)  # Init -> Resp
    assert b_info.rtt_s == pytest.approx(0.08)  # Resp -> key confirmation


def _answered_over_two_paths() -> tuple[World, list[tuple[bytes, Path]]]:
    """B dials both of A's endpoints at once (a shortcut punched to each); A answers both
    Inits; B gets the Resp of the second first, installs both and seals with the last (the
    first's keys). Returns the world and B's datagrams to A, key confirmations in order."""
    w = World()
    a_id = w.ida.node_id
    w.b.connect(A_EP, now=w.now, expected=a_id)
    w.b.connect(A_EP2, now=w.now, expected=a_id)
    inits = w.b.datagrams_to_send(now=w.now)
    assert [p for _, p in inits] == [A_EP, A_EP2]
    for data, _ in inits:
        w.a.receive_datagram(data, B_EP, now=w.now)
    resps = w.a.datagrams_to_send(now=w.now)
    assert len(resps) == 2 and w.a.stats["handshake_answered"] == 2
    for data, src in ((resps[1][0], A_EP2), (resps[0][0], A_EP)):
        w.b.receive_datagram(data, src, now=w.now)
    return w, w.b.datagrams_to_send(now=w.now)


def test_the_keys_the_initiator_kept_open_when_another_answer_was_confirmed_first() -> None:
    """Before spare keys, A kept only the first keys confirmed and dropped the other answer,
    while B sealed with that other one: everything B sent was dropped as unknown_index (the
    cold start's pairs losing both pings)."""
    w, confirmations = _answered_over_two_paths()
    assert len(confirmations) == 2
    for data, _ in confirmations:  # in B's order: the keys B replaced first
        w.a.receive_datagram(data, B_EP, now=w.now)
    data, _ = w.b.seal(w.ida.node_id, b"after both handshakes", now=w.now)
    w.a.receive_datagram(data, B_EP, now=w.now)
    assert b"after both handshakes" in payloads(events(w.a))
    assert w.a.drops["unknown_index"] == 0
    assert w.a.stats["spare_keys_confirmed"] == 1
    # Both ends seal with the same keys now: A's answer reaches B too.
    data, _ = w.a.seal(w.idb.node_id, b"back", now=w.now)
    w.b.receive_datagram(data, A_EP, now=w.now)
    assert b"back" in payloads(events(w.b))


def test_spare_keys_expire_unconfirmed() -> None:
    """A spare key opens nothing once timing.SPARE_KEYS_S passed without DATA under it (bounded)."""
    w, confirmations = _answered_over_two_paths()
    w.a.receive_datagram(confirmations[0][0], B_EP, now=w.now)
    w.run_until(w.now + timing.SPARE_KEYS_S + 0.5)
    w.a.receive_datagram(confirmations[1][0], B_EP, now=w.now)
    assert w.a.stats["spare_keys_confirmed"] == 0
    assert w.a.drops["unknown_index"] == 1


def test_keys_replaced_twice_within_a_grace_period_still_open_what_the_peer_sealed() -> None:
    """A completes two handshakes at once (it dialled two more of B's endpoints) on top of the
    session: the first keys were retired at once, and what B sealed with them before either
    key confirmation reached it was dropped as unknown_index."""
    w = up_pair()
    b_id = w.idb.node_id
    eps = [Endpoint("203.0.113.2", 61001), Endpoint("203.0.113.2", 61002)]
    for ep in eps:
        w.a.connect(ep, now=w.now, expected=b_id)
    inits = w.a.datagrams_to_send(now=w.now)
    assert [p for _, p in inits] == eps
    for data, _ in inits:
        w.b.receive_datagram(data, A_EP, now=w.now)
    resps = w.b.datagrams_to_send(now=w.now)
    in_flight, _ = w.b.seal(w.ida.node_id, b"sealed before the switch", now=w.now)
    for (data, _), ep in zip(resps, eps, strict=True):
        w.a.receive_datagram(data, ep, now=w.now)
    assert w.a.is_up(b_id) and w.a.peers()[0].rekeys == 2
    w.a.receive_datagram(in_flight, B_EP, now=w.now)
    assert b"sealed before the switch" in payloads(events(w.a))
    assert w.a.drops["unknown_index"] == 0
    # ... for a grace period only.
    late, _ = w.b.seal(w.ida.node_id, b"late", now=w.now)
    w.run_until(w.now + w.a.config.previous_key_grace_s + 1.0)
    w.a.receive_datagram(late, B_EP, now=w.now)
    assert b"late" not in payloads(events(w.a) + w.received["a"])


B_EP2 = Endpoint("203.0.113.2", 40000)  # B's punching socket's mapping


class TwoPathWorld(World):
    """World where B also dials A's other port (A_EP2) from a punching socket of its own,
    B_EP2: A answers there, so two handshakes cross over different paths. What is sent to a
    path in ``filtered`` (a port whose NAT drops it) is lost."""

    filtered: frozenset[Path] = frozenset()

    def _collect(self) -> None:
        for name, ep in (("a", self.a), ("b", self.b)):
            for data, path in ep.datagrams_to_send(now=self.now):
                to = "b" if path in (B_EP, B_EP2) else "a"
                if path in self.filtered:
                    continue
                src = (B_EP2 if path == A_EP2 else B_EP) if name == "b" else self.a_addr
                self.seq += 1
                heapq.heappush(self.wire, (self.now + self.latency, self.seq, data, src, to))
            self.received[name] += events(ep)


def test_diverged_keys_are_repaired_while_a_handshake_to_another_path_hangs() -> None:
    """Crossing handshakes over two paths (port guessing: one side dials from a punching
    socket while the other punches its main socket's port) can leave each side sealing with
    the keys the other holds as ``previous``. The repair (a sequential handshake, invariant 4)
    must not wait on a handshake of ours toward a path that never answers (a port the peer's
    NAT filters), which is retransmitted for the whole handshake timeout (20 s): the previous
    keys lapsed at their 10 s grace and the pair lost every packet both ways (DATA under
    retired keys, no rehandshake), as in the lab's shared-NAT case
    (tests/lab/test_rebind_lab.py) after port guessing."""
    w = TwoPathWorld(latency=0.01)
    # Ports of each other's that the NATs filter: each side's Init there hangs.
    dead_a, dead_b = Endpoint("198.51.100.1", 6000), Endpoint("203.0.113.2", 6000)
    w.filtered = frozenset((dead_a, dead_b))
    w.a.connect(dead_b, now=w.now, expected=w.idb.node_id)
    w.b.connect(dead_a, now=w.now, expected=w.ida.node_id)
    # Both dial each other over different paths at once: each ends on the other's keys.
    w.a.connect(B_EP, now=w.now, expected=w.idb.node_id)
    w.b.connect(A_EP2, now=w.now, expected=w.ida.node_id)
    w.run_until(w.now + 0.1)
    assert w.a.is_up(w.idb.node_id) and w.b.is_up(w.ida.node_id)
    lost: list[bytes] = []
    for i in range(300):  # 15 s of pings both ways, past the previous keys' grace
        for frm in ("a", "b"):
            payload = b"%s%d" % (frm.encode(), i)
            w.send(frm, payload)
            if i >= 240:  # the last 3 s
                lost.append(payload)
        w.run_until(w.now + 0.05)
    w.run_until(w.now + 0.1)
    got = set(payloads(w.received["a"])) | set(payloads(w.received["b"]))
    assert [p for p in lost if p not in got] == []


def test_a_roam_rekeys_a_session_whose_peer_we_also_dial_on_a_dead_path() -> None:
    """After our address changed, a session is keyed afresh on its own path even while a
    handshake of ours to the same peer waits on another path that never answers."""
    w = up_pair()
    w.a.connect(Endpoint("203.0.113.2", 6000), now=w.now, expected=w.idb.node_id)
    assert w.a.local_address_changed(now=w.now) == 1
    assert w.a.local_address_changed(now=w.now) == 0  # now under way on the session's path
