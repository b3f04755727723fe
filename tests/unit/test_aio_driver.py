"""ipop.aio.driver.Driver: handlers that command the core while their event is handled."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from ipop.aio.driver import Driver
from ipop.types import Endpoint, Path

PEER = Endpoint("198.51.100.7", 5800)


class Core:
    """A core whose events are requests: answering one queues a datagram (as the DHT does)."""

    def __init__(self, requests: int) -> None:
        self.events: deque[int] = deque(range(requests))
        self.out: list[tuple[bytes, Path]] = []

    def answer(self, n: int) -> None:
        self.out.append((n.to_bytes(4, "big"), PEER))

    def receive_datagram(self, data: bytes, path: Path, *, now: float) -> None:
        pass

    def handle_timer(self, *, now: float) -> None:
        pass

    def get_timer(self) -> float | None:
        return None

    def datagrams_to_send(self, *, now: float) -> list[tuple[bytes, Path]]:
        out, self.out = self.out, []
        return out

    def next_event(self) -> Any:
        return self.events.popleft() if self.events else None


class Sock:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendto(self, data: bytes, addr: Endpoint) -> None:
        self.sent.append(data)


async def _answer_every_request(requests: int) -> tuple[list[int], list[bytes]]:
    core, sock = Core(requests), Sock()
    handled: list[int] = []

    def on_event(n: int) -> None:
        handled.append(n)
        core.answer(n)
        driver.pump()  # as ipop.aio.stack's send_routed does after every command

    driver = Driver(core, sock, clock=lambda: 0.0, on_event=on_event)
    driver.pump()
    return handled, sock.sent


def test_a_batch_of_requests_larger_than_the_recursion_limit_is_handled_in_order() -> None:
    # 140 requests already overflowed when each pump recursed: 5000 must not.
    handled, sent = asyncio.run(_answer_every_request(5000))
    assert handled == list(range(5000))
    assert sent == [n.to_bytes(4, "big") for n in range(5000)]


def test_each_answer_leaves_before_the_next_request_is_handed_up() -> None:
    core, sock = Core(3), Sock()
    seen: list[tuple[int, int]] = []
    drivers: list[Driver] = []

    def on_event(n: int) -> None:
        seen.append((n, len(sock.sent)))  # answers sent when request n is handed up
        core.answer(n)
        drivers[0].pump()

    async def run() -> None:
        drivers.append(Driver(core, sock, clock=lambda: 0.0, on_event=on_event))
        drivers[0].pump()

    asyncio.run(run())
    assert seen == [(0, 0), (1, 1), (2, 2)]
    assert len(sock.sent) == 3
