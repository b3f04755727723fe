"""The metrics endpoint: ``GET /metrics`` over HTTP/1.1 on a local TCP address (asyncio).

This module owns the socket side of the metrics; what the page says is :mod:`ipop.metrics`,
rendered by the callable the composition root hands in. It is a deliberately small server,
off the data path (one more listening socket on the daemon's loop, nothing on a packet's way):

* one request per connection (``Connection: close``): the request head must arrive within
  :data:`REQUEST_TIMEOUT_S` and fit :data:`MAX_REQUEST_BYTES` (else 408 / 431, counted);
* ``GET`` and ``HEAD`` of ``/metrics`` (a query string is ignored) answer 200 with the page;
  another path is 404, another method on ``/metrics`` 405 (``Allow: GET, HEAD``), a request
  line that is not HTTP 400;
* at most :data:`MAX_CONNECTIONS` connections at once; more are closed at once, counted;
* the page is rendered at most once per :data:`MIN_RENDER_INTERVAL_S` (scrapers in a loop get
  the same page), so no client can make the daemon build status faster than that.

Refused requests are counted in :attr:`MetricsServer.drops` by reason
(:data:`DROP_REASONS`), which the page itself shows as ``layer="metrics"``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Final

from ipop.errors import ConfigError
from ipop.promtext import CONTENT_TYPE
from ipop.types import Endpoint

__all__ = [
    "DROP_REASONS",
    "MAX_CONNECTIONS",
    "MAX_REQUEST_BYTES",
    "METRICS_PATH",
    "MIN_RENDER_INTERVAL_S",
    "REQUEST_TIMEOUT_S",
    "MetricsServer",
]

log = logging.getLogger(__name__)

METRICS_PATH: Final = "/metrics"
# A scraper's request head is a few hundred bytes (curl's: 80; Prometheus's: ~250).
MAX_REQUEST_BYTES: Final = 8192
REQUEST_TIMEOUT_S: Final = 5.0
# Prometheus scrapes once per interval and times out; a few at once leave room for a curl.
MAX_CONNECTIONS: Final = 8
MIN_RENDER_INTERVAL_S: Final = 1.0
# How long a reply may take to leave before the connection is dropped (a client not reading).
WRITE_TIMEOUT_S: Final = 5.0

DROP_REASONS: Final[tuple[str, ...]] = (
    "too_many_connections",
    "request_timeout",
    "request_too_large",
    "bad_request",
    "not_found",
    "method_not_allowed",
    "write_timeout",
)

_REASONS: Final[dict[int, str]] = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
}


class MetricsServer:
    """Serves ``render()``'s page on ``listen`` until :meth:`close`."""

    def __init__(
        self,
        listen: Endpoint,
        render: Callable[[], str],
        *,
        max_connections: int = MAX_CONNECTIONS,
        request_timeout_s: float = REQUEST_TIMEOUT_S,
        min_interval_s: float = MIN_RENDER_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.listen = listen
        self._render = render
        self._max_connections = max_connections
        self._timeout_s = request_timeout_s
        self._min_interval_s = min_interval_s
        self._clock = clock
        self.drops: Counter[str] = Counter()
        self.served = 0  # pages answered with 200
        self.renders = 0  # pages rendered (at most one per min_interval_s)
        self._active = 0
        self._page: bytes | None = None
        self._page_at = 0.0
        self._server: asyncio.Server | None = None
        # Connections being served: closed (not cancelled: asyncio's stream callback logs a
        # cancelled handler as an error) when the server closes.
        self._conns: dict[asyncio.StreamWriter, asyncio.Task[None]] = {}
        self._closing = False

    @property
    def port(self) -> int:
        """The bound port (``listen``'s, or the one the kernel chose for port 0)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("the metrics server is not listening")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(
                self._accept, self.listen.host, self.listen.port, limit=MAX_REQUEST_BYTES
            )
        except OSError as exc:
            raise ConfigError(
                "metrics.listen",
                f"cannot listen on {self.listen} ({exc.strerror or exc})",
                "use a free port and an address of this host, or remove [metrics] listen",
            ) from None
        log.info("event=metrics_listening listen=%s:%d", self.listen.host, self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._closing = True
            self._server.close()
            for writer in list(self._conns):
                writer.transport.abort()
            await asyncio.gather(*self._conns.values(), return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if self._active >= self._max_connections:
            self.drops["too_many_connections"] += 1
            writer.close()
            return
        self._active += 1
        if task is not None:
            self._conns[writer] = task
        try:
            await self._serve(reader, writer)
        finally:
            self._active -= 1
            self._conns.pop(writer, None)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self._timeout_s)
        except TimeoutError:
            self.drops["request_timeout"] += 1
            await self._reply(writer, 408, b"request timeout\n")
            return
        except asyncio.LimitOverrunError:
            self.drops["request_too_large"] += 1
            await self._reply(writer, 431, b"request too large\n")
            return
        except (asyncio.IncompleteReadError, ConnectionError):
            if not self._closing:
                self.drops["bad_request"] += 1  # closed before a whole request head
            return
        status, body, extra = self._answer(head)
        await self._reply(writer, status, body, extra, head_only=head.startswith(b"HEAD "))

    def _answer(self, head: bytes) -> tuple[int, bytes, dict[str, str]]:
        """(status, body, extra headers) for one request head (HEAD's body is not sent)."""
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = line.split(" ")
        if len(parts) != 3 or parts[2] not in ("HTTP/1.0", "HTTP/1.1") or not parts[1]:
            self.drops["bad_request"] += 1
            return 400, b"bad request\n", {}
        method, target = parts[0], parts[1]
        path = target.split("?", 1)[0]
        if path != METRICS_PATH:
            self.drops["not_found"] += 1
            return 404, b"not found: try GET /metrics\n", {}
        if method not in ("GET", "HEAD"):
            self.drops["method_not_allowed"] += 1
            return 405, b"method not allowed: use GET\n", {"Allow": "GET, HEAD"}
        try:
            page = self._current_page()
        except Exception:
            log.exception("event=metrics_render_failed")
            return 500, b"internal error\n", {}
        self.served += 1
        return 200, page, {"Content-Type": CONTENT_TYPE}

    def _current_page(self) -> bytes:
        now = self._clock()
        if self._page is None or now - self._page_at >= self._min_interval_s:
            self._page = self._render().encode("utf-8")
            self._page_at = now
            self.renders += 1
        return self._page

    async def _reply(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        body: bytes,
        extra: dict[str, str] | None = None,
        *,
        head_only: bool = False,
    ) -> None:
        headers = dict(extra or {})
        headers.setdefault("Content-Type", "text/plain; charset=utf-8")
        headers["Content-Length"] = str(len(body))
        headers["Connection"] = "close"
        lines = [f"HTTP/1.1 {status} {_REASONS[status]}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if not head_only:
            writer.write(body)
        try:
            await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT_S)
        except TimeoutError:
            self.drops["write_timeout"] += 1
        except ConnectionError:
            pass
        with contextlib.suppress(OSError):
            writer.write_eof()
