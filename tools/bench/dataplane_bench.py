"""Micro benchmark of the data plane's per-packet core work, without sockets or a TAP.

Two :class:`ipop.node.NodeCore` objects link up in memory (real handshake, real overlay
join); then a 1,400-byte IP packet goes the fast path both ways: ``seal_ip`` on the sender
(DIRECT header + AES-GCM), ``receive_direct`` on the receiver (replay window, AES-GCM open,
overlay membership check), plus the end-of-batch ``flush`` every ``--batch`` packets, as
``ipop.aio.dataplane`` does. The slow path (``send`` → outbox → ``receive_datagram`` → events)
is measured beside it. Prints µs per packet; the kernel's share (TAP and UDP syscalls) and the
event loop's are not in these numbers: ``ipop-lab bench`` measures the whole path.

Run: ``.venv/bin/python -m tools.bench.dataplane_bench [--count 100000] [--batch 64]``.
"""

from __future__ import annotations

import argparse
import random
import time

from ipop.node import NodeCore
from ipop.overlay.messages import KIND_IP, TYPE_DIRECT
from ipop.testing.identities import make_identity, make_network
from ipop.types import Endpoint

A_EP = Endpoint("198.51.100.1", 5800)
B_EP = Endpoint("203.0.113.2", 5800)


def linked_pair(now: float) -> tuple[NodeCore, NodeCore]:
    ca = make_network("benchnet", now=now - 60)
    b = NodeCore(make_identity(ca, "b", now=now - 60), rng=random.Random(2), bootstrap=[])
    a = NodeCore(make_identity(ca, "a", now=now - 60), rng=random.Random(1), bootstrap=[B_EP])
    b.start(now=now)
    a.start(now=now)
    for step in range(50):
        t = now + step * 0.01
        moved = False
        for data, path in a.datagrams_to_send(now=t):
            moved = True
            b.receive_datagram(data, A_EP if path == B_EP else path, now=t)
        for data, path in b.datagrams_to_send(now=t):
            moved = True
            a.receive_datagram(data, B_EP if path == A_EP else path, now=t)
        while a.next_event() or b.next_event():
            pass
        if not moved and a.link.is_up(b.local_id):
            break
    if not (a.link.is_up(b.local_id) and b.link.is_up(a.local_id)):
        raise RuntimeError("the in-memory pair did not link up")
    return a, b


def bench(count: int, batch: int, size: int) -> dict[str, float]:
    now = time.time()
    a, b = linked_pair(now)
    packet = bytearray(2 + size)
    packet[0], packet[1] = TYPE_DIRECT, KIND_IP
    view = memoryview(packet)
    out: dict[str, float] = {}

    t0 = time.perf_counter()
    sealed = []
    for i in range(count):
        got = a.seal_ip(b.local_id, view, now=now)
        assert got is not None
        sealed.append(got[0])
        if i % batch == batch - 1:
            a.flush(now=now)
    out["seal_us"] = (time.perf_counter() - t0) / count * 1e6

    t0 = time.perf_counter()
    for i, data in enumerate(sealed):
        got2 = b.receive_direct(data, A_EP, now=now, kind=KIND_IP)
        assert got2 is not None
        if i % batch == batch - 1:
            b.flush(now=now)
    out["open_us"] = (time.perf_counter() - t0) / count * 1e6

    slow = max(1, count // 10)
    payload = bytes(size)
    t0 = time.perf_counter()
    for _ in range(slow):
        a.send(b.local_id, KIND_IP, payload, now=now)
        for data, _path in a.datagrams_to_send(now=now):
            b.receive_datagram(data, A_EP, now=now)
        while b.next_event() is not None:
            pass
    out["slow_roundtrip_us"] = (time.perf_counter() - t0) / slow * 1e6
    return out


def main() -> None:
    ap = argparse.ArgumentParser(prog="dataplane_bench", description=__doc__)
    ap.add_argument("--count", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=1400)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    best: dict[str, float] = {}
    for _ in range(args.repeat):
        for k, v in bench(args.count, args.batch, args.size).items():
            best[k] = min(v, best.get(k, v))
    print(f"packet {args.size} B, batch {args.batch}, best of {args.repeat}:")
    print(f"  fast path seal (TAP -> UDP core work): {best['seal_us']:6.2f} us/packet")
    print(f"  fast path open (UDP -> TAP core work): {best['open_us']:6.2f} us/packet")
    print(f"  slow path send+receive, per packet:    {best['slow_roundtrip_us']:6.2f} us/packet")


if __name__ == "__main__":
    main()
