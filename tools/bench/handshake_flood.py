"""Benchmark of the handshake flood guard: a responder under a flood of forged Inits.

Run: ``.venv/bin/python -m ipop.tools.bench.handshake_flood [--rate 20000] [--seconds 3]``.

The flood arrives at ``--rate`` forged Inits a second into a socket buffer of ``--queue``
datagrams (what arrives while it is full is lost, as the kernel does). The forged Inits
carry a member's (public) certificate, random ephemeral keys and indices, so their
signatures are wrong, and come from random spoofed source addresses; they are built before
the clock starts. The responder is driven with wall-clock ``now``. One honest initiator
connects ``--honest-at`` seconds into the flood; its datagrams queue up behind the forged
ones (or are lost with them), the responder's answers reach it at once. Printed for the
guarded responder and for one whose guard never trips (today's main behaves like the
latter): forged Inits handled per second, expensive operations (Inits that reached
public-key work) per second, and how long the honest handshake took. Numbers depend on the
machine and its load.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import random
import time

from ipop.identity import NetworkCA, NodeIdentity
from ipop.link.cookie import InitGuard
from ipop.link.events import LinkUp
from ipop.link.layer import LinkLayer
from ipop.types import Endpoint
from ipop.wire.handshake import HandshakeInit

A_EP = Endpoint("198.51.100.1", 5800)
C_EP = Endpoint("203.0.113.3", 5800)
POOL = 50_000


@dataclasses.dataclass(frozen=True, slots=True)
class Result:
    handled_per_s: float
    expensive_per_s: float
    honest_ms: float | None


def _forgeries(
    template: HandshakeInit, now: float, rng: random.Random
) -> list[tuple[bytes, Endpoint]]:
    out = []
    for _ in range(POOL):
        forged = dataclasses.replace(
            template,
            sender_index=rng.getrandbits(32),
            ephemeral=rng.randbytes(32),
            timestamp_ms=int(now * 1000),
        )
        src = Endpoint(
            f"198.18.{rng.randrange(256)}.{rng.randrange(1, 255)}", rng.randrange(1024, 65536)
        )
        out.append((forged.encode(), src))
    return out


def run(seconds: float, honest_at: float, *, rate: float, queue: int, guarded: bool) -> Result:
    now0 = time.time()
    ca = NetworkCA.create("floodnet", now=now0 - 60)
    ida = NodeIdentity.generate(ca, "alice", now=now0 - 60)
    idc = NodeIdentity.generate(ca, "carol", now=now0 - 60)
    mallory = LinkLayer(NodeIdentity.generate(ca, "mallory", now=now0 - 60), rng=random.Random(3))
    a = LinkLayer(ida, rng=random.Random(1))
    c = LinkLayer(idc, rng=random.Random(2))
    if not guarded:
        huge = 10**9
        c.guard = InitGuard(
            load_per_s=huge, verify_max_per_s=huge, source_rate_per_s=huge, source_burst=huge
        )
    mallory.connect(C_EP, now=now0, expected=idc.node_id)
    ((raw, _),) = mallory.datagrams_to_send(now=now0)
    pool = _forgeries(HandshakeInit.parse(raw), now0, random.Random(7))
    # The responder's socket buffer: what arrives while it is full is lost, honest or not.
    inbox: collections.deque[tuple[bytes, Endpoint]] = collections.deque()
    arrived = handled = 0
    honest_started: float | None = None
    honest_ms: float | None = None
    start = time.time()
    while (now := time.time()) - start < seconds:
        due = int((now - start) * rate)
        while arrived < due:
            if len(inbox) < queue:
                inbox.append(pool[arrived % POOL])
            arrived += 1
        if honest_started is None and now - start >= honest_at:
            honest_started = now
            a.connect(C_EP, now=now, expected=idc.node_id)
        timer = a.get_timer()
        if timer is not None and timer <= now:
            a.handle_timer(now=now)
        for out, _path in a.datagrams_to_send(now=now):
            if len(inbox) < queue:
                inbox.append((out, A_EP))
        if not inbox:
            continue
        data, src = inbox.popleft()
        c.receive_datagram(data, src, now=now)
        handled += src != A_EP
        for out, path in c.datagrams_to_send(now=now):
            if path == A_EP:
                a.receive_datagram(out, C_EP, now=now)
        while (ev := a.next_event()) is not None:
            if isinstance(ev, LinkUp) and honest_started is not None and honest_ms is None:
                honest_ms = (time.time() - honest_started) * 1000.0
    elapsed = time.time() - start
    expensive = c.drops["bad_signature"] + c.stats["handshake_answered"]
    return Result(handled / elapsed, expensive / elapsed, honest_ms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--honest-at", type=float, default=1.0)
    parser.add_argument("--rate", type=float, default=20_000.0, help="forged Inits per second")
    # Linux's default rmem (208 KiB) holds ~400 Inits of ~520 bytes.
    parser.add_argument("--queue", type=int, default=400, help="socket buffer, in datagrams")
    args = parser.parse_args()
    print(f"flood: {args.rate:.0f} forged Inits/s from random sources, {args.seconds} s")
    for guarded in (True, False):
        r = run(args.seconds, args.honest_at, rate=args.rate, queue=args.queue, guarded=guarded)
        label = "guarded (cookies)" if guarded else "no guard (main)  "
        honest = "not completed" if r.honest_ms is None else f"{r.honest_ms:.1f} ms"
        print(
            f"{label}: {r.handled_per_s:9.0f} forged Inits/s handled, "
            f"{r.expensive_per_s:7.0f} expensive ops/s, honest handshake {honest}"
        )


if __name__ == "__main__":
    main()
