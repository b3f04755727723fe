"""The control socket's client: one command, one reply, for the ``ipop`` CLI and scripts.

This module owns talking to a daemon's control socket: :func:`request` (asyncio),
:func:`request_sync` (blocking, for the CLI) and :class:`ControlClient`, which types the
results as :mod:`ipop.status` dataclasses, with how long each waits for its reply. A missing
or refusing socket raises :class:`ControlUnavailable`; a broken or late reply
:class:`ControlReplyError`; a daemon-side refusal :class:`CommandFailed`. The line protocol is
:mod:`ipop.aio.controlproto`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from pathlib import Path
from typing import Any, Final

from ipop.aio.controlproto import (
    MAX_LINE_BYTES,
    ControlReplyError,
    ControlUnavailable,
    decode_reply,
    encode_request,
    type_name,
)
from ipop.nat.netcheck import NetcheckResult
from ipop.status import PingReply, Status

__all__ = [
    "DEFAULT_REPLY_TIMEOUT_S",
    "NETCHECK_REPLY_TIMEOUT_S",
    "PING_REPLY_MARGIN_S",
    "ControlClient",
    "request",
    "request_sync",
]

# How long the CLI waits for an answer before saying the daemon is stuck.
DEFAULT_REPLY_TIMEOUT_S: Final = 10.0
# A ping reply can take up to its own timeout; the socket waits this much longer.
PING_REPLY_MARGIN_S: Final = 5.0
# netcheck waits for STUN answers that may never come, and pystun3 spends 8 s on each.
NETCHECK_REPLY_TIMEOUT_S: Final = 120.0


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


async def request(
    path: str | Path,
    cmd: str,
    /,
    *,
    reply_timeout_s: float = DEFAULT_REPLY_TIMEOUT_S,
    **args: object,
) -> Any:
    """Send one command and return its ``result`` (JSON value); see the module docstring."""
    line = encode_request(cmd, args)
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
    return decode_reply(raw, path)


def request_sync(
    path: str | Path,
    cmd: str,
    /,
    *,
    reply_timeout_s: float = DEFAULT_REPLY_TIMEOUT_S,
    **args: object,
) -> Any:
    """Blocking :func:`request` for the CLI (no event loop; safe inside a worker thread)."""
    line = encode_request(cmd, args)
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
    return decode_reply(bytes(buf).split(b"\n", 1)[0], path)


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
            raise self._malformed("dht_get", f"{type_name(result)} is not a string or null")
        return result

    def dht_put(self, key: str, value: str, ttl_s: int) -> bool:
        result = self._call("dht_put", key=key, value=value, ttl_s=ttl_s)
        if not isinstance(result, bool):
            raise self._malformed("dht_put", f"{type_name(result)} is not true or false")
        return result

    def service_publish(self, name: str, port: int, proto: str, txt: list[str]) -> dict[str, Any]:
        result = self._call("service_publish", name=name, port=port, proto=proto, txt=txt)
        if not isinstance(result, dict):
            raise self._malformed("service_publish", f"{type_name(result)} is not an object")
        return result

    def service_list(self, name: str, proto: str) -> list[dict[str, Any]]:
        result = self._call("service_list", name=name, proto=proto)
        if not isinstance(result, list) or not all(isinstance(r, dict) for r in result):
            raise self._malformed("service_list", f"{type_name(result)} is not a list of objects")
        return result

    def service_withdraw(self, name: str, proto: str) -> bool:
        result = self._call("service_withdraw", name=name, proto=proto)
        if not isinstance(result, bool):
            raise self._malformed("service_withdraw", f"{type_name(result)} is not true or false")
        return result

    def resolve(self, name: str) -> str | None:
        result = self._call("resolve", name=name)
        if result is not None and not isinstance(result, str):
            raise self._malformed("resolve", f"{type_name(result)} is not a string or null")
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
            raise self._malformed("crl_push", f"{type_name(result)} is not an integer")
        return result
