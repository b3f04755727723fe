"""Micro benchmark of a relayed link's per-packet core work on each of its three nodes.

Three :class:`ipop.core.NodeCore` objects in memory: A and B each hold a direct link to R
(real handshakes, real overlay joins) and a session with each other keyed through R
(``RelayPath(via=R, peer=B)``), its path MTU probed end to end, as ``ipop-lab bench
--systems ipop-relayed`` sets them up with three daemons. 1,300-byte IP packets (a relayed
path carries less than 1,400) then cross A -> R -> B, ``--batch`` at a time, with the calls
the data plane makes (:mod:`ipop.aio.dataplane`), one by one and in runs:

- A (sender): ``send_ip`` per packet, or ``send_relayed_run``; then ``flush``: the
  end-to-end seal, RELAY_FORWARD, the seal for R;
- R (relay): ``receive_direct`` per datagram, or ``receive_direct_run``; then ``flush``:
  the open, the forward checks, RELAY_DELIVER, the seal for B;
- B (receiver): the same, then the core's events (one by one, IP packets come up as
  Delivered events): the open, RELAY_DELIVER's checks, the end-to-end open.

and in runs on a relay channel (:mod:`ipop.overlay.channels`): A seals end to end only and
puts the channel's header before each; R checks the channel once a run and passes the bytes
on; B opens end to end only.

Prints µs per packet per node (best of ``--repeat``); ``--profile NODE`` prints that node's
cProfile in runs (``--one-by-one``: one by one). The kernel's share (no GSO one by one: a
``sendto`` per datagram on A and R) and the event loop's are not in these numbers.

``--callgrind NODE`` counts instructions instead of time, repeatable on a busy machine: it
runs ``--count`` packets in runs with only that node's work inside ``functools.reduce`` (a
C function nothing else on these paths calls), so that callgrind collects just it::

    valgrind --tool=callgrind --toggle-collect=functools_reduce \
        .venv/bin/python -m ipop.tools.bench.relay_bench --callgrind relay --count 6400

and the instructions it reports ("Collected"), divided by ``--count``, are that node's per
relayed packet (setup and the other nodes are not collected).

Run: ``.venv/bin/python -m ipop.tools.bench.relay_bench [--count 20000] [--batch 64]``.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import pstats
import random
import time
from dataclasses import dataclass
from typing import Any

from ipop.core import NodeCore
from ipop.identity import NodeIdentity
from ipop.link import fastpath
from ipop.overlay.config import OverlayConfig
from ipop.overlay.events import Delivered
from ipop.overlay.messages import KIND_IP, TYPE_DIRECT
from ipop.testing.identities import make_identity, make_network
from ipop.tools.bench.dataplane_bench import A_EP, B_EP
from ipop.types import Endpoint, NodeId, RelayPath

R_EP = Endpoint("198.51.100.7", 5800)  # (in memory: no datagram leaves)


@dataclass
class Trio:
    """A and B linked through R; ``eps`` maps each core to its underlay endpoint."""

    a: NodeCore
    r: NodeCore
    b: NodeCore
    eps: dict[int, Endpoint]

    def core_at(self, ep: Endpoint) -> NodeCore | None:
        for core in (self.a, self.r, self.b):
            if self.eps[core.local_id.value] == ep:
                return core
        return None

    def move(self, now: float) -> bool:
        """Carry every queued datagram once (A <-> B direct datagrams are lost: their NATs);
        True if any moved."""
        moved = False
        for core in (self.a, self.r, self.b):
            src = self.eps[core.local_id.value]
            for data, path in core.datagrams_to_send(now=now):
                moved = True
                dst = self.core_at(path) if isinstance(path, Endpoint) else None
                if dst is None or {core.local_id, dst.local_id} == {
                    self.a.local_id,
                    self.b.local_id,
                }:
                    continue
                dst.receive_datagram(data, src, now=now)
            while core.next_event() is not None:
                pass
        return moved


def identities(now: float) -> tuple[NodeIdentity, NodeIdentity, NodeIdentity]:
    """A, R and B of one network, valid from a minute before ``now``."""
    ca = make_network("relaynet", now=now - 60)
    a, r, b = (make_identity(ca, name, now=now - 60) for name in "arb")
    return a, r, b


def relayed_trio(
    now: float,
    ids: tuple[NodeIdentity, NodeIdentity, NodeIdentity] | None = None,
    *,
    channels: bool = False,
) -> Trio:
    """A -- R -- B, direct links to R and a session between A and B through it (the same
    ``ids`` and ``now``: the same trio, counters and all). ``channels``: the ends' runs use
    relay channels (:mod:`ipop.overlay.channels`), A's to B bound before this returns;
    otherwise every relayed datagram travels inside RELAY_FORWARD."""
    ida, idr, idb = identities(now) if ids is None else ids
    config = OverlayConfig(relay_channels=channels)
    r = NodeCore(idr, rng=random.Random(3), bootstrap=[], overlay_config=config)
    a = NodeCore(ida, rng=random.Random(1), bootstrap=[R_EP], overlay_config=config)
    b = NodeCore(idb, rng=random.Random(2), bootstrap=[R_EP], overlay_config=config)
    trio = Trio(a, r, b, {a.local_id.value: A_EP, r.local_id.value: R_EP, b.local_id.value: B_EP})
    for core in (r, a, b):
        core.start(now=now)
    for step in range(50):
        if not trio.move(now + step * 0.01):
            break
    if not (a.link.is_up(r.local_id) and b.link.is_up(r.local_id)):
        raise RuntimeError("the in-memory trio did not link to its relay")
    t = now + 0.5
    a.link.connect(RelayPath(via=r.local_id, peer=b.local_id), now=t, expected=b.local_id)
    a.flush(now=t)
    for step in range(50):
        if not trio.move(t + step * 0.01):
            break
    # The relayed path's MTU, probed end to end (ipop.link.pmtu) as the first packets ask.
    a.send_ip(b.local_id, bytes(100), now=t)
    for _ in range(400):
        t += 0.01
        due = a.get_timer()  # (only A's: B's overlay would key a link of its own to A)
        if due is not None and due <= t:
            a.handle_timer(now=t)
        trio.move(t)
        if b.local_id in a.link.pmtu.limits:
            break
    for x, y in ((a, b), (b, a)):
        if type(x.link.path_of(y.local_id)) is not RelayPath or not x.overlay.is_linked(y.local_id):
            raise RuntimeError("the in-memory trio did not key A <-> B through R")
    if channels:
        # The first run asks R for a channel (and goes inside RELAY_FORWARD); R's answer binds it.
        a.send_relayed_run(b.local_id, [bytes((TYPE_DIRECT, KIND_IP)) + bytes(20)], now=t)
        for _ in range(5):
            trio.move(t)
        if not a.overlay.relay_channels.bindings:
            raise RuntimeError("the in-memory trio did not bind a relay channel")
    return trio


def ip_received(
    core: NodeCore, datagrams: list[bytes], ep: Endpoint, now: float, *, runs: bool
) -> list[tuple[NodeId, bytes]]:
    """``datagrams`` from ``ep`` handed to ``core`` as the data plane hands them (a run, or
    one by one), then its flush and events: the IP packets that came up, as (source, packet),
    returned first and Delivered after (the differential tests compare the two ways)."""
    if runs:
        got = core.receive_direct_run(datagrams, ep, now=now, kind=KIND_IP)
    else:
        one = (core.receive_direct(d, ep, now=now, kind=KIND_IP) for d in datagrams)
        got = [g for g in one if g is not None]
    core.flush(now=now)
    out = [(src, msg[2:]) for src, msg in got]
    while (ev := core.next_event()) is not None:
        if type(ev) is Delivered and ev.kind == KIND_IP:
            out.append((ev.src, ev.payload))
    return out


def _deliver(core: NodeCore, to: Endpoint, now: float) -> list[bytes]:
    """What ``core`` queued for ``to`` (the rest is dropped: keepalives, probes)."""
    return [d for d, p in core.datagrams_to_send(now=now) if p == to]


def bench(
    count: int,
    batch: int,
    size: int,
    *,
    runs: bool = True,
    profile: str | None = None,
    channels: bool = False,
) -> dict[str, float]:
    """µs per packet on each node; ``runs``: the data plane's runs, else one by one;
    ``channels``: the runs on a relay channel."""
    now = time.time()
    trio = relayed_trio(now - 10, channels=channels)
    a, r, b = trio.a, trio.r, trio.b
    message = bytes((TYPE_DIRECT, KIND_IP)) + bytes(size)
    spent = {"sender": 0.0, "relay": 0.0, "receiver": 0.0}
    prof = {k: cProfile.Profile() for k in spent}
    delivered = 0

    def receive(core: NodeCore, datagrams: list[bytes], ep: Endpoint, now: float) -> list[Any]:
        if runs:
            return core.receive_direct_run(datagrams, ep, now=now, kind=KIND_IP)
        one = (core.receive_direct(d, ep, now=now, kind=KIND_IP) for d in datagrams)
        return [g for g in one if g is not None]

    for _ in range(max(1, count // batch)):
        msgs = [message] * batch
        t0 = time.perf_counter()
        if profile == "sender":
            prof["sender"].enable()
        sealed = a.seal_ip_run(b.local_id, msgs, now=now) if runs else None
        if sealed is None and not (runs and a.send_relayed_run(b.local_id, msgs, now=now)):
            for m in msgs:
                a.send_ip(b.local_id, m[2:], now=now)
        a.flush(now=now)
        to_r = _deliver(a, R_EP, now) if sealed is None else sealed[0]
        prof["sender"].disable()
        t1 = time.perf_counter()
        if profile == "relay":
            prof["relay"].enable()
        receive(r, to_r, A_EP, now)
        r.flush(now=now)
        to_b = _deliver(r, B_EP, now)
        prof["relay"].disable()
        t2 = time.perf_counter()
        if profile == "receiver":
            prof["receiver"].enable()
        got = receive(b, to_b, R_EP, now)
        delivered += len(got)
        b.flush(now=now)
        while (ev := b.next_event()) is not None:
            if type(ev) is Delivered and ev.kind == KIND_IP:
                delivered += 1
        prof["receiver"].disable()
        t3 = time.perf_counter()
        spent["sender"] += t1 - t0
        spent["relay"] += t2 - t1
        spent["receiver"] += t3 - t2
        for core in (a, r, b):
            core.flush(now=now)
            core.datagrams_to_send(now=now)  # (none expected: acks, probes are dropped)
            while core.next_event() is not None:
                pass
    n = max(1, count // batch) * batch
    if delivered != n:
        raise RuntimeError(f"delivered {delivered} of {n}: {dict(b.link.drops)}")
    if profile is not None:
        pstats.Stats(prof[profile]).sort_stats("tottime").print_stats(18)
    return {k: v / n * 1e6 for k, v in spent.items()}


def callgrind(count: int, batch: int, size: int, node: str, *, channels: bool = False) -> int:
    """``bench`` in runs with ``node``'s work (as there) called through functools.reduce, for
    ``valgrind --tool=callgrind --toggle-collect=functools_reduce`` (module docstring); the
    packets delivered."""
    now = time.time()
    trio = relayed_trio(now - 10, channels=channels)
    a, r, b = trio.a, trio.r, trio.b
    message = bytes((TYPE_DIRECT, KIND_IP)) + bytes(size)
    delivered = 0

    def region(name: str, work: Any) -> Any:
        if name != node:
            return work()
        return functools.reduce(lambda _, f: f(), [work], None)

    def send() -> list[bytes]:
        if not a.send_relayed_run(b.local_id, [message] * batch, now=now):
            raise RuntimeError("the relayed run was declined")
        a.flush(now=now)
        return _deliver(a, R_EP, now)

    def relay(to_r: list[bytes]) -> list[bytes]:
        r.receive_direct_run(to_r, A_EP, now=now, kind=KIND_IP)
        r.flush(now=now)
        return _deliver(r, B_EP, now)

    def receive(to_b: list[bytes]) -> int:
        got = b.receive_direct_run(to_b, R_EP, now=now, kind=KIND_IP)
        b.flush(now=now)
        return len(got)

    for _ in range(max(1, count // batch)):
        to_r = region("sender", send)
        to_b = region("relay", functools.partial(relay, to_r))
        delivered += region("receiver", functools.partial(receive, to_b))
        for core in (a, r, b):
            core.datagrams_to_send(now=now)
            while core.next_event() is not None:
                pass
    return delivered


def main() -> None:
    ap = argparse.ArgumentParser(prog="relay_bench", description=__doc__)
    ap.add_argument("--count", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=1300)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--backend", choices=["auto", "python", "native"], default="auto")
    ap.add_argument("--profile", choices=["sender", "relay", "receiver"])
    ap.add_argument("--one-by-one", action="store_true", help="profile the per-packet path")
    ap.add_argument(
        "--callgrind",
        choices=["sender", "relay", "receiver"],
        help="that node's work alone inside functools.reduce, for callgrind (see above)",
    )
    ap.add_argument("--channels", action="store_true", help="--profile/--callgrind on a channel")
    args = ap.parse_args()
    fastpath.use(args.backend)
    if args.callgrind is not None:
        n = callgrind(args.count, args.batch, args.size, args.callgrind, channels=args.channels)
        print(f"relayed, {n} packets of {args.size} B in runs of {args.batch}, {fastpath.BACKEND}")
        return
    if args.profile is not None:
        bench(
            args.count,
            args.batch,
            args.size,
            runs=not args.one_by_one,
            profile=args.profile,
            channels=args.channels,
        )
        return
    print(
        f"relayed, packet {args.size} B, batch {args.batch}, {fastpath.BACKEND}, best of "
        f"{args.repeat}, us/packet:"
    )
    print(f"  {'':<12} {'sender':>8} {'relay':>8} {'receiver':>8} {'total':>8}")
    for name, runs, channels in (
        ("one by one", False, False),
        ("runs", True, False),
        ("channel runs", True, True),
    ):
        best: dict[str, float] = {}
        for _ in range(args.repeat):
            got = bench(args.count, args.batch, args.size, runs=runs, channels=channels)
            for k, v in got.items():
                best[k] = min(v, best.get(k, v))
        cells = "".join(f" {v:8.2f}" for v in (*best.values(), sum(best.values())))
        print(f"  {name:<12}{cells}")


if __name__ == "__main__":
    main()
