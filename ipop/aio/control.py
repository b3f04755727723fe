"""The daemon's control socket: JSON lines over a UNIX stream socket (DESIGN.md §1, §10).

The ``ipop`` CLI (and any script) talks to the local ``ipopd`` through this socket. The
protocol is one JSON object per line each way, requests answered in order on a connection::

    -> {"cmd": "status"}
    <- {"ok": true, "result": {"self": {...}, "peers": [...], ...}}      (ipop.status.Status)
    -> {"cmd": "ping", "target": "bob", "seq": 1, "timeout_s": 2.0}
    <- {"ok": true, "result": {"seq": 1, "ok": true, "rtt_ms": 1.5, ...}}  (PingReply)
    -> {"cmd": "dht_get", "key": "k"}                     <- {"ok": true, "result": "v" | null}
    -> {"cmd": "dht_put", "key": "k", "value": "v", "ttl_s": 3600}
                                                          <- {"ok": true, "result": true|false}
    -> {"cmd": "resolve", "name": "bob.ipop"}             <- {"ok": true, "result": "100.64.1.2"}
    -> {"cmd": "netcheck", "servers": ["203.0.113.30:3478"], "second_opinion": true}
                                       <- {"ok": true, "result": {"nat": "full-cone", ...}}
                                                          (ipop.nat.netcheck.NetcheckResult)
    -> {"cmd": "crl_push", "crl": "-----BEGIN X509 CRL-----..."}
                                <- {"ok": true, "result": 3}   (the CRL number now in force)
    -> anything else                                      <- {"ok": false, "error": "why"}

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

The client side is :func:`request` (asyncio), :func:`request_sync` (blocking, for the CLI) and
:class:`ControlClient`, which types the results as :mod:`ipop.status` dataclasses. A missing or
refusing socket raises :class:`ControlUnavailable`; a broken or late reply
:class:`ControlReplyError`; a daemon-side refusal :class:`CommandFailed`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import socket
import stat
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol, cast

from ipop.errors import ConfigError, IpopError, LocalProtocolError
from ipop.identity import MAX_CRL_BYTES
from ipop.nat.netcheck import NetcheckResult
from ipop.status import PingReply, Status
from ipop.types import Endpoint

__all__ = [
    "COMMANDS",
    "DEFAULT_REPLY_TIMEOUT_S",
    "DROP_REASONS",
    "MAX_LINE_BYTES",
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

# A status of a few hundred peers is tens of KiB; a line past this is garbage or an attack.
MAX_LINE_BYTES: Final = 1 << 20
# Every reason ControlServer.drops counts under: the request parser's (_BadRequest), the
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
# How long the CLI waits for an answer before saying the daemon is stuck.
DEFAULT_REPLY_TIMEOUT_S: Final = 10.0
# A ping reply can take up to its own timeout; the socket waits this much longer.
PING_REPLY_MARGIN_S: Final = 5.0
# netcheck waits for STUN answers that may never come, and pystun3 spends 8 s on each.
NETCHECK_REPLY_TIMEOUT_S: Final = 120.0
MAX_NETCHECK_SERVERS: Final = 8
# An overlay ping that has not come back in a minute is not coming back.
MAX_PING_TIMEOUT_S: Final = 60.0
SOCKET_MODE: Final = 0o600


class ControlHandler(Protocol):
    """What the control server needs of the daemon; every argument arrives validated."""

    async def status(self) -> Status: ...

    async def ping(self, target: str, seq: int, timeout_s: float) -> PingReply: ...

    async def dht_get(self, key: str) -> str | None: ...

    async def dht_put(self, key: str, value: str, ttl_s: int) -> bool: ...

    async def resolve(self, name: str) -> str | None: ...

    async def netcheck(self, servers: list[str], second_opinion: bool) -> NetcheckResult: ...

    async def crl_push(self, crl: str) -> int: ...


class ControlError(IpopError):
    """Talking to the daemon failed; ``problem`` says what, ``fix`` what to try."""

    def __init__(self, problem: str, fix: str = "") -> None:
        super().__init__(f"{problem} ({fix})" if fix else problem)
        self.problem = problem
        self.fix = fix


class ControlUnavailable(ControlError):
    """No daemon to talk to at ``path``: missing, refusing, or not ours to open."""

    def __init__(self, path: str | Path, problem: str, fix: str) -> None:
        super().__init__(problem, fix)
        self.path = str(path)


class ControlReplyError(ControlError):
    """The daemon answered late, not at all, or with something that is not a reply."""


class CommandFailed(ControlError):
    """The daemon refused or could not do the command; the message is for the user.

    Handlers raise it for expected failures (unknown name, DHT unreachable); :func:`request`
    raises it on the client when the reply says ``"ok": false``.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)


# --- request validation -----------------------------------------------------------------------


class _BadRequest(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _arg_str(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise _BadRequest("bad_args", f"{name} must be a string, got {_type_name(value)}")
    return value


def _arg_seq(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _BadRequest("bad_args", f"{name} must be an integer >= 0")
    return value


def _arg_ttl(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise _BadRequest("bad_args", f"{name} must be an integer >= 1")
    return value


def _arg_timeout(name: str, value: object) -> float:
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or not 0 < value <= MAX_PING_TIMEOUT_S
    ):
        raise _BadRequest("bad_args", f"{name} must be a number in (0, {MAX_PING_TIMEOUT_S:g}]")
    return float(value)


def _arg_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise _BadRequest("bad_args", f"{name} must be true or false")
    return value


def _arg_endpoints(name: str, value: object) -> list[str]:
    if not isinstance(value, list) or len(value) > MAX_NETCHECK_SERVERS:
        raise _BadRequest("bad_args", f"{name} must be a list of at most {MAX_NETCHECK_SERVERS}")
    for item in value:
        try:
            Endpoint.parse(item if isinstance(item, str) else "", key=name)
        except ConfigError:
            raise _BadRequest("bad_args", f"{name}: {item!r} is not IPv4:PORT") from None
    return list(value)


def _arg_crl(name: str, value: object) -> str:
    # A PEM CRL within ipop.identity.MAX_CRL_BYTES of DER is at most ~23 KB of text.
    if not isinstance(value, str) or len(value) > 2 * MAX_CRL_BYTES:
        raise _BadRequest("bad_args", f"{name} must be a PEM CRL of at most {MAX_CRL_BYTES} bytes")
    return value


def _result_int(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"handler returned {_type_name(value)}, not int")
    return value


def _result_netcheck(value: object) -> dict[str, Any]:
    if not isinstance(value, NetcheckResult):
        raise TypeError(f"handler returned {_type_name(value)}, not NetcheckResult")
    return value.to_dict()


def _result_str_or_none(value: object) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"handler returned {_type_name(value)}, not str or None")
    return value


def _result_bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"handler returned {_type_name(value)}, not bool")
    return value


def _result_status(value: object) -> dict[str, Any]:
    if not isinstance(value, Status):
        raise TypeError(f"handler returned {_type_name(value)}, not Status")
    return value.to_dict()


def _result_ping(value: object) -> dict[str, Any]:
    if not isinstance(value, PingReply):
        raise TypeError(f"handler returned {_type_name(value)}, not PingReply")
    return value.to_dict()


@dataclass(frozen=True, slots=True)
class _Command:
    args: tuple[tuple[str, Callable[[str, object], object]], ...]
    call: Callable[[ControlHandler, dict[str, Any]], Awaitable[object]]
    result: Callable[[object], object]


# The command table: argument checkers (all required, none other allowed), the handler call,
# and the check that keeps a buggy handler from putting a wrong shape on the wire.
COMMANDS: Final[Mapping[str, _Command]] = {
    "status": _Command((), lambda h, a: h.status(), _result_status),
    "ping": _Command(
        (("target", _arg_str), ("seq", _arg_seq), ("timeout_s", _arg_timeout)),
        lambda h, a: h.ping(a["target"], a["seq"], a["timeout_s"]),
        _result_ping,
    ),
    "dht_get": _Command(
        (("key", _arg_str),), lambda h, a: h.dht_get(a["key"]), _result_str_or_none
    ),
    "dht_put": _Command(
        (("key", _arg_str), ("value", _arg_str), ("ttl_s", _arg_ttl)),
        lambda h, a: h.dht_put(a["key"], a["value"], a["ttl_s"]),
        _result_bool,
    ),
    "resolve": _Command(
        (("name", _arg_str),), lambda h, a: h.resolve(a["name"]), _result_str_or_none
    ),
    "netcheck": _Command(
        (("servers", _arg_endpoints), ("second_opinion", _arg_bool)),
        lambda h, a: h.netcheck(a["servers"], a["second_opinion"]),
        _result_netcheck,
    ),
    "crl_push": _Command((("crl", _arg_crl),), lambda h, a: h.crl_push(a["crl"]), _result_int),
}


def _parse_request(line: bytes) -> tuple[str, _Command, dict[str, Any]]:
    try:
        obj = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        raise _BadRequest("not_json", "request is not a JSON line") from None
    if not isinstance(obj, dict):
        raise _BadRequest("not_object", "request must be a JSON object with a 'cmd'")
    cmd = obj.get("cmd")
    if not isinstance(cmd, str):
        raise _BadRequest("no_cmd", "request has no 'cmd' string")
    command = COMMANDS.get(cmd)
    if command is None:
        raise _BadRequest(
            "unknown_cmd", f"unknown command {cmd!r} (known: {', '.join(sorted(COMMANDS))})"
        )
    names = [name for name, _ in command.args]
    extra = sorted(set(obj) - {"cmd", *names})
    if extra:
        raise _BadRequest("bad_args", f"{cmd}: unexpected argument {extra[0]!r}")
    args: dict[str, Any] = {}
    for name, check in command.args:
        if name not in obj:
            raise _BadRequest("bad_args", f"{cmd}: missing argument {name!r}")
        args[name] = check(name, obj[name])
    return cmd, command, args


def _reply_line(obj: Mapping[str, object]) -> bytes:
    return json.dumps(obj, allow_nan=False, separators=(",", ":")).encode() + b"\n"


def _error_line(message: str) -> bytes:
    return _reply_line({"ok": False, "error": message})


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
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        _claim_path(self.path)
        # The umask makes bind() create the file 0600 already, so there is no moment in which
        # another user could connect; chmod afterwards is the belt to those braces.
        old_umask = os.umask(0o177)
        try:
            server = await asyncio.start_unix_server(
                self._on_connection, path=str(self.path), limit=MAX_LINE_BYTES
            )
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
                writer.write(_error_line("too many control connections; try again"))
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
                writer.write(_error_line(f"request longer than {MAX_LINE_BYTES} bytes"))
                await writer.drain()
                return
            if line.strip():
                writer.write(await self._answer(line))
                await writer.drain()
            if at_eof:
                return

    async def _answer(self, line: bytes) -> bytes:
        try:
            name, command, args = _parse_request(line)
        except _BadRequest as exc:
            self.drops[exc.reason] += 1
            return _error_line(str(exc))
        self.requests[name] += 1
        try:
            result = command.result(await command.call(self.handler, args))
            return _reply_line({"ok": True, "result": result})
        except CommandFailed as exc:
            return _error_line(str(exc))
        except Exception as exc:
            self.drops["handler_error"] += 1
            log.exception("control command %s failed", name)
            return _error_line(f"internal error in {name}: {type(exc).__name__}: {exc}")


# --- the client -------------------------------------------------------------------------------


def _encode_request(cmd: str, args: Mapping[str, object]) -> bytes:
    if "cmd" in args:
        raise LocalProtocolError("'cmd' cannot be an argument name")
    return json.dumps({"cmd": cmd, **args}, allow_nan=False).encode() + b"\n"


def _unavailable(path: str | Path, exc: OSError) -> ControlUnavailable:
    if isinstance(exc, FileNotFoundError | ConnectionRefusedError):
        return ControlUnavailable(path, f"no daemon at {path}", "is ipopd running?")
    if isinstance(exc, PermissionError):
        return ControlUnavailable(
            path, f"no permission to use {path}", "run as root or as the user ipopd runs as"
        )
    return ControlUnavailable(
        path,
        f"cannot connect to {path}: {exc.strerror or exc}",
        "check --socket, $IPOP_SOCKET or [control] socket",
    )


def _decode_reply(raw: bytes, path: str | Path) -> Any:
    fix = "check that ipop and ipopd are the same version"
    if not raw.strip():
        raise ControlReplyError(
            f"the daemon at {path} closed the connection without replying", "check ipopd's log"
        )
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ControlReplyError(
            f"the daemon at {path} sent a reply that is not JSON", fix
        ) from None
    if not isinstance(obj, dict) or not isinstance(obj.get("ok"), bool):
        raise ControlReplyError(f"the daemon at {path} sent a malformed reply", fix)
    if obj["ok"]:
        if "result" not in obj:
            raise ControlReplyError(f"the daemon at {path} sent a reply without a result", fix)
        return obj["result"]
    error = obj.get("error")
    raise CommandFailed(error if isinstance(error, str) else "the daemon reported an error")


async def request(
    path: str | Path,
    cmd: str,
    /,
    *,
    reply_timeout_s: float = DEFAULT_REPLY_TIMEOUT_S,
    **args: object,
) -> Any:
    """Send one command and return its ``result`` (JSON value); see the module docstring."""
    line = _encode_request(cmd, args)
    try:
        reader, writer = await asyncio.open_unix_connection(str(path), limit=MAX_LINE_BYTES)
    except OSError as exc:
        raise _unavailable(path, exc) from None
    try:
        writer.write(line)
        await writer.drain()
        raw = await asyncio.wait_for(reader.readline(), reply_timeout_s)
    except TimeoutError:
        raise ControlReplyError(
            f"no reply from the daemon at {path} within {reply_timeout_s:g} s",
            "is ipopd stuck? check its log",
        ) from None
    except ValueError:  # StreamReader.readline on a line over the limit
        raise ControlReplyError(f"the daemon at {path} sent an oversized reply", "") from None
    except OSError as exc:
        raise ControlReplyError(
            f"lost the connection to {path} ({exc.strerror or exc})", "check ipopd's log"
        ) from None
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return _decode_reply(raw, path)


def request_sync(
    path: str | Path,
    cmd: str,
    /,
    *,
    reply_timeout_s: float = DEFAULT_REPLY_TIMEOUT_S,
    **args: object,
) -> Any:
    """Blocking :func:`request` for the CLI (no event loop; safe inside a worker thread)."""
    line = _encode_request(cmd, args)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with sock:
        sock.settimeout(reply_timeout_s)
        try:
            sock.connect(str(path))
        except TimeoutError:
            raise ControlReplyError(
                f"the daemon at {path} does not accept connections", "is ipopd stuck?"
            ) from None
        except OSError as exc:
            raise _unavailable(path, exc) from None
        buf = bytearray()
        deadline = time.monotonic() + reply_timeout_s
        try:
            sock.sendall(line)
            while b"\n" not in buf:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                sock.settimeout(remaining)
                chunk = sock.recv(65536)
                if not chunk:
                    break
                buf += chunk
                if len(buf) > MAX_LINE_BYTES:
                    raise ControlReplyError(f"the daemon at {path} sent an oversized reply", "")
        except TimeoutError:
            raise ControlReplyError(
                f"no reply from the daemon at {path} within {reply_timeout_s:g} s",
                "is ipopd stuck? check its log",
            ) from None
        except OSError as exc:
            raise ControlReplyError(
                f"lost the connection to {path} ({exc.strerror or exc})", "check ipopd's log"
            ) from None
    return _decode_reply(bytes(buf).split(b"\n", 1)[0], path)


class ControlClient:
    """Typed, blocking access to one daemon: results come back as :mod:`ipop.status` objects."""

    def __init__(
        self, path: str | Path, *, reply_timeout_s: float = DEFAULT_REPLY_TIMEOUT_S
    ) -> None:
        self.path = Path(path)
        self.reply_timeout_s = reply_timeout_s

    def _call(self, cmd: str, *, reply_timeout_s: float | None = None, **args: object) -> Any:
        timeout = self.reply_timeout_s if reply_timeout_s is None else reply_timeout_s
        return request_sync(self.path, cmd, reply_timeout_s=timeout, **args)

    def _malformed(self, cmd: str, detail: str) -> ControlReplyError:
        return ControlReplyError(
            f"the daemon at {self.path} sent a malformed {cmd} result: {detail}",
            "check that ipop and ipopd are the same version",
        )

    def status(self) -> Status:
        result = self._call("status")
        try:
            return Status.from_dict(result)
        except ValueError as exc:
            raise self._malformed("status", str(exc)) from None

    def ping(self, target: str, seq: int, timeout_s: float) -> PingReply:
        result = self._call(
            "ping",
            reply_timeout_s=timeout_s + PING_REPLY_MARGIN_S,
            target=target,
            seq=seq,
            timeout_s=timeout_s,
        )
        try:
            return PingReply.from_dict(result)
        except ValueError as exc:
            raise self._malformed("ping", str(exc)) from None

    def dht_get(self, key: str) -> str | None:
        result = self._call("dht_get", key=key)
        if result is not None and not isinstance(result, str):
            raise self._malformed("dht_get", f"{_type_name(result)} is not a string or null")
        return result

    def dht_put(self, key: str, value: str, ttl_s: int) -> bool:
        result = self._call("dht_put", key=key, value=value, ttl_s=ttl_s)
        if not isinstance(result, bool):
            raise self._malformed("dht_put", f"{_type_name(result)} is not true or false")
        return result

    def resolve(self, name: str) -> str | None:
        result = self._call("resolve", name=name)
        if result is not None and not isinstance(result, str):
            raise self._malformed("resolve", f"{_type_name(result)} is not a string or null")
        return result

    def netcheck(self, servers: list[str], *, second_opinion: bool = True) -> NetcheckResult:
        """NAT discovery from the daemon's socket; ``servers`` are STUN servers besides the
        configured ones (this call can take tens of seconds: pystun3)."""
        result = self._call(
            "netcheck",
            reply_timeout_s=max(self.reply_timeout_s, NETCHECK_REPLY_TIMEOUT_S),
            servers=list(servers),
            second_opinion=second_opinion,
        )
        try:
            return NetcheckResult.from_dict(result)
        except ValueError as exc:
            raise self._malformed("netcheck", str(exc)) from None

    def crl_push(self, crl_pem: str) -> int:
        """Hand the daemon a revocation list (PEM); the CRL number in force afterwards."""
        result = self._call("crl_push", crl=crl_pem)
        if not isinstance(result, int) or isinstance(result, bool):
            raise self._malformed("crl_push", f"{_type_name(result)} is not an integer")
        return result
