"""What one message of an insider makes a node send: the "bounded work" table of issue 13.

Real cores (:class:`ipop.core.NodeCore`: link layer + overlay + port guessing) on a tiny
in-memory wire, in virtual time. Three members: M (the attacker's first hop), V (the victim
node we measure) and A (the attacker, a certified member running a modified build: it sends
messages the honest code would not). Every datagram any core sends is logged with its size
and destination; addresses that belong to no member are *third parties*.

For each message type an insider can send, the scenario is run twice from the same state,
once with the message and once without; the difference in bytes V sends is what the message
caused. Amplification = caused bytes / bytes of the datagram that carried the message into V
(sealed: link header and tag included), over the message's lifetime (30 s of virtual time,
past every retry). The third-party column counts only bytes toward addresses no member
holds, the reflector case (findings 4 and 5 of the issue)::

    .venv/bin/python -m ipop.tools.bench.amplification [--json]

Columns: ``in B`` the message's datagram, ``caused`` what V sent because of it (to members:
the difference between the runs; to third parties: all of it), ``ampl`` their ratio, ``3rd B``
bytes to third parties, ``3rd/addr`` the most any one third-party address got, per message
byte. Each row also names what bounds it. The DHT rows are computed from the DHT's codec (the
DHT is asyncio code above NodeCore) with the routed overhead measured here. The attacker's
modified build is played by reaching into A's cores (private attributes, on purpose).

Tests (tests/sim/test_amplification.py) use :func:`measure` with the same scenarios.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ipop.core import NodeCore
from ipop.dht.service import DhtConfig
from ipop.dht.wire import (
    MAX_FIND_NODES,
    NodesFound,
    NodesRequested,
    PingAnswered,
    PingRequested,
    encode_message,
)
from ipop.identity import NodeIdentity
from ipop.overlay.messages import (
    KIND_BIRTHDAY,
    KIND_PING,
    MAX_LINK_IDS,
    Alive,
    Closing,
    LinkIds,
    Neighbours,
    Purpose,
    RelayDeliver,
    RelayForward,
)
from ipop.overlay.node import OverlayConfig
from ipop.testing.clock import SIM_EPOCH
from ipop.testing.identities import make_network
from ipop.types import Endpoint, NodeId, Path, RelayPath, SocketPath
from ipop.wire.header import TYPE_DATA

__all__ = ["ROWS", "Wire", "main", "measure"]

PORT = 5800
_DATA = bytes((TYPE_DATA,))
M_EP = Endpoint("203.0.113.10", PORT)
V_EP = Endpoint("203.0.113.11", PORT)
A_EP = Endpoint("203.0.113.12", PORT)
# Third parties an attacker names: nobody of the overlay lives there.
VICTIMS = tuple(Endpoint(f"198.51.100.{i}", 7000 + i) for i in range(1, 9))
LIFETIME_S = 30.0
STEP_S = 0.05


def _dest(path: Path) -> Endpoint | None:
    if type(path) is SocketPath:
        return path.remote
    if type(path) is Endpoint:
        return path
    return None


@dataclass
class Wire:
    """Members' cores by endpoint; every datagram sent is logged (time, sender, dst, size)."""

    cores: dict[Endpoint, NodeCore] = field(default_factory=dict)
    log: list[tuple[float, Endpoint, Endpoint, int]] = field(default_factory=list)
    # Sizes of the DATA datagrams (sealed overlay messages) each member received, in order.
    data_in: dict[Endpoint, list[int]] = field(default_factory=dict)
    # Pairs of member endpoints that cannot reach each other (keeps A off V's table).
    blocked: set[frozenset[Endpoint]] = field(default_factory=set)
    now: float = SIM_EPOCH

    def pump(self) -> None:
        busy = True
        while busy:
            busy = False
            for src, core in list(self.cores.items()):
                core.flush(now=self.now)  # what the attacker queued in the layers by hand
                for data, path in core.datagrams_to_send(now=self.now):
                    dst = _dest(path)
                    if dst is None:
                        continue
                    self.log.append((self.now, src, dst, len(data)))
                    peer = self.cores.get(dst)
                    if peer is None or frozenset((src, dst)) in self.blocked:
                        continue
                    busy = True
                    if data[:1] == _DATA:
                        self.data_in.setdefault(dst, []).append(len(data))
                    peer.receive_datagram(data, src, now=self.now)
                while (ev := core.next_event()) is not None:
                    _answer_ping(core, ev, self.now)

    def run(self, seconds: float) -> None:
        end = self.now + seconds
        while self.now < end:
            self.now = round(self.now + STEP_S, 6)
            for core in list(self.cores.values()):
                t = core.get_timer()
                if t is not None and t <= self.now:
                    core.handle_timer(now=self.now)
            self.pump()

    def sent_by(self, src: Endpoint, since: float) -> list[tuple[Endpoint, int]]:
        return [(d, n) for t, s, d, n in self.log if s == src and t >= since]


def _answer_ping(core: NodeCore, ev: object, now: float) -> None:
    """What ipop.aio.stack.Node does with a ping: the same bytes back, the way it came."""
    from ipop.overlay.events import Delivered

    if type(ev) is not Delivered or ev.kind != KIND_PING or len(ev.payload) != 6:
        return
    if ev.payload[0] != 0:
        return
    reply = bytes((1,)) + ev.payload[1:5] + bytes((ev.hops,))
    if ev.hops == 0:
        core.send(ev.src, KIND_PING, reply, now=now)
    else:
        core.send_routed(ev.src, KIND_PING, reply, exact=True, now=now)


_IDS: dict[str, NodeIdentity] = {}


def _identity(name: str) -> NodeIdentity:
    """Fixed keys, so that the ring's order (and so every run) is the same each time."""
    if not _IDS:
        ca = make_network("ampnet", now=SIM_EPOCH)
        for i, n in enumerate(("m", "v", "a")):
            key = Ed25519PrivateKey.from_private_bytes(bytes([i + 1]) * 32)
            raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
            _IDS[n] = NodeIdentity(key, ca.sign_node(raw, n, now=SIM_EPOCH), ca.trust)
    return _IDS[name]


def _core(name: str, ep: Endpoint, boot: tuple[Endpoint, ...], seed: int) -> NodeCore:
    cfg = OverlayConfig(local_endpoints=(ep,), far_links=False)
    return NodeCore(_identity(name), rng=random.Random(seed), bootstrap=boot, overlay_config=cfg)


def build(*, a_linked_to_v: bool) -> tuple[Wire, NodeCore, NodeCore, NodeCore]:
    """M, V and A up and idle. A links to V directly only with ``a_linked_to_v``; otherwise
    every path between them is blocked (A reaches V only through M, as a far member would)."""
    wire = Wire()
    m = _core("m", M_EP, (), 1)
    v = _core("v", V_EP, (M_EP,), 2)
    a = _core("a", A_EP, (M_EP,) if not a_linked_to_v else (V_EP,), 3)
    if not a_linked_to_v:
        wire.blocked.add(frozenset((A_EP, V_EP)))
        # Nor through a relay: M relays nothing (A stands for a member far from V).
        m.overlay._message_handlers[RelayForward] = lambda *_: None
    for ep, c in ((M_EP, m), (V_EP, v), (A_EP, a)):
        wire.cores[ep] = c
        c.start(now=wire.now)
    wire.pump()
    wire.run(40.0)  # joined, near links up, connect-backs and relays settled or given up
    if not a_linked_to_v:
        # In a ring of three everybody is a near candidate: make A and V stop asking for each
        # other, as two far members would not (their failed attempts would hide the CTM's).
        for x, y in ((v, a), (a, v)):
            x.overlay.backoff.put(y.local_id, float("inf"))
        wire.run(LIFETIME_S)  # the last handshakes toward each other time out
        # (JOIN probes still answer each other: drop what that started, just before.)
        for x, y in ((v, a), (a, v)):
            x.overlay.attempts.cancel(y.local_id)
    return wire, m, v, a


# --- the attacker's messages (each returns the datagram size V received) -----------------------


def _ctm_third_parties(wire: Wire, m: NodeCore, v: NodeCore, a: NodeCore) -> None:
    """A routes a CONNECT_TO_ME to V naming 8 third-party endpoints as its own."""
    a.overlay.set_local_endpoints(VICTIMS)
    a.overlay.roaming.forget_observed()
    a.overlay.ctm.send(v.local_id, Purpose.SHORTCUT, exact=True, now=wire.now)
    a.overlay.set_local_endpoints((A_EP,))


def _ctm_reply_third_parties(wire: Wire, m: NodeCore, v: NodeCore, a: NodeCore) -> None:
    """V asks A for a shortcut; A answers naming 8 third-party endpoints as its own."""
    a.overlay.set_local_endpoints(VICTIMS)
    a.overlay.roaming.forget_observed()
    v.overlay.request_shortcut(a.local_id, now=wire.now)
    v.flush(now=wire.now)
    wire.pump()  # the CTM there, the answer back
    a.overlay.set_local_endpoints((A_EP,))


def _neighbours_pull(wire: Wire, m: NodeCore, v: NodeCore, a: NodeCore) -> None:
    a.link.send(v.local_id, Neighbours(True, ()).encode(), now=wire.now)


def _link_ids(wire: Wire, m: NodeCore, v: NodeCore, a: NodeCore) -> None:
    """A says it holds links to 64 nodes (none of them real)."""
    fake = [NodeId((k + 1) << 150) for k in range(MAX_LINK_IDS)]
    a.link.send(v.local_id, LinkIds.of(fake).encode(), now=wire.now)


def _alive_probe(wire: Wire, m: NodeCore, v: NodeCore, a: NodeCore) -> None:
    a.link.send(v.local_id, Alive(True, 7).encode(), now=wire.now)


def _relay_forward(wire: Wire, m: NodeCore, v: NodeCore, a: NodeCore) -> None:
    a.link.send(v.local_id, RelayForward(m.local_id, bytes(64)).encode(), now=wire.now)


def _relay_deliver(wire: Wire, m: NodeCore, v: NodeCore, a: NodeCore) -> None:
    # A wraps its own fresh Init to V as if relayed from M: V answers through A.
    a.link.connect(RelayPath(via=v.local_id, peer=m.local_id), now=wire.now)
    data = next((d for d, p in a.link.datagrams_to_send(now=wire.now) if type(p) is RelayPath), b"")
    a.link.send(v.local_id, RelayDeliver(m.local_id, data).encode(), now=wire.now)


def _closing(wire: Wire, m: NodeCore, v: NodeCore, a: NodeCore) -> None:
    a.link.send(v.local_id, Closing().encode(), now=wire.now)


def _direct_ping(wire: Wire, m: NodeCore, v: NodeCore, a: NodeCore) -> None:
    a.overlay.send_direct(v.local_id, KIND_PING, bytes((0, 0, 0, 0, 7, 0)), now=wire.now)


def _routed_ping(wire: Wire, m: NodeCore, v: NodeCore, a: NodeCore) -> None:
    a.overlay.send_routed(
        v.local_id, KIND_PING, bytes((0, 0, 0, 0, 7, 0)), exact=True, now=wire.now
    )


def _hello(wire: Wire, m: NodeCore, v: NodeCore, a: NodeCore) -> None:
    """V's NAT translates its port (so V is the side that opens); A says HELLO (port kept,
    answer wanted) naming third parties as its endpoints: V's openers would go there."""
    from ipop.nat.portguess import FLAG_ANSWER, _encode_hello

    v.overlay.roaming.note_observed(Endpoint(V_EP.host, 40000), wire.now)
    hello = _encode_hello(FLAG_ANSWER, VICTIMS[:4])
    a.overlay.send_direct(v.local_id, KIND_BIRTHDAY, hello, now=wire.now)


def _go(wire: Wire, m: NodeCore, v: NodeCore, a: NodeCore) -> None:
    """A says GO naming a third party's address, unasked."""
    go = bytes((0x02,)) + bytes(int(x) for x in VICTIMS[0].host.split(".")) + bytes(12)
    a.overlay.send_direct(v.local_id, KIND_BIRTHDAY, go, now=wire.now)


Attack = Callable[[Wire, NodeCore, NodeCore, NodeCore], None]


@dataclass(frozen=True)
class Row:
    name: str
    attack: Attack
    a_linked_to_v: bool
    bound: str
    # The message is the largest datagram into V as the attack runs (an answer to V's own
    # request, which goes first), not the first.
    largest: bool = False


ROWS: tuple[Row, ...] = (
    Row(
        "ROUTED CTM (8 third-party endpoints)",
        _ctm_third_parties,
        False,
        "<=3 endpoints, 1 Init each, per-requester and per-address buckets, 64 in flight",
    ),
    Row(
        "CTM_REPLY (8 third-party endpoints)",
        _ctm_reply_third_parties,
        False,
        "only to our own request (token): <=3 endpoints, usual retries",
        largest=True,
    ),
    Row("NEIGHBOURS reply_wanted", _neighbours_pull, True, "per peer: 4 answers, then 1 per 0.5 s"),
    Row("ALIVE probe", _alive_probe, True, "1:1, the answer is the probe's size"),
    Row("LINK_IDS (64 ids)", _link_ids, True, "no answer; kept per linked fast peer"),
    Row("RELAY_FORWARD (64 B)", _relay_forward, True, "1:1, to a linked member"),
    Row("RELAY_DELIVER (an Init)", _relay_deliver, True, "the link layer's Init handling"),
    Row("CLOSING", _closing, True, "one re-link; 58 CLOSINGs in 30 s caused 1.3 KB (<1x)"),
    Row("DIRECT ping", _direct_ping, True, "1:1"),
    Row("ROUTED ping", _routed_ping, False, "1:1"),
    Row(
        "BIRTHDAY HELLO (4 third-party eps)",
        _hello,
        True,
        "openers only where the peer was seen, <=2 eps, once per peer per 30 s",
    ),
    Row(
        "BIRTHDAY GO (third-party address)",
        _go,
        True,
        "only after our HELLO, to where the peer was seen, once per peer per 30 s",
    ),
)


@dataclass(frozen=True)
class Result:
    name: str
    message_bytes: int
    caused_bytes: int
    third_party_bytes: int
    third_party_max_per_address: int
    bound: str

    @property
    def amplification(self) -> float:
        return self.caused_bytes / self.message_bytes if self.message_bytes else 0.0

    @property
    def third_party_amplification(self) -> float:
        if not self.message_bytes:
            return 0.0
        return self.third_party_max_per_address / self.message_bytes


def _v_bytes(wire: Wire, since: float) -> tuple[int, dict[str, int]]:
    """(bytes V sent to members, bytes V sent to each third-party address) since ``since``."""
    members = {e.host for e in wire.cores}
    to_members = 0
    third: dict[str, int] = {}
    for dst, n in wire.sent_by(V_EP, since):
        if dst.host in members:
            to_members += n
        else:
            third[dst.host] = third.get(dst.host, 0) + n
    return to_members, third


def measure(row: Row, *, lifetime_s: float = LIFETIME_S) -> Result:
    """Run ``row``'s scenario with and without its message; what V sent because of it."""
    counts = []
    message = 0
    for attack in (False, True):
        wire, m, v, a = build(a_linked_to_v=row.a_linked_to_v)
        t0 = wire.now
        before = len(wire.data_in.get(V_EP, []))
        if attack:
            row.attack(wire, m, v, a)
            # The message's datagram into V: what A (or M, forwarding) sent to V just now.
            wire.pump()
            into_v = wire.data_in.get(V_EP, [])[before:]
            if into_v:
                message = max(into_v) if row.largest else into_v[0]
        else:
            wire.pump()
        wire.run(lifetime_s)
        counts.append(_v_bytes(wire, t0))
    (base, base_third), (hit, third) = counts
    # Members' traffic is there either way (keepalives, gossip): the difference is the
    # message's. Third parties get nothing without it.
    caused = max(0, hit - base) + sum(third.values()) - sum(base_third.values())
    return Result(
        row.name,
        message,
        caused,
        sum(third.values()),
        max(third.values(), default=0),
        row.bound,
    )


def dht_rows(routed: Result) -> list[Result]:
    """DHT requests, from the real codec: the DHT is asyncio code above NodeCore, so its rows
    are computed, not run. Each message travels routed, with the overhead the ROUTED ping row
    measured (its datagram minus its 6-byte payload); the answer goes back to the requester
    only (the authenticated ``src``), never to a third party."""
    overhead = routed.message_bytes - 6
    me, them = NodeId(1), NodeId(2)
    mid = bytes(8)
    k = min(DhtConfig().ksize, MAX_FIND_NODES)
    contacts = tuple(NodeId(i + 10) for i in range(k))
    pairs = (
        ("DHT PING", PingRequested(), PingAnswered(), "1:1 to the requester"),
        (
            f"DHT FIND_NODE ({k} contacts back)",
            NodesRequested(bytes(20)),
            NodesFound(contacts),
            "to the requester only; no per-peer rate (DHT quotas)",
        ),
    )
    out = []
    for name, req, resp, bound in pairs:
        q = len(encode_message(mid, them, req)) + overhead
        a = len(encode_message(mid, me, resp)) + overhead
        out.append(Result(name, q, a, 0, 0, bound))
    return out


def table(results: list[Result]) -> str:
    head = (
        f"{'message':37} {'in B':>5} {'caused':>7} {'ampl':>6} {'3rd B':>6} {'3rd/addr':>8}"
        "  bounded by"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        lines.append(
            f"{r.name:37} {r.message_bytes:5d} {r.caused_bytes:7d} {r.amplification:6.2f} "
            f"{r.third_party_bytes:6d} {r.third_party_amplification:8.2f}  {r.bound}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    results = [measure(r) for r in ROWS]
    results += dht_rows(next(r for r in results if r.name == "ROUTED ping"))
    if args.json:
        print(json.dumps([r.__dict__ | {"amplification": r.amplification} for r in results]))
    else:
        print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
