"""The control socket's line protocol on its own: request parsing and the reply codec."""

from __future__ import annotations

import json

import pytest

from ipop.aio.control import DROP_REASONS
from ipop.aio.controlproto import (
    COMMANDS,
    MAX_PING_TIMEOUT_S,
    BadRequest,
    CommandFailed,
    ControlReplyError,
    decode_reply,
    encode_request,
    error_line,
    parse_request,
    reply_line,
)
from ipop.errors import LocalProtocolError


def test_a_request_the_client_encodes_parses_with_checked_arguments() -> None:
    line = encode_request("ping", {"target": "bob", "seq": 3, "timeout_s": 2})
    name, command, args = parse_request(line)
    assert name == "ping"
    assert command is COMMANDS["ping"]
    assert args == {"target": "bob", "seq": 3, "timeout_s": 2.0}
    assert isinstance(args["timeout_s"], float)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"{not json", "not_json"),
        (b"[1, 2]", "not_object"),
        (b'{"cmd": 7}', "no_cmd"),
        (b'{"cmd": "reboot"}', "unknown_cmd"),
        (b'{"cmd": "resolve"}', "bad_args"),
        (b'{"cmd": "resolve", "name": "a", "extra": 1}', "bad_args"),
        (b'{"cmd": "resolve", "name": 5}', "bad_args"),
        (
            json.dumps(
                {"cmd": "ping", "target": "b", "seq": 1, "timeout_s": MAX_PING_TIMEOUT_S + 1}
            ).encode(),
            "bad_args",
        ),
        (b'{"cmd": "netcheck", "servers": ["nope"], "second_opinion": true}', "bad_args"),
    ],
)
def test_a_bad_request_names_a_checked_drop_reason(line: bytes, reason: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_request(line)
    assert info.value.reason == reason
    assert reason in DROP_REASONS


def test_cmd_is_not_an_argument_name() -> None:
    with pytest.raises(LocalProtocolError):
        encode_request("status", {"cmd": "x"})


def test_reply_lines_decode_to_their_result_or_error() -> None:
    assert decode_reply(reply_line({"ok": True, "result": [1, "a"]}), "/s") == [1, "a"]
    assert reply_line({"ok": True, "result": None}).endswith(b"\n")
    with pytest.raises(CommandFailed, match="no such name"):
        decode_reply(error_line("no such name 'bob'"), "/s")


@pytest.mark.parametrize("raw", [b"", b"nope", b'{"ok": 1}', b'{"ok": true}'])
def test_a_broken_reply_is_a_reply_error(raw: bytes) -> None:
    with pytest.raises(ControlReplyError):
        decode_reply(raw, "/s")


def test_service_requests_are_checked() -> None:
    def line(**obj: object) -> bytes:
        return json.dumps(obj).encode()

    cmd, _, args = parse_request(
        line(cmd="service_publish", name="http", port=80, proto="tcp", txt=["a=b"])
    )
    assert cmd == "service_publish" and args["port"] == 80 and args["txt"] == ["a=b"]
    for bad in (
        {"port": 0},
        {"port": 65536},
        {"port": True},
        {"txt": "a=b"},
        {"txt": [1]},
        {"txt": ["a=b"] * 9},
    ):
        obj = {"cmd": "service_publish", "name": "http", "port": 80, "proto": "tcp", "txt": []}
        with pytest.raises(BadRequest):
            parse_request(line(**{**obj, **bad}))
    assert parse_request(line(cmd="service_list", name="", proto=""))[0] == "service_list"
    with pytest.raises(BadRequest):
        parse_request(line(cmd="service_withdraw", name="http"))
