"""ipop.tools.bench.dns_burst against a server on 127.0.0.1 that answers, drops or mangles."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from dnslib import QTYPE, RR, A, DNSRecord

from ipop.tools.bench.dns_burst import burst


class _Server(asyncio.DatagramProtocol):
    """Answers each query once (NOERROR with one A record, or NXDOMAIN for ``nx.`` names);
    ignores the first sending of every ``drop_every``-th query; sends some noise first."""

    def __init__(self, drop_every: int = 0) -> None:
        self.drop_every = drop_every
        self.seen: set[int] = set()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        q = DNSRecord.parse(data)
        first = q.header.id not in self.seen
        self.seen.add(q.header.id)
        if self.drop_every and first and q.header.id % self.drop_every == 0:
            return
        reply = q.reply()
        if str(q.q.qname).startswith("nx."):
            reply.header.rcode = 3
        else:
            reply.add_answer(RR(q.q.qname, QTYPE.A, rdata=A("100.64.0.7"), ttl=60))
        assert self.transport is not None
        self.transport.sendto(b"junk", addr)  # not a DNS reply: ignored
        self.transport.sendto(reply.pack(), addr)
        self.transport.sendto(reply.pack(), addr)  # a duplicate: counted once


def _run(drop_every: int = 0, retry_s: float = 0.2) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Server(drop_every), local_addr=("127.0.0.1", 0)
        )
        try:
            port = transport.get_extra_info("sockname")[1]
            got = await burst(("127.0.0.1", port), ["a.ipop", "nx.ipop"], 200, retry_s=retry_s)
            return got.summary()
        finally:
            transport.close()

    return asyncio.run(go())


def test_every_reply_is_counted_once_with_its_rcode() -> None:
    # A retry time no loaded machine reaches: any resend here would be the tool's fault.
    s = _run(retry_s=30.0)
    assert s["answered"] == 200 and s["resent"] == 0
    assert s["rcodes"] == {"NOERROR": 100, "NXDOMAIN": 100} and s["ok"] == 100
    assert s["p50_ms"] is not None and s["p99_ms"] is not None and s["p50_ms"] <= s["p99_ms"]


def test_unanswered_queries_are_sent_again_and_keep_their_first_send_time() -> None:
    s = _run(drop_every=10)
    assert s["answered"] == 200 and s["resent"] == 20
    assert s["max_ms"] is not None and s["max_ms"] >= 200  # waited for the retry
