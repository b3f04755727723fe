"""Relayed links in runs through the events of a cold start are relayed links one by one.

``test_relay_runs_diff`` holds one relayed link's steady traffic equal both ways. Here five
:class:`ipop.core.NodeCore` objects in memory (ends A, C and B, relays R1 and R2, every end
linked to both relays, the ends' direct datagrams lost to their NATs until a pair "punches")
live through what cold starts bring, in a seeded random order, while IP packets and pings
flow both ways: a rekey, a handshake over a relay while data flows, a failover to the other
relay with the old one still delivering late datagrams, the pair punching direct with
datagrams still arriving through the relay, a relay that fell silent (a suspect hop) and
speaks again, a relay that lost its link to the target (RELAY_REFUSED), two origins in one
RELAY_DELIVER run, overlay control and probes inside runs.

Two worlds live through the same script: one whose nodes take every datagram one by one
(``receive_direct``, ``send_ip``), one whose nodes take them in runs of random length
(``receive_direct_run``, ``send_relayed_run``). Ephemeral keys are drawn from a counter, so
that the two worlds are byte for byte the same as long as they behave the same: every
datagram on the wire, every IP packet and event, and each node's counters and sessions are
compared after every step.

Also routed messages across relayed hops in runs (three ends clustered on the ring, the middle
one forwarding between two relayed links), and a cold start of nine nodes left to themselves
(six ends that reach each other only over relays), each in runs exactly as one by one.
"""

from __future__ import annotations

import hashlib
import itertools
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ipop.core import NodeCore
from ipop.identity import NodeIdentity
from ipop.identity import ca as ca_mod
from ipop.identity import credentials as credentials_mod
from ipop.link import fastpath
from ipop.link import handshake as handshake_mod
from ipop.link import handshakes as handshakes_mod
from ipop.link.config import LinkConfig
from ipop.overlay.config import OverlayConfig
from ipop.overlay.events import Delivered
from ipop.overlay.messages import KIND_IP, KIND_PING, TYPE_DIRECT, Alive
from ipop.testing.identities import make_identity, make_network, seeded_identity
from ipop.types import Endpoint, NodeId, RelayPath

NATIVE = fastpath.native_class()
BACKENDS = [
    "python",
    pytest.param("native", marks=pytest.mark.skipif(NATIVE is None, reason="not built")),
]
# Relay channels off: the runs compared here are RELAY_FORWARD's (one by one has no channel;
# test_relay_channels holds the channel's path to its own checks).
FORWARD_ONLY = OverlayConfig(relay_channels=False)
NAMES = ("r1", "r2", "a", "c", "b")
ENDS = ("a", "c", "b")
EPS = {
    "r1": Endpoint("198.51.100.11", 5800),
    "r2": Endpoint("198.51.100.12", 5800),
    "a": Endpoint("203.0.113.21", 5800),
    "c": Endpoint("203.0.113.23", 5800),
    "b": Endpoint("203.0.113.22", 5800),
}
T0 = time.time()


class _CountedSigningKeys:
    """Ed25519PrivateKey for the identities, its ``generate`` drawn from a counter: the same
    node ids (the same places on the ring) in every run of the test."""

    def __init__(self) -> None:
        self.drawn = itertools.count()

    def generate(self) -> Ed25519PrivateKey:
        seed = hashlib.sha256(b"signing %d" % next(self.drawn)).digest()
        return Ed25519PrivateKey.from_private_bytes(seed)


def _identities() -> dict[str, NodeIdentity]:
    with pytest.MonkeyPatch.context() as mp:
        keys = _CountedSigningKeys()
        mp.setattr(ca_mod, "Ed25519PrivateKey", keys)
        mp.setattr(credentials_mod, "Ed25519PrivateKey", keys)
        ca = make_network("quintet", now=T0 - 60)
        return {name: make_identity(ca, name, now=T0 - 60) for name in NAMES}


IDS = _identities()  # both worlds: the same ids


def _clustered_identities() -> dict[str, NodeIdentity]:
    """Identities whose ends lie close together on the ring, A < B < C, and whose relays lie
    across it: with A and C unlinked, B is the greedy hop between them both ways, so a message
    routed A -> C (or C -> A) crosses two relayed links, B forwarding it from one to the other.
    Drawn from seeded keys in order (the same ids every run)."""
    ca = make_network("clustered", now=T0 - 60, seed="clustered")
    size = 1 << 160
    ends: list[NodeIdentity] = []
    relays: list[NodeIdentity] = []
    for k in itertools.count():
        ident = seeded_identity(ca, f"n{k}", random.Random(k), now=T0 - 60)
        at = ident.node_id.value
        if at < size // 16 and len(ends) < 3:
            ends.append(ident)
        elif size // 2 <= at < size * 3 // 4 and len(relays) < 2:
            relays.append(ident)
        if len(ends) == 3 and len(relays) == 2:
            break
    a, b, c = sorted(ends, key=lambda i: i.node_id.value)
    return {"r1": relays[0], "r2": relays[1], "a": a, "b": b, "c": c}


CLUSTERED = _clustered_identities()


class _CountedKeys:
    """X25519PrivateKey for the handshakes, its ``generate`` drawn from a counter."""

    def __init__(self) -> None:
        self.drawn: Iterator[int] = itertools.count()

    def generate(self) -> X25519PrivateKey:
        seed = hashlib.sha256(b"ephemeral %d" % next(self.drawn)).digest()
        return X25519PrivateKey.from_private_bytes(seed)


def _counted_keys(monkeypatch: pytest.MonkeyPatch) -> _CountedKeys:
    """Every handshake's ephemeral key drawn from one counter (see _CountedKeys)."""
    keys = _CountedKeys()
    monkeypatch.setattr(handshake_mod, "X25519PrivateKey", keys)
    monkeypatch.setattr(handshakes_mod, "X25519PrivateKey", keys)
    return keys


@dataclass
class World:
    """Five cores in memory; ``runs``: the data plane's runs, else one by one."""

    runs: bool
    split: random.Random
    whole: bool = False  # each batch in one run, else split at random (1 to 9 long)
    cores: dict[str, NodeCore] = field(default_factory=dict)
    # End pairs whose direct datagrams get through (punched).
    direct: set[frozenset[str]] = field(default_factory=set)
    # (src, dst) whose datagrams wait in ``held`` until released (a stalled hop).
    stalled: set[tuple[str, str]] = field(default_factory=set)
    held: list[tuple[str, str, bytes]] = field(default_factory=list)
    wire: list[tuple[str, str, bytes]] = field(default_factory=list)
    got: dict[tuple[str, str], list[bytes]] = field(default_factory=dict)
    events: list[tuple[str, str]] = field(default_factory=list)
    hops: list[int] = field(default_factory=list)  # each ping's, as delivered
    eps: dict[str, Endpoint] = field(default_factory=lambda: EPS)  # every node's, by name

    def name_at(self, ep: Endpoint) -> str | None:
        for name, e in self.eps.items():
            if e == ep:
                return name
        return None

    def name_of(self, node: NodeId) -> str:
        for name, core in self.cores.items():
            if core.local_id == node:
                return name
        return "?"

    def id(self, name: str) -> NodeId:
        return self.cores[name].local_id

    def take(self, dst: str, src: str, datagrams: list[bytes], now: float) -> None:
        """What the data plane does with ``datagrams`` from ``src`` (one recvmmsg's)."""
        core = self.cores[dst]
        ep = self.eps[src]
        out: list[tuple[NodeId, bytes]] = []
        if self.runs:
            i = 0
            while i < len(datagrams):
                k = len(datagrams) if self.whole else i + self.split.randint(1, 9)
                out += core.receive_direct_run(datagrams[i:k], ep, now=now, kind=KIND_IP)
                i = k
        else:
            for data in datagrams:
                one = core.receive_direct(data, ep, now=now, kind=KIND_IP)
                if one is not None:
                    out.append(one)
        core.flush(now=now)
        for peer, msg in out:
            self.got.setdefault((dst, self.name_of(peer)), []).append(msg[2:])
        self.drain_events(dst)

    def drain_events(self, name: str) -> None:
        core = self.cores[name]
        while (ev := core.next_event()) is not None:
            if type(ev) is Delivered and ev.kind == KIND_IP:
                self.got.setdefault((name, self.name_of(ev.src)), []).append(ev.payload)
                continue
            if type(ev) is Delivered and ev.kind == KIND_PING:
                self.hops.append(ev.hops)
            self.events.append((name, repr(ev)))

    def lost(self, src: str, dst: str) -> bool:
        """Are ``src``'s datagrams to ``dst`` lost? Those between ends, until they punch."""
        return dst in ENDS and src in ENDS and frozenset((src, dst)) not in self.direct

    def move(self, now: float) -> bool:
        """Carry every queued datagram once, grouped per (source, destination) in order."""
        moved = False
        for src in self.eps:
            core = self.cores[src]
            batches: dict[str, list[bytes]] = {}
            for data, path in core.datagrams_to_send(now=now):
                moved = True
                dst = self.name_at(path) if isinstance(path, Endpoint) else None
                if dst is None or self.lost(src, dst):
                    continue
                if (src, dst) in self.stalled:
                    self.held.append((src, dst, data))
                    continue
                self.wire.append((src, dst, data))
                batches.setdefault(dst, []).append(data)
            for dst, datagrams in batches.items():
                self.take(dst, src, datagrams, now)
        return moved

    def settle(self, now: float) -> None:
        for _ in range(20):
            if not self.move(now):
                return

    def release(self, src: str, dst: str, now: float) -> None:
        """The stalled hop speaks again: what it held arrives late, in one batch."""
        self.stalled.discard((src, dst))
        late = [d for s, t, d in self.held if (s, t) == (src, dst)]
        self.held = [h for h in self.held if (h[0], h[1]) != (src, dst)]
        self.wire += [(src, dst, d) for d in late]
        if late:
            self.take(dst, src, late, now)

    def timers(self, now: float) -> None:
        for name in self.eps:
            core = self.cores[name]
            due = core.get_timer()
            if due is not None and due <= now:
                core.handle_timer(now=now)
            self.drain_events(name)

    def send_ip(self, src: str, dst: str, packets: list[bytes], now: float) -> None:
        """The data plane's sender: a relayed link's packets in one run where it can."""
        core, to = self.cores[src], self.id(dst)
        msgs = [bytes((TYPE_DIRECT, KIND_IP)) + p for p in packets]
        if self.runs and core.send_relayed_run(to, msgs, now=now):
            return
        for p in packets:
            core.send_ip(to, p, now=now)
        core.flush(now=now)


def _world(
    runs: bool, seed: int, keys: _CountedKeys, ids: dict[str, NodeIdentity] = IDS
) -> tuple[World, float, Iterator[int]]:
    drawn = keys.drawn = itertools.count()
    w = World(runs, random.Random(seed))
    boot = {"r1": [], "r2": [EPS["r1"]]}
    for i, name in enumerate(NAMES):
        w.cores[name] = NodeCore(
            ids[name],
            rng=random.Random(100 + i),
            bootstrap=boot.get(name, [EPS["r1"], EPS["r2"]]),
            overlay_config=FORWARD_ONLY,
        )
    now = T0
    for name in NAMES:
        w.cores[name].start(now=now)
    for _ in range(300):
        now += 0.02
        w.timers(now)
        w.settle(now)
    return w, now, drawn


def _state(w: World) -> dict[str, Any]:
    # The wire per (source, destination), in order: the order across destinations is the
    # outbox's (a relayed run's datagrams leave after a handshake queued for another relay,
    # say), which no network keeps anyway.
    wire: dict[tuple[str, str], list[bytes]] = {}
    for src, dst, data in w.wire:
        wire.setdefault((src, dst), []).append(data)
    out: dict[str, Any] = {"wire": wire, "got": w.got, "events": w.events, "held": w.held}
    for name, core in w.cores.items():
        sessions = {}
        for st in core.link._peers.values():
            kp = st.current
            keys = None if kp is None else (kp.send_counter, kp.replay.top, bytes(kp.replay.seen))
            sessions[w.name_of(st.node_id)] = (
                repr(st.path),
                st.up,
                (st.rx_packets, st.rx_bytes, st.last_rx, st.tx_packets, st.tx_bytes),
                keys,
            )
        out[name] = {
            "sessions": sessions,
            "link_drops": dict(core.link.drops),
            "link_stats": dict(core.link.stats),
            "node": dict(core.stats),
            "overlay_drops": dict(core.overlay.drops),
            "overlay_stats": dict(core.overlay.stats),
            "linked": sorted(w.name_of(p) for p in core.overlay.connected_peers()),
            # Links up and down, path changes and their reasons, punches (the adapter's log).
            "journal": [(n.at, n.line()) for n in core.journal._notes],
        }
    return out


def _packets(rng: random.Random, n: int) -> list[bytes]:
    return [b"\x45" + bytes(rng.randrange(20, 300)) + bytes([k]) for k in range(n)]


def _script(w: World, seed: int, now: float, steps: int) -> Iterator[str]:
    """The script both worlds live through: yields each step's name once it is done."""
    rng = random.Random(seed)  # the same draws in both worlds: the script's own

    def relay(x: str, y: str, via: str) -> None:
        w.cores[x].link.connect(RelayPath(via=w.id(via), peer=w.id(y)), now=now, expected=w.id(y))
        w.cores[x].flush(now=now)

    relay("a", "b", "r1")
    relay("c", "b", "r1")
    w.settle(now)
    yield "relayed"
    for _ in range(steps):
        now += rng.choice((0.001, 0.01, 0.05, 0.3))
        step = rng.choice(
            (
                "traffic",
                "traffic",
                "traffic",
                "ping",
                "rekey",
                "failover",
                "failback",
                "punch",
                "stall",
                "refused",
                "probe",
            )
        )
        if step == "rekey":  # the next packet starts a rekey over the relayed path
            x, y = rng.choice((("a", "b"), ("b", "a"), ("c", "b")))
            st = w.cores[x].link._peers.get(w.id(y))
            if st is not None and st.current is not None:
                st.current.rekey_at = now
        elif step in ("failover", "failback"):  # a handshake over the other relay
            x, y = rng.choice((("a", "b"), ("b", "a"), ("c", "b")))
            via = "r2" if step == "failover" else "r1"
            old = "r1" if via == "r2" else "r2"
            w.stalled.add((old, y))  # the old relay's deliveries come late
            relay(x, y, via)
        elif step == "punch":
            x, y = rng.choice((("a", "b"), ("b", "a")))
            path = w.cores[x].link.path_of(w.id(y))
            if isinstance(path, RelayPath):  # its relay's deliveries come after the punch
                w.stalled.add((w.name_of(path.via), y))
            w.direct.add(frozenset((x, y)))
            # The punch gets through now: an attempt still retrying there starts afresh.
            w.cores[x].link.handshakes.cancel(w.id(y))
            w.cores[x].link.connect(EPS[y], now=now, expected=w.id(y))
            w.cores[x].flush(now=now)
        elif step == "stall":  # a relay falls silent toward an end for a while
            w.stalled.add((rng.choice(("r1", "r2")), rng.choice(ENDS)))
        elif step == "refused":  # a relay loses its link to an end
            r, y = rng.choice(("r1", "r2")), rng.choice(ENDS)
            w.cores[r].link.close(w.id(y), now=now)
            w.cores[r].flush(now=now)
        elif step == "probe":
            x, y = rng.choice((("a", "b"), ("b", "a"), ("c", "b")))
            w.cores[x].link.want_path_mtu(w.id(y), now=now)
        # Traffic every step: IP packets (runs), pings (overlay), both ways.
        for x, y in (("a", "b"), ("b", "a"), ("c", "b"), ("b", "c")):
            if rng.random() < 0.6:
                w.send_ip(x, y, _packets(rng, rng.randrange(1, 12)), now)
            if step == "ping" and rng.random() < 0.5:
                w.cores[x].send(w.id(y), KIND_PING, b"ping", now=now)
                w.cores[x].flush(now=now)
        w.timers(now)
        w.settle(now)
        if w.stalled and rng.random() < 0.3:
            src, dst = sorted(w.stalled)[rng.randrange(len(w.stalled))]
            w.release(src, dst, now)
            w.settle(now)
        yield step


def _compare(backend: str, seed: int, steps: int, monkeypatch: pytest.MonkeyPatch) -> None:
    keys = _counted_keys(monkeypatch)
    fastpath.use("python")
    one, t, one_keys = _world(False, seed, keys)
    fastpath.use(backend)
    run, t2, run_keys = _world(True, seed, keys)
    assert t == t2
    assert _state(one) == _state(run)
    # Both through the same script in lockstep, each world drawing its ephemeral keys from
    # its own counter (as the setup did): the same keys as long as they behave the same.
    counts = {False: one_keys, True: run_keys}
    scripts = {False: _script(one, seed, t, steps), True: _script(run, seed, t, steps)}
    history: list[str] = []
    while True:
        steps_done = []
        for runs in (False, True):
            keys.drawn = counts[runs]
            steps_done.append(next(scripts[runs], None))
        assert steps_done[0] == steps_done[1]
        if steps_done[0] is None:
            break
        history.append(steps_done[0])
        a, b = _state(one), _state(run)
        for key in a:
            assert a[key] == b[key], (seed, history, key)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed", range(6))
def test_relayed_runs_through_cold_start_events(
    backend: str, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    _compare(backend, seed, 60, monkeypatch)


@pytest.mark.parametrize("runs", [False, True])
def test_an_answer_inside_a_delivered_run_never_finds_its_relay_suspect(
    runs: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # B sent into R1 and heard nothing back for seconds (R1 is suspect to B). Then R1 speaks:
    # it delivers A's packets and A's ALIVE question (A probing B as a silent next hop),
    # whose answer B sends back through R1. One by one, B heard R1 (each RELAY_DELIVER)
    # before it opened what R1 delivered; in runs it heard R1 only after the whole run, so
    # the answer found R1 suspect and failed B's link to A over to R2: a relay failover for
    # nothing ("path_changed path=relayed was=relayed at=via:R2 reason=handshake").
    keys = _counted_keys(monkeypatch)
    fastpath.use("python")
    w, now, _ = _world(runs, 0, keys)
    a, b = w.cores["a"], w.cores["b"]
    a.link.connect(RelayPath(via=w.id("r1"), peer=w.id("b")), now=now, expected=w.id("b"))
    a.flush(now=now)
    w.settle(now)
    via_r1 = RelayPath(via=w.id("r1"), peer=w.id("a"))
    assert b.link.path_of(w.id("a")) == via_r1
    w.stalled.add(("r1", "b"))
    now += 0.1
    w.send_ip("b", "a", _packets(random.Random(1), 3), now)  # into R1: an episode begins
    w.settle(now)
    now += 4.0  # past SUSPECT_RTOS timeouts of any RTO: R1 is suspect to B
    assert b.overlay._silent_hops.suspect(w.id("r1"), now)
    w.held.clear()  # what R1 sent B meanwhile (its own gossip, say) was lost
    a.link.send(w.id("b"), Alive(True, 7).encode(), now=now)
    w.send_ip("a", "b", _packets(random.Random(2), 8), now)
    w.settle(now)
    assert w.held and all(s == "r1" for s, _, _ in w.held)
    w.whole = True
    w.release("r1", "b", now)  # R1 speaks: A's deliveries, in one batch
    w.settle(now)
    assert b.overlay.stats["relay_failovers"] == 0
    assert b.link.path_of(w.id("a")) == via_r1
    assert len(w.got[("a", "b")]) == 3 and len(w.got[("b", "a")]) == 8


def _routed_world(runs: bool, backend: str, keys: _CountedKeys) -> tuple[World, float]:
    """The clustered ends after a cold start, A-B and B-C linked over relay R1 and A-C not
    linked at all (as while a shortcut forms): routed messages between A and C go through B."""
    fastpath.use(backend)
    w, now, _ = _world(runs, 0, keys, CLUSTERED)
    for x, y in (("a", "b"), ("b", "c")):
        path = w.cores[x].link.path_of(w.id(y))
        if not isinstance(path, RelayPath):  # the cold start may have linked them otherwise
            w.cores[x].link.connect(RelayPath(via=w.id("r1"), peer=w.id(y)), now=now)
            w.cores[x].flush(now=now)
    w.settle(now)
    # A and C forget each other at once (no CLOSING in flight), and no timer runs from here
    # on: nothing links them again, nor asks for a shortcut (send_routed asks for none).
    for x, y in (("a", "c"), ("c", "a")):
        w.cores[x].link.close(w.id(y), now=now)
        w.cores[x].flush(now=now)
    w.settle(now)
    return w, now


@pytest.mark.parametrize("backend", BACKENDS)
def test_routed_messages_cross_relayed_hops_in_runs(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 16's cold starts: routed pings (no shortcut yet) toward a node behind a symmetric
    # NAT, whose ring links are relayed, were feared lost where a hop on the route is a
    # relayed link taken in runs (the relay re-sealing behind a swapped head, the receiver
    # opening the datagrams behind it and handing ROUTED messages to the overlay). Here:
    # A -> R1 -> B routed on by B -> R1 -> C, the reverse, and routed messages whose
    # destination is the relayed peer itself, several at once (runs at R1 and at each end)
    # with IP packets on the same relayed links, in runs and one by one.
    keys = _counted_keys(monkeypatch)
    worlds = {
        runs: _routed_world(runs, "python" if not runs else backend, keys) for runs in (False, True)
    }
    for runs, (w, now) in worlds.items():
        fastpath.use("python" if not runs else backend)
        w.whole = runs  # each batch in one run: every routed message inside a relayed run
        w.events.clear()
        ids = {name: w.id(name) for name in ENDS}
        assert not w.cores["a"].overlay.is_linked(ids["c"])
        for x, y in (("a", "b"), ("b", "c")):
            assert isinstance(w.cores[x].link.path_of(ids[y]), RelayPath)
            assert isinstance(w.cores[y].link.path_of(ids[x]), RelayPath)
        rng = random.Random(5)
        for step in range(6):
            now += 0.01
            for x, y in (("a", "c"), ("c", "a"), ("a", "b"), ("b", "a"), ("c", "b")):
                for k in range(4):
                    w.cores[x].send_routed(
                        ids[y],
                        KIND_PING,
                        b"%s>%s %d.%d" % (x.encode(), y.encode(), step, k),
                        exact=True,
                        now=now,
                    )
            for x, y in (("a", "b"), ("b", "a"), ("c", "b")):
                w.send_ip(x, y, _packets(rng, 3), now)
            w.settle(now)
        got: dict[tuple[str, str], list[int]] = {}
        for name, line in w.events:
            if line.startswith("Delivered(") and f"kind={KIND_PING}," in line:
                src = next(n for n in ENDS if line.startswith(f"Delivered(src={ids[n]!r}"))
                got.setdefault((src, name), []).append(int(line.split("hops=")[1].split(",")[0]))
        assert got[("a", "c")] == [2] * 24 and got[("c", "a")] == [2] * 24, (runs, got)
        assert got[("a", "b")] == got[("b", "a")] == got[("c", "b")] == [1] * 24, (runs, got)
        for core in w.cores.values():
            assert not set(core.overlay.drops) & {"no_route", "own_src_returned", "unknown_peer"}
            assert not core.link.drops["unknown_index"]
    one, run = _state(worlds[False][0]), _state(worlds[True][0])
    for key in one:
        assert one[key] == run[key], key


# A cold start of nine nodes left to themselves: three public ones and six ends whose
# datagrams to each other are lost (as between symmetric NATs), so the ends' ring links come
# up over relays by the overlay's own attempts.
PUBLIC = ("p0", "p1", "p2")
NATED = ("n0", "n1", "n2", "n3", "n4", "n5")
NAT_EPS = {name: Endpoint(f"198.51.100.{10 + i}", 5800) for i, name in enumerate(PUBLIC + NATED)}
_NAT_CA = make_network("coldstart", now=T0 - 60, seed="coldstart")
_NAT_DRAW = random.Random(7)
NAT_IDS = {name: seeded_identity(_NAT_CA, name, _NAT_DRAW, now=T0 - 60) for name in NAT_EPS}


@dataclass
class NatedWorld(World):
    """:class:`World` of the nine nodes; IP goes one by one (see the test)."""

    eps: dict[str, Endpoint] = field(default_factory=lambda: NAT_EPS)

    def lost(self, src: str, dst: str) -> bool:
        return src in NATED and dst in NATED


def _nated_world(runs: bool, seed: int) -> NatedWorld:
    w = NatedWorld(runs, random.Random(seed))
    config = LinkConfig(rebind_echoes=False)  # (see the test)
    for i, name in enumerate(NAT_EPS):
        boot = [NAT_EPS[p] for p in PUBLIC if p != name]
        w.cores[name] = NodeCore(
            NAT_IDS[name],
            rng=random.Random(100 + i),
            bootstrap=boot,
            link_config=config,
            overlay_config=FORWARD_ONLY,
        )
    return w


def _nated_script(w: NatedWorld, seed: int, steps: int) -> Iterator[int]:
    """The cold start both worlds live through (the script's own draws): yields each step."""
    rng = random.Random(seed)
    now = T0
    for core in w.cores.values():
        core.start(now=now)
    for step in range(steps):
        now += rng.choice((0.01, 0.05, 0.1, 0.2))
        if step >= 20:  # pings between random pairs: routed until their shortcut is up
            for _ in range(3):
                x, y = rng.sample(sorted(NAT_EPS), 2)
                w.cores[x].send(w.id(y), KIND_PING, b"ping %d" % step, now=now)
                w.cores[x].flush(now=now)
        for x, y in itertools.permutations(NATED, 2):
            core, to = w.cores[x], w.id(y)
            if rng.random() < 0.1 and core.overlay.is_linked(to):
                for k in range(rng.randrange(1, 8)):
                    core.send_ip(to, b"\x45" + bytes(rng.randrange(20, 200)) + bytes([k]), now=now)
                core.flush(now=now)
        w.timers(now)
        w.settle(now)
        yield step


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed", range(2))
def test_cold_start_with_nated_ends_in_runs_is_one_by_one(
    backend: str, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 16's cold starts lost pairs toward symmetric-NAT nodes with both ends routing over
    # the ring: here pings between random pairs go routed (often across relayed links, hop
    # after hop) until their shortcut forms, in runs and one by one, compared at every step.
    # Two known divergences of runs are left out, both main's too and neither relayed links'
    # own: rebinding echoes are off (a run answers its messages after hearing all of its
    # datagrams, so an answer's "first message since the peer spoke" mark stays where one by
    # one a later datagram of the run cleared it, and an echo follows later), and IP is sent
    # one by one (a relayed run puts the punching guess after the run, one by one after its
    # first packet).
    keys = _counted_keys(monkeypatch)
    one, run = _nated_world(False, seed), _nated_world(True, seed)
    drawn = {False: itertools.count(), True: itertools.count()}
    scripts = {False: _nated_script(one, seed, 300), True: _nated_script(run, seed, 300)}
    for step in range(300):
        for runs in (False, True):
            keys.drawn = drawn[runs]
            fastpath.use(backend if runs else "python")
            assert next(scripts[runs]) == step
        a, b = _state(one), _state(run)
        for key in a:
            assert a[key] == b[key], (seed, step, key)
    # What it went through: ends linked over relays, pings routed over several hops.
    relayed = [
        (x, y)
        for x, y in itertools.permutations(NATED, 2)
        if isinstance(run.cores[x].link.path_of(run.id(y)), RelayPath)
    ]
    assert len(relayed) >= 8, relayed
    assert sum(h >= 2 for h in run.hops) >= 20, run.hops


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("runs", [False, True])
def test_a_probe_answered_in_a_run_leaves_no_mark_the_datagrams_after_it_clear(
    backend: str, runs: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # R1 echoes R2 and sends a packet right after: R2 takes both in one run. One by one, R2
    # hears the echo, answers it (its first message since R1 spoke: ``tx_first``) and then
    # hears the packet, which clears the mark. When the run heard every datagram before the
    # probe was answered, the mark stayed: R2 echoed R1 REBIND_QUIET_S later whether or not
    # R1 fell silent (in one lab cold start, echoes +40 % and witnesses asked twice as often
    # as on main, whose runs answered probes in place).
    keys = _counted_keys(monkeypatch)
    fastpath.use(backend if runs else "python")
    w, now, _ = _world(runs, 0, keys)
    w.whole = True
    r1, r2 = w.cores["r1"], w.cores["r2"]
    r2.link.watch(w.id("r1"))
    st = r2.link._peers[w.id("r1")]
    now += 1.0
    answered = r2.link.stats["echo_answered"]
    assert r1.link.echo(w.id("r2"), now=now)
    r1.send(w.id("r2"), KIND_PING, b"ping", now=now)
    r1.flush(now=now)
    w.settle(now)
    assert r2.link.stats["echo_answered"] == answered + 1
    # No mark: R2 echoes R1 only once R1 falls silent after a busy spell (rx_streak).
    assert st.tx_first == float("inf")
