"""The daemon's local HTTP server: a few read-only pages over HTTP/1.1 on a TCP address (asyncio).

It serves ``GET /metrics`` on ``[metrics] listen`` (the page is :mod:`ipop.metrics`'s) and the
status web page on ``[web] listen`` (``/``, ``/map.svg``, ``/status.json`` and ``/metrics``:
:mod:`ipop.webpage`, :mod:`ipop.overlaymap`), one instance per listener, each with its table
of pages (path -> :class:`Page`); what a page says is rendered by the callable the composition
root hands in. It is a deliberately small server, off the data path (one more listening socket
on the daemon's loop, nothing on a packet's way):

* one request per connection (``Connection: close``): the request head must arrive within
  :data:`REQUEST_TIMEOUT_S` and fit :data:`MAX_REQUEST_BYTES` (else 408 / 431, counted);
* ``GET`` and ``HEAD`` of a page's path (a query string is ignored) answer 200 with the page;
  another path is 404, another method on a page's path 405 (``Allow: GET, HEAD``), a request
  line that is not HTTP 400;
* with ``check_host`` (the web page's server), a ``Host`` header that names a host by name
  rather than by address (or ``localhost``) is refused with 421: a web page elsewhere that
  rebinds its own name to 127.0.0.1 (DNS rebinding) cannot read the overlay's shape through
  a browser on this machine;
* at most :data:`MAX_CONNECTIONS` connections at once; more are closed at once, counted;
* each page is rendered at most once per :data:`MIN_RENDER_INTERVAL_S` (clients in a loop get
  the same page), so no client can make the daemon build status faster than that.

Every reply says ``X-Content-Type-Options: nosniff``; a page adds its own headers (the HTML
page a Content-Security-Policy that allows no script and nothing from elsewhere). Refused
requests are counted in :attr:`LocalHttpServer.drops` by reason (:data:`DROP_REASONS`), which
the metrics page shows as ``layer="metrics"`` (or ``"web"``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

from ipop.errors import ConfigError
from ipop.types import Endpoint

__all__ = [
    "DROP_REASONS",
    "MAX_CONNECTIONS",
    "MAX_REQUEST_BYTES",
    "MIN_RENDER_INTERVAL_S",
    "REQUEST_TIMEOUT_S",
    "LocalHttpServer",
    "Page",
]

log = logging.getLogger(__name__)

# A scraper's request head is a few hundred bytes (curl's: 80; Prometheus's: ~250; a browser's
# ~600).
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
    "bad_host",
)

_REASONS: Final[dict[int, str]] = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    421: "Misdirected Request",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
}


@dataclass(frozen=True, slots=True)
class Page:
    """One path's page: its content type, what renders it, and headers of its own."""

    content_type: str
    render: Callable[[], str]
    headers: Mapping[str, str] = field(default_factory=dict)


def _host_is_address(value: str) -> bool:
    """A Host header naming this server by address (``127.0.0.1:9580``, ``[::1]``) or as
    ``localhost``, not by a name some DNS server answers."""
    host = value.strip()
    if host.startswith("["):
        return True  # an IPv6 literal: names do not start with "["
    host = host.rsplit(":", 1)[0] if ":" in host else host
    if host.lower() == "localhost":
        return True
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return True


class LocalHttpServer:
    """Serves ``pages`` (path -> :class:`Page`) on ``listen`` until :meth:`close`."""

    def __init__(
        self,
        listen: Endpoint,
        pages: Mapping[str, Page],
        *,
        key: str = "metrics.listen",
        check_host: bool = False,
        max_connections: int = MAX_CONNECTIONS,
        request_timeout_s: float = REQUEST_TIMEOUT_S,
        min_interval_s: float = MIN_RENDER_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not pages:
            raise ValueError("a local HTTP server needs at least one page")
        self.listen = listen
        self._pages = dict(pages)
        self._key = key  # the config key that named ``listen``, for errors
        self._check_host = check_host
        self._max_connections = max_connections
        self._timeout_s = request_timeout_s
        self._min_interval_s = min_interval_s
        self._clock = clock
        self.drops: Counter[str] = Counter()
        self.served = 0  # pages answered with 200
        self.renders = 0  # pages rendered (at most one per page per min_interval_s)
        self._active = 0
        self._cache: dict[str, tuple[bytes, float]] = {}
        self._server: asyncio.Server | None = None
        # Connections being served: closed (not cancelled: asyncio's stream callback logs a
        # cancelled handler as an error) when the server closes.
        self._conns: dict[asyncio.StreamWriter, asyncio.Task[None]] = {}
        self._closing = False

    @property
    def port(self) -> int:
        """The bound port (``listen``'s, or the one the kernel chose for port 0)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("the HTTP server is not listening")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(
                self._accept, self.listen.host, self.listen.port, limit=MAX_REQUEST_BYTES
            )
        except OSError as exc:
            section = self._key.split(".", 1)[0]
            raise ConfigError(
                self._key,
                f"cannot listen on {self.listen} ({exc.strerror or exc})",
                f"use a free port and an address of this host, or remove [{section}] listen",
            ) from None
        log.info("event=http_listening key=%s listen=%s:%d", self._key, self.listen.host, self.port)

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
        line, *header_lines = head.decode("latin-1").split("\r\n")
        parts = line.split(" ")
        if len(parts) != 3 or parts[2] not in ("HTTP/1.0", "HTTP/1.1") or not parts[1]:
            self.drops["bad_request"] += 1
            return 400, b"bad request\n", {}
        if self._check_host:
            for h in header_lines:
                name, sep, value = h.partition(":")
                if sep and name.strip().lower() == "host" and not _host_is_address(value):
                    self.drops["bad_host"] += 1
                    return 421, b"misdirected: ask for this server by its address\n", {}
        method, target = parts[0], parts[1]
        path = target.split("?", 1)[0]
        page = self._pages.get(path)
        if page is None:
            self.drops["not_found"] += 1
            paths = ", ".join(sorted(self._pages))
            return 404, f"not found: try GET {paths}\n".encode(), {}
        if method not in ("GET", "HEAD"):
            self.drops["method_not_allowed"] += 1
            return 405, b"method not allowed: use GET\n", {"Allow": "GET, HEAD"}
        try:
            body = self._current_page(path, page)
        except Exception:
            log.exception("event=http_render_failed path=%s", path)
            return 500, b"internal error\n", {}
        self.served += 1
        return 200, body, {"Content-Type": page.content_type, **page.headers}

    def _current_page(self, path: str, page: Page) -> bytes:
        now = self._clock()
        cached = self._cache.get(path)
        if cached is None or now - cached[1] >= self._min_interval_s:
            cached = (page.render().encode("utf-8"), now)
            self._cache[path] = cached
            self.renders += 1
        return cached[0]

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
        headers["X-Content-Type-Options"] = "nosniff"
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
