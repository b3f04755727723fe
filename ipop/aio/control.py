"""The daemon's control socket: JSON lines over a UNIX stream socket (DESIGN.md §1, §10).

This module owns the server end: :class:`ControlServer`, its socket file and its connections,
and the drop counters. The ``ipop`` CLI (and any script) talks to the local ``ipopd`` through
it, one JSON object per line each way (the requests: :mod:`ipop.aio.controlproto`).

Theory of operation. :class:`ControlServer` validates each request against a table of
commands (argument names and types) before the :class:`ControlHandler` sees it, so the daemon's
handler only ever gets well-typed calls. A request that is not JSON, not an object, names an
unknown command or carries wrong arguments gets an error reply, is counted in ``drops`` by
reason, and the connection stays usable; only a line longer than :data:`MAX_LINE_BYTES` closes
the connection, because the stream cannot be resynchronised. A handler that raises
:class:`CommandFailed` has its message sent to the client as is ("no such name 'bob'"); any
other exception is logged with its traceback and reported as an internal error. Nothing a
client sends can stop the server.

The socket file is created mode 0600 (only the daemon's user and root may talk to the daemon)
in a directory created if missing; a stale socket left by a crashed daemon is replaced, a live
one or a non-socket file at the path is refused. :meth:`ControlServer.close` removes the file
(if it is still ours).

The line protocol (the command table, request checks, the errors) is
:mod:`ipop.aio.controlproto`; the client side (:func:`request`, :func:`request_sync`,
:class:`ControlClient`) is :mod:`ipop.aio.controlclient`. Both are re-exported here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
from collections import Counter
from pathlib import Path
from typing import Final, cast

from ipop.aio.controlclient import (
    DEFAULT_REPLY_TIMEOUT_S,
    ControlClient,
    request,
    request_sync,
)
from ipop.aio.controlproto import (
    COMMANDS,
    MAX_LINE_BYTES,
    MAX_PING_TIMEOUT_S,
    BadRequest,
    CommandFailed,
    ControlError,
    ControlHandler,
    ControlReplyError,
    ControlUnavailable,
    error_line,
    parse_request,
    reply_line,
)
from ipop.errors import ConfigError, LocalProtocolError

__all__ = [
    "COMMANDS",
    "DEFAULT_REPLY_TIMEOUT_S",
    "DROP_REASONS",
    "MAX_LINE_BYTES",
    "MAX_PING_TIMEOUT_S",
    "CommandFailed",
    "ControlClient",
    "ControlError",
    "ControlHandler",
    "ControlReplyError",
    "ControlServer",
    "ControlUnavailable",
    "request",
    "request_sync",
]

log = logging.getLogger(__name__)

# Every reason ControlServer.drops counts under: the request parser's (BadRequest), the
# server's own.
DROP_REASONS: Final = frozenset(
    {
        "not_json",  # the line is not JSON
        "not_object",  # not a JSON object with a "cmd"
        "no_cmd",  # no "cmd" string
        "unknown_cmd",  # a command not in COMMANDS
        "bad_args",  # a missing, unexpected or mistyped argument
        "line_too_long",  # a request line over MAX_LINE_BYTES
        "too_many_connections",  # MAX_CONNECTIONS clients connected already
        "handler_error",  # the daemon's handler raised
    }
)
# Each connection is one CLI invocation; more than this at once is a runaway script.
MAX_CONNECTIONS: Final = 64
SOCKET_MODE: Final = 0o600


# --- the server -------------------------------------------------------------------------------


def _claim_path(path: Path) -> None:
    """Make ``path`` free for our socket: replace a stale socket, refuse anything else."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    fix = "stop the other daemon or set another [control] socket"
    if not stat.S_ISSOCK(st.st_mode):
        raise ConfigError("control.socket", f"{path} exists and is not a socket", fix)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except ConnectionRefusedError:
            # Left behind by a daemon that died without close(): nobody listens, take it over.
            path.unlink(missing_ok=True)
            return
        except OSError as exc:
            raise ConfigError(
                "control.socket", f"{path} cannot be probed ({exc.strerror or exc})", fix
            ) from None
    raise ConfigError("control.socket", f"another daemon is listening on {path}", fix)


class ControlServer:
    """Serves :class:`ControlHandler` on a UNIX socket at ``path`` (see the module docstring)."""

    def __init__(self, path: str | Path, handler: ControlHandler) -> None:
        self.path = Path(path)
        self.handler = handler
        self.drops: Counter[str] = Counter()
        self.requests: Counter[str] = Counter()
        self._server: asyncio.AbstractServer | None = None
        self._inode: tuple[int, int] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def serving(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        if self._server is not None:
            raise LocalProtocolError("ControlServer.start() called twice")
        fix = (
            "run the daemon as root, or set [control] socket to a path in a directory you may write"
        )
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        except OSError as exc:
            raise ConfigError(
                "control.socket", f"cannot create {self.path.parent} ({exc.strerror or exc})", fix
            ) from None
        _claim_path(self.path)
        # The umask makes bind() create the file 0600 already, so there is no moment in which
        # another user could connect; chmod afterwards is the belt to those braces.
        old_umask = os.umask(0o177)
        try:
            server = await asyncio.start_unix_server(
                self._on_connection, path=str(self.path), limit=MAX_LINE_BYTES
            )
        except OSError as exc:
            raise ConfigError(
                "control.socket", f"cannot listen on {self.path} ({exc.strerror or exc})", fix
            ) from None
        finally:
            os.umask(old_umask)
        try:
            os.chmod(self.path, SOCKET_MODE)
            st = os.stat(self.path)
        except OSError:
            server.close()
            raise
        self._inode = (st.st_dev, st.st_ino)
        self._server = server

    async def close(self) -> None:
        """Stop listening, end open connections, remove the socket file if it is still ours."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await server.wait_closed()
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return
        # Another daemon may have claimed the path since (after a stale-socket takeover); its
        # socket is not ours to remove.
        if (st.st_dev, st.st_ino) == self._inode:
            self.path.unlink(missing_ok=True)

    async def __aenter__(self) -> ControlServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._tasks) >= MAX_CONNECTIONS:
            self.drops["too_many_connections"] += 1
            with contextlib.suppress(ConnectionError):
                writer.write(error_line("too many control connections; try again"))
                await writer.drain()
            writer.close()
            return
        self._tasks.add(cast("asyncio.Task[None]", task))
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away mid-exchange: nothing to answer
        finally:
            self._tasks.discard(cast("asyncio.Task[None]", task))
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            at_eof = False
            try:
                line = await reader.readuntil(b"\n")
            except asyncio.IncompleteReadError as exc:
                # EOF: a last request without its newline is still answered.
                line, at_eof = exc.partial, True
            except asyncio.LimitOverrunError:
                self.drops["line_too_long"] += 1
                writer.write(error_line(f"request longer than {MAX_LINE_BYTES} bytes"))
                await writer.drain()
                return
            if line.strip():
                writer.write(await self._answer(line))
                await writer.drain()
            if at_eof:
                return

    async def _answer(self, line: bytes) -> bytes:
        try:
            name, command, args = parse_request(line)
        except BadRequest as exc:
            self.drops[exc.reason] += 1
            return error_line(str(exc))
        self.requests[name] += 1
        try:
            result = command.result(await command.call(self.handler, args))
            return reply_line({"ok": True, "result": result})
        except CommandFailed as exc:
            return error_line(str(exc))
        except Exception as exc:
            self.drops["handler_error"] += 1
            log.exception("control command %s failed", name)
            return error_line(f"internal error in {name}: {type(exc).__name__}: {exc}")
