"""ipop.aio.natio.NatSockets: the STUN alternates on 127.0.0.0/8, with a recording core."""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from types import SimpleNamespace
from typing import Any

import pytest

from ipop.aio.natio import NatSockets, stun_transact
from ipop.nat.stun import SOURCE_ALT_BOTH, SOURCE_ALT_PORT
from ipop.testing.waiting import until
from ipop.types import Endpoint


class _Stun:
    def __init__(self) -> None:
        self.sources: tuple[Any, ...] | None = None
        self.received: list[tuple[bytes, Endpoint, int]] = []

    def set_sources(self, primary: Endpoint, *, alt_port: int, alt_host: str) -> None:
        self.sources = (primary, alt_port, alt_host)

    def receive(self, data: bytes, src: Endpoint, *, now: float, via: int) -> None:
        self.received.append((data, src, via))


def _node() -> Any:
    core = SimpleNamespace(stun=_Stun(), stun_alt_send=None, flushed=0)

    def flush() -> None:
        core.flushed += 1

    core.stun_flush = flush
    return SimpleNamespace(core=core, driver=None)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


LOCAL = [Endpoint("127.0.0.1", 0), Endpoint("127.0.0.2", 0)]


def test_alternates_serve_from_the_second_address_and_feed_the_agent() -> None:
    async def body() -> None:
        stats: Counter[str] = Counter()
        nat, node = NatSockets("127.0.0.1", stats), _node()
        port = _free_port()
        assert nat.open_alternates(node, port - 1, LOCAL, alternate="auto", alt_port=0)
        try:
            assert nat.alternates == {
                SOURCE_ALT_PORT: ("127.0.0.1", port),
                SOURCE_ALT_BOTH: ("127.0.0.2", port),
            }
            assert node.core.stun.sources == (Endpoint("127.0.0.1", port - 1), port, "127.0.0.2")
            assert node.core.stun_alt_send == nat.send
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
                peer.bind(("127.0.0.1", 0))
                peer.settimeout(3.0)
                peer.sendto(b"\x00\x01stun", ("127.0.0.2", port))
                peer.sendto(b"\x17not stun", ("127.0.0.1", port))
                assert await until(
                    lambda: stats["stun_alt_not_stun"] == 1 and bool(node.core.stun.received), 3.0
                )
                [(data, src, via)] = node.core.stun.received
                assert (data, src, via) == (
                    b"\x00\x01stun",
                    Endpoint(*peer.getsockname()),
                    SOURCE_ALT_BOTH,
                )
                assert node.core.flushed >= 1
                # An answer leaves from the alternate it names.
                nat.send(SOURCE_ALT_BOTH, b"answer", Endpoint(*peer.getsockname()))
                got, sender = peer.recvfrom(100)
                assert (got, sender) == (b"answer", ("127.0.0.2", port))
        finally:
            nat.close()
        assert nat.alternates == {}
        nat.send(SOURCE_ALT_PORT, b"late", Endpoint("127.0.0.1", 9))
        assert stats["stun_no_socket"] == 1

    asyncio.run(body())


@pytest.mark.parametrize(
    ("local", "alternate"),
    [([LOCAL[0]], "auto"), (LOCAL, "off"), ([], "127.0.0.2")],
)
def test_no_second_address_opens_no_alternates(local: list[Endpoint], alternate: str) -> None:
    async def body() -> None:
        nat, node = NatSockets("127.0.0.1", Counter()), _node()
        assert not nat.open_alternates(node, _free_port(), local, alternate=alternate, alt_port=0)
        assert nat.alternates == {} and node.core.stun.sources is None
        assert node.core.stun_alt_send is None

    asyncio.run(body())


def test_a_failed_bind_opens_none_and_leaves_the_agent_alone() -> None:
    async def body() -> None:
        nat, node = NatSockets("127.0.0.1", Counter()), _node()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
            taken.bind(("127.0.0.2", 0))
            port = taken.getsockname()[1]
            assert not nat.open_alternates(node, port - 1, LOCAL, alternate="auto", alt_port=port)
        assert nat.alternates == {} and node.core.stun.sources is None

    asyncio.run(body())


def test_a_punch_socket_binds_to_the_overlay_address() -> None:
    async def body() -> None:
        got: list[bytes] = []
        nat = NatSockets("127.0.0.1", Counter())
        sock = nat.open_punch(lambda data, addr: got.append(data))
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
                peer.sendto(b"opener", ("127.0.0.1", sock.port))
                assert await until(lambda: got == [b"opener"], 3.0)
        finally:
            sock.close()

    asyncio.run(body())


def test_a_transaction_without_a_driver_has_no_answer() -> None:
    node = _node()
    assert asyncio.run(stun_transact(node, Endpoint("127.0.0.1", 3478), False, False)) is None
