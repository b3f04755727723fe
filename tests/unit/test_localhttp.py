"""ipop.aio.localhttp: the metrics and web pages on a real loopback socket, with raw requests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ipop.aio.localhttp import MAX_REQUEST_BYTES, LocalHttpServer, Page
from ipop.errors import ConfigError
from ipop.promtext import CONTENT_TYPE
from ipop.types import Endpoint

PAGE = "# HELP ipop_up Up.\n# TYPE ipop_up gauge\nipop_up 1\n"
PAGES = {"/metrics": Page(CONTENT_TYPE, lambda: PAGE)}


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _run(test: Callable[[LocalHttpServer], Awaitable[None]], **kw: object) -> LocalHttpServer:
    async def main() -> LocalHttpServer:
        server = LocalHttpServer(Endpoint("127.0.0.1", 0), PAGES, **kw)  # type: ignore[arg-type]
        await server.start()
        try:
            await test(server)
        finally:
            await server.close()
        return server

    return asyncio.run(main())


async def _ask(server: LocalHttpServer, raw: bytes) -> tuple[str, dict[str, str], bytes]:
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
    async def t(server: LocalHttpServer) -> None:
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
    async def t(server: LocalHttpServer) -> None:
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
    async def t(server: LocalHttpServer) -> None:
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
    async def t(server: LocalHttpServer) -> None:
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

    async def t(server: LocalHttpServer) -> None:
        for _ in range(3):
            await _ask(server, b"GET /metrics HTTP/1.1\r\n\r\n")
        clock.now += 1.0
        await _ask(server, b"GET /metrics HTTP/1.1\r\n\r\n")

    server = _run(t, clock=clock)
    assert server.served == 4 and server.renders == 2


def test_a_port_in_use_is_a_config_error_naming_the_key() -> None:
    async def t(server: LocalHttpServer) -> None:
        other = LocalHttpServer(Endpoint("127.0.0.1", server.port), PAGES)
        with pytest.raises(ConfigError) as info:
            await other.start()
        assert info.value.key == "metrics.listen" and "cannot listen" in info.value.problem

    _run(t)


def test_several_pages_each_with_its_type_headers_and_cache() -> None:
    renders = {"/": 0, "/status.json": 0}

    def page(path: str, text: str) -> Page:
        def render() -> str:
            renders[path] += 1
            return text

        csp = {"Content-Security-Policy": "default-src 'none'"} if path == "/" else {}
        return Page("text/html; charset=utf-8" if path == "/" else "application/json", render, csp)

    pages = {"/": page("/", "<p>hi</p>"), "/status.json": page("/status.json", "{}")}

    async def main() -> LocalHttpServer:
        server = LocalHttpServer(Endpoint("127.0.0.1", 0), pages, key="web.listen")
        await server.start()
        try:
            status, headers, body = await _ask(server, b"GET / HTTP/1.1\r\n\r\n")
            assert status == "HTTP/1.1 200 OK" and body == b"<p>hi</p>"
            assert headers["Content-Security-Policy"] == "default-src 'none'"
            assert headers["X-Content-Type-Options"] == "nosniff"
            for _ in range(2):
                status, headers, body = await _ask(server, b"GET /status.json HTTP/1.1\r\n\r\n")
                assert headers["Content-Type"] == "application/json" and body == b"{}"
                assert "Content-Security-Policy" not in headers
            status, _, body = await _ask(server, b"GET /metrics HTTP/1.1\r\n\r\n")
            assert status == "HTTP/1.1 404 Not Found" and b"/, /status.json" in body
        finally:
            await server.close()
        return server

    server = asyncio.run(main())
    assert renders == {"/": 1, "/status.json": 1} and server.served == 3


@pytest.mark.parametrize(
    ("host", "ok"),
    [
        ("127.0.0.1:9581", True),
        ("127.0.0.1", True),
        ("localhost:9581", True),
        ("[::1]:9581", True),
        ("evil.example:9581", False),
        ("127.0.0.1.nip.io", False),
    ],
)
def test_with_check_host_a_host_named_by_name_is_refused(host: str, ok: bool) -> None:
    async def t(server: LocalHttpServer) -> None:
        raw = f"GET /metrics HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
        status, _, _ = await _ask(server, raw)
        assert status == ("HTTP/1.1 200 OK" if ok else "HTTP/1.1 421 Misdirected Request")

    server = _run(t, check_host=True)
    assert server.drops["bad_host"] == (0 if ok else 1)
