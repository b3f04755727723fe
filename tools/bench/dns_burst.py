"""A burst of DNS queries at one server: how many are answered, with which rcode, how fast.

Issue 14's target: "a burst of 1,000 DNS queries: 100 % answered, p99 <= 100 ms with records
cold". Run it inside a host of the lab, at the gateway, with names nobody there has asked for
yet (the gateway caches answers for 60 s)::

    ip netns exec <host-ns> .venv/bin/python -m ipop.tools.bench.dns_burst \\
        --server 100.64.0.1 --count 1000 a.ipop b.ipop c.ipop d.ipop pub1.ipop [--json]

All ``count`` queries (type A, the names in turn, distinct ids) leave one UDP socket as fast
as it sends; a query unanswered after ``--retry-ms`` is sent again, as stub resolvers do, up to
``--tries`` times. Latency runs from a query's first send to its reply; ``burst_ms`` is from
the first send to the last reply. ``answered`` counts
replies of any rcode; ``ok`` the NOERROR ones with at least one answer record.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from dnslib import RCODE, DNSRecord

__all__ = ["BurstResult", "burst", "main"]

RCVBUF_BYTES = 8 << 20
SO_RCVBUFFORCE = 33  # Linux: past rmem_max, for root (the lab); else SO_RCVBUF, capped
SO_SNDBUFFORCE = 32  # the same for the send buffer


@dataclass(slots=True)
class BurstResult:
    """What a burst got back; latencies in ms, one per answered query."""

    count: int
    answered: int = 0
    ok: int = 0
    resent: int = 0
    rcodes: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    burst_ms: float | None = None  # first send to last reply

    def percentile(self, q: float) -> float | None:
        if not self.latencies_ms:
            return None
        ordered = sorted(self.latencies_ms)
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)

    def summary(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "answered": self.answered,
            "answered_pct": round(100 * self.answered / self.count, 2) if self.count else 0.0,
            "ok": self.ok,
            "resent": self.resent,
            "rcodes": dict(sorted(self.rcodes.items())),
            "p50_ms": self.percentile(0.5),
            "p99_ms": self.percentile(0.99),
            "max_ms": round(max(self.latencies_ms), 3) if self.latencies_ms else None,
            "burst_ms": round(self.burst_ms, 3) if self.burst_ms is not None else None,
        }


async def burst(
    server: tuple[str, int],
    names: list[str],
    count: int,
    *,
    retry_s: float = 1.0,
    tries: int = 3,
) -> BurstResult:
    """Send ``count`` queries over ``names`` to ``server`` at once; wait for every reply."""
    loop = asyncio.get_running_loop()
    result = BurstResult(count)
    queries = {i: DNSRecord.question(names[i % len(names)]) for i in range(count)}
    for i, q in queries.items():
        q.header.id = i
    sent_at: dict[int, float] = {}
    started = 0.0
    done = asyncio.Event()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    # 1,000 replies arrive back to back: the default receive buffer (~500 small datagrams)
    # would drop half of them here, which is this client's loss, not the server's. The send
    # buffer holds every query until the server has read it (a TAP keeps our datagrams
    # queued): with the default, sends would block half-way through the burst.
    for size_opt, opt in ((SO_RCVBUFFORCE, socket.SO_RCVBUF), (SO_SNDBUFFORCE, socket.SO_SNDBUF)):
        for o in (size_opt, opt):
            try:
                sock.setsockopt(socket.SOL_SOCKET, o, RCVBUF_BYTES)
                break
            except OSError:
                continue
    sock.connect(server)
    sock.setblocking(False)
    recv, send = sock.recv, sock.send

    def readable() -> None:
        # Every reply waiting is read in one go, and only its header: asyncio's datagram
        # transport (one reply per loop pass) and parsing replies with dnslib would put this
        # client's own CPU time into the latencies it measures (the daemon's was less).
        while True:
            try:
                data = recv(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # e.g. ICMP port unreachable reported on a connected socket
            if len(data) < 12 or not data[2] & 0x80:
                continue  # not a DNS reply
            qid = int.from_bytes(data[:2], "big")
            if qid not in sent_at:
                continue  # a duplicate or a stranger
            t = time.perf_counter()
            result.latencies_ms.append((t - sent_at.pop(qid)) * 1000)
            result.burst_ms = (t - started) * 1000
            result.answered += 1
            code = data[3] & 0x0F
            rcode = str(RCODE[code])
            result.rcodes[rcode] = result.rcodes.get(rcode, 0) + 1
            if code == 0 and int.from_bytes(data[6:8], "big") > 0:  # NOERROR with answers
                result.ok += 1
            if not sent_at:
                done.set()

    def send_all(ids: list[int]) -> None:
        for i in ids:
            with contextlib.suppress(OSError):  # a full buffer: the retry will send it again
                send(packed[i])

    loop.add_reader(sock.fileno(), readable)
    try:
        packed = {i: bytes(q.pack()) for i, q in queries.items()}
        started = time.perf_counter()
        for i, data in packed.items():
            sent_at[i] = time.perf_counter()
            with contextlib.suppress(OSError):
                send(data)
        for _ in range(tries):
            try:
                await asyncio.wait_for(done.wait(), retry_s)
                break
            except TimeoutError:
                # Still unanswered: ask again, keep the first send time.
                again = list(sent_at)
                result.resent += len(again)
                send_all(again)
    finally:
        loop.remove_reader(sock.fileno())
        sock.close()
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="dns_burst", description=__doc__.split("\n")[0])
    ap.add_argument("names", nargs="+", help="names to ask for, in turn")
    ap.add_argument("--server", default="100.64.0.1")
    ap.add_argument("--port", type=int, default=53)
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--retry-ms", type=float, default=1000.0)
    ap.add_argument("--tries", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    result = asyncio.run(
        burst(
            (args.server, args.port),
            args.names,
            args.count,
            retry_s=args.retry_ms / 1000,
            tries=args.tries,
        )
    )
    s = result.summary()
    if args.json:
        print(json.dumps(s))
    else:
        print(
            f"{s['answered']}/{s['count']} answered ({s['answered_pct']} %), {s['ok']} with an "
            f"address, rcodes {s['rcodes']}, resent {s['resent']}, "
            f"p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms, max {s['max_ms']} ms, "
            f"all in {s['burst_ms']} ms"
        )
    return 0 if s["answered"] == s["count"] else 1


if __name__ == "__main__":
    sys.exit(main())
