"""Path MTU probing over a link (ipop.link.pmtu): finding 4 of issue 14.

On a path whose underlay MTU was 1124, nothing found out: the TAP stayed at 1400, traffic
depended on IP fragmentation, and where ICMP was dropped too, TCP stalled. Every datagram now
carries DF, so a probe larger than the path vanishes; the largest size the peer acknowledges
is the path's. The wire here drops every datagram above ``path_max`` and carries no ICMP.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ipop.link.events import LinkMessage, ObservedEndpoint
from ipop.link.layer import LinkConfig, LinkLayer
from ipop.link.pmtu import (
    FINE_STEP,
    MAX_DATAGRAM,
    MIN_SPREAD_S,
    PROBE_TAG,
    RELAY_OVERHEAD,
    ROUND_INTERVAL_S,
    ROUND_WAIT_S,
    PathMtuProber,
    ack_payload,
    probe_payload,
)
from ipop.overlay.messages import RelayDeliver, RelayForward
from ipop.testing.clock import SIM_EPOCH
from ipop.testing.identities import make_identity, make_network
from ipop.types import Endpoint, NodeId, RelayPath
from ipop.wire.header import DATA_MIN_BYTES

A_EP = Endpoint("198.51.100.1", 5800)
B_EP = Endpoint("203.0.113.2", 5800)


class Path:
    """Two link endpoints on a DF path that carries datagrams up to ``path_max`` bytes, no
    latency, no ICMP; ``lose`` drops chosen datagrams besides."""

    def __init__(self, path_max: int, config: LinkConfig | None = None) -> None:
        ca = make_network(now=SIM_EPOCH - 60)
        self.ida = make_identity(ca, "alice", now=SIM_EPOCH - 60)
        self.idb = make_identity(ca, "bob", now=SIM_EPOCH - 60)
        self.a = LinkLayer(self.ida, rng=random.Random(1), config=config)
        self.b = LinkLayer(self.idb, rng=random.Random(2), config=config)
        self.path_max = path_max
        self.now = SIM_EPOCH
        self.lose = lambda data: False
        self.messages: list[LinkMessage] = []

    def _move(self) -> bool:
        moved = False
        for ep, other, src in ((self.a, self.b, A_EP), (self.b, self.a, B_EP)):
            for data, _path in ep.datagrams_to_send(now=self.now):
                moved = True
                if len(data) <= self.path_max and not self.lose(data):
                    other.receive_datagram(data, src, now=self.now)
            while (ev := ep.next_event()) is not None:
                if isinstance(ev, LinkMessage):
                    self.messages.append(ev)
        return moved

    def run_until(self, t_end: float) -> None:
        while True:
            while self._move():
                pass
            timers = [t for t in (self.a.get_timer(), self.b.get_timer()) if t is not None]
            t_next = min(timers, default=float("inf"))
            if t_next > t_end:
                self.now = t_end
                return
            self.now = max(self.now, t_next)
            for ep in (self.a, self.b):
                t = ep.get_timer()
                if t is not None and t <= self.now:
                    ep.handle_timer(now=self.now)

    def up(self, *, data: bool = True) -> None:
        """Link the two; with ``data``, traffic flows both ways (what makes a path probed)."""
        self.a.connect(B_EP, now=self.now, expected=self.idb.node_id)
        self.run_until(self.now + 0.001)
        assert self.a.is_up(self.idb.node_id) and self.b.is_up(self.ida.node_id)
        if data:
            self.a.want_path_mtu(self.idb.node_id, now=self.now)
            self.b.want_path_mtu(self.ida.node_id, now=self.now)

    def limits(self) -> tuple[int | None, int | None]:
        return (
            self.a.pmtu.limits.get(self.idb.node_id),
            self.b.pmtu.limits.get(self.ida.node_id),
        )


@pytest.mark.parametrize("path_max", [1124 - 28, MAX_DATAGRAM, 1300, 600])
def test_probing_finds_the_largest_datagram_a_df_path_carries(path_max: int) -> None:
    p = Path(path_max)
    p.up()
    assert p.limits() == (None, None)  # no limit before the first answer: as before probing
    # The coarse round, then the fine one, each over a round trip after its first ack: known
    # long before ROUND_WAIT_S (meanwhile the peer's big packets would vanish).
    p.run_until(p.now + 4 * MIN_SPREAD_S)
    for got in p.limits():
        assert got is not None and path_max - FINE_STEP < got <= path_max, got
    if path_max == 1124 - 28:  # the path: 1065 inner bytes + 31 of overhead
        assert p.limits() == (1096, 1096)
    assert p.messages == []  # probes and acks never reach the overlay
    assert not p.a.drops and not p.b.drops


def test_a_link_that_carries_no_data_is_never_probed() -> None:
    """Ring links carry only the overlay's small messages: probing every one of them doubled
    the datagrams of a 1,000-node simulation. The first data starts the search."""
    p = Path(1124 - 28)
    p.up(data=False)
    p.run_until(p.now + 3 * ROUND_WAIT_S)
    assert p.limits() == (None, None) and not p.a.pmtu.stats["probes_sent"]
    p.a.want_path_mtu(p.idb.node_id, now=p.now)
    p.run_until(p.now + 4 * MIN_SPREAD_S)
    assert p.limits()[0] == 1096 and p.a.pmtu.stats["probes_sent"] > 0


def test_a_lost_probe_does_not_shrink_the_path_and_a_smaller_path_does() -> None:
    p = Path(MAX_DATAGRAM)
    p.up()
    p.run_until(p.now + 2 * ROUND_WAIT_S + 0.01)
    assert p.limits() == (MAX_DATAGRAM, MAX_DATAGRAM)
    # The next round loses its largest probe once: one round's word is not enough.
    lost: list[int] = []

    def lose_once(data: bytes) -> bool:
        if len(data) == MAX_DATAGRAM and not lost:
            lost.append(len(data))
            return True
        return False

    p.lose = lose_once
    p.run_until(p.now + ROUND_INTERVAL_S + 5 * ROUND_WAIT_S)
    assert lost and p.limits() == (MAX_DATAGRAM, MAX_DATAGRAM)
    # The path really shrinks (a route change): two rounds in a row agree, the limit follows.
    p.path_max = 1096
    p.run_until(p.now + ROUND_INTERVAL_S + 5 * ROUND_WAIT_S)
    assert p.limits() == (1096, 1096)
    # And grows back at the next round.
    p.path_max = MAX_DATAGRAM
    p.run_until(p.now + ROUND_INTERVAL_S + 5 * ROUND_WAIT_S)
    assert p.limits() == (MAX_DATAGRAM, MAX_DATAGRAM)


def test_a_probe_is_sealed_to_its_exact_size_and_answered_by_a_smaller_ack() -> None:
    p = Path(MAX_DATAGRAM, LinkConfig(path_mtu_probes=False))
    p.up()
    data, _ = p.a.seal(p.idb.node_id, probe_payload(7, 1200), now=p.now)
    assert len(data) == 1200
    p.b.receive_datagram(data, A_EP, now=p.now)
    out = p.b.datagrams_to_send(now=p.now)
    assert len(out) == 1 and len(out[0][0]) < 100  # the ack; never an amplifier
    assert p.b.next_event() is None


@pytest.mark.parametrize("payload", [bytes([PROBE_TAG]), bytes([PROBE_TAG, 9, 0, 0, 0, 1])])
def test_a_malformed_probe_is_counted_and_dropped(payload: bytes) -> None:
    p = Path(MAX_DATAGRAM, LinkConfig(path_mtu_probes=False))
    p.up()
    data, _ = p.a.seal(p.idb.node_id, payload, now=p.now)
    p.b.receive_datagram(data, A_EP, now=p.now)
    assert p.b.drops == {"bad_probe": 1}
    assert p.b.datagrams_to_send(now=p.now) == []
    assert p.b.next_event() is None


_UP = Path(MAX_DATAGRAM, LinkConfig(path_mtu_probes=False))
_UP.up()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tail=st.binary(max_size=40))
# An echo (answered), and a seen notice and an echo's answer naming where the peer sees us
# (ipop.link.echo, which shares the probe tag): allowed to reach the overlay as news.
@example(tail=bytes([2]) + bytes(4))
@example(tail=bytes([4, 0, 0, 0, 1, 198, 51, 100, 1, 0x16, 0xA8]))
@example(tail=bytes([3, 0, 0, 0, 1, 198, 51, 100, 1, 0x16, 0xA8]))
def test_any_authenticated_probe_payload_is_answered_counted_or_ignored(tail: bytes) -> None:
    """Fuzz: whatever follows the probe tag in an authenticated DATA, nothing raises, nothing
    reaches the overlay but where an echo's answer or a seen notice says the peer sees us
    (ipop.link.echo shares the tag: kinds 2-4), and at most one small ack or echo answer
    leaves."""
    p = _UP
    p.b.drops.clear()
    data, _ = p.a.seal(p.idb.node_id, bytes([PROBE_TAG]) + tail, now=p.now)
    p.b.receive_datagram(data, A_EP, now=p.now)
    out = p.b.datagrams_to_send(now=p.now)
    ev = p.b.next_event()
    assert ev is None or (isinstance(ev, ObservedEndpoint) and tail[:1] in (b"\x03", b"\x04"))
    assert p.b.next_event() is None
    assert len(out) <= 1 and all(len(d) < 100 for d, _ in out)
    assert set(p.b.drops) <= {"bad_probe"}
    if out:
        assert (tail[:1] == b"\x00" and len(tail) >= 5) or tail[:1] == b"\x02"


# --- relayed paths: probed end to end through the relay -------------------------------------


def test_relay_overhead_is_the_relay_framing_inside_a_hops_datagram() -> None:
    data = bytes(100)
    for msg in (RelayForward(NodeId(5), data), RelayDeliver(NodeId(5), data)):
        assert len(msg.encode()) + DATA_MIN_BYTES - len(data) == RELAY_OVERHEAD


@pytest.mark.parametrize("relayed", [False, True])
def test_a_relayed_path_is_probed_up_to_what_a_relay_hop_can_carry(relayed: bool) -> None:
    """A relayed session's datagram crosses each hop RELAY_OVERHEAD bytes larger: probes of
    it start there (larger ones could not even leave); a direct path's, at MAX_DATAGRAM."""
    prober = PathMtuProber()
    peer = NodeId(1)
    prober.want(peer, now=0)
    path = RelayPath(via=NodeId(2), peer=peer) if relayed else A_EP
    prober.start(peer, path, now=0)
    probes = prober.due(0)
    assert {p for _, p, _ in probes} == {path}
    sizes = sorted(len(payload) + DATA_MIN_BYTES for _, _, payload in probes)
    top = MAX_DATAGRAM - RELAY_OVERHEAD if relayed else MAX_DATAGRAM
    assert sizes[-1] == top and sizes[0] == 548
    # The fine round after a result stays under the ceiling too.
    for _, _, payload in probes:
        if len(payload) + DATA_MIN_BYTES == top:
            prober.on_ack(peer, ack_payload(int.from_bytes(payload[2:6], "big")), now=0.01)
    probes = prober.due(1.0)  # the first round ends; its result changed: a fine round at once
    assert prober.limits[peer] == top
    assert max(len(payload) + DATA_MIN_BYTES for _, _, payload in probes) == top
