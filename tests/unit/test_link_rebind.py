"""NAT rebinding at the link layer (ipop.link.echo), driven by hand (sans-IO).

A's NAT drops its mappings: from then on peers see A's datagrams come from ``A_NEW`` and
whatever they send to ``A_OLD`` is lost. Peers behind a filtering NAT (``filtering``) also drop
what A sends from ``A_NEW``. A must notice within about a second on a link that carries
traffic, ask a witness that can still hear it, and report where it is seen now; links that
carry only overlay chatter cost nothing.
"""

from __future__ import annotations

import random

import pytest

from ipop.link import echo
from ipop.link.events import LinkEvent, ObservedEndpoint
from ipop.link.layer import LinkConfig, LinkLayer
from ipop.link.pmtu import PROBE_TAG
from ipop.testing.clock import SIM_EPOCH
from ipop.testing.identities import make_identity, make_network
from ipop.timing import (
    PATH_SILENT_S,
    REBIND_ECHO_WAIT_S,
    REBIND_QUIET_S,
    REBIND_WITNESS_MIN_S,
    RELAY_TAKEOVER_SILENT_S,
)
from ipop.types import Endpoint, NodeId, RelayPath

A_OLD = Endpoint("198.51.100.1", 5800)
A_NEW = Endpoint("198.51.100.1", 61000)
B_EP = Endpoint("203.0.113.2", 5800)
C_EP = Endpoint("203.0.113.3", 5800)
_CFG = LinkConfig(path_mtu_probes=False)


class Wire:
    """A, B and C, no latency; ``rebound`` switches A's source endpoint to A_NEW."""

    def __init__(self) -> None:
        ca = make_network(now=SIM_EPOCH - 60)
        self.ids = {n: make_identity(ca, n, now=SIM_EPOCH - 60) for n in "abc"}
        self.eps = {
            n: LinkLayer(i, rng=random.Random(ord(n)), config=_CFG) for n, i in self.ids.items()
        }
        self.addr = {"a": A_OLD, "b": B_EP, "c": C_EP}
        self.filtering: set[str] = set()
        self.rebound = False
        self.now = SIM_EPOCH
        self.events: dict[str, list[LinkEvent]] = {n: [] for n in "abc"}

    def id(self, name: str) -> NodeId:
        return self.ids[name].node_id

    def _to(self, path: object) -> str | None:
        if self.rebound and path == A_OLD:
            return None  # the NAT has no mapping there any more
        for name, ep in self.addr.items():
            if path in (ep, A_NEW if name == "a" else ep):
                return name
        return None

    def _move(self) -> bool:
        moved = False
        for name, ep in self.eps.items():
            src = A_NEW if name == "a" and self.rebound else self.addr[name]
            for data, path in ep.datagrams_to_send(now=self.now):
                moved = True
                if type(path) is RelayPath:
                    # A relay that forwards everything: the far end sees it come from us.
                    far = next(n for n in self.ids if self.id(n) == path.peer)
                    back = RelayPath(via=path.via, peer=self.id(name))
                    self.eps[far].receive_datagram(data, back, now=self.now)
                    continue
                to = self._to(path)
                if to is None or (src == A_NEW and to in self.filtering):
                    continue
                self.eps[to].receive_datagram(data, src, now=self.now)
            while (ev := ep.next_event()) is not None:
                self.events[name].append(ev)
        return moved

    def run_until(self, t_end: float) -> None:
        while True:
            while self._move():
                pass
            timers = [t for ep in self.eps.values() if (t := ep.get_timer()) is not None]
            t_next = min(timers, default=float("inf"))
            if t_next > t_end:
                self.now = t_end
                return
            self.now = max(self.now, t_next)
            for ep in self.eps.values():
                t = ep.get_timer()
                if t is not None and t <= self.now:
                    ep.handle_timer(now=self.now)

    def link(self, frm: str, to: str) -> None:
        self.eps[frm].connect(self.addr[to], now=self.now, expected=self.id(to))
        self.run_until(self.now + 0.001)
        assert self.eps[frm].is_up(self.id(to))

    def burst(self, frm: str, to: str, n: int = 6, gap: float = 0.1) -> None:
        """``n`` messages ``gap`` apart: a busy link."""
        for i in range(n):
            self.eps[frm].send(self.id(to), b"traffic %d" % i, now=self.now)
            self.run_until(self.now + gap)


def test_a_watched_busy_link_gets_one_echo_per_silence_and_an_unwatched_one_none() -> None:
    w = Wire()
    w.link("a", "b")
    w.burst("b", "a")
    w.run_until(w.now + 5)
    assert w.eps["a"].stats["echo_sent"] == 0  # overlay chatter: not watched, no cost
    w.eps["a"].watch(w.id("b"))
    w.burst("b", "a")
    last = w.now - 0.1
    w.run_until(last + REBIND_QUIET_S - 0.01)
    assert w.eps["a"].stats["echo_sent"] == 0
    w.run_until(last + REBIND_QUIET_S + 0.01)
    assert w.eps["a"].stats["echo_sent"] == 1 and w.eps["b"].stats["echo_answered"] == 1
    w.run_until(w.now + 10)  # the answer ends the silence; nothing more until B is busy again
    assert w.eps["a"].stats["echo_sent"] == 1
    assert not [e for e in w.events["a"] if isinstance(e, ObservedEndpoint)]  # A_OLD: no news


def test_a_rebinding_is_reported_by_the_silent_peer_when_it_still_hears_us() -> None:
    w = Wire()
    w.link("a", "b")
    w.eps["a"].watch(w.id("b"))
    w.burst("b", "a")
    w.rebound = True
    flushed = w.now
    w.burst("b", "a", n=3)  # lost: A's old mapping is gone
    w.run_until(flushed + REBIND_QUIET_S + 0.01)
    assert ObservedEndpoint(A_NEW, w.id("b")) in w.events["a"]
    assert w.eps["b"].path_of(w.id("a")) == A_NEW  # B followed A's echo (same address)
    assert w.eps["a"].peers()[0].observed == A_NEW


def test_a_silent_filtering_peer_makes_us_ask_a_witness_which_sees_us_elsewhere() -> None:
    w = Wire()
    w.link("c", "a")  # C linked to A: A has no word from C on where it sees A
    w.link("a", "b")
    w.eps["a"].watch(w.id("b"))
    w.burst("b", "a")
    w.rebound = True
    w.filtering = {"b"}  # B's NAT drops A's new port until B sends there
    flushed = w.now
    w.run_until(flushed + REBIND_QUIET_S + REBIND_ECHO_WAIT_S + 0.01)
    a = w.eps["a"]
    assert a.stats["echo_unanswered"] == 1 and a.stats["rebind_suspected"] == 1
    assert a.stats["echo_witness_sent"] == 1  # C, the only other peer
    # C saw A nowhere before, but no peer sees A at A_NEW: a rebinding, flagged as such.
    assert ObservedEndpoint(A_NEW, w.id("c"), rebound=True) in w.events["a"]
    # Bounded: more silences within REBIND_WITNESS_MIN_S ask nobody again.
    w.burst("b", "a", n=6)
    w.run_until(flushed + REBIND_WITNESS_MIN_S - 0.01)
    assert a.stats["echo_witness_sent"] == 1


def test_a_peer_that_follows_us_to_a_new_port_says_so_even_on_an_idle_link() -> None:
    w = Wire()
    w.link("b", "a")  # B linked to A: A has no word from B on where it sees A
    w.link("c", "a")
    w.rebound = True
    w.eps["a"].send(w.id("b"), b"anything", now=w.now)  # not watched: no echo involved
    w.run_until(w.now + 0.01)
    assert w.eps["b"].path_of(w.id("a")) == A_NEW and w.eps["b"].stats["seen_sent"] == 1
    # Its first word on us is a move to another port: a rebinding, flagged as such.
    assert ObservedEndpoint(A_NEW, w.id("b"), rebound=True) in w.events["a"]
    assert w.eps["a"].stats["echo_sent"] == 0
    # A move to another address is no rebinding (the peer changed paths): nothing said.
    moved = Endpoint("198.51.100.7", 5800)
    w.addr["a"] = moved
    w.rebound = False
    w.run_until(w.now + 1.5)  # C's path to A silent for long enough: C follows at once
    w.eps["a"].send(w.id("c"), b"from elsewhere", now=w.now)
    w.run_until(w.now + 0.01)
    assert w.eps["c"].path_of(w.id("a")) == moved
    assert w.eps["c"].stats["roamed"] == 1 and w.eps["c"].stats["seen_sent"] == 0


@pytest.mark.parametrize("how", ["relayed data", "relay handshake"])
def test_a_peer_that_keys_us_through_a_relay_is_echoed_on_the_direct_path_we_leave(
    how: str,
) -> None:
    """A's port moved, and B keys A through a relay (C) before any echo of A's asked B where
    it sees A: as B does when another host behind A's NAT took A's old port toward B
    (ipop.link.paths.displaced), and so does every peer that host reached first. A echoes B
    on the direct path it leaves; B still hears A there and says where. Before, A learned
    nothing: its echoes and witnesses go over direct paths only, none was left, and in the
    lab such a pair stayed relayed (tests/sim/test_rebind.py, the shared NAT's case)."""
    w = Wire()
    w.link("a", "b")
    w.rebound = True
    a, b = w.eps["a"], w.eps["b"]
    to_a, to_b = (RelayPath(via=w.id("c"), peer=w.id(n)) for n in "ab")
    if how == "relayed data":
        b.set_path(w.id("a"), to_a)
        w.run_until(w.now + PATH_SILENT_S)  # A's direct path from B falls silent
        b.send(w.id("a"), b"through the relay", now=w.now)
    else:
        w.run_until(w.now + RELAY_TAKEOVER_SILENT_S)  # a relay may replace a silent path
        b.connect(to_a, now=w.now, expected=w.id("a"))
    w.run_until(w.now + 0.01)
    assert a.path_of(w.id("b")) == to_b
    assert ObservedEndpoint(A_NEW, w.id("b")) in w.events["a"]
    assert a.stats["echo_left_path"] == 1 and b.stats["echo_answered"] >= 1


def test_unasked_answers_seens_of_another_address_and_malformed_echoes_change_nothing() -> None:
    w = Wire()
    w.link("a", "b")
    b = w.eps["b"]
    # B (authenticated, but unasked) claims A is elsewhere: ignored, A's view stays.
    unasked = echo.ack_payload(12345, Endpoint("203.0.113.66", 4000))
    assert unasked is not None
    b.send(w.id("a"), unasked, now=w.now)
    b.send(w.id("a"), bytes([PROBE_TAG, echo.ECHO_ACK, 0]), now=w.now)  # truncated
    b.send(w.id("a"), bytes([PROBE_TAG, echo.ECHO_ACK]) + bytes(10), now=w.now)  # 0.0.0.0:0
    # A seen naming another address than any peer sees A at: refused (a port may change).
    lie = echo.ack_payload(0, Endpoint("203.0.113.66", 4000), kind=echo.SEEN)
    assert lie is not None
    b.send(w.id("a"), lie, now=w.now)
    w.run_until(w.now + 0.01)
    a = w.eps["a"]
    assert a.stats["echo_late"] == 1 and a.drops["bad_probe"] == 2
    assert a.stats["seen_refused"] == 1
    assert a.peers()[0].observed == A_OLD
    assert not [e for e in w.events["a"] if isinstance(e, ObservedEndpoint)]


def test_echo_messages_round_trip_and_the_answer_is_never_larger() -> None:
    e = echo.echo_payload(7)
    ack = echo.ack_payload(7, A_NEW)
    assert ack is not None and len(ack) <= len(e) == echo.ECHO_BYTES
    assert echo.parse(e) == (echo.ECHO, 7, None)
    assert echo.parse(ack) == (echo.ECHO_ACK, 7, A_NEW)
    assert echo.ack_payload(7, Endpoint("2001:db8::1", 5800)) is None
    assert echo.parse(e[:-1]) is None


def _rebind_state(w: Wire) -> tuple[object, ...]:
    st = w.eps["a"]._peers[w.id("b")]
    return (st.last_rx, st.rx_gap, st.rx_streak, st.tx_first, st.due, w.eps["a"].get_timer())


def test_a_runs_heard_is_heard_once_per_datagram() -> None:
    # The run form (LinkLayer.open_run) counts a run's datagrams at once: the same streak,
    # gap, echo deadline and timer as one call per datagram, whichever side of the busy
    # threshold the run starts and ends on, watched or not, after a silence or not.
    for n in range(1, 8):
        for streak in (0, 2, 3, 4, 9):
            for quiet in (0.1, REBIND_QUIET_S + 1):
                got = []
                for one_by_one in (True, False):
                    w = Wire()
                    w.link("a", "b")
                    w.eps["a"].watch(w.id("b"))
                    st = w.eps["a"]._peers[w.id("b")]
                    st.rx_streak = streak
                    w.run_until(w.now + quiet)
                    rb = w.eps["a"].rebinding
                    if one_by_one:
                        for _ in range(n):
                            rb.heard(st, w.now)
                    else:
                        rb.heard_run(st, w.now, n)
                    got.append(_rebind_state(w))
                assert got[0] == got[1], (n, streak, quiet)
