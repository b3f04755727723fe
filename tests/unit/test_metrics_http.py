"""ipop.aio.metrics: the GET /metrics endpoint on a real loopback socket, with raw requests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ipop.aio.metrics import MAX_REQUEST_BYTES, MetricsServer
from ipop.errors import ConfigError
from ipop.types import Endpoint

PAGE = "# HELP ipop_up Up.\n# TYPE ipop_up gauge\nipop_up 1\n"


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _run(test: Callable[[MetricsServer], Awaitable[None]], **kw: object) -> MetricsServer:
    async def main() -> MetricsServer:
        server = MetricsServer(Endpoint("127.0.0.1", 0), lambda: PAGE, **kw)  # type: ignore[arg-type]
        await server.start()
        try:
            await test(server)
        finally:
            await server.close()
        return server

    return asyncio.run(main())


async def _ask(server: MetricsServer, raw: bytes) -> tuple[str, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(raw)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    return status, headers, body


def test_get_metrics_serves_the_page_as_text_format_0_0_4() -> None:
    async def t(server: MetricsServer) -> None:
        status, headers, body = await _ask(server, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == "HTTP/1.1 200 OK"
        assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        assert int(headers["Content-Length"]) == len(body)
        (fam,) = text_string_to_metric_families(body.decode())
        assert fam.name == "ipop_up" and fam.samples[0].value == 1
        status, headers, body = await _ask(server, b"HEAD /metrics?x=1 HTTP/1.0\r\n\r\n")
        assert status == "HTTP/1.1 200 OK" and body == b""
        assert int(headers["Content-Length"]) == len(PAGE)

    server = _run(t)
    assert server.served == 2 and not server.drops


def test_other_paths_are_404_other_methods_405_and_garbage_400() -> None:
    async def t(server: MetricsServer) -> None:
        status, _, _ = await _ask(server, b"GET / HTTP/1.1\r\n\r\n")
        assert status == "HTTP/1.1 404 Not Found"
        status, _, _ = await _ask(server, b"GET /metricsx HTTP/1.1\r\n\r\n")
        assert status == "HTTP/1.1 404 Not Found"
        status, headers, _ = await _ask(server, b"POST /metrics HTTP/1.1\r\n\r\n")
        assert status == "HTTP/1.1 405 Method Not Allowed" and headers["Allow"] == "GET, HEAD"
        status, _, _ = await _ask(server, b"hello\r\n\r\n")
        assert status == "HTTP/1.1 400 Bad Request"

    server = _run(t)
    assert server.served == 0
    assert dict(server.drops) == {"not_found": 2, "method_not_allowed": 1, "bad_request": 1}


def test_a_request_too_large_or_too_slow_is_refused_and_the_server_goes_on() -> None:
    async def t(server: MetricsServer) -> None:
        big = b"GET /metrics HTTP/1.1\r\nX: " + b"a" * MAX_REQUEST_BYTES + b"\r\n\r\n"
        status, _, _ = await _ask(server, big)
        assert status == "HTTP/1.1 431 Request Header Fields Too Large"
        status, _, _ = await _ask(server, b"GET /metrics HTTP/1.1\r\n")  # never finished
        assert status == "HTTP/1.1 408 Request Timeout"
        status, _, _ = await _ask(server, b"GET /metrics HTTP/1.1\r\n\r\n")
        assert status == "HTTP/1.1 200 OK"

    server = _run(t, request_timeout_s=0.3)
    assert server.drops["request_too_large"] == 1 and server.drops["request_timeout"] == 1


def test_connections_past_the_limit_are_closed_at_once() -> None:
    async def t(server: MetricsServer) -> None:
        idle = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(2)]
        # The server sees both before the third (accepts are in order on one loop).
        for _ in range(50):
            if server._active == 2:
                break
            await asyncio.sleep(0.01)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /metrics HTTP/1.1\r\n\r\n")
        # Closed, nothing served (a reset when our request was still unread).
        with contextlib.suppress(ConnectionResetError):
            assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        for _, w in idle:
            w.close()

    server = _run(t, max_connections=2)
    assert server.drops["too_many_connections"] == 1 and server.served == 0


def test_the_page_is_rendered_at_most_once_per_interval() -> None:
    clock = _Clock()

    async def t(server: MetricsServer) -> None:
        for _ in range(3):
            await _ask(server, b"GET /metrics HTTP/1.1\r\n\r\n")
        clock.now += 1.0
        await _ask(server, b"GET /metrics HTTP/1.1\r\n\r\n")

    server = _run(t, clock=clock)
    assert server.served == 4 and server.renders == 2


def test_a_port_in_use_is_a_config_error_naming_the_key() -> None:
    async def t(server: MetricsServer) -> None:
        other = MetricsServer(Endpoint("127.0.0.1", server.port), lambda: PAGE)
        with pytest.raises(ConfigError) as info:
            await other.start()
        assert info.value.key == "metrics.listen" and "cannot listen" in info.value.problem

    _run(t)
