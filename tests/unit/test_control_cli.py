"""The control socket and the ``ipop`` CLI, against a fake daemon handler on a real socket.

Each test runs the server on an asyncio loop (``asyncio.run``) and the CLI, which is blocking,
in a worker thread of that loop, so both ends are real and nothing waits on a sleep.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import socket
import stat
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from ipop.aio.control import (
    MAX_LINE_BYTES,
    CommandFailed,
    ControlClient,
    ControlHandler,
    ControlReplyError,
    ControlServer,
    ControlUnavailable,
    request,
    request_sync,
)
from ipop.errors import ConfigError
from ipop.status import PingReply, Status
from ipop.testing.snapshots import A_ID, B_ID, sample_status
from ipop.tools.cli import main
from ipop.tools.cli_status import format_status

T = TypeVar("T")
STATUS = sample_status()


class FakeHandler:
    """bob answers (overlay first, then direct); ghost never answers; others are unknown."""

    def __init__(self) -> None:
        self.dht: dict[str, str] = {}
        self.calls: list[tuple[Any, ...]] = []

    async def status(self) -> Status:
        return STATUS

    async def ping(self, target: str, seq: int, timeout_s: float) -> PingReply:
        self.calls.append(("ping", target, seq, timeout_s))
        if target in ("bob", "100.64.1.2"):
            if seq == 1:
                return PingReply(seq=seq, ok=True, rtt_ms=40.0, path="overlay", hops=3)
            return PingReply(seq=seq, ok=True, rtt_ms=2.0, path="direct", hops=1)
        if target == "ghost":
            return PingReply(seq=seq, ok=False)
        if target == "crash":
            raise RuntimeError("boom")
        raise CommandFailed(f"no such name {target!r}")

    async def dht_get(self, key: str) -> str | None:
        return self.dht.get(key)

    async def dht_put(self, key: str, value: str, ttl_s: int) -> bool:
        self.calls.append(("dht_put", key, value, ttl_s))
        if key == "full":
            return False
        self.dht[key] = value
        return True

    async def resolve(self, name: str) -> str | None:
        return {"bob": "100.64.1.2", "bob.ipop": "100.64.1.2"}.get(name)


def _typed(h: FakeHandler) -> ControlHandler:
    return h  # mypy checks FakeHandler satisfies the Protocol


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    # Short on purpose: AF_UNIX paths are limited to 107 bytes, pytest's tmp_path can be long.
    d = Path(tempfile.mkdtemp(prefix="ipc", dir="/tmp"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def sock(sock_dir: Path) -> Path:
    return sock_dir / "run" / "ipopd.sock"  # "run" does not exist yet: start() creates it


def with_server(
    path: Path,
    body: Callable[[ControlServer], Awaitable[T]],
    handler: ControlHandler | None = None,
) -> T:
    async def go() -> T:
        server = ControlServer(path, handler or _typed(FakeHandler()))
        await server.start()
        try:
            return await body(server)
        finally:
            await server.close()

    return asyncio.run(asyncio.wait_for(go(), 60))


Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cli(sock: Path, capsys: pytest.CaptureFixture[str]) -> Run:
    """Run ``ipop --socket SOCK ARGS`` in a thread while the server serves on the loop."""

    def run(*argv: str, handler: ControlHandler | None = None) -> tuple[int, str, str]:
        capsys.readouterr()

        async def body(server: ControlServer) -> int:
            return await asyncio.to_thread(main, ["--socket", str(sock), *argv])

        rc = with_server(sock, body, handler)
        out, err = capsys.readouterr()
        return rc, out, err

    return run


# --- the server ---------------------------------------------------------------------------


def test_socket_file_mode_dir_and_cleanup(sock: Path) -> None:
    assert not sock.parent.exists()

    async def body(server: ControlServer) -> int:
        return stat.S_IMODE(os.stat(sock).st_mode)

    assert with_server(sock, body) == 0o600
    assert sock.parent.is_dir()
    assert not sock.exists()


def test_stale_socket_is_replaced_live_one_and_files_refused(sock: Path) -> None:
    sock.parent.mkdir()
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(sock))
    stale.close()  # the file stays, nobody listens: what a crashed daemon leaves
    assert sock.exists()

    async def body(server: ControlServer) -> str:
        second = ControlServer(sock, _typed(FakeHandler()))
        with pytest.raises(ConfigError, match="another daemon is listening") as info:
            await second.start()
        assert info.value.key == "control.socket"
        return str(await request(sock, "resolve", name="bob"))

    assert with_server(sock, body) == "100.64.1.2"

    sock.write_text("not a socket")

    async def refuse() -> None:
        with pytest.raises(ConfigError, match="is not a socket"):
            await ControlServer(sock, _typed(FakeHandler())).start()

    asyncio.run(refuse())
    assert sock.read_text() == "not a socket"  # never deleted


async def _exchange(path: Path, lines: list[bytes]) -> list[dict[str, Any]]:
    reader, writer = await asyncio.open_unix_connection(str(path), limit=MAX_LINE_BYTES)
    replies = []
    try:
        for line in lines:
            writer.write(line)
            await writer.drain()
            raw = await reader.readline()
            replies.append(json.loads(raw))
    finally:
        writer.close()
        await writer.wait_closed()
    return replies


GARBAGE = [
    (b"hello\n", "not_json", "not a JSON line"),
    (b"\xff\xfe\n", "not_json", "not a JSON line"),
    (b"[1, 2]\n", "not_object", "JSON object"),
    (b'{"args": 1}\n', "no_cmd", "no 'cmd'"),
    (b'{"cmd": 7}\n', "no_cmd", "no 'cmd'"),
    (b'{"cmd": "reboot"}\n', "unknown_cmd", "unknown command 'reboot'"),
    (b'{"cmd": "resolve"}\n', "bad_args", "missing argument 'name'"),
    (b'{"cmd": "resolve", "name": 5}\n', "bad_args", "name must be a string"),
    (b'{"cmd": "status", "verbose": true}\n', "bad_args", "unexpected argument 'verbose'"),
    (b'{"cmd": "ping", "target": "bob", "seq": -1, "timeout_s": 1}\n', "bad_args", "seq"),
    (b'{"cmd": "ping", "target": "bob", "seq": 1, "timeout_s": 0}\n', "bad_args", "timeout_s"),
    (b'{"cmd": "ping", "target": "bob", "seq": true, "timeout_s": 1}\n', "bad_args", "seq"),
    (b'{"cmd": "dht_put", "key": "k", "value": "v", "ttl_s": 0}\n', "bad_args", "ttl_s"),
]


def test_garbage_gets_error_replies_and_the_connection_survives(sock: Path) -> None:
    lines = [g[0] for g in GARBAGE] + [b'{"cmd": "status"}\n']

    async def body(server: ControlServer) -> tuple[list[dict[str, Any]], dict[str, int]]:
        return await _exchange(sock, lines), dict(server.drops)

    replies, drops = with_server(sock, body)
    for (_, _, message), reply in zip(GARBAGE, replies, strict=False):
        assert reply["ok"] is False
        assert message in reply["error"]
    assert replies[-1]["ok"] is True
    assert Status.from_dict(replies[-1]["result"]) == STATUS
    expected: dict[str, int] = {}
    for _, reason, _ in GARBAGE:
        expected[reason] = expected.get(reason, 0) + 1
    assert drops == expected


def test_oversized_line_closes_only_that_connection(sock: Path) -> None:
    async def body(server: ControlServer) -> tuple[bytes, bytes, Any]:
        reader, writer = await asyncio.open_unix_connection(str(sock))
        writer.write(b"x" * (MAX_LINE_BYTES + 10))
        with_error = await reader.readline()
        after = await reader.read()  # EOF: the server closed this connection
        writer.close()
        return with_error, after, await request(sock, "resolve", name="bob")

    first, after, resolved = with_server(sock, body)
    assert json.loads(first)["ok"] is False and "longer than" in json.loads(first)["error"]
    assert after == b""
    assert resolved == "100.64.1.2"


def test_last_request_without_newline_is_answered(sock: Path) -> None:
    async def body(server: ControlServer) -> Any:
        reader, writer = await asyncio.open_unix_connection(str(sock))
        writer.write(b'{"cmd": "resolve", "name": "bob"}')
        writer.write_eof()
        raw = await reader.read()
        writer.close()
        return json.loads(raw)

    assert with_server(sock, body) == {"ok": True, "result": "100.64.1.2"}


def test_handler_errors_are_replies_not_crashes(sock: Path) -> None:
    class Wrong(FakeHandler):
        async def resolve(self, name: str) -> str | None:
            return 42  # type: ignore[return-value]  # a buggy handler

    async def body(server: ControlServer) -> list[Any]:
        out: list[Any] = []
        for target in ("crash", "nobody"):
            with pytest.raises(CommandFailed) as info:
                await request(sock, "ping", target=target, seq=1, timeout_s=1.0)
            out.append(str(info.value))
        with pytest.raises(CommandFailed) as info:
            await request(sock, "resolve", name="x")
        out.append(str(info.value))
        out.append(await request(sock, "dht_put", key="k", value="v", ttl_s=5))
        out.append(server.drops["handler_error"])
        return out

    crash, nobody, wrong, put, errors = with_server(sock, body, _typed(Wrong()))
    assert crash == "internal error in ping: RuntimeError: boom"
    assert nobody == "no such name 'nobody'"
    assert "internal error in resolve" in wrong and "not str or None" in wrong
    assert put is True
    assert errors == 2


def test_close_ends_idle_connections(sock: Path) -> None:
    async def body(server: ControlServer) -> bool:
        reader, writer = await asyncio.open_unix_connection(str(sock))
        writer.write(b'{"cmd": "status"}\n')
        await reader.readline()  # connected and served; now idle, held open
        await server.close()
        eof = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        return eof == b"" and not sock.exists()

    assert with_server(sock, body) is True


def test_clients_against_a_missing_daemon(sock: Path) -> None:
    with pytest.raises(ControlUnavailable) as info:
        request_sync(sock, "status")
    assert str(info.value) == f"no daemon at {sock} (is ipopd running?)"
    with pytest.raises(ControlUnavailable):
        asyncio.run(request(sock, "status"))
    sock.parent.mkdir()
    refusing = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    refusing.bind(str(sock))
    refusing.close()
    with pytest.raises(ControlUnavailable, match="no daemon at"):
        ControlClient(sock).status()


def test_client_rejects_a_broken_reply(sock_dir: Path) -> None:
    path = sock_dir / "fake.sock"

    async def go() -> list[str]:
        replies = iter([b"not json\n", b'{"ok": true}\n', b"", b'{"ok": true, "result": 5}\n'])

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readline()
            writer.write(next(replies))
            await writer.drain()
            writer.close()

        server = await asyncio.start_unix_server(serve, path=str(path))
        out = []
        try:
            for _ in range(3):
                with pytest.raises(ControlReplyError) as info:
                    await asyncio.to_thread(request_sync, path, "status")
                out.append(str(info.value))
            with pytest.raises(ControlReplyError) as info:
                await asyncio.to_thread(ControlClient(path).status)
            out.append(str(info.value))
        finally:
            server.close()
            await server.wait_closed()
        return out

    not_json, no_result, silent, wrong_shape = asyncio.run(asyncio.wait_for(go(), 60))
    assert "not JSON" in not_json
    assert "without a result" in no_result
    assert "without replying" in silent
    assert "malformed status result" in wrong_shape


# --- the CLI ------------------------------------------------------------------------------


def test_status_table(cli: Run) -> None:
    rc, out, err = cli("status")
    assert rc == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split() == ["NODE", "VIP", "NAME", "PATH", "ENDPOINT", "RTT", "IN", "OUT"]
    assert (
        lines[1].split()
        == [A_ID[:8], "100.64.1.1", "alice", "self", "203.0.113.5:5800"] + ["-"] * 3
    )
    assert lines[2].split() == [
        B_ID[:8],
        "100.64.1.2",
        "bob",
        "direct",
        "198.51.100.7:5800",
        "1.5",
        "ms",
        "2.0",
        "KiB",
        "100",
        "B",
    ]
    assert "up 1h02m; nat cone; routable" in out
    assert "names: alice-laptop.ipop, C064001001.ipop" in out
    assert "drops: 2 (bad_mac 2)" in out


def test_status_says_why_a_lone_node_has_no_address_yet() -> None:
    alone = dataclasses.replace(
        STATUS,
        self_=dataclasses.replace(STATUS.self_, vip=None, names=[], routable=False),
        peers=[],
    )
    text = "\n".join(format_status(alone))
    assert "no peers yet" in text
    assert "no virtual IP yet" in text and "at least one other node" in text
    assert "no virtual IP yet" not in "\n".join(format_status(STATUS))


def test_status_json_is_the_contract(cli: Run) -> None:
    rc, out, err = cli("status", "--json")
    assert rc == 0 and err == ""
    assert Status.from_json(out) == STATUS
    assert json.loads(out)["self"]["node_id"] == A_ID


def test_ping_lines_summary_and_exit_codes(cli: Run) -> None:
    handler = FakeHandler()
    rc, out, err = cli("ping", "bob", "-c", "3", "-i", "0", "-W", "1.5", handler=_typed(handler))
    assert rc == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == "bob: seq=1 path=overlay hops=3 rtt=40.00 ms"
    assert lines[1] == "bob: seq=2 path=direct hops=1 rtt=2.00 ms"
    assert lines[3] == "--- bob: 3 sent, 3 answered, 0% lost"
    assert lines[4] == "rtt min/avg/max = 2.00/14.67/40.00 ms"
    assert lines[5] == "paths: direct 2, overlay 1"
    assert handler.calls == [("ping", "bob", s, 1.5) for s in (1, 2, 3)]

    rc, out, err = cli("ping", "ghost", "-c", "2", "-i", "0")
    assert rc == 1
    assert out.splitlines()[0] == "ghost: seq=1 no reply within 2 s"
    assert "--- ghost: 2 sent, 0 answered, 100% lost" in out

    rc, out, err = cli("ping", "nobody", "-c", "1")
    assert rc == 1 and out == ""
    assert err == "ipop: no such name 'nobody'\n"


def test_ping_json(cli: Run) -> None:
    rc, out, _ = cli("ping", "100.64.1.2", "-c", "2", "-i", "0", "--json")
    assert rc == 0
    doc = json.loads(out)
    assert doc["target"] == "100.64.1.2" and doc["sent"] == 2 and doc["answered"] == 2
    assert [PingReply.from_dict(r).path for r in doc["replies"]] == ["overlay", "direct"]
    rc, out, _ = cli("ping", "ghost", "-c", "1", "-i", "0", "--json")
    assert rc == 1 and json.loads(out)["answered"] == 0


def test_dht_put_get(cli: Run) -> None:
    handler = FakeHandler()
    rc, out, _ = cli("dht", "put", "greeting", "hello world", "--ttl", "90", handler=handler)
    assert rc == 0 and out == "stored 'greeting' for 90 s\n"
    assert handler.calls == [("dht_put", "greeting", "hello world", 90)]
    rc, out, err = cli("dht", "get", "greeting", handler=handler)
    assert (rc, out, err) == (0, "hello world\n", "")
    rc, out, err = cli("dht", "get", "missing", handler=handler)
    assert (rc, out) == (1, "") and err == "ipop: 'missing': not found in the DHT\n"
    rc, out, err = cli("dht", "put", "full", "x", handler=handler)
    assert rc == 1 and "did not store" in err
    assert handler.calls[-1] == ("dht_put", "full", "x", 3600)


def test_map_writes_the_svg_to_stdout_or_a_file(cli: Run, tmp_path: Path) -> None:
    rc, out, err = cli("map")
    assert rc == 0 and err == "" and out.startswith("<svg ") and "bob" in out
    target = tmp_path / "map.svg"
    rc, out, err = cli("map", "-o", str(target), "--max-peers", "1")
    assert rc == 0 and err == ""
    assert out.startswith(f"wrote {target}: 1 of {len(STATUS.peers)} peers, ")
    assert target.read_text().startswith("<svg ")
    rc, out, err = cli("map", "-o", str(tmp_path / "no" / "such" / "dir.svg"))
    assert rc == 2 and out == "" and err.startswith("ipop: cannot write ") and err.count("\n") == 1


def test_resolve(cli: Run) -> None:
    assert cli("resolve", "bob.ipop") == (0, "100.64.1.2\n", "")
    rc, out, err = cli("resolve", "carol")
    assert (rc, out, err) == (1, "", "ipop: 'carol': no such name\n")


@pytest.mark.parametrize(
    "argv",
    [
        ["ping", "bob", "-c", "0"],
        ["ping", "bob", "-i", "-1"],
        ["ping", "bob", "-W", "0"],
        ["ping", "bob", "-W", "nan"],
        ["dht", "put", "k"],
        ["dht", "put", "k", "v", "--ttl", "0"],
        ["dht"],
        ["map", "--max-peers", "0"],
        ["frobnicate"],
        [],
    ],
)
def test_usage_errors_are_one_line_exit_2(
    argv: list[str], sock: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["--socket", str(sock), *argv])
    out, err = capsys.readouterr()
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("ipop: ")


def test_missing_daemon_is_one_line_exit_2(
    monkeypatch: pytest.MonkeyPatch, sock: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv in (["status"], ["ping", "bob"], ["dht", "get", "k"], ["resolve", "bob"]):
        assert main(["--socket", str(sock), *argv]) == 2
        out, err = capsys.readouterr()
        assert out == ""
        assert err == f"ipop: no daemon at {sock} (is ipopd running?)\n"
    # The default socket comes from $IPOP_SOCKET, else /run/ipop/ipopd.sock.
    monkeypatch.setenv("IPOP_SOCKET", str(sock))
    assert main(["status"]) == 2
    assert capsys.readouterr().err == f"ipop: no daemon at {sock} (is ipopd running?)\n"


def test_default_socket_path(monkeypatch: pytest.MonkeyPatch) -> None:
    from ipop.tools.cli import default_socket

    monkeypatch.delenv("IPOP_SOCKET", raising=False)
    assert default_socket() == "/run/ipop/ipopd.sock"
    monkeypatch.setenv("IPOP_SOCKET", "/tmp/x.sock")
    assert default_socket() == "/tmp/x.sock"


def test_env_socket_reaches_the_daemon(
    monkeypatch: pytest.MonkeyPatch, sock: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("IPOP_SOCKET", str(sock))

    async def body(server: ControlServer) -> int:
        return await asyncio.to_thread(main, ["resolve", "bob"])

    assert with_server(sock, body) == 0
    assert capsys.readouterr().out == "100.64.1.2\n"


def test_status_shows_a_dns_line_once_queries_came() -> None:
    from ipop.status import DnsLatency, DnsStatus

    dns = DnsStatus(
        counters={"queries": 1000, "merged": 995},
        answers={"noerror": 990, "servfail": 10},
        drops={"dns_too_many_waiters": 10},
        latency_ms=DnsLatency(p50=3.25, p99=40.0, buckets={}),
    )
    with_dns = Status(STATUS.self_, STATUS.peers, STATUS.drops, STATUS.counters, dns=dns)
    text = "\n".join(format_status(with_dns))
    assert (
        "dns: 1000 queries (noerror 990, servfail 10), 995 merged, 10 dropped, "
        "p50 3.2 ms, p99 40.0 ms" in text
    )
    assert "dns:" not in "\n".join(format_status(STATUS))


def test_status_says_whether_split_dns_is_registered() -> None:
    def text(counters: dict[str, int]) -> str:
        st = dataclasses.replace(STATUS, counters={**STATUS.counters, **counters})
        return "\n".join(format_status(st))

    assert "routed here by systemd-resolved" in text({"dns.system_registered": 1})
    failed = text({"dns.system_failed": 1})
    assert "split DNS: registering with systemd-resolved failed" in failed
    assert "event=dns_register_failed" in failed
    assert "split DNS" not in text({})
