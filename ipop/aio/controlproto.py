"""The control socket's line protocol: the command table, request checks, reply codec.

The ``ipop`` CLI (and any script) talks to the local ``ipopd`` through its control socket
(:mod:`ipop.aio.control`). The protocol is one JSON object per line each way, requests
answered in order on a connection::

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
    -> {"cmd": "service_publish", "name": "http", "port": 8000, "proto": "tcp",
        "txt": ["path=/"]}        <- {"ok": true, "result": {"name": "http", ..., "slot": 3}}
    -> {"cmd": "service_list", "name": "http", "proto": ""}   ("": both; name "": ours)
                                  <- {"ok": true, "result": [{"name": "http", "addr": ...}]}
    -> {"cmd": "service_withdraw", "name": "http", "proto": "tcp"}
                                                          <- {"ok": true, "result": true}
    -> {"cmd": "crl_push", "crl": "-----BEGIN X509 CRL-----..."}
                                <- {"ok": true, "result": 3}   (the CRL number now in force)
    -> anything else                                      <- {"ok": false, "error": "why"}

This module owns that protocol on both ends: the :class:`ControlHandler` contract, the table
of commands (argument names and checks, the handler call, the result's shape), the parsing
of a request line (:func:`parse_request`, whose :class:`BadRequest` names the drop reason),
the reply lines, the client's request encoding and reply decoding, and the errors both
sides raise. The socket server is :mod:`ipop.aio.control`, the client
:mod:`ipop.aio.controlclient`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

from ipop.errors import ConfigError, IpopError, LocalProtocolError
from ipop.identity import MAX_CRL_BYTES
from ipop.nat.netcheck import NetcheckResult
from ipop.status import PingReply, Status
from ipop.types import Endpoint

__all__ = [
    "COMMANDS",
    "MAX_LINE_BYTES",
    "MAX_NETCHECK_SERVERS",
    "MAX_PING_TIMEOUT_S",
    "BadRequest",
    "CommandFailed",
    "ControlError",
    "ControlHandler",
    "ControlReplyError",
    "ControlUnavailable",
    "decode_reply",
    "encode_request",
    "error_line",
    "parse_request",
    "reply_line",
    "type_name",
]

# A status of a few hundred peers is tens of KiB; a line past this is garbage or an attack.
MAX_LINE_BYTES: Final = 1 << 20
MAX_NETCHECK_SERVERS: Final = 8
# TXT strings one service carries (ipop.dht.srv.MAX_TXT).
MAX_TXT_STRINGS: Final = 8
# An overlay ping that has not come back in a minute is not coming back.
MAX_PING_TIMEOUT_S: Final = 60.0


class ControlHandler(Protocol):
    """What the control server needs of the daemon; every argument arrives validated."""

    async def status(self) -> Status: ...

    async def ping(self, target: str, seq: int, timeout_s: float) -> PingReply: ...

    async def dht_get(self, key: str) -> str | None: ...

    async def dht_put(self, key: str, value: str, ttl_s: int) -> bool: ...

    async def resolve(self, name: str) -> str | None: ...

    async def netcheck(self, servers: list[str], second_opinion: bool) -> NetcheckResult: ...

    async def crl_push(self, crl: str) -> int: ...

    async def service_publish(
        self, name: str, port: int, proto: str, txt: list[str]
    ) -> dict[str, Any]: ...

    async def service_list(self, name: str, proto: str) -> list[dict[str, Any]]: ...

    async def service_withdraw(self, name: str, proto: str) -> bool: ...


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


class BadRequest(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _arg_str(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise BadRequest("bad_args", f"{name} must be a string, got {type_name(value)}")
    return value


def _arg_seq(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise BadRequest("bad_args", f"{name} must be an integer >= 0")
    return value


def _arg_ttl(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise BadRequest("bad_args", f"{name} must be an integer >= 1")
    return value


def _arg_timeout(name: str, value: object) -> float:
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or not 0 < value <= MAX_PING_TIMEOUT_S
    ):
        raise BadRequest("bad_args", f"{name} must be a number in (0, {MAX_PING_TIMEOUT_S:g}]")
    return float(value)


def _arg_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise BadRequest("bad_args", f"{name} must be true or false")
    return value


def _arg_endpoints(name: str, value: object) -> list[str]:
    if not isinstance(value, list) or len(value) > MAX_NETCHECK_SERVERS:
        raise BadRequest("bad_args", f"{name} must be a list of at most {MAX_NETCHECK_SERVERS}")
    for item in value:
        try:
            Endpoint.parse(item if isinstance(item, str) else "", key=name)
        except ConfigError:
            raise BadRequest("bad_args", f"{name}: {item!r} is not IPv4:PORT") from None
    return list(value)


def _arg_port(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 0xFFFF:
        raise BadRequest("bad_args", f"{name} must be an integer in 1..65535")
    return value


def _arg_strings(name: str, value: object) -> list[str]:
    if (
        not isinstance(value, list)
        or len(value) > MAX_TXT_STRINGS
        or not all(isinstance(v, str) for v in value)
    ):
        raise BadRequest("bad_args", f"{name} must be a list of at most {MAX_TXT_STRINGS} strings")
    return list(value)


def _result_dict(value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"handler returned {type_name(value)}, not dict")
    return value


def _result_dicts(value: object) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise TypeError(f"handler returned {type_name(value)}, not a list of dicts")
    return value


def _arg_crl(name: str, value: object) -> str:
    # A PEM CRL within ipop.identity.MAX_CRL_BYTES of DER is at most ~23 KB of text.
    if not isinstance(value, str) or len(value) > 2 * MAX_CRL_BYTES:
        raise BadRequest("bad_args", f"{name} must be a PEM CRL of at most {MAX_CRL_BYTES} bytes")
    return value


def _result_int(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"handler returned {type_name(value)}, not int")
    return value


def _result_netcheck(value: object) -> dict[str, Any]:
    if not isinstance(value, NetcheckResult):
        raise TypeError(f"handler returned {type_name(value)}, not NetcheckResult")
    return value.to_dict()


def _result_str_or_none(value: object) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"handler returned {type_name(value)}, not str or None")
    return value


def _result_bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"handler returned {type_name(value)}, not bool")
    return value


def _result_status(value: object) -> dict[str, Any]:
    if not isinstance(value, Status):
        raise TypeError(f"handler returned {type_name(value)}, not Status")
    return value.to_dict()


def _result_ping(value: object) -> dict[str, Any]:
    if not isinstance(value, PingReply):
        raise TypeError(f"handler returned {type_name(value)}, not PingReply")
    return value.to_dict()


@dataclass(frozen=True, slots=True)
class _Command:
    """A control command: its argument checkers, its handler call, and its result's check."""

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
    "service_publish": _Command(
        (("name", _arg_str), ("port", _arg_port), ("proto", _arg_str), ("txt", _arg_strings)),
        lambda h, a: h.service_publish(a["name"], a["port"], a["proto"], a["txt"]),
        _result_dict,
    ),
    "service_list": _Command(
        (("name", _arg_str), ("proto", _arg_str)),
        lambda h, a: h.service_list(a["name"], a["proto"]),
        _result_dicts,
    ),
    "service_withdraw": _Command(
        (("name", _arg_str), ("proto", _arg_str)),
        lambda h, a: h.service_withdraw(a["name"], a["proto"]),
        _result_bool,
    ),
}


def parse_request(line: bytes) -> tuple[str, _Command, dict[str, Any]]:
    try:
        obj = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("not_json", "request is not a JSON line") from None
    if not isinstance(obj, dict):
        raise BadRequest("not_object", "request must be a JSON object with a 'cmd'")
    cmd = obj.get("cmd")
    if not isinstance(cmd, str):
        raise BadRequest("no_cmd", "request has no 'cmd' string")
    command = COMMANDS.get(cmd)
    if command is None:
        raise BadRequest(
            "unknown_cmd", f"unknown command {cmd!r} (known: {', '.join(sorted(COMMANDS))})"
        )
    names = [name for name, _ in command.args]
    extra = sorted(set(obj) - {"cmd", *names})
    if extra:
        raise BadRequest("bad_args", f"{cmd}: unexpected argument {extra[0]!r}")
    args: dict[str, Any] = {}
    for name, check in command.args:
        if name not in obj:
            raise BadRequest("bad_args", f"{cmd}: missing argument {name!r}")
        args[name] = check(name, obj[name])
    return cmd, command, args


def reply_line(obj: Mapping[str, object]) -> bytes:
    return json.dumps(obj, allow_nan=False, separators=(",", ":")).encode() + b"\n"


def error_line(message: str) -> bytes:
    return reply_line({"ok": False, "error": message})


# --- the client's side ------------------------------------------------------------------------


def encode_request(cmd: str, args: Mapping[str, object]) -> bytes:
    if "cmd" in args:
        raise LocalProtocolError("'cmd' cannot be an argument name")
    return json.dumps({"cmd": cmd, **args}, allow_nan=False).encode() + b"\n"


def decode_reply(raw: bytes, path: str | Path) -> Any:
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
